package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keygate/keygate"
)

// liveStore is a fakeStore that also streams its live hashes.
type liveStore struct {
	*fakeStore
	streams int
}

func (l *liveStore) LiveTokenHashes(_ context.Context, _ time.Time, fn func(keygate.Hash) error) error {
	l.mu.Lock()
	hs := make([]keygate.Hash, 0, len(l.recs))
	for h := range l.recs {
		hs = append(hs, h)
	}
	l.streams++
	l.mu.Unlock()
	for _, h := range hs {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

func newFilterCache(t *testing.T, ls *liveStore, rate float64, healthy func() bool) *Cache {
	t.Helper()
	c, err := New(ls, Config{MaxBytes: 1 << 20, TTL: time.Minute, NegativeTTL: time.Minute,
		Live: ls, UnknownLookupRate: rate, Healthy: healthy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A flood of unknown hashes reaches the store only within the budget;
// live tokens are looked up as usual, and the skipped answers are not
// cached (issue 15).
func TestView_UnknownHashesDrawOnTheLookupBudget(t *testing.T) {
	ls := &liveStore{fakeStore: newFakeStore()}
	live := hashOf("live")
	ls.set(live, record("key_live", "acme"))
	c := newFilterCache(t, ls, 5, nil)
	if _, err := c.BuildFilter(context.Background()); err != nil {
		t.Fatal(err)
	}
	const flood = 2000
	for i := 0; i < flood; i++ {
		if _, err := c.View(context.Background(), hashOf(fmt.Sprint("forged", i))); !errors.Is(err, keygate.ErrNotFound) {
			t.Fatalf("forged token %d: %v, want ErrNotFound", i, err)
		}
	}
	// The burst is the budget of one second (5); the test runs in well
	// under a second, so a few more at most. The filter's false
	// positives (≤ 1 %) are looked up too.
	if q := ls.queries.Load(); q > 5+3+flood/100*2 {
		t.Errorf("%d forged tokens made %d store queries; want the budget plus the filter's false positives", flood, q)
	}
	if skipped := testutil.ToFloat64(c.m.unknownSkp); skipped < flood*9/10 {
		t.Errorf("skipped = %v, want most of %d", skipped, flood)
	}
	if rec, err := c.View(context.Background(), live); err != nil || rec.ID() != "key_live" {
		t.Fatalf("live key during the flood: %v, %v", rec, err)
	}
}

// A key created after the filter was built is found as soon as its event
// is applied, whatever the budget (issue 15: every replica honours a new
// key within a second, the creating one at once).
func TestView_CreatedKeyIsKnownOnceItsEventIsApplied(t *testing.T) {
	ls := &liveStore{fakeStore: newFakeStore()}
	c := newFilterCache(t, ls, 1, nil)
	if _, err := c.BuildFilter(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ { // spend the budget
		_, _ = c.View(context.Background(), hashOf(fmt.Sprint("forged", i)))
	}
	h := hashOf("new")
	ls.set(h, record("key_new", "acme"))
	if _, err := c.View(context.Background(), h); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("before its event: %v, want the budget's ErrNotFound", err)
	}
	c.Apply(keygate.Event{Kind: keygate.EventKeyCreated, Hashes: []keygate.Hash{h}})
	if rec, err := c.View(context.Background(), h); err != nil || rec.ID() != "key_new" {
		t.Fatalf("after its event: %v, %v; want the key", rec, err)
	}
}

// While the notification connection is down a key created meanwhile may be
// missing from the filter: a skipped lookup is undecidable, not unknown.
func TestView_SkippedWhileUnhealthyIsUnavailable(t *testing.T) {
	ls := &liveStore{fakeStore: newFakeStore()}
	var mu sync.Mutex
	healthy := true
	c := newFilterCache(t, ls, 1, func() bool { mu.Lock(); defer mu.Unlock(); return healthy })
	if _, err := c.BuildFilter(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_, _ = c.View(context.Background(), hashOf(fmt.Sprint("forged", i)))
	}
	mu.Lock()
	healthy = false
	mu.Unlock()
	if _, err := c.View(context.Background(), hashOf("another")); !errors.Is(err, ErrUnknownSkipped) {
		t.Errorf("skipped while unhealthy: %v, want ErrUnknownSkipped", err)
	}
}

// Before the filter is built, and after a purge until it is built again,
// nothing is ruled out.
func TestView_NoFilterRulesNothingOut(t *testing.T) {
	ls := &liveStore{fakeStore: newFakeStore()}
	c := newFilterCache(t, ls, 1, nil)
	for i := 0; i < 20; i++ {
		_, _ = c.View(context.Background(), hashOf(fmt.Sprint("before", i)))
	}
	if q := ls.queries.Load(); q != 20 {
		t.Errorf("before the build: %d queries, want 20", q)
	}
	if _, err := c.BuildFilter(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Purge()
	before := ls.queries.Load()
	for i := 0; i < 20; i++ {
		_, _ = c.View(context.Background(), hashOf(fmt.Sprint("after", i)))
	}
	if q := ls.queries.Load() - before; q != 20 {
		t.Errorf("after a purge: %d queries, want 20", q)
	}
}

// The filter never forgets a hash added while a build streams, and the
// measured false-positive rate stays within SPEC's 1 %.
func TestFilter_BuildKeepsConcurrentAddsAndItsRate(t *testing.T) {
	ls := &liveStore{fakeStore: newFakeStore()}
	for i := 0; i < 50_000; i++ {
		ls.recs[hashOf(fmt.Sprint("k", i))] = record("key", "acme")
	}
	var f Filter
	added := make(chan keygate.Hash, 1)
	slow := &addDuringBuild{LiveHashes: ls, onFirst: func() {
		h := hashOf("added-during-build")
		f.Add([]keygate.Hash{h})
		added <- h
	}}
	if _, err := f.Build(context.Background(), slow, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := <-added
	if !f.Has(&h) {
		t.Error("a hash added during the build is missing from the new filter")
	}
	for i := 0; i < 50_000; i++ {
		h := hashOf(fmt.Sprint("k", i))
		if !f.Has(&h) {
			t.Fatalf("live hash %d missing", i)
		}
	}
	fp := 0
	const probes = 100_000
	for i := 0; i < probes; i++ {
		h := hashOf(fmt.Sprint("absent", i))
		if f.Has(&h) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.01 {
		t.Errorf("false-positive rate %.4f, want ≤ 0.01", rate)
	}
}

type addDuringBuild struct {
	LiveHashes
	onFirst func()
	once    sync.Once
}

func (a *addDuringBuild) LiveTokenHashes(ctx context.Context, now time.Time, fn func(keygate.Hash) error) error {
	return a.LiveHashes.LiveTokenHashes(ctx, now, func(h keygate.Hash) error {
		a.once.Do(a.onFirst)
		return fn(h)
	})
}

type recentStore struct {
	*fakeStore
	order  []keygate.Hash
	during func()
}

func (r *recentStore) RecentKeys(_ context.Context, n int, _ time.Time, fn func(keygate.Hash, *keygate.KeyRecord) error) error {
	for i, h := range r.order {
		if i == n {
			break
		}
		if i == 1 && r.during != nil {
			r.during()
		}
		rec := r.recs[h]
		if err := fn(h, &rec); err != nil {
			return err
		}
	}
	return nil
}

// A replica restarted under load starts warm: the preloaded keys are hits,
// without a store query each (issue 15).
func TestPreload_WarmsTheCache(t *testing.T) {
	rs := &recentStore{fakeStore: newFakeStore()}
	for i := 0; i < 100; i++ {
		h := hashOf(fmt.Sprint("k", i))
		rs.set(h, record(fmt.Sprint("key_", i), "acme"))
		rs.order = append(rs.order, h)
	}
	c := newTestCache(t, rs, nil)
	n, err := c.Preload(context.Background(), rs, 60)
	if err != nil || n != 60 {
		t.Fatalf("Preload = %d, %v; want 60", n, err)
	}
	for i := 0; i < 60; i++ {
		if _, err := c.View(context.Background(), rs.order[i]); err != nil {
			t.Fatal(err)
		}
	}
	if q := rs.queries.Load(); q != 0 {
		t.Errorf("%d store queries for preloaded keys, want 0", q)
	}
}

// An event applied while the preload streams may postdate what it read:
// nothing it loaded may be served afterwards.
func TestPreload_RacingAnEventLoadsNothing(t *testing.T) {
	rs := &recentStore{fakeStore: newFakeStore()}
	for i := 0; i < 3; i++ {
		h := hashOf(fmt.Sprint("k", i))
		rs.set(h, record(fmt.Sprint("key_", i), "acme"))
		rs.order = append(rs.order, h)
	}
	c := newTestCache(t, rs, nil)
	rs.during = func() {
		c.Apply(keygate.Event{Kind: keygate.EventKeyRevoked, Hashes: []keygate.Hash{rs.order[0]}})
	}
	if n, _ := c.Preload(context.Background(), rs, 3); n != 0 {
		t.Errorf("Preload racing an event reported %d keys loaded, want 0", n)
	}
	for _, h := range rs.order {
		_, _ = c.View(context.Background(), h)
	}
	if q := rs.queries.Load(); q != 3 {
		t.Errorf("%d store queries after a raced preload, want 3 (nothing served from it)", q)
	}
}
