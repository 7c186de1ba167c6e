// Package cache remembers key records in process: a ristretto cache keyed by
// token hash, in front of the store, satisfying the same lookup interface.
// It is invalidated by the key-events log (see Follower).
//
// Correctness does not rest on ristretto's asynchronous Set and Del: every
// entry remembers the generation of its hash bucket, of its organization and
// of the whole cache as they were when its load started, and a hit whose
// generations moved since is a miss. So a load that started before an
// invalidation can never serve its stale result after it, whenever
// ristretto gets around to storing it.
package cache

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/keygate/keygate"
)

// Lookup is what the cache wraps: the store's query of one token hash.
type Lookup interface {
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
}

// Config configures a Cache.
type Config struct {
	MaxBytes    int64         // --cache-max-bytes: bound on the estimated bytes of all entries
	TTL         time.Duration // --cache-ttl: positive entries are reloaded after it
	NegativeTTL time.Duration // --negative-cache-ttl: how long an unknown hash stays unknown
	// LoadTimeout bounds one store query made for a miss; it is detached
	// from the caller's context because other callers may wait on it.
	LoadTimeout time.Duration
	// MaxStaleness bounds how long entries are served since the cache was
	// last confirmed in sync with the events log (MarkSynced); past it every
	// lookup asks the store. Zero means no bound.
	MaxStaleness time.Duration
	// Metadata, if set, prepares a key's metadata for its view
	// (keygate.KeyView.Metadata) once per load: extauthz encodes it as an
	// allow's dynamic metadata, so a hit encodes nothing. Unset, views
	// carry no metadata.
	Metadata   func(json.RawMessage) string
	Now        func() time.Time
	Registerer prometheus.Registerer
	Logger     *slog.Logger

	// Live, when set, is where the membership filter of live token hashes
	// is built from (SPEC §10): BuildFilter streams it, Run rebuilds the
	// filter when it fills or after a purge, and a miss for a hash the
	// filter does not hold draws on UnknownLookupRate. Unset, there is no
	// filter and every miss asks the store.
	Live LiveHashes
	// UnknownLookupRate (--unknown-lookup-rate) is how many misses per
	// second for hashes the filter does not hold may ask the store; past
	// it they answer ErrNotFound without a query (ErrUnknownSkipped while
	// Healthy reports false). 0 means no limit.
	UnknownLookupRate float64
	// Healthy reports whether the notification connection delivers, so
	// that every key created elsewhere reaches the filter within a second.
	// Nil means healthy.
	Healthy func() bool
}

// genBuckets is the number of generation counters hashes are spread over. A
// shared bucket costs a spurious miss after an invalidation, never a stale
// hit; 64 Ki buckets take 512 KiB.
const genBuckets = 1 << 16

// Cache remembers the answers of a Lookup as compact views
// (keygate.KeyView): View is the decision's query.
type Cache struct {
	next   Lookup
	cfg    Config
	now    func() time.Time
	store  *ristretto.Cache[uint64, *entry]
	flight singleflight.Group

	gens  [genBuckets]atomic.Uint64 // per hash bucket, bumped by key events
	epoch atomic.Uint64             // bumped by Purge
	// orgEpoch is bumped by every organization event, before the
	// organization's own generation, so a load that raced one is not cached.
	orgEpoch atomic.Uint64
	orgs     sync.Map // org id → *orgState

	filter  Filter
	applied atomic.Uint64 // events applied, so a preload can tell it raced one
	unknown *rate.Limiter // nil: no limit on lookups of hashes the filter does not hold
	rebuild chan struct{} // a filter rebuild is wanted (Run)
	// syncedAt is when the events log was last read to its end. It is a
	// time.Time, not wall-clock nanoseconds, so that its monotonic reading
	// measures the staleness: a wall clock stepped back must not stretch
	// --max-staleness.
	syncedAt atomic.Pointer[time.Time]

	m metrics
}

type orgState struct{ gen atomic.Uint64 }

// entry is one cached answer, in one allocation with the view it holds.
// found false is a negative entry: the hash is unknown to the store.
type entry struct {
	// hash is the token hash past its first 8 bytes, which are ristretto's
	// key (KeyToHash passes them through), so a hit compares all 32.
	hash    [len(keygate.Hash{}) - 8]byte
	found   bool
	expires int64 // unix nanoseconds
	// The generations the entry was loaded under, as the low 32 bits of
	// the counters: they only need to differ from the counters' values
	// after an invalidation, and 2^32 invalidations of one bucket between
	// a load and its next hit do not happen.
	gen, epoch, orgGen uint32
	org                *orgState
	view               keygate.KeyView
}

func newEntry(h *keygate.Hash) *entry {
	e := &entry{}
	copy(e.hash[:], h[8:])
	return e
}

type metrics struct {
	lookups     *prometheus.CounterVec
	hits        prometheus.Counter
	negHits     prometheus.Counter
	misses      prometheus.Counter
	loads       *prometheus.HistogramVec
	invalidated prometheus.Counter
	purges      prometheus.Counter
	// evictions counts what ristretto evicts (for room, or at its TTL),
	// and rejections what its admission policy refuses to store; neither
	// counts invalidations, which are keygate_cache_invalidations_total.
	evictions  *prometheus.CounterVec
	rejections prometheus.Counter
	// unknownLookups counts misses for hashes the filter does not hold:
	// looked_up (within the budget) or skipped.
	unknownLookups            *prometheus.CounterVec
	unknownLooked, unknownSkp prometheus.Counter
	filterBuilds              *prometheus.CounterVec
}

// New returns a cache in front of next.
func New(next Lookup, cfg Config) (*Cache, error) {
	if cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("cache: MaxBytes must be positive, got %d", cfg.MaxBytes)
	}
	if cfg.TTL <= 0 || cfg.NegativeTTL <= 0 {
		return nil, errors.New("cache: TTL and NegativeTTL must be positive")
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// ristretto wants about ten counters per item it may hold; an entry
	// costs at least entryCost (see cost), so this is enough for the most
	// the cache can hold, and the counters' own bytes are in that cost.
	counters := cfg.MaxBytes / entryCost * 10
	if counters < 1000 {
		counters = 1000
	}
	if cfg.UnknownLookupRate < 0 {
		return nil, fmt.Errorf("cache: UnknownLookupRate must be 0 (no limit) or more, got %v", cfg.UnknownLookupRate)
	}
	c := &Cache{next: next, cfg: cfg, now: cfg.Now, m: newMetrics(), rebuild: make(chan struct{}, 1)}
	if cfg.Live != nil && cfg.UnknownLookupRate > 0 {
		c.unknown = rate.NewLimiter(rate.Limit(cfg.UnknownLookupRate), max(1, int(cfg.UnknownLookupRate)))
	}
	rc, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters: counters,
		MaxCost:     maxCost(cfg.MaxBytes),
		BufferItems: 64,
		Metrics:     true,
		// The key already is 64 bits of SHA-256; the entry holds the whole
		// hash and a hit compares it, so a collision is a miss.
		KeyToHash: func(k uint64) (uint64, uint64) { return k, 0 },
		OnEvict:   c.onEvict,
		OnReject:  func(*ristretto.Item[*entry]) { c.m.rejections.Inc() },
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.store = rc
	// An empty cache is in sync: nothing it holds can be stale.
	now := cfg.Now()
	c.syncedAt.Store(&now)
	if err := c.registerMetrics(cfg.Registerer); err != nil {
		rc.Close()
		return nil, err
	}
	return c, nil
}

// onEvict counts what ristretto dropped on its own: past the entry's TTL,
// or to make room. (ristretto's own KeysEvicted also counts every Del, so
// every invalidation looked like an eviction.)
func (c *Cache) onEvict(it *ristretto.Item[*entry]) {
	if !it.Expiration.IsZero() && !time.Now().Before(it.Expiration) {
		c.m.evictions.WithLabelValues("expired").Inc()
		return
	}
	c.m.evictions.WithLabelValues("capacity").Inc()
}

func newMetrics() metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_cache_lookups_total",
		Help: "Key lookups by result: hit, negative_hit (cached unknown hash) or miss.",
	}, []string{"result"})
	unknown := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_unknown_lookups_total",
		Help: "Cache misses for token hashes the membership filter does not hold: looked_up (within --unknown-lookup-rate) or skipped (answered without a query).",
	}, []string{"result"})
	return metrics{
		unknownLookups: unknown,
		unknownLooked:  unknown.WithLabelValues("looked_up"),
		unknownSkp:     unknown.WithLabelValues("skipped"),
		filterBuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_filter_builds_total",
			Help: "Builds of the membership filter of live token hashes, by result.",
		}, []string{"result"}),
		lookups: lookups,
		hits:    lookups.WithLabelValues("hit"),
		negHits: lookups.WithLabelValues("negative_hit"),
		misses:  lookups.WithLabelValues("miss"),
		loads: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keygate_store_lookup_seconds",
			Help:    "Latency of store lookups made for cache misses, by result.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"result"}),
		invalidated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_cache_invalidations_total",
			Help: "Token hashes and organizations invalidated by key events.",
		}),
		purges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_cache_purges_total",
			Help: "Times the whole cache was dropped (events log pruned past the last seen event).",
		}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_cache_evictions_total",
			Help: "Entries the cache dropped by reason: capacity (to stay within --cache-max-bytes) or expired (past their TTL). Invalidations by key events and admission rejections are counted apart.",
		}, []string{"reason"}),
		rejections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_cache_rejections_total",
			Help: "Loaded entries the cache's admission policy declined to store because the cache was full of more frequently used keys (the lookup was still answered).",
		}),
	}
}

func (c *Cache) registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	rm := c.store.Metrics
	cs := []prometheus.Collector{
		c.m.lookups, c.m.loads, c.m.invalidated, c.m.purges,
		c.m.evictions, c.m.rejections, c.m.unknownLookups, c.m.filterBuilds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keygate_filter_bytes",
			Help: "Bytes of the membership filter's bits.",
		}, func() float64 { return float64(c.filter.Bytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keygate_cache_cost_bytes",
			Help: "Estimated bytes held by cache entries.",
		}, func() float64 { return float64(rm.CostAdded() - rm.CostEvicted()) }),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return fmt.Errorf("cache: registering metrics: %w", err)
		}
	}
	return nil
}

func key64(h *keygate.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

func (c *Cache) bucket(h *keygate.Hash) *atomic.Uint64 {
	return &c.gens[binary.LittleEndian.Uint16(h[8:10])]
}

// View answers from the cache, or from next on a miss; concurrent misses
// for one hash make one call to next. The view's LoadedAt tells how old it
// is. Unknown hashes answer keygate.ErrNotFound, from cache or store; any
// other error means the store could not answer and nothing usable was
// cached. A view is read-only and stays valid after it is evicted.
func (c *Cache) View(ctx context.Context, h keygate.Hash) (*keygate.KeyView, error) {
	if e, ok := c.store.Get(key64(&h)); ok && c.fresh(e, &h, c.now()) {
		if !e.found {
			c.m.negHits.Inc()
			return nil, keygate.ErrNotFound
		}
		c.m.hits.Inc()
		return &e.view, nil
	}
	c.m.misses.Inc()
	if c.cfg.Live != nil && !c.filter.Has(&h) {
		// Not a live token this replica has been told of: a forged or
		// mistyped token, or a key created elsewhere whose event has not
		// arrived yet. Only a budget of these reach the store, so a flood
		// of forged tokens is not a flood of queries.
		if c.unknown != nil && !c.unknown.Allow() {
			c.m.unknownSkp.Inc()
			if c.cfg.Healthy != nil && !c.cfg.Healthy() {
				// A key created meanwhile may be missing from the filter.
				return nil, ErrUnknownSkipped
			}
			return nil, keygate.ErrNotFound
		}
		c.m.unknownLooked.Inc()
	}
	return c.load(ctx, h)
}

// ErrUnknownSkipped answers a miss for a hash the membership filter does not
// hold, past --unknown-lookup-rate, while the notification connection is
// down: the token may be a key created meanwhile, so it is undecidable
// (service_unavailable), not unknown.
var ErrUnknownSkipped = keygate.ErrUndecidable

// Known reports whether h is a live token this replica knows of, without
// asking the store: its hash is in the membership filter, or, with no
// filter built, the cache holds a fresh record of it. The failed-auth
// throttle still answers a blocked address for such a token (SPEC §3).
func (c *Cache) Known(h keygate.Hash) bool {
	if c.cfg.Live != nil && c.filter.Ready() {
		return c.filter.Has(&h)
	}
	e, ok := c.store.Get(key64(&h))
	return ok && e.found && c.fresh(e, &h, c.now())
}

// fresh reports whether e may answer for h at now.
func (c *Cache) fresh(e *entry, h *keygate.Hash, now time.Time) bool {
	return subtle.ConstantTimeCompare(e.hash[:], h[8:]) == 1 &&
		e.gen == uint32(c.bucket(h).Load()) &&
		e.epoch == uint32(c.epoch.Load()) &&
		(e.org == nil || e.orgGen == uint32(e.org.gen.Load())) &&
		now.UnixNano() < e.expires &&
		(c.cfg.MaxStaleness == 0 || now.Sub(*c.syncedAt.Load()) <= c.cfg.MaxStaleness)
}

// MarkSynced records that every event committed before t has been applied.
// t should come from the cache's clock (time.Now keeps a monotonic reading).
func (c *Cache) MarkSynced(t time.Time) {
	for {
		old := c.syncedAt.Load()
		if !t.After(*old) || c.syncedAt.CompareAndSwap(old, &t) {
			return
		}
	}
}

// SinceSync is how long ago the cache was last confirmed in sync.
func (c *Cache) SinceSync() time.Duration {
	return c.now().Sub(*c.syncedAt.Load())
}

// Stale reports whether the cache is past its staleness bound, so that
// every lookup goes to the store.
func (c *Cache) Stale() bool {
	return c.cfg.MaxStaleness > 0 && c.SinceSync() > c.cfg.MaxStaleness
}

type loaded struct {
	view *keygate.KeyView
	err  error
}

func (c *Cache) load(ctx context.Context, h keygate.Hash) (*keygate.KeyView, error) {
	gen := c.bucket(&h).Load()
	epoch, orgEpoch := c.epoch.Load(), c.orgEpoch.Load()
	// The flight is keyed by every generation a load depends on: the
	// hash's bucket, the whole cache's (purges) and the organizations'
	// (disable, enable). A caller that arrives after any invalidation was
	// applied must not join a load that started before it.
	var fk [len(h) + 24]byte
	copy(fk[:], h[:])
	binary.LittleEndian.PutUint64(fk[len(h):], gen)
	binary.LittleEndian.PutUint64(fk[len(h)+8:], epoch)
	binary.LittleEndian.PutUint64(fk[len(h)+16:], orgEpoch)
	ch := c.flight.DoChan(string(fk[:]), func() (any, error) {
		view, err := c.loadOnce(h, gen, epoch, orgEpoch)
		return loaded{view, err}, nil
	})
	select {
	case r := <-ch:
		l := r.Val.(loaded)
		return l.view, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// loadOnce loads h for the generations read before the flight began, so
// that what it caches is stale the moment any of them moves.
func (c *Cache) loadOnce(h keygate.Hash, gen, epoch, orgEpoch uint64) (*keygate.KeyView, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.LoadTimeout)
	defer cancel()
	start := time.Now()
	rec, err := c.next.LookupKey(ctx, h)
	switch {
	case errors.Is(err, keygate.ErrNotFound):
		c.m.loads.WithLabelValues("not_found").Observe(time.Since(start).Seconds())
		e := newEntry(&h)
		e.gen, e.epoch, e.expires = uint32(gen), uint32(epoch), c.now().Add(c.cfg.NegativeTTL).UnixNano()
		c.store.Set(key64(&h), e, entryCost)
		return nil, keygate.ErrNotFound
	case err != nil:
		c.m.loads.WithLabelValues("error").Observe(time.Since(start).Seconds())
		return nil, err
	}
	c.m.loads.WithLabelValues("found").Observe(time.Since(start).Seconds())
	var meta string
	if c.cfg.Metadata != nil {
		meta = c.cfg.Metadata(rec.Key.Metadata)
	}
	e := newEntry(&h)
	e.found, e.gen, e.epoch, e.expires = true, uint32(gen), uint32(epoch), c.now().Add(c.cfg.TTL).UnixNano()
	e.view.Fill(rec, meta)
	e.org = c.org(rec.Key.OrgID)
	e.orgGen = uint32(e.org.gen.Load())
	if c.orgEpoch.Load() != orgEpoch {
		// An organization event landed while we loaded; we cannot tell
		// whether it was this key's, so answer without caching.
		return &e.view, nil
	}
	c.store.Set(key64(&h), e, cost(e))
	return &e.view, nil
}

func (c *Cache) org(id string) *orgState {
	if o, ok := c.orgs.Load(id); ok {
		return o.(*orgState)
	}
	o, _ := c.orgs.LoadOrStore(id, &orgState{})
	return o.(*orgState)
}

// The cost of an entry is the heap it really holds, so --cache-max-bytes
// bounds memory rather than a count of entries:
//   - the entry itself, view included (one allocation, rounded up to
//     its size class);
//   - ristretto's bookkeeping per item: its store's map slot (key and a
//     48-byte item), the policy's cost map slot (Go's maps hold about 1.5
//     slots per item between growths), and ten 4-bit counters in each of
//     the sketch's four rows, rounded up to a power of two, plus the
//     doorkeeper;
//   - what the view holds beyond its struct (KeyView.Size).
//
// ristretto adds the size of its store item (56 bytes) to every cost
// itself; ristrettoItem is the rest. The constants are measured, not
// guessed: TestCost_BoundsTheHeap and the memory figures in BENCHMARKS.md
// check them against the Go heap.
const (
	entrySize     = int64(unsafe.Sizeof(entry{}))
	entryAlloc    = (entrySize + 15) &^ 15 // Go's size classes up to 256 B step by 16
	ristrettoItem = (8+48)*15/10 + (8+8)*15/10 + 2*10*4/2 + 2
	entryCost     = entryAlloc + ristrettoItem
)

func cost(e *entry) int64 { return entryCost + int64(e.view.Size()) }

// ristrettoFixed is what ristretto holds whatever the number of entries
// (its set buffer, read rings and shards): measured at 1.1–1.7 MiB, it
// would be a quarter of a 4 MiB cache. It is kept out of the entries'
// budget, so --cache-max-bytes bounds the whole.
const ristrettoFixed = 3 << 19

func maxCost(maxBytes int64) int64 { return max(maxBytes-ristrettoFixed, maxBytes/2) }

// Apply invalidates what one event names: its token hashes, or for an
// organization event every cached key of the organization.
func (c *Cache) Apply(ev keygate.Event) {
	defer c.applied.Add(1)
	switch ev.Kind {
	case keygate.EventOrgDisabled, keygate.EventOrgEnabled:
		c.orgEpoch.Add(1)
		c.org(ev.OrgID).gen.Add(1)
		c.m.invalidated.Inc()
		return
	}
	for i := range ev.Hashes {
		h := &ev.Hashes[i]
		c.bucket(h).Add(1)
		c.store.Del(key64(h))
		c.m.invalidated.Inc()
	}
	if c.cfg.Live != nil && ev.Kind != keygate.EventKeyRevoked {
		// A created or rolled token is new; an updated key's tokens may be
		// usable again. A revoked key leaves its bits: a false positive
		// until the next rebuild, never a wrong allow.
		if full := c.filter.Add(ev.Hashes); full {
			c.wantRebuild()
		}
	}
}

// RecentKeys streams the records of the most recently used tokens (the
// store).
type RecentKeys interface {
	RecentKeys(ctx context.Context, n int, now time.Time, fn func(keygate.Hash, *keygate.KeyRecord) error) error
}

// Preload warms the cache with the n most recently used tokens from src
// (--preload-keys), so a replica restarted under load does not send all its
// traffic to the store as misses. It returns how many it loaded. Should an
// event be applied while it runs, everything it loaded is dropped (one
// epoch), since a record it read before that event could outlive it.
func (c *Cache) Preload(ctx context.Context, src RecentKeys, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	applied, epoch, orgEpoch := c.applied.Load(), c.epoch.Load(), c.orgEpoch.Load()
	loaded := 0
	err := src.RecentKeys(ctx, n, c.now(), func(h keygate.Hash, rec *keygate.KeyRecord) error {
		var meta string
		if c.cfg.Metadata != nil {
			meta = c.cfg.Metadata(rec.Key.Metadata)
		}
		e := newEntry(&h)
		e.found, e.gen, e.epoch, e.expires = true, uint32(c.bucket(&h).Load()), uint32(epoch), c.now().Add(c.cfg.TTL).UnixNano()
		e.view.Fill(rec, meta)
		e.org = c.org(rec.Key.OrgID)
		e.orgGen = uint32(e.org.gen.Load())
		if c.store.Set(key64(&h), e, cost(e)) {
			loaded++
		}
		return nil
	})
	c.store.Wait()
	if c.applied.Load() != applied || c.orgEpoch.Load() != orgEpoch {
		c.epoch.Add(1) // stale, every entry of this epoch
		return 0, err
	}
	return loaded, err
}

// BuildFilter builds the membership filter from Config.Live. serve calls it
// before it reports ready; Run rebuilds it when needed.
func (c *Cache) BuildFilter(ctx context.Context) (int, error) {
	if c.cfg.Live == nil {
		return 0, nil
	}
	n, err := c.filter.Build(ctx, c.cfg.Live, c.now())
	switch {
	case errors.Is(err, errBuildRunning):
		return 0, nil
	case err != nil:
		c.m.filterBuilds.WithLabelValues("error").Inc()
		return 0, err
	}
	c.m.filterBuilds.WithLabelValues("ok").Inc()
	return n, nil
}

func (c *Cache) wantRebuild() {
	select {
	case c.rebuild <- struct{}{}:
	default: // one is due already
	}
}

// Run rebuilds the membership filter whenever it has filled up or the
// cache was purged, until ctx ends; a failed build is retried.
func (c *Cache) Run(ctx context.Context) error {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.rebuild:
		case <-retry.C:
		}
		start := time.Now()
		n, err := c.BuildFilter(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.cfg.Logger.Warn("rebuilding the membership filter failed; retrying", "err", err)
			retry.Reset(5 * time.Second)
			continue
		}
		c.cfg.Logger.Info("rebuilt the membership filter", "live_tokens", n, "took", time.Since(start).Round(time.Millisecond), "bytes", c.filter.Bytes())
	}
}

// Purge makes every entry stale at once. Entries are then replaced as keys
// are looked up again, or evicted.
func (c *Cache) Purge() {
	c.epoch.Add(1)
	c.m.purges.Inc()
	if c.cfg.Live != nil {
		// Events were lost: keys created meanwhile may be missing from
		// the filter, so it rules nothing out until it is built again.
		c.filter.Invalidate()
		c.wantRebuild()
	}
}

// Close releases the cache.
func (c *Cache) Close() { c.store.Close() }
