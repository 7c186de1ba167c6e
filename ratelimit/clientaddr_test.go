package ratelimit

import (
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	const hdr = "x-envoy-external-address"
	tests := []struct {
		name                string
		source, header, val string
		want                string // "" for no address
	}{
		{"source only", "192.0.2.1", "", "", "192.0.2.1"},
		{"source IPv6", "2001:db8::1", "", "", "2001:db8::1"},
		{"source ip:port", "192.0.2.1:5555", "", "", "192.0.2.1"},
		{"source [v6]:port", "[2001:db8::1]:443", "", "", "2001:db8::1"},
		{"source [v6]", "[2001:db8::1]", "", "", "2001:db8::1"},
		{"source with spaces", " 192.0.2.1 ", "", "", "192.0.2.1"},
		{"source IPv6 with zone", "fe80::1%eth0", "", "", "fe80::1%eth0"},
		{"header wins when flag set", "10.0.0.1", hdr, "198.51.100.7", "198.51.100.7"},
		{"header ignored when flag unset", "10.0.0.1", "", "198.51.100.7", "10.0.0.1"},
		{"header absent falls back", "10.0.0.1", hdr, "", "10.0.0.1"},
		{"header invalid falls back", "10.0.0.1", hdr, "not-an-ip", "10.0.0.1"},
		{"header unspecified falls back", "10.0.0.1", hdr, "0.0.0.0", "10.0.0.1"},
		{"header list takes the right-most untrusted", "10.0.0.1", hdr, " 198.51.100.7 , 10.1.1.1", "10.1.1.1"},
		{"header list skips trusted proxies", "10.0.0.1", hdr, "203.0.113.9, 198.51.100.7, 127.0.0.1, ::1", "198.51.100.7"},
		{"header list all trusted takes the left-most", "10.0.0.1", hdr, "127.0.0.2, 127.0.0.1", "127.0.0.2"},
		{"header list with client-written garbage on the left", "10.0.0.1", hdr, "unknown, 198.51.100.7", "198.51.100.7"},
		{"header list with garbage on the right falls back", "10.0.0.1", hdr, "198.51.100.7, unknown", "10.0.0.1"},
		{"header list with an empty element falls back", "10.0.0.1", hdr, "198.51.100.7,", "10.0.0.1"},
		{"header IPv6", "10.0.0.1", hdr, "2001:db8::9", "2001:db8::9"},
		{"header [v6]:port", "10.0.0.1", hdr, "[2001:db8::9]:1234", "2001:db8::9"},
		{"header ip:port", "10.0.0.1", hdr, "198.51.100.7:80", "198.51.100.7"},
		{"header IPv4-mapped", "10.0.0.1", hdr, "::ffff:198.51.100.7", "::ffff:198.51.100.7"},
		{"nothing", "", "", "", ""},
		{"nothing parses", "pipe:/tmp/envoy.sock", hdr, "garbage", ""},
		{"unspecified source", "0.0.0.0", "", "", ""},
		{"empty brackets", "[]", "", "", ""},
		{"bracketed garbage", "[nope]:80", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ClientAddrs{Header: tt.header, Trusted: DefaultTrustedProxies()}
			got, ok := c.Envoy(tt.source, tt.val)
			if tt.want == "" {
				if ok {
					t.Errorf("ClientAddr(%q, %q, %q) = %v, true; want no address", tt.source, tt.header, tt.val, got)
				}
				return
			}
			if want := netip.MustParseAddr(tt.want); !ok || got != want {
				t.Errorf("ClientAddr(%q, %q, %q) = %v, %v; want %v, true", tt.source, tt.header, tt.val, got, ok, want)
			}
		})
	}
}

func TestClientAddr_DoesNotAllocate(t *testing.T) {
	c := ClientAddrs{Header: "x-forwarded-for", Trusted: DefaultTrustedProxies()}
	if n := testing.AllocsPerRun(1000, func() { c.Envoy("10.0.0.1", "2001:db8::9, 198.51.100.7, 127.0.0.1") }); n != 0 {
		t.Errorf("ClientAddr allocates %v times", n)
	}
}

// An attacker who writes x-forwarded-for himself controls only its
// left-most entries: rotating them must not escape the throttle, and
// naming a victim's address must not get the victim blocked (issue 12,
// item 3).
func TestClientAddrs_ForgedForwardedForIsNotCounted(t *testing.T) {
	c := ClientAddrs{Header: "x-forwarded-for", Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	// The load balancer (10.0.0.5) appended the attacker's real address.
	for _, forged := range []string{"1.1.1.1", "2.2.2.2", "198.51.100.99, 3.3.3.3"} {
		got, ok := c.Envoy("10.0.0.5", forged+", 203.0.113.66, 10.0.0.5")
		if !ok || got != netip.MustParseAddr("203.0.113.66") {
			t.Errorf("forged %q: client = %v, %v; want 203.0.113.66", forged, got, ok)
		}
	}
}

// The management API and HTTP authorization believe the header only from
// a trusted peer: any direct caller can write it (issue 12, item 4).
func TestClientAddrs_PeerReadsHeaderOnlyFromTrustedProxies(t *testing.T) {
	c := ClientAddrs{Header: "x-forwarded-for", Trusted: DefaultTrustedProxies()}
	tests := []struct {
		name, remote, header, want string
	}{
		{"untrusted peer names another address", "203.0.113.7:5555", "198.51.100.1", "203.0.113.7"},
		{"trusted peer's header is used", "127.0.0.1:5555", "198.51.100.1", "198.51.100.1"},
		{"trusted IPv6 peer", "[::1]:5555", "198.51.100.1, 198.51.100.2", "198.51.100.2"},
		{"trusted peer without the header", "127.0.0.1:5555", "", "127.0.0.1"},
		{"trusted peer with garbage", "127.0.0.1:5555", "nope", "127.0.0.1"},
	}
	for _, tt := range tests {
		got, ok := c.Peer(tt.remote, tt.header)
		if !ok || got != netip.MustParseAddr(tt.want) {
			t.Errorf("%s: Peer(%q, %q) = %v, %v; want %s", tt.name, tt.remote, tt.header, got, ok, tt.want)
		}
	}
	if _, ok := c.Peer("not-an-address", "198.51.100.1"); ok {
		t.Error("Peer with an unparsable remote address returned an address")
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.1.2.3/8", " 192.0.2.1 ", "2001:db8::/32", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/32")}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0.1/"} {
		if _, err := ParseTrustedProxies([]string{bad}); err == nil || !strings.Contains(err.Error(), "--trusted-proxies") {
			t.Errorf("ParseTrustedProxies(%q) = %v; want an error naming the flag", bad, err)
		}
	}
}

func TestClientAddrs_TrustedPeer(t *testing.T) {
	c := ClientAddrs{Trusted: DefaultTrustedProxies()}
	for remote, want := range map[string]bool{
		"127.0.0.1:5555": true, "[::1]:5555": true, "[::ffff:127.0.0.1]:5555": true,
		"203.0.113.7:5555": false, "not-an-address": false, "": false,
	} {
		if got := c.TrustedPeer(remote); got != want {
			t.Errorf("TrustedPeer(%q) = %v, want %v", remote, got, want)
		}
	}
}
