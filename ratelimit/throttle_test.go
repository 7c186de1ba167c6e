package ratelimit

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

func newThrottle(t testing.TB, cfg ThrottleConfig) (*Throttle, *clock) {
	t.Helper()
	c := &clock{t: t0}
	cfg.Now = c.now
	th, err := NewThrottle(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return th, c
}

// attempt is what extauthz does for one failing request: check, then
// count the failure if it was let through. It reports whether it was.
func attempt(th *Throttle, a netip.Addr) (retryAfter time.Duration, blocked bool) {
	if d, b := th.Blocked(a); b {
		return d, true
	}
	th.Failed(a)
	return 0, false
}

var client = netip.MustParseAddr("192.0.2.1")

func TestThrottle_ToleratesLimitFailuresThenBlocksUntilTheWindowFreesASlot(t *testing.T) {
	th, c := newThrottle(t, ThrottleConfig{Limit: 3})
	for i := range 3 {
		if _, blocked := attempt(th, client); blocked {
			t.Fatalf("failure %d of 3 blocked", i+1)
		}
	}
	d, blocked := th.Blocked(client)
	if !blocked || d != 65*time.Second {
		t.Fatalf("after 3 failures: Blocked = %v, %v; want true, 65s (slot of t=0 leaves at 65 s)", d, blocked)
	}
	if got := FormatRetryAfter(d); got != "65" {
		t.Errorf("retry-after %q, want 65", got)
	}
	// An exact minute would still block just under 60 s; so does this.
	c.advance(time.Minute - time.Nanosecond)
	if d, blocked := th.Blocked(client); !blocked || d != 5*time.Second+time.Nanosecond {
		t.Fatalf("at 60 s - 1 ns: Blocked = %v, %v; want true, 5.000000001s", d, blocked)
	}
	c.advance(5 * time.Second)
	if d, blocked := th.Blocked(client); !blocked || d != time.Nanosecond || FormatRetryAfter(d) != "1" {
		t.Fatalf("at 65 s - 1 ns: Blocked = %v, %v; want true, 1ns", d, blocked)
	}
	c.advance(time.Nanosecond)
	if _, blocked := th.Blocked(client); blocked {
		t.Fatal("at 65 s: still blocked")
	}
	// The window is empty again: three more are tolerated.
	for i := range 3 {
		if _, blocked := attempt(th, client); blocked {
			t.Fatalf("after unblocking: failure %d of 3 blocked", i+1)
		}
	}
	if _, blocked := th.Blocked(client); !blocked {
		t.Fatal("after unblocking and 3 more failures: not blocked")
	}
}

func TestThrottle_WindowSlides(t *testing.T) {
	th, c := newThrottle(t, ThrottleConfig{Limit: 3})
	at := func(d time.Duration) { c.t = t0.Add(d) }
	for _, d := range []time.Duration{0, 20 * time.Second, 40 * time.Second} {
		at(d)
		if _, blocked := attempt(th, client); blocked {
			t.Fatalf("failure at %v blocked", d)
		}
	}
	// The oldest failure (slot [0,5s)) leaves at 65 s and frees one slot.
	if d, blocked := th.Blocked(client); !blocked || d != 25*time.Second {
		t.Fatalf("at 40 s: Blocked = %v, %v; want true, 25s", d, blocked)
	}
	at(65 * time.Second)
	if _, blocked := attempt(th, client); blocked {
		t.Fatal("at 65 s: blocked, want one slot free")
	}
	// Full again; the next to leave is the failure at 20 s, at 85 s.
	if d, blocked := th.Blocked(client); !blocked || d != 20*time.Second {
		t.Fatalf("at 65 s after a failure: Blocked = %v, %v; want true, 20s", d, blocked)
	}
	// Failures 3 s into a slot are remembered 62 s.
	at(200*time.Second + 3*time.Second)
	for range 3 {
		attempt(th, client)
	}
	if d, blocked := th.Blocked(client); !blocked || d != 62*time.Second {
		t.Fatalf("at 203 s: Blocked = %v, %v; want true, 62s", d, blocked)
	}
}

func TestThrottle_NeverLetsMoreThanLimitFailuresIntoAnyMinute(t *testing.T) {
	// A client failing every 700 ms, for ten minutes: no 60 s span may
	// hold more than Limit of the failures that were let through.
	const limit = 10
	th, c := newThrottle(t, ThrottleConfig{Limit: limit})
	var through []time.Duration
	for d := time.Duration(0); d < 10*time.Minute; d += 700 * time.Millisecond {
		c.t = t0.Add(d)
		if _, blocked := attempt(th, client); !blocked {
			through = append(through, d)
		}
	}
	for i := limit; i < len(through); i++ {
		if span := through[i] - through[i-limit]; span < time.Minute {
			t.Fatalf("%d failures within %v (at %v..%v)", limit+1, span, through[i-limit], through[i])
		}
	}
	// And it is no stricter than one 5 s slot over a minute: at least
	// 10 per 65 s.
	if min := int(10*time.Minute/(65*time.Second)) * limit; len(through) < min {
		t.Errorf("%d failures let through in 10 minutes, want at least %d", len(through), min)
	}
}

func TestThrottle_LimitZeroIsOff(t *testing.T) {
	th, _ := newThrottle(t, ThrottleConfig{Limit: 0})
	for range 1000 {
		if _, blocked := attempt(th, client); blocked {
			t.Fatal("blocked with Limit 0")
		}
	}
	if n := th.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

func TestThrottle_GroupsClients(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		shared bool
	}{
		{"IPv6 in one /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", true},
		{"IPv6 in neighbouring /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"IPv6 zone ignored", "fe80::1%eth0", "fe80::2", true},
		{"IPv4-mapped is IPv4", "::ffff:192.0.2.1", "192.0.2.1", true},
		{"IPv4 by address", "192.0.2.1", "192.0.2.2", false},
		{"IPv4 apart from ::ffff:0:0/96's /64", "192.0.2.1", "::", false},
		{"IPv4 apart from IPv4-compatible", "192.0.2.1", "::c000:201", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, _ := newThrottle(t, ThrottleConfig{Limit: 2})
			a, b := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
			attempt(th, a)
			attempt(th, b)
			_, blocked := th.Blocked(a)
			if blocked != tt.shared {
				t.Errorf("one failure from each of %s and %s: blocked = %v, want %v", tt.a, tt.b, blocked, tt.shared)
			}
		})
	}
}

func TestThrottle_NoAddressIsNeverThrottled(t *testing.T) {
	th, _ := newThrottle(t, ThrottleConfig{Limit: 1})
	for range 100 {
		if _, blocked := attempt(th, netip.Addr{}); blocked {
			t.Fatal("the zero Addr was blocked")
		}
	}
	if n := th.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

func TestThrottle_IdleClientsGoAway(t *testing.T) {
	th, c := newThrottle(t, ThrottleConfig{Limit: 5})
	for i := range 10_000 {
		th.Failed(v4(uint32(i)))
	}
	c.advance(time.Minute)
	th.sweep(c.now())
	if n := th.Len(); n != 10_000 {
		t.Fatalf("after a minute: Len = %d, want 10000 (still within 65 s)", n)
	}
	c.advance(5 * time.Second)
	th.sweep(c.now())
	if n := th.Len(); n != 0 {
		t.Fatalf("after 65 s: Len = %d, want 0", n)
	}
}

// TestThrottle_SprayOfAMillionAddressesStaysUnderTheCap is the memory bound:
// a client spraying distinct addresses (IPv4 and IPv6 /64s) fills the
// table to its cap and no further, and a client already blocked stays
// blocked, because eviction takes those with the fewest failures.
func TestThrottle_SprayOfAMillionAddressesStaysUnderTheCap(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	const maxAddrs = DefaultMaxAddresses
	th, c := newThrottle(t, ThrottleConfig{Limit: 5})
	attacker := netip.MustParseAddr("2001:db8:bad::1")
	for range 5 {
		attempt(th, attacker)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		a := v4(uint32(i) + 1<<24)
		if i%2 == 1 {
			a = v6(uint64(i))
		}
		if i%10 == 0 {
			th.Blocked(a) // new addresses are never blocked: sample the check
		}
		th.Failed(a)
		if i%100_000 == 0 {
			c.advance(time.Second) // the spray takes time; no entry decays yet
			if got := th.Len(); got > maxAddrs {
				t.Fatalf("after %d addresses: Len = %d, over the cap %d", i+1, got, maxAddrs)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)

	if got := th.Len(); got > maxAddrs || got < maxAddrs*9/10 {
		t.Errorf("Len = %d, want at most the cap %d (and near it)", got, maxAddrs)
	}
	// 48 bytes of key and window per entry, plus the map's slack.
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d addresses: %d tracked, heap grew %.1f MiB (%.0f B/entry)", n, th.Len(), float64(growth)/(1<<20), float64(growth)/maxAddrs)
	if limit := int64(maxAddrs * 160); growth > limit {
		t.Errorf("heap grew %d bytes, want under %d", growth, limit)
	}
	if _, blocked := th.Blocked(attacker); !blocked {
		t.Error("the blocked client was evicted by the spray")
	}
}

func TestThrottle_ConcurrentFailuresAreAllCounted(t *testing.T) {
	th, c := newThrottle(t, ThrottleConfig{Limit: 60_000, MaxAddresses: 1 << 12})
	now := c.now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 5000 {
				th.failed(client, now)
				th.blocked(v4(uint32(i*8+w)), now)
				th.failed(v4(uint32(i*8+w)), now)
				if i%1000 == 0 {
					th.Len()
					th.sweep(now)
				}
			}
		})
	}
	wg.Wait()
	k, _ := keyOf(client)
	s := th.shard(k)
	w := s.m[k]
	if got := w.count(slotOf(0)); got != 40_000 {
		t.Errorf("failures counted = %d, want 40000", got)
	}
}

func TestThrottle_HotPathDoesNotAllocate(t *testing.T) {
	th, _ := newThrottle(t, ThrottleConfig{Limit: 1 << 15})
	other := netip.MustParseAddr("2001:db8::1")
	th.Failed(client)
	for name, f := range map[string]func(){
		"Blocked unknown": func() { th.Blocked(other) },
		"Blocked known":   func() { th.Blocked(client) },
		"Failed known":    func() { th.Failed(client) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s allocates %v times", name, n)
		}
	}
}

func TestThrottle_Metrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	th, _ := newThrottle(t, ThrottleConfig{Limit: 1, MaxAddresses: 64, Registerer: reg})
	attempt(th, client)
	attempt(th, client)
	attempt(th, client)
	for i := range 1000 {
		th.Failed(v6(uint64(i)))
	}
	want := map[string]float64{
		"keygate_failed_auth_addresses":       64,
		"keygate_failed_auth_blocked_total":   2,
		"keygate_failed_auth_evictions_total": 1001 - 64,
	}
	if diff := cmp.Diff(want, gather(t, reg)); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
}

func TestNewThrottle_RejectsBadConfig(t *testing.T) {
	for _, cfg := range []ThrottleConfig{{Limit: -1}, {Limit: 1 << 16}, {Limit: 1, MaxAddresses: -1}} {
		if _, err := NewThrottle(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}

func v4(i uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i)
	return netip.AddrFrom4(b)
}

// v6 returns an address in the i-th /64 of 2001:db8::/32.
func v6(i uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint32(b[:], 0x20010db8)
	binary.BigEndian.PutUint32(b[4:], uint32(i))
	b[15] = 1
	return netip.AddrFrom16(b)
}
