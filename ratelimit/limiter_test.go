package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

// clock is a hand-driven time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newLimiter(t testing.TB, cfg LimiterConfig) (*Limiter, *clock) {
	t.Helper()
	c := &clock{t: t0}
	cfg.Now = c.now
	l, err := NewLimiter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, c
}

type headers struct{ Limit, Remaining, Reset, RetryAfter string }

func headersOf(r Result) headers {
	var h headers
	h.Limit, h.Remaining, h.Reset, h.RetryAfter = r.Headers()
	return h
}

func TestLimiter_AllowsExactlyPerMinuteThenDenies(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{})
	s := 12 * time.Second // 60 s / 5
	want := []struct {
		res Result
		hdr headers
	}{
		{Result{Allowed: true, Limit: 5, Remaining: 4, Reset: 1 * s}, headers{"5", "4", "12", ""}},
		{Result{Allowed: true, Limit: 5, Remaining: 3, Reset: 2 * s}, headers{"5", "3", "24", ""}},
		{Result{Allowed: true, Limit: 5, Remaining: 2, Reset: 3 * s}, headers{"5", "2", "36", ""}},
		{Result{Allowed: true, Limit: 5, Remaining: 1, Reset: 4 * s}, headers{"5", "1", "48", ""}},
		{Result{Allowed: true, Limit: 5, Remaining: 0, Reset: 5 * s}, headers{"5", "0", "60", ""}},
		{Result{Allowed: false, Limit: 5, Remaining: 0, Reset: 5 * s, RetryAfter: s}, headers{"5", "0", "60", "12"}},
		{Result{Allowed: false, Limit: 5, Remaining: 0, Reset: 5 * s, RetryAfter: s}, headers{"5", "0", "60", "12"}},
	}
	for i, w := range want {
		got := l.Allow("key_a", 5)
		if diff := cmp.Diff(w.res, got); diff != "" {
			t.Errorf("request %d: result (-want +got):\n%s", i+1, diff)
		}
		if diff := cmp.Diff(w.hdr, headersOf(got)); diff != "" {
			t.Errorf("request %d: headers (-want +got):\n%s", i+1, diff)
		}
	}

	// Part-way through the refill the headers round up.
	c.advance(7*time.Second + 500*time.Millisecond)
	got := l.Allow("key_a", 5)
	if diff := cmp.Diff(headers{"5", "0", "53", "5"}, headersOf(got)); diff != "" {
		t.Errorf("after 7.5 s: headers (-want +got):\n%s", diff)
	}

	// Another key has its own bucket.
	if got := l.Allow("key_b", 5); !got.Allowed || got.Remaining != 4 {
		t.Errorf("other key: got %+v, want allowed with 4 remaining", got)
	}
}

func TestLimiter_RefillsOneTokenEverySixtyOverNSeconds(t *testing.T) {
	for _, n := range []int{1, 7, 60, 100, 300_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			l, c := newLimiter(t, LimiterConfig{})
			for i := range n {
				if r := l.Allow("key_a", n); !r.Allowed || r.Remaining != n-1-i {
					t.Fatalf("request %d of %d: got %+v", i+1, n, r)
				}
			}
			r := l.Allow("key_a", n)
			if r.Allowed {
				t.Fatalf("request %d allowed", n+1)
			}
			step := time.Minute / time.Duration(n)
			if r.RetryAfter != step {
				t.Errorf("retry after %v, want %v", r.RetryAfter, step)
			}
			c.advance(step - time.Nanosecond)
			if r := l.Allow("key_a", n); r.Allowed {
				t.Fatalf("allowed 1 ns before a token is back: %+v", r)
			} else if r.RetryAfter != time.Nanosecond || headersOf(r).RetryAfter != "1" {
				t.Errorf("1 ns before: retry after %v (header %q), want 1ns (\"1\")", r.RetryAfter, headersOf(r).RetryAfter)
			}
			c.advance(time.Nanosecond)
			if r := l.Allow("key_a", n); !r.Allowed || r.Remaining != 0 {
				t.Fatalf("after 60/%d s: got %+v, want one more allowed", n, r)
			}
			if r := l.Allow("key_a", n); r.Allowed {
				t.Fatalf("second request after one refill allowed: %+v", r)
			}
			// A minute idle refills the whole bucket.
			c.advance(time.Minute)
			if r := l.Allow("key_a", n); !r.Allowed || r.Remaining != n-1 {
				t.Fatalf("after a minute: got %+v, want %d remaining", r, n-1)
			}
		})
	}
}

func TestLimiter_UnlimitedAlwaysAllowsAndTracksNothing(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	for _, perMinute := range []int{0, -1} {
		for range 1000 {
			r := l.Allow("key_a", perMinute)
			if diff := cmp.Diff(Result{Allowed: true}, r); diff != "" {
				t.Fatalf("perMinute %d (-want +got):\n%s", perMinute, diff)
			}
			if diff := cmp.Diff(headers{}, headersOf(r)); diff != "" {
				t.Fatalf("perMinute %d: headers (-want +got):\n%s", perMinute, diff)
			}
		}
	}
	if n := l.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

func TestLimiter_LimitChangeKeepsTheFractionSpent(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{})
	for range 50 {
		l.Allow("key_a", 100) // half of 100 spent: 30 s of refill owed
	}
	// Lowered to 10: half spent is 5 left, this request takes one.
	if r := l.Allow("key_a", 10); !r.Allowed || r.Remaining != 4 || r.Reset != 36*time.Second {
		t.Errorf("lowered to 10: got %+v, want allowed, 4 remaining, reset 36s", r)
	}
	// Raised to 1000: 36 s owed is 600 of 1000 spent; this takes one.
	if r := l.Allow("key_a", 1000); !r.Allowed || r.Remaining != 399 {
		t.Errorf("raised to 1000: got %+v, want allowed, 399 remaining", r)
	}
	// Lowered to 1 with part of a minute owed: denied until it is full.
	r := l.Allow("key_a", 1)
	if r.Allowed || r.RetryAfter != 36*time.Second+60*time.Millisecond {
		t.Errorf("lowered to 1: got %+v, want denied, retry after 36.06s", r)
	}
	c.advance(r.RetryAfter)
	if r := l.Allow("key_a", 1); !r.Allowed {
		t.Errorf("lowered to 1, after retry-after: got %+v, want allowed", r)
	}
}

func TestLimiter_IdleBucketsGoAwayAfterAMinute(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{})
	const keys = 10_000
	for i := range keys {
		l.Allow(fmt.Sprintf("key_%d", i), 1) // perMinute 1: full again after 60 s
	}
	if n := l.Len(); n != keys {
		t.Fatalf("Len = %d, want %d", n, keys)
	}
	c.advance(time.Minute - time.Nanosecond)
	l.sweep(c.now())
	if n := l.Len(); n != keys {
		t.Fatalf("just under a minute: Len = %d, want %d (none full yet)", n, keys)
	}
	c.advance(time.Nanosecond)
	l.sweep(c.now())
	if n := l.Len(); n != 0 {
		t.Fatalf("after a minute: Len = %d, want 0", n)
	}

	// Without Run, inserts sweep their own shard once per sweep period.
	for i := range keys {
		l.Allow(fmt.Sprintf("key_%d", i), 1)
	}
	c.advance(time.Minute)
	for i := range 5000 { // enough new keys to reach every shard
		l.Allow(fmt.Sprintf("new_%d", i), 1)
	}
	if n := l.Len(); n != 5000 {
		t.Fatalf("inserts after a minute: Len = %d, want 5000 (old buckets swept)", n)
	}
}

func TestLimiter_CapHoldsAndEvictsTheFullest(t *testing.T) {
	const maxKeys = 640 // 10 a shard
	l, _ := newLimiter(t, LimiterConfig{MaxKeys: maxKeys})
	for range 50 {
		l.Allow("key_hot", 100)
	}
	for i := range 100_000 {
		l.Allow(fmt.Sprintf("key_%d", i), 100)
		if i%10_000 == 0 {
			if n := l.Len(); n > maxKeys {
				t.Fatalf("after %d keys: Len = %d, over the cap %d", i+1, n, maxKeys)
			}
		}
	}
	if n := l.Len(); n > maxKeys {
		t.Fatalf("Len = %d, over the cap %d", n, maxKeys)
	}
	// The spray's buckets were fuller than the hot key's, so they went.
	if r := l.Allow("key_hot", 100); r.Remaining != 49 {
		t.Errorf("hot key after the spray: got %+v, want 49 remaining (its bucket kept)", r)
	}
}

func TestLimiter_ConcurrentCallersGetExactlyTheLimit(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{MaxKeys: 1000})
	const (
		keys      = 100
		perMinute = 500
		workers   = 8
		calls     = 100 // per worker and key
	)
	var (
		mu      sync.Mutex
		allowed = map[string]int{}
		wg      sync.WaitGroup
	)
	now := c.now()
	for w := range workers {
		wg.Go(func() {
			mine := map[string]int{}
			for i := range keys * calls {
				k := fmt.Sprintf("key_%d", (i+w)%keys)
				if l.allow(k, perMinute, now).Allowed {
					mine[k]++
				}
				if i%1000 == 0 {
					l.Len()
					l.sweep(now)
				}
			}
			mu.Lock()
			for k, n := range mine {
				allowed[k] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range keys {
		if k := fmt.Sprintf("key_%d", i); allowed[k] != perMinute {
			t.Errorf("%s: %d allowed, want %d", k, allowed[k], perMinute)
		}
	}
}

func TestLimiter_AllowOfAKnownKeyDoesNotAllocate(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	l.Allow("key_a", 1<<30)
	if n := testing.AllocsPerRun(1000, func() { l.Allow("key_a", 1<<30) }); n != 0 {
		t.Errorf("Allow allocates %v times", n)
	}
}

func TestLimiter_Metrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l, _ := newLimiter(t, LimiterConfig{Registerer: reg, MaxKeys: 64})
	l.Allow("key_a", 1)
	l.Allow("key_a", 1)
	l.Allow("key_a", 1)
	for i := range 1000 {
		l.Allow(fmt.Sprint("key_", i), 1)
	}
	got := gather(t, reg)
	want := map[string]float64{
		"keygate_ratelimit_buckets":         64,
		"keygate_ratelimit_denied_total":    2,
		"keygate_ratelimit_evictions_total": 1001 - 64,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if _, err := NewLimiter(LimiterConfig{Registerer: reg}); err == nil {
		t.Error("a second Limiter on one registry: no error")
	}
}

func TestLimiter_RunReturnsWhenTheContextEnds(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestNewLimiter_RejectsANegativeCap(t *testing.T) {
	if _, err := NewLimiter(LimiterConfig{MaxKeys: -1}); err == nil {
		t.Error("MaxKeys -1: no error")
	}
}

// gather returns every unlabelled gauge and counter in reg by name.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = value(m)
		}
	}
	return got
}

func value(m *dto.Metric) float64 {
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}
