package ratelimit

import (
	"hash/maphash"
	"strings"
	"time"
)

// Named is one of a key's named rate limits (SPEC §9): a token bucket of
// Limit requests that refills over Per, kept per (key id, Name) beside the
// key's main bucket.
type Named struct {
	Name  string
	Limit int
	Per   time.Duration
}

// namedKey is the bucket key of a named limit. Two strings, not one
// joined, so that a lookup builds nothing.
type namedKey struct{ keyID, name string }

// namedBucket is a named limit's bucket: the time it is full again, as
// for the main limit, and the capacity (in time) it was filled with, so
// that a limit changed by a PATCH keeps the fraction it had spent.
type namedBucket struct{ full, capacity int64 }

// gcra is the arithmetic of one token bucket: step is the refill time of
// one request, capacity the time a full bucket holds (step × limit).
type gcra struct {
	limit          int
	step, capacity int64
}

func newGCRA(limit int, per time.Duration) gcra {
	limit = min(limit, int(per)) // at least 1 ns a request
	n := int64(limit)
	step := int64(per) / n
	// Rounding step down keeps exactly limit requests in a full bucket.
	return gcra{limit: limit, step: step, capacity: step * n}
}

// fits reports whether one more request fits a bucket that has spent
// spent (time).
func (g gcra) fits(spent int64) bool { return spent+g.step <= g.capacity }

// outcome is the Result of a bucket at spent (before the request): fits
// says whether the request fit it, taken whether the request was allowed
// (by every bucket) and so took its token. A bucket the request fit but
// that gave nothing because another denied reports its state, not allowed
// and no retry-after of its own.
func (g gcra) outcome(spent int64, fits, taken bool) Result {
	switch {
	case taken:
		spent += g.step
		return Result{Allowed: true, Limit: g.limit, Remaining: int((g.capacity - spent) / g.step), Reset: time.Duration(spent)}
	case !fits:
		return Result{Limit: g.limit, Reset: time.Duration(spent),
			RetryAfter: time.Duration(spent + g.step - g.capacity)}
	}
	return Result{Limit: g.limit, Remaining: int((g.capacity - spent) / g.step), Reset: time.Duration(spent)}
}

// AllowNamed takes one request from both keyID's main bucket (perMinute,
// as Allow; <= 0 unlimited) and its bucket of the named limit n, or from
// neither: a request that one of them denies spends no token of the other
// (SPEC §9, "A request denied at any step spends no bucket"). main and
// named are each bucket's outcome, and the request is allowed when both
// are Allowed. A bucket that denied it has a RetryAfter; one that had room
// but gave nothing because the other denied is not Allowed and has no
// RetryAfter. When both deny, main is the one to report (the rate-limit
// step comes before the named one). An unlimited main (perMinute <= 0) is
// Allowed with Limit 0. n.Limit or n.Per <= 0 is no named limit.
//
// The named bucket is keyed by (keyID, n.Name) and follows a change of
// the key's limit of that name (a PATCH) as the main bucket does: it keeps
// the fraction of its capacity it had spent, whether the limit, the
// duration or both changed. A limit removed from the key leaves its bucket
// to refill and be swept; a route naming a limit the key lacks takes
// nothing from it.
func (l *Limiter) AllowNamed(keyID string, perMinute int, n Named) (main, named Result) {
	return l.allowNamed(keyID, perMinute, n, l.now())
}

func (l *Limiter) allowNamed(keyID string, perMinute int, n Named, now time.Time) (main, named Result) {
	if n.Limit <= 0 || n.Per <= 0 {
		return l.allow(keyID, perMinute, now), Result{Allowed: true}
	}
	at := int64(now.Sub(l.epoch))
	g := newGCRA(n.Limit, n.Per)
	nk := namedKey{keyID, n.Name}

	// Locks are always taken main first, then named, and nothing else
	// holds two: no deadlock.
	var (
		m       gcra
		ms      *shard[string, int64]
		mFull   int64
		mOK     bool
		mSpent  int64
		mFits   = true
		limited = perMinute > 0
	)
	if limited {
		m = newGCRA(min(perMinute, maxPerMinute), time.Minute)
		ms = l.mainShard(keyID)
		ms.mu.Lock()
		mFull, mOK = ms.m[keyID]
		mSpent = min(max(mFull-at, 0), m.capacity)
		mFits = m.fits(mSpent)
	}
	ns := l.namedShard(keyID, n.Name)
	ns.mu.Lock()
	b, nOK := ns.m[nk]
	nSpent := max(b.full-at, 0)
	if nOK && b.capacity != g.capacity && b.capacity > 0 {
		// The limit changed: keep the fraction spent, not the time.
		nSpent = int64(float64(min(nSpent, b.capacity)) / float64(b.capacity) * float64(g.capacity))
	}
	nSpent = min(nSpent, g.capacity)
	nFits := g.fits(nSpent)

	if mFits && nFits {
		if limited {
			if mOK {
				ms.m[keyID] = at + mSpent + m.step
			} else {
				l.buckets.admit(ms, at)
				ms.m[strings.Clone(keyID)] = at + mSpent + m.step
			}
		}
		nb := namedBucket{full: at + nSpent + g.step, capacity: g.capacity}
		if nOK {
			ns.m[nk] = nb
		} else {
			l.named.admit(ns, at)
			ns.m[namedKey{strings.Clone(keyID), strings.Clone(n.Name)}] = nb
		}
	}
	ns.mu.Unlock()
	if limited {
		ms.mu.Unlock()
	}
	if !mFits || !nFits {
		l.denied.Inc()
	}
	allowed := mFits && nFits
	main = Result{Allowed: true}
	if limited {
		main = m.outcome(mSpent, mFits, allowed)
	}
	return main, g.outcome(nSpent, nFits, allowed)
}

// Fewest returns whichever of two allowed results has the fewest requests
// remaining: the one an allow reports in its ratelimit-* headers (SPEC
// §9). An unlimited result (Limit 0) is never chosen over a limited one;
// on a tie the one that takes longer to be full again wins.
func Fewest(a, b Result) Result {
	switch {
	case a.Limit <= 0:
		return b
	case b.Limit <= 0:
		return a
	case b.Remaining < a.Remaining, b.Remaining == a.Remaining && b.Reset > a.Reset:
		return b
	}
	return a
}

// Return gives back the token a request took by Allow (n without a
// Limit) or AllowNamed when a later step of the decision denied it (SPEC
// §3, §9: a request denied at any step spends no bucket): the usage step
// comes after the rate limits. perMinute and n are those of the call that
// took the token. A bucket already swept, or refilled past the token, is
// left as it is.
func (l *Limiter) Return(keyID string, perMinute int, n Named) {
	l.giveBack(keyID, perMinute, n, l.now())
}

func (l *Limiter) giveBack(keyID string, perMinute int, n Named, now time.Time) {
	at := int64(now.Sub(l.epoch))
	if perMinute > 0 {
		m := newGCRA(min(perMinute, maxPerMinute), time.Minute)
		s := l.mainShard(keyID)
		s.mu.Lock()
		if full, ok := s.m[keyID]; ok && full > at {
			s.m[keyID] = max(full-m.step, at)
		}
		s.mu.Unlock()
	}
	if n.Limit <= 0 || n.Per <= 0 {
		return
	}
	nk := namedKey{keyID, n.Name}
	s := l.namedShard(keyID, n.Name)
	s.mu.Lock()
	if b, ok := s.m[nk]; ok && b.full > at {
		g := newGCRA(n.Limit, n.Per)
		b.full = max(b.full-g.step, at)
		s.m[nk] = b
	}
	s.mu.Unlock()
}

// mainShard is the shard of keyID's main bucket.
func (l *Limiter) mainShard(keyID string) *shard[string, int64] {
	return &l.buckets.shards[maphash.String(l.seed, keyID)%numShards]
}

// namedShard is the shard of keyID's bucket of the named limit name.
func (l *Limiter) namedShard(keyID, name string) *shard[namedKey, namedBucket] {
	return &l.named.shards[(maphash.String(l.seed, keyID)^maphash.String(l.seed, name))%numShards]
}
