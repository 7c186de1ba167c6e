package sources

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCanonical(t *testing.T) {
	got, err := Canonical([]string{"10.0.0.0/8", "192.0.2.7", "::ffff:192.0.2.7", "2001:db8::/32",
		"spiffe://example.org/ns/prod/*", "spiffe://example.org/ns/prod/sa/api", "10.0.0.0/8", "0.0.0.0/0", "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	want := "0.0.0.0/0,10.0.0.0/8,192.0.2.7,2001:db8::/32,::/0,spiffe://example.org/ns/prod/*,spiffe://example.org/ns/prod/sa/api"
	if j := strings.Join(got, ","); j != want {
		t.Fatalf("Canonical = %s, want %s", j, want)
	}
	if got, err := Canonical(nil); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Canonical(nil) = %#v, %v; want [] ", got, err)
	}
}

func TestCanonicalRejects(t *testing.T) {
	for _, s := range []string{"", "10.0.0.1/8", "10.0.0.0/33", "fe80::1%eth0", "example.org", "10.0.0.0/8,10.1.0.0/16",
		"spiffe://", "spiffe://Example.org/a", "spiffe://example.org", "spiffe://example.org/", "spiffe://example.org/a/",
		"spiffe://example.org/a//b", "spiffe://example.org/a/../b", "spiffe://example.org/a b", "spiffe://example.org/a,b",
		"spiffe://example.org/*/x", "spiffe://ex ample.org/*", "SPIFFE://example.org/a", "http://example.org/a"} {
		_, err := Canonical([]string{"192.0.2.1", s})
		var ee *EntryError
		if !errors.As(err, &ee) || ee.Index != 1 {
			t.Errorf("Canonical(%q) = %v, want an EntryError at index 1", s, err)
		}
	}
	long := make([]string, MaxEntries+1)
	for i := range long {
		long[i] = "192.0.2.1"
	}
	if _, err := Canonical(long); !errors.Is(err, ErrTooMany) {
		t.Errorf("Canonical of %d entries = %v, want ErrTooMany", len(long), err)
	}
	if _, err := Canonical(long[:MaxEntries]); err != nil {
		t.Errorf("Canonical of %d entries = %v", MaxEntries, err)
	}
}

func TestMatch(t *testing.T) {
	list := func(s ...string) string {
		c, err := Canonical(s)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(c, ",")
	}
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name      string
		list      string
		addr      netip.Addr
		proxy     bool
		principal string
		want      bool
	}{
		{"empty list", "", netip.Addr{}, false, "", true},
		{"ipv4 cidr in", list("10.0.0.0/8"), a("10.2.3.4"), false, "", true},
		{"ipv4 cidr out", list("10.0.0.0/8"), a("11.2.3.4"), false, "", false},
		{"ipv4 mapped client", list("10.0.0.0/8"), a("::ffff:10.2.3.4"), false, "", true},
		{"ipv4 single in", list("192.0.2.7"), a("192.0.2.7"), false, "", true},
		{"ipv4 single out", list("192.0.2.7"), a("192.0.2.8"), false, "", false},
		{"ipv6 cidr in", list("2001:db8::/32"), a("2001:db8:1::5"), false, "", true},
		{"ipv6 cidr out", list("2001:db8::/32"), a("2001:db9::5"), false, "", false},
		{"ipv6 single", list("2001:db8::5"), a("2001:db8::5"), false, "", true},
		{"ipv4 /0", list("0.0.0.0/0"), a("203.0.113.9"), false, "", true},
		{"ipv4 /0 not ipv6", list("0.0.0.0/0"), a("2001:db8::1"), false, "", false},
		{"ipv6 /0", list("::/0"), a("2001:db8::1"), false, "", true},
		{"no address", list("0.0.0.0/0"), netip.Addr{}, false, "", false},
		{"proxy never matches", list("0.0.0.0/0"), a("127.0.0.1"), true, "", false},
		{"spiffe exact", list("spiffe://example.org/ns/a/sa/b"), netip.Addr{}, false, "spiffe://example.org/ns/a/sa/b", true},
		{"spiffe exact other", list("spiffe://example.org/ns/a/sa/b"), netip.Addr{}, false, "spiffe://example.org/ns/a/sa/bb", false},
		{"spiffe wildcard", list("spiffe://example.org/ns/a/*"), netip.Addr{}, false, "spiffe://example.org/ns/a/sa/b", true},
		{"spiffe wildcard not base", list("spiffe://example.org/ns/a/*"), netip.Addr{}, false, "spiffe://example.org/ns/a", false},
		{"spiffe wildcard sibling", list("spiffe://example.org/ns/a/*"), netip.Addr{}, false, "spiffe://example.org/ns/ab/x", false},
		{"spiffe trust domain wildcard", list("spiffe://example.org/*"), netip.Addr{}, false, "spiffe://example.org/x", true},
		{"spiffe other trust domain", list("spiffe://example.org/*"), netip.Addr{}, false, "spiffe://example.org.evil/x", false},
		{"spiffe malformed principal", list("spiffe://example.org/*"), netip.Addr{}, false, "spiffe://example.org/a/../../b", false},
		{"principal absent", list("spiffe://example.org/*"), a("10.0.0.1"), false, "", false},
		{"cidr or spiffe: addr", list("10.0.0.0/8", "spiffe://example.org/*"), a("10.0.0.1"), false, "", true},
		{"cidr or spiffe: principal", list("10.0.0.0/8", "spiffe://example.org/*"), a("11.0.0.1"), false, "spiffe://example.org/x", true},
		{"principal is no address", list("10.0.0.0/8"), netip.Addr{}, false, "spiffe://example.org/x", false},
	} {
		if got := Match(tc.list, tc.addr, tc.proxy, tc.principal); got != tc.want {
			t.Errorf("%s: Match(%q, %v, %v, %q) = %v, want %v", tc.name, tc.list, tc.addr, tc.proxy, tc.principal, got, tc.want)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	list := "10.0.0.0/8,192.0.2.7,2001:db8::/32,spiffe://example.org/ns/a/*"
	addr := netip.MustParseAddr("203.0.113.1")
	if n := testing.AllocsPerRun(100, func() { Match(list, addr, false, "spiffe://example.org/ns/b/x") }); n != 0 {
		t.Errorf("Match allocates %v times", n)
	}
}

func TestListWithin(t *testing.T) {
	for _, tc := range []struct {
		inner, outer []string
		want         bool
	}{
		{[]string{"10.1.0.0/16"}, []string{"10.0.0.0/8"}, true},
		{[]string{"10.1.2.3"}, []string{"10.0.0.0/8"}, true},
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, true},
		{[]string{"0.0.0.0/0"}, []string{"10.0.0.0/8"}, false},          // wider CIDR
		{[]string{"10.0.0.0/7"}, []string{"10.0.0.0/8"}, false},         // wider CIDR
		{[]string{"::ffff:10.0.0.0/104"}, []string{"10.0.0.0/8"}, true}, // mapped, same network
		{[]string{"2001:db8::/48"}, []string{"2001:db8::/32"}, true},
		{[]string{"::/0"}, []string{"0.0.0.0/0"}, false}, // other family
		{[]string{}, []string{"10.0.0.0/8"}, false},      // from anywhere
		{[]string{"10.0.0.0/8"}, []string{}, true},       // caller unbound
		{[]string{"spiffe://a.org/x"}, []string{"spiffe://a.org/x"}, true},
		{[]string{"spiffe://a.org/x/y"}, []string{"spiffe://a.org/x"}, false}, // exact only
		{[]string{"spiffe://a.org/x/y"}, []string{"spiffe://a.org/x/*"}, true},
		{[]string{"spiffe://a.org/x/y/*"}, []string{"spiffe://a.org/x/*"}, true},
		{[]string{"spiffe://a.org/x/*"}, []string{"spiffe://a.org/x/*"}, true},
		{[]string{"spiffe://a.org/*"}, []string{"spiffe://a.org/x/*"}, false},
		{[]string{"spiffe://a.org/x/*"}, []string{"spiffe://a.org/x"}, false},
		{[]string{"spiffe://b.org/x"}, []string{"spiffe://a.org/*"}, false}, // other trust domain
		{[]string{"spiffe://a.org/x"}, []string{"10.0.0.0/8"}, false},
		{[]string{"10.1.0.0/16", "spiffe://a.org/x"}, []string{"10.0.0.0/8", "spiffe://a.org/*"}, true},
	} {
		inner, err := Canonical(tc.inner)
		if err != nil {
			t.Fatal(err)
		}
		outer, err := Canonical(tc.outer)
		if err != nil {
			t.Fatal(err)
		}
		if _, got := ListWithin(inner, outer); got != tc.want {
			t.Errorf("ListWithin(%v, %v) = %v, want %v", tc.inner, tc.outer, got, tc.want)
		}
	}
}

// FuzzMatch checks that Match on a canonical list agrees with matching
// each parsed entry, that canonical entries parse back to themselves, and
// that nothing panics.
func FuzzMatch(f *testing.F) {
	f.Add("10.0.0.0/8", "10.1.2.3", "")
	f.Add("2001:db8::/32", "2001:db8::1", "")
	f.Add("spiffe://example.org/ns/*", "", "spiffe://example.org/ns/a")
	f.Add("spiffe://example.org/a", "192.0.2.1", "spiffe://example.org/a")
	f.Add("::ffff:1.2.3.4", "1.2.3.4", "spiffe://x/../y")
	f.Fuzz(func(t *testing.T, entry, addrText, principal string) {
		e, err := Parse(entry)
		if err != nil {
			return
		}
		canon := e.String()
		if strings.IndexByte(canon, ',') >= 0 {
			t.Fatalf("canonical entry %q holds a comma", canon)
		}
		back, err := Parse(canon)
		if err != nil || back.String() != canon {
			t.Fatalf("canonical %q of %q parses to %q, %v", canon, entry, back.String(), err)
		}
		addr, _ := netip.ParseAddr(addrText)
		got := Match(canon, addr, false, principal)
		var want bool
		if e.Prefix.IsValid() {
			want = addr.IsValid() && e.Prefix.Contains(addr.Unmap())
		} else if ValidID(principal) {
			if e.Wildcard {
				want = strings.HasPrefix(principal, e.SPIFFE+"/")
			} else {
				want = principal == e.SPIFFE
			}
		}
		if got != want {
			t.Fatalf("Match(%q, %v, %q) = %v, want %v", canon, addr, principal, got, want)
		}
		if Match(canon, addr, true, "") {
			t.Fatalf("Match(%q) matched a proxy address %v", canon, addr)
		}
		if got && !Within(e, e) {
			t.Fatalf("%q is not within itself", canon)
		}
	})
}
