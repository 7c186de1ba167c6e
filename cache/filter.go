package cache

import (
	"context"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/keygate/keygate"
)

// LiveHashes streams the hashes of every token a lookup could find as a key
// that is not revoked (the store).
type LiveHashes interface {
	LiveTokenHashes(ctx context.Context, now time.Time, fn func(keygate.Hash) error) error
}

// filterFPRate is the false-positive rate a filter is sized for at its
// capacity. SPEC §10 bounds the rate at 1 %; bits-and-blooms' estimate
// lands a little above its target (1.02 % measured at 1 %), so it is sized
// for half of that, and rebuilt larger before it holds more than it was
// sized for.
const filterFPRate = 0.005

// minFilterCapacity is the least a filter is sized for: 1 Mi hashes at
// 0.5 % take 1.4 MiB, so a small deployment never rebuilds for growth.
const minFilterCapacity = 1 << 20

// Filter is the membership filter of a replica (SPEC §10): a Bloom filter of
// the hashes of every live token, built from the store and kept current
// from the key-events log. It never answers "no" for a token the replica
// has been told about; revoked keys leave their bits (a false positive,
// never a wrong allow) until the next rebuild.
//
// Why Bloom: the filter is read only on a cache miss, and must take the
// hashes of keys created after it was built. Measured at 1 000 000 keys
// (BENCHMARKS.md), a binary fuse filter answers in 31 ns against the
// Bloom filter's 0.46 µs at about the same 1.1–1.4 B a key, but it cannot
// take an insertion: every create would need a side table and a rebuild
// from the store. Half a microsecond on a path that otherwise costs a
// database query is not worth that.
type Filter struct {
	mu       sync.RWMutex
	bf       *bloom.BloomFilter // nil until the first Build
	capacity uint
	n        uint // hashes added since the last build began, repeats included
	// While a build streams from the store, hashes added meanwhile are
	// also kept here and added to the new filter before it replaces the
	// old one.
	building bool
	pending  []keygate.Hash
}

// Ready reports whether the filter has been built.
func (f *Filter) Ready() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.bf != nil
}

// Has reports whether h may be a live token. Before the first build it
// answers true: nothing can be ruled out.
func (f *Filter) Has(h *keygate.Hash) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.bf == nil || f.bf.Test(h[:])
}

// Add adds hashes of tokens that were created or may have become live. It
// reports whether the filter now holds more than it was sized for, so the
// caller should rebuild it.
func (f *Filter) Add(hs []keygate.Hash) (full bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range hs {
		if f.bf != nil {
			f.bf.Add(hs[i][:])
		}
		if f.building {
			f.pending = append(f.pending, hs[i])
		}
		f.n++
	}
	return f.bf != nil && f.n > f.capacity
}

// Build streams every live hash from src into a new filter and puts it in
// place of the old one, which answers meanwhile. It returns how many
// hashes the store held.
func (f *Filter) Build(ctx context.Context, src LiveHashes, now time.Time) (int, error) {
	f.mu.Lock()
	if f.building {
		f.mu.Unlock()
		return 0, errBuildRunning
	}
	f.building, f.pending = true, nil
	capacity := uint(minFilterCapacity)
	if f.n*2 > capacity {
		capacity = f.n * 2
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.building, f.pending = false, nil
		f.mu.Unlock()
	}()
	for {
		bf := bloom.NewWithEstimates(capacity, filterFPRate)
		var n uint
		err := src.LiveTokenHashes(ctx, now, func(h keygate.Hash) error {
			bf.Add(h[:])
			n++
			return nil
		})
		if err != nil {
			return 0, err
		}
		if n > capacity {
			// More live tokens than the guess: build once more, sized
			// for twice as many, so the rate stays within its bound.
			capacity = 2 * n
			continue
		}
		f.mu.Lock()
		for i := range f.pending {
			bf.Add(f.pending[i][:])
		}
		f.bf, f.capacity, f.n = bf, capacity, n+uint(len(f.pending))
		f.mu.Unlock()
		return int(n), nil
	}
}

// Invalidate drops the filter until the next Build: events were lost, so
// keys created meanwhile may be missing from it, and until it is built
// again it rules nothing out.
func (f *Filter) Invalidate() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bf, f.n = nil, 0
}

// Bytes is the memory the filter's bits take.
func (f *Filter) Bytes() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.bf == nil {
		return 0
	}
	return int(f.bf.Cap() / 8)
}

type buildRunningError struct{}

func (buildRunningError) Error() string { return "cache: a filter build is already running" }

var errBuildRunning error = buildRunningError{}
