package cache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keygate/keygate"
)

// fakeStore is a Lookup over a map whose records a test can change, counting
// the queries it answers.
type fakeStore struct {
	mu      sync.Mutex
	recs    map[keygate.Hash]keygate.KeyRecord
	queries atomic.Int64
	err     error
	// gate, when set, is received from before answering: a test holds a
	// load in flight with it.
	gate chan struct{}
	// entered is signalled when a query starts, if set.
	entered chan struct{}
}

func newFakeStore() *fakeStore { return &fakeStore{recs: map[keygate.Hash]keygate.KeyRecord{}} }

func (f *fakeStore) LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	f.queries.Add(1)
	f.mu.Lock()
	rec, ok := f.recs[h]
	err := f.err
	gate, entered := f.gate, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, keygate.ErrNotFound
	}
	return &rec, nil
}

func (f *fakeStore) set(h keygate.Hash, rec keygate.KeyRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[h] = rec
}

// heldLoad starts a lookup of h (stored as rec) on a new cache over fs
// and returns once the load has read rec, while the store still holds
// its answer: release lets it answer, done is closed when the lookup
// returns. Later queries are not held (fs.replace).
func heldLoad(t *testing.T, fs *fakeStore, h keygate.Hash, rec keygate.KeyRecord) (c *Cache, release func(), done <-chan struct{}) {
	t.Helper()
	fs.set(h, rec)
	gate := make(chan struct{})
	fs.gate = gate
	fs.entered = make(chan struct{}, 1)
	c = newTestCache(t, fs, nil)
	d := make(chan struct{})
	go func() {
		defer close(d)
		_, _ = c.View(context.Background(), h)
	}()
	<-fs.entered
	return c, func() { close(gate) }, d
}

// replace changes h's record in the store, as a write that commits while
// a held load is in flight, and holds no later query.
func (f *fakeStore) replace(h keygate.Hash, rec keygate.KeyRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs[h] = rec
	f.gate, f.entered = nil, nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func hashOf(s string) keygate.Hash { return sha256.Sum256([]byte(s)) }

func record(id, org string) keygate.KeyRecord {
	return keygate.KeyRecord{Key: keygate.Key{ID: id, OrgID: org, Scopes: []string{"read"}}}
}

func newTestCache(t *testing.T, next Lookup, clock *fakeClock) *Cache {
	t.Helper()
	cfg := Config{MaxBytes: 1 << 20, TTL: time.Minute, NegativeTTL: 10 * time.Second}
	if clock != nil {
		cfg.Now = clock.Now
	}
	c, err := New(next, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// lookupSettled looks h up until ristretto has stored what the first load
// set (its Set is asynchronous), so that a test can count queries.
func lookupSettled(t *testing.T, c *Cache, h keygate.Hash) {
	t.Helper()
	_, _ = c.View(context.Background(), h)
	c.store.Wait()
}

func TestLookup_ConcurrentMissesMakeOneQuery(t *testing.T) {
	fs := newFakeStore()
	h := hashOf("k1")
	fs.set(h, record("key_1", "acme"))
	fs.gate = make(chan struct{})
	fs.entered = make(chan struct{}, 1)
	c := newTestCache(t, fs, nil)

	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	var started sync.WaitGroup
	started.Add(n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			rec, err := c.View(context.Background(), h)
			if err == nil && rec.ID() != "key_1" {
				err = fmt.Errorf("got key %q", rec.ID())
			}
			errs <- err
		}()
	}
	started.Wait()
	<-fs.entered
	// Give every goroutine time to reach the flight before the query ends.
	time.Sleep(50 * time.Millisecond)
	close(fs.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.queries.Load(); got != 1 {
		t.Errorf("store queries = %d, want 1", got)
	}
}

func TestLookup_HitAfterLoad(t *testing.T) {
	fs := newFakeStore()
	h := hashOf("k1")
	fs.set(h, record("key_1", "acme"))
	c := newTestCache(t, fs, nil)
	lookupSettled(t, c, h)
	for i := 0; i < 10; i++ {
		rec, err := c.View(context.Background(), h)
		if err != nil || rec.ID() != "key_1" {
			t.Fatalf("lookup = %v, %v", rec, err)
		}
	}
	if got := fs.queries.Load(); got != 1 {
		t.Errorf("store queries = %d, want 1", got)
	}
}

func TestLookup_UnknownHashIsCachedNegativelyUntilTTL(t *testing.T) {
	fs := newFakeStore()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newTestCache(t, fs, clock)
	h := hashOf("unknown")
	lookupSettled(t, c, h)
	if _, err := c.View(context.Background(), h); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if got := fs.queries.Load(); got != 1 {
		t.Fatalf("queries within the negative TTL = %d, want 1", got)
	}
	clock.Advance(10 * time.Second)
	if _, err := c.View(context.Background(), h); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	if got := fs.queries.Load(); got != 2 {
		t.Errorf("queries after the negative TTL = %d, want 2", got)
	}
}

func TestLookup_PositiveEntryReloadedAfterTTL(t *testing.T) {
	fs := newFakeStore()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c := newTestCache(t, fs, clock)
	h := hashOf("k1")
	fs.set(h, record("key_1", "acme"))
	lookupSettled(t, c, h)
	clock.Advance(59 * time.Second)
	lookupSettled(t, c, h)
	if got := fs.queries.Load(); got != 1 {
		t.Fatalf("queries before TTL = %d, want 1", got)
	}
	clock.Advance(time.Second)
	lookupSettled(t, c, h)
	if got := fs.queries.Load(); got != 2 {
		t.Errorf("queries after TTL = %d, want 2", got)
	}
}

func TestLookup_StoreErrorIsNotCached(t *testing.T) {
	fs := newFakeStore()
	fs.err = errors.New("connection refused")
	c := newTestCache(t, fs, nil)
	h := hashOf("k1")
	for i := 0; i < 3; i++ {
		_, err := c.View(context.Background(), h)
		if err == nil || errors.Is(err, keygate.ErrNotFound) {
			t.Fatalf("err = %v, want the store's error", err)
		}
		c.store.Wait()
	}
	if got := fs.queries.Load(); got != 3 {
		t.Errorf("queries = %d, want 3 (errors are never cached)", got)
	}
}

func TestApply_KeyEventInvalidatesItsHashes(t *testing.T) {
	fs := newFakeStore()
	c := newTestCache(t, fs, nil)
	h1, h2, other := hashOf("k1"), hashOf("k2"), hashOf("k3")
	for i, h := range []keygate.Hash{h1, h2, other} {
		fs.set(h, record(fmt.Sprint("key_", i), "acme"))
		lookupSettled(t, c, h)
	}
	c.Apply(keygate.Event{Kind: keygate.EventKeyRolled, OrgID: "acme", KeyID: "key_0", Hashes: []keygate.Hash{h1, h2}})
	before := fs.queries.Load()
	lookupSettled(t, c, h1)
	lookupSettled(t, c, h2)
	if got := fs.queries.Load() - before; got != 2 {
		t.Errorf("queries for invalidated hashes = %d, want 2", got)
	}
	before = fs.queries.Load()
	lookupSettled(t, c, other)
	if got := fs.queries.Load() - before; got != 0 {
		t.Errorf("queries for an untouched hash = %d, want 0", got)
	}
}

func TestApply_NegativeEntryInvalidatedByCreate(t *testing.T) {
	fs := newFakeStore()
	c := newTestCache(t, fs, nil)
	h := hashOf("new")
	lookupSettled(t, c, h) // cached as unknown
	fs.set(h, record("key_new", "acme"))
	c.Apply(keygate.Event{Kind: keygate.EventKeyCreated, OrgID: "acme", KeyID: "key_new", Hashes: []keygate.Hash{h}})
	rec, err := c.View(context.Background(), h)
	if err != nil || rec.ID() != "key_new" {
		t.Fatalf("lookup after create = %v, %v; want key_new", rec, err)
	}
}

func TestApply_OrganizationEventInvalidatesItsKeysOnly(t *testing.T) {
	fs := newFakeStore()
	c := newTestCache(t, fs, nil)
	a, b := hashOf("a"), hashOf("b")
	fs.set(a, record("key_a", "acme"))
	fs.set(b, record("key_b", "globex"))
	lookupSettled(t, c, a)
	lookupSettled(t, c, b)

	disabled := record("key_a", "acme")
	disabled.OrgDisabled = true
	fs.set(a, disabled)
	c.Apply(keygate.Event{Kind: keygate.EventOrgDisabled, OrgID: "acme"})

	rec, err := c.View(context.Background(), a)
	if err != nil || !rec.OrgDisabled() {
		t.Fatalf("acme key after disable = %+v, %v; want OrgDisabled", rec, err)
	}
	before := fs.queries.Load()
	lookupSettled(t, c, b)
	if got := fs.queries.Load() - before; got != 0 {
		t.Errorf("queries for another organization's key = %d, want 0", got)
	}
}

func TestPurge_DropsEverything(t *testing.T) {
	fs := newFakeStore()
	c := newTestCache(t, fs, nil)
	hs := []keygate.Hash{hashOf("a"), hashOf("b"), hashOf("nope")}
	fs.set(hs[0], record("key_a", "acme"))
	fs.set(hs[1], record("key_b", "acme"))
	for _, h := range hs {
		lookupSettled(t, c, h)
	}
	c.Purge()
	before := fs.queries.Load()
	for _, h := range hs {
		lookupSettled(t, c, h)
	}
	if got := fs.queries.Load() - before; got != 3 {
		t.Errorf("queries after purge = %d, want 3", got)
	}
}

// A load that began before an invalidation must not serve its result after
// the invalidation returned, however late ristretto stores it.
func TestLookup_LoadStartedBeforeInvalidationIsNotServedAfter(t *testing.T) {
	fs := newFakeStore()
	h := hashOf("k1")
	c, release, done := heldLoad(t, fs, h, record("key_1", "acme")) // reads the old record

	revoked := record("key_1", "acme")
	now := time.Now()
	revoked.Key.RevokedAt = &now
	fs.replace(h, revoked)
	c.Apply(keygate.Event{Kind: keygate.EventKeyRevoked, Hashes: []keygate.Hash{h}})

	// A lookup after the invalidation must not join the old flight.
	rec, err := c.View(context.Background(), h)
	if err != nil || rec.Status(time.Now()) != keygate.StatusRevoked {
		t.Fatalf("lookup after invalidation = %+v, %v; want the revoked record", rec, err)
	}
	release() // the old load now returns the active record and stores it
	<-done
	c.store.Wait()
	for i := 0; i < 3; i++ {
		rec, err = c.View(context.Background(), h)
		if err != nil || rec.Status(time.Now()) != keygate.StatusRevoked {
			t.Fatalf("lookup after the old load stored its result = %+v, %v; want the revoked record", rec, err)
		}
		c.store.Wait()
	}
}

// Under -race: writers revoke keys and apply the event while readers hammer
// lookups; once Apply has returned, no lookup that starts afterwards may see
// the key active.
func TestLookup_NoResurrectionUnderConcurrency(t *testing.T) {
	fs := newFakeStore()
	c := newTestCache(t, fs, nil)
	const keys = 50
	hs := make([]keygate.Hash, keys)
	for i := range hs {
		hs[i] = hashOf(fmt.Sprint("key", i))
		fs.set(hs[i], record(fmt.Sprint("key_", i), "acme"))
	}
	var revokedDone [keys]atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var violations atomic.Int64
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := r; ctx.Err() == nil; i++ {
				k := i % keys
				wasRevoked := revokedDone[k].Load()
				rec, err := c.View(ctx, hs[k])
				if err != nil {
					continue
				}
				if wasRevoked && rec.Status(time.Now()) != keygate.StatusRevoked {
					violations.Add(1)
				}
			}
		}(r)
	}
	for k := 0; k < keys; k++ {
		time.Sleep(time.Millisecond)
		rec := record(fmt.Sprint("key_", k), "acme")
		now := time.Now()
		rec.Key.RevokedAt = &now
		fs.set(hs[k], rec)
		c.Apply(keygate.Event{Kind: keygate.EventKeyRevoked, Hashes: []keygate.Hash{hs[k]}})
		revokedDone[k].Store(true)
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	wg.Wait()
	if v := violations.Load(); v != 0 {
		t.Errorf("%d lookups saw a key active after its revocation was applied", v)
	}
}

func TestCache_CostStaysWithinMaxBytes(t *testing.T) {
	fs := newFakeStore()
	const maxBytes = 64 << 10
	c, err := New(fs, Config{MaxBytes: maxBytes, TTL: time.Minute, NegativeTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 2000; i++ {
		h := hashOf(fmt.Sprint(i))
		fs.set(h, record(fmt.Sprint("key_", i), "acme"))
		_, _ = c.View(context.Background(), h)
	}
	c.store.Wait()
	m := c.store.Metrics
	if held := m.CostAdded() - m.CostEvicted(); held > maxBytes {
		t.Errorf("cache holds %d bytes, over its bound of %d", held, maxBytes)
	}
	if m.KeysEvicted() == 0 && m.SetsRejected() == 0 {
		t.Errorf("2000 entries fit into %d bytes without an eviction: costs are not counted", maxBytes)
	}
}

func TestNew_RejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{MaxBytes: 0, TTL: time.Minute, NegativeTTL: time.Second},
		{MaxBytes: 1 << 20, TTL: 0, NegativeTTL: time.Second},
		{MaxBytes: 1 << 20, TTL: time.Minute, NegativeTTL: 0},
	} {
		if _, err := New(newFakeStore(), cfg); err == nil {
			t.Errorf("New(%+v) = nil error, want one", cfg)
		}
	}
}

func TestLookup_PastMaxStalenessAsksTheStore(t *testing.T) {
	fs := newFakeStore()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c, err := New(fs, Config{MaxBytes: 1 << 20, TTL: time.Hour, NegativeTTL: time.Hour, MaxStaleness: 30 * time.Second, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := hashOf("k1")
	fs.set(h, record("key_1", "acme"))
	lookupSettled(t, c, h)

	clock.Advance(30 * time.Second) // at the bound: still served from cache
	lookupSettled(t, c, h)
	if got := fs.queries.Load(); got != 1 {
		t.Fatalf("queries within max staleness = %d, want 1", got)
	}
	if c.Stale() {
		t.Error("Stale() at the bound = true")
	}

	clock.Advance(time.Second) // past it: every lookup asks the store
	lookupSettled(t, c, h)
	lookupSettled(t, c, h)
	if got := fs.queries.Load(); got != 3 {
		t.Fatalf("queries past max staleness = %d, want 3", got)
	}
	if !c.Stale() {
		t.Error("Stale() past the bound = false")
	}

	fs.mu.Lock()
	fs.err = errors.New("connection refused")
	fs.mu.Unlock()
	if _, err := c.View(context.Background(), h); err == nil || errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("stale cache and a down store: err = %v, want the store's error", err)
	}

	c.MarkSynced(clock.Now()) // the events log was read again
	rec, err := c.View(context.Background(), h)
	if err != nil || rec.ID() != "key_1" {
		t.Fatalf("after a sync: %v, %v; want the cached record", rec, err)
	}
}

// A Check that arrives after an organization event or a purge was applied
// must not join a load that began before it: that load may carry the
// organization's old state (issue 12, item 1).
func TestLookup_LoadStartedBeforeOrgEventOrPurgeIsNotJoinedAfter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		event func(c *Cache)
	}{
		{"organization disabled", func(c *Cache) {
			c.Apply(keygate.Event{Kind: keygate.EventOrgDisabled, OrgID: "acme"})
		}},
		{"purge", func(c *Cache) { c.Purge() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeStore()
			h := hashOf("k1")
			c, release, done := heldLoad(t, fs, h, record("key_1", "acme")) // reads the enabled organization

			disabled := record("key_1", "acme")
			disabled.OrgDisabled = true
			fs.replace(h, disabled)
			tc.event(c)

			got := make(chan *keygate.KeyView, 1)
			go func() {
				rec, _ := c.View(context.Background(), h)
				got <- rec
			}()
			select {
			case rec := <-got:
				if rec == nil || !rec.OrgDisabled() {
					t.Fatalf("lookup after the event = %+v; want the disabled organization", rec)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("lookup after the event joined the load still held open before it")
			}
			release()
			<-done
			c.store.Wait()
			if rec, err := c.View(context.Background(), h); err != nil || !rec.OrgDisabled() {
				t.Fatalf("lookup after the old load returned = %+v, %v; want the disabled organization", rec, err)
			}
		})
	}
}

// Invalidations are not evictions: keygate_cache_evictions_total counts
// only what the cache dropped for room or at its TTL, and admission
// rejections are counted apart (issue 13, item 11).
func TestMetrics_EvictionsAreNotInvalidationsOrRejections(t *testing.T) {
	fs := newFakeStore()
	reg := prometheus.NewRegistry()
	c, err := New(fs, Config{MaxBytes: 64 << 10, TTL: time.Minute, NegativeTTL: time.Minute, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var hashes []keygate.Hash
	for i := 0; i < 3; i++ {
		h := hashOf(fmt.Sprint("k", i))
		fs.set(h, record(fmt.Sprint("key_", i), "acme"))
		lookupSettled(t, c, h)
		hashes = append(hashes, h)
	}
	c.Apply(keygate.Event{Kind: keygate.EventKeyRevoked, Hashes: hashes})
	c.store.Wait()
	if got := testutil.ToFloat64(c.m.evictions.WithLabelValues("capacity")) + testutil.ToFloat64(c.m.evictions.WithLabelValues("expired")); got != 0 {
		t.Errorf("evictions after 3 invalidations = %v, want 0", got)
	}
	if got := testutil.ToFloat64(c.m.invalidated); got != 3 {
		t.Errorf("invalidations = %v, want 3", got)
	}
	// Far more keys than fit: the cache evicts for room or rejects.
	for i := 0; i < 2000; i++ {
		h := hashOf(fmt.Sprint("fill", i))
		fs.set(h, record(fmt.Sprint("key_fill", i), "acme"))
		_, _ = c.View(context.Background(), h)
	}
	c.store.Wait()
	capacity := testutil.ToFloat64(c.m.evictions.WithLabelValues("capacity"))
	rejected := testutil.ToFloat64(c.m.rejections)
	if capacity == 0 {
		t.Errorf("after overfilling: capacity evictions %v (rejections %v); want some", capacity, rejected)
	}
	for _, name := range []string{"keygate_cache_evictions_total", "keygate_cache_rejections_total"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s not registered: %d, %v", name, n, err)
		}
	}
}
