package ratelimit

import (
	"sync"
	"time"
)

const (
	// numShards splits each map so that concurrent Checks for different
	// keys rarely meet on one mutex.
	numShards = 1 << shardBits
	shardBits = 6
	// sweepEvery is how often a shard drops its decayed entries: on the
	// first insert after the period (amortised over inserts), and from Run.
	sweepEvery = int64(15 * time.Second)
	// evictSample is how many entries an insert into a full shard looks at
	// to choose the one to evict (sampled, as Redis does, because finding
	// the true minimum would cost a scan of the shard on every insert).
	evictSample = 5
)

// table is a sharded map whose entries decay. idle reports an entry that
// has decayed to nothing (safe to delete: it is indistinguishable from no
// entry); score ranks entries for eviction, lowest first. Both take the
// time in nanoseconds since the owner's epoch.
type table[K comparable, V any] struct {
	shards   [numShards]shard[K, V]
	perShard int
	idle     func(v V, now int64) bool
	score    func(v V, now int64) int64
	// evicted counts entries dropped by the cap while still live.
	evicted func()
}

type shard[K comparable, V any] struct {
	mu        sync.Mutex
	m         map[K]V
	nextSweep int64
	// deletes since m was made. A Go map never shrinks, and under steady
	// insert-and-delete churn its tombstones make it grow, so a shard
	// copies its live entries into a fresh map after as many deletes as
	// it may hold entries: memory stays bounded, amortised over deletes.
	deletes int
	// Pad to a cache line so neighbouring shards' mutexes do not share one.
	_ [32]byte
}

func (t *table[K, V]) init(maxEntries int) {
	t.perShard = max(1, (maxEntries+numShards-1)/numShards)
	for i := range t.shards {
		t.shards[i].m = make(map[K]V)
	}
}

// admit makes room for one new entry in s, whose lock the caller holds.
func (t *table[K, V]) admit(s *shard[K, V], now int64) {
	if now >= s.nextSweep {
		t.sweepShard(s, now)
		s.nextSweep = now + sweepEvery
	}
	if len(s.m) < t.perShard {
		return
	}
	var (
		victim K
		best   int64
		seen   int
	)
	for k, v := range s.m {
		if t.idle(v, now) {
			t.delete(s, k) // free: no count is lost
			t.compact(s)
			return
		}
		if sc := t.score(v, now); seen == 0 || sc < best {
			victim, best = k, sc
		}
		if seen++; seen == evictSample {
			break
		}
	}
	t.delete(s, victim)
	t.compact(s)
	t.evicted()
}

func (t *table[K, V]) delete(s *shard[K, V], k K) {
	delete(s.m, k)
	s.deletes++
}

// compact replaces s.m by a fresh copy once it has seen perShard deletes;
// not during a range over s.m.
func (t *table[K, V]) compact(s *shard[K, V]) {
	if s.deletes < t.perShard {
		return
	}
	m := make(map[K]V, len(s.m)+1) // +1: admit is about to insert
	for k, v := range s.m {
		m[k] = v
	}
	s.m, s.deletes = m, 0
}

func (t *table[K, V]) sweepShard(s *shard[K, V], now int64) {
	for k, v := range s.m {
		if t.idle(v, now) {
			t.delete(s, k)
		}
	}
	t.compact(s)
}

// sweep drops every decayed entry, one shard at a time.
func (t *table[K, V]) sweep(now int64) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		t.sweepShard(s, now)
		s.nextSweep = now + sweepEvery
		s.mu.Unlock()
	}
}

// len counts the entries held, decayed or not.
func (t *table[K, V]) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
