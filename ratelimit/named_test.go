package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAllowNamed_IsItsOwnBucketPerKeyAndName(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{})
	search := Named{Name: "search", Limit: 2, Per: 10 * time.Second}
	for i := range 2 {
		if m, n := l.AllowNamed("key_a", 0, search); !m.Allowed || !n.Allowed {
			t.Fatalf("request %d: main %+v named %+v, want both allowed", i+1, m, n)
		}
	}
	m, n := l.AllowNamed("key_a", 0, search)
	want := Result{Limit: 2, Remaining: 0, Reset: 10 * time.Second, RetryAfter: 5 * time.Second}
	if diff := cmp.Diff(want, n); diff != "" || !m.Allowed {
		t.Errorf("third request: named (-want +got):\n%s", diff)
	}
	if h := headersOf(n); h != (headers{"2", "0", "10", "5"}) {
		t.Errorf("deny headers = %+v", h)
	}
	// Another name, another key: their own buckets.
	if _, n := l.AllowNamed("key_a", 0, Named{Name: "upload", Limit: 2, Per: 10 * time.Second}); !n.Allowed {
		t.Error("another name shares the bucket")
	}
	if _, n := l.AllowNamed("key_b", 0, search); !n.Allowed {
		t.Error("another key shares the bucket")
	}
	// It refills over its duration: one request every 5 s.
	c.advance(5 * time.Second)
	if _, n := l.AllowNamed("key_a", 0, search); !n.Allowed || n.Remaining != 0 {
		t.Errorf("after 5 s: %+v, want allowed with 0 remaining", n)
	}
}

func TestAllowNamed_ADenialSpendsNoTokenOfTheOtherBucket(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	search := Named{Name: "search", Limit: 1, Per: time.Hour}
	if m, n := l.AllowNamed("key_a", 3, search); !m.Allowed || !n.Allowed || m.Remaining != 2 || n.Remaining != 0 {
		t.Fatalf("first: main %+v named %+v", m, n)
	}
	// The named limit denies: the main bucket keeps its 2.
	for range 5 {
		m, n := l.AllowNamed("key_a", 3, search)
		if n.Allowed || n.RetryAfter <= 0 {
			t.Fatalf("named = %+v, want denied with a retry-after", n)
		}
		if m.Allowed || m.RetryAfter != 0 || m.Remaining != 2 {
			t.Fatalf("main = %+v, want untouched with 2 remaining and no retry-after", m)
		}
	}
	if r := l.Allow("key_a", 3); !r.Allowed || r.Remaining != 1 {
		t.Fatalf("main after named denials = %+v, want 1 remaining (2 before)", r)
	}
	if r := l.Allow("key_a", 3); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("main = %+v", r)
	}
	// Now the main limit denies: the named bucket of another name keeps
	// its token.
	upload := Named{Name: "upload", Limit: 1, Per: time.Hour}
	for range 3 {
		m, n := l.AllowNamed("key_a", 3, upload)
		if m.Allowed || m.RetryAfter <= 0 || n.Allowed || n.RetryAfter != 0 || n.Remaining != 1 {
			t.Fatalf("main %+v named %+v: want main denying, named untouched with 1", m, n)
		}
	}
	if _, n := l.AllowNamed("key_a", 0, upload); !n.Allowed {
		t.Fatalf("upload after main denials = %+v, want its token still there", n)
	}
}

func TestAllowNamed_FollowsAChangedLimitByTheFractionSpent(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	for range 5 {
		l.AllowNamed("key_a", 0, Named{Name: "s", Limit: 10, Per: time.Minute})
	}
	// Half of 10 per minute spent: half of 100 per hour is left after
	// the change (49 after this request), not a full or an empty bucket.
	_, n := l.AllowNamed("key_a", 0, Named{Name: "s", Limit: 100, Per: time.Hour})
	if !n.Allowed || n.Remaining != 49 {
		t.Errorf("after raising to 100/h: %+v, want 49 remaining", n)
	}
	_, n = l.AllowNamed("key_a", 0, Named{Name: "s", Limit: 2, Per: time.Second})
	if n.Allowed {
		t.Errorf("after lowering to 2/s with 51%% spent: %+v, want denied (under one request of 2 left)", n)
	}
}

func TestAllowNamed_BucketsAreSwept(t *testing.T) {
	l, c := newLimiter(t, LimiterConfig{})
	l.AllowNamed("key_a", 5, Named{Name: "s", Limit: 1, Per: time.Hour})
	if l.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (main and named)", l.Len())
	}
	c.advance(time.Minute)
	l.sweep(c.now())
	if l.Len() != 1 {
		t.Fatalf("Len after a minute = %d, want the named bucket only", l.Len())
	}
	c.advance(time.Hour)
	l.sweep(c.now())
	if l.Len() != 0 {
		t.Fatalf("Len after an hour = %d, want 0", l.Len())
	}
}

func TestFewest_PicksTheLimitClosestToDenying(t *testing.T) {
	a := Result{Allowed: true, Limit: 100, Remaining: 40, Reset: time.Second}
	b := Result{Allowed: true, Limit: 5, Remaining: 3, Reset: time.Second}
	unl := Result{Allowed: true}
	for _, tc := range []struct {
		name       string
		x, y, want Result
	}{
		{"second fewer", a, b, b},
		{"first fewer", b, a, b},
		{"unlimited main", unl, a, a},
		{"unlimited named", a, unl, a},
		{"tie: longer reset", Result{Allowed: true, Limit: 9, Remaining: 3, Reset: time.Second},
			Result{Allowed: true, Limit: 4, Remaining: 3, Reset: time.Minute},
			Result{Allowed: true, Limit: 4, Remaining: 3, Reset: time.Minute}},
	} {
		if got := Fewest(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: Fewest = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestAllowNamed_ConcurrentWithAllowNeverOverspends(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	n := Named{Name: "s", Limit: 50, Per: time.Hour}
	var named, main atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 200 {
				if m, r := l.AllowNamed("key_a", 100, n); m.Allowed && r.Allowed {
					named.Add(1)
					main.Add(1)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range 200 {
				if l.Allow("key_a", 100).Allowed {
					main.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if named.Load() > 50 || main.Load() != 100 {
		t.Errorf("allowed %d named and %d main, want at most 50 and exactly 100", named.Load(), main.Load())
	}
}

// A token a later step gives back (the usage step denied the request) is
// in the bucket again, main and named; a bucket cannot go above full.
func TestReturn_GivesBackTheTokenOfADeniedRequest(t *testing.T) {
	l, _ := newLimiter(t, LimiterConfig{})
	search := Named{Name: "search", Limit: 2, Per: 10 * time.Second}
	for range 2 {
		if m, n := l.AllowNamed("key_a", 3, search); !m.Allowed || !n.Allowed {
			t.Fatal("a request within both limits was denied")
		}
		l.Return("key_a", 3, search)
	}
	// Both requests were given back: the buckets are full again.
	m, n := l.AllowNamed("key_a", 3, search)
	if !m.Allowed || !n.Allowed || m.Remaining != 2 || n.Remaining != 1 {
		t.Fatalf("after two returns: main %+v named %+v, want 2 and 1 remaining", m, n)
	}
	// A return to a full bucket leaves it full, not fuller.
	l.Return("key_a", 3, search)
	l.Return("key_a", 3, search)
	l.Return("key_a", 3, search)
	if r := l.Allow("key_a", 3); r.Remaining != 2 {
		t.Errorf("after returns to a full bucket: %+v, want 2 remaining of 3", r)
	}
	// The main bucket alone (no named limit).
	for range 2 {
		l.Allow("key_b", 2)
	}
	if l.Allow("key_b", 2).Allowed {
		t.Fatal("a third request within 2/min was allowed")
	}
	l.Return("key_b", 2, Named{})
	if !l.Allow("key_b", 2).Allowed {
		t.Error("the returned token was not there")
	}
}
