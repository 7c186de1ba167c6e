package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Header names of an allow's response_headers_to_add and of a
// rate_limited deny (SPEC §3).
const (
	HeaderLimit      = "ratelimit-limit"
	HeaderRemaining  = "ratelimit-remaining"
	HeaderReset      = "ratelimit-reset"
	HeaderRetryAfter = "retry-after"
)

// DefaultMaxKeys is the default of LimiterConfig.MaxKeys: about 20 MB of
// buckets at most. Only keys used within the last minute hold a bucket, so
// reaching it takes a quarter of a million keys busy on one replica.
const DefaultMaxKeys = 1 << 18

// maxPerMinute keeps the refill interval at one nanosecond or more.
const maxPerMinute = int(time.Minute)

// LimiterConfig configures a Limiter.
type LimiterConfig struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxKeys bounds the buckets held (0 means DefaultMaxKeys). Past it, a
	// new key evicts the fullest of a sample of buckets in its shard, which
	// gives that key a full bucket when it comes back.
	MaxKeys int
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Limiter is a token bucket per key id: it holds a full minute's quota
// (capacity = perMinute) and refills continuously at perMinute/60 a second.
//
// A bucket is stored as the one number GCRA keeps: the time at which it
// will be full again. What it has spent, full time minus now, is a fraction
// of a minute whatever the limit, so a key whose limit changes (a PATCH)
// keeps the fraction of its quota it had spent: half of 100 spent is 5 of
// 10 left after a change to 10, or 500 of 1000. A bucket whose full time
// has passed is the same as no bucket and is swept.
type Limiter struct {
	now     func() time.Time
	epoch   time.Time
	seed    maphash.Seed
	buckets table[string, int64]
	// named holds the buckets of named limits (AllowNamed).
	named  table[namedKey, namedBucket]
	denied prometheus.Counter
}

// Result is the outcome of one Allow.
type Result struct {
	// Allowed reports whether the request may go on.
	Allowed bool
	// Limit is the key's limit per minute; 0 means unlimited, and then no
	// rate-limit header is sent.
	Limit int
	// Remaining is how many more requests the bucket holds now (whole).
	Remaining int
	// Reset is how long until the bucket is full again.
	Reset time.Duration
	// RetryAfter is how long until one request is allowed again; 0 when
	// allowed.
	RetryAfter time.Duration
}

// NewLimiter returns a Limiter with every bucket full.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	if cfg.MaxKeys < 0 {
		return nil, errors.New("ratelimit: MaxKeys must not be negative")
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Limiter{now: cfg.Now, epoch: cfg.Now(), seed: maphash.MakeSeed()}
	l.buckets.init(cfg.MaxKeys)
	l.buckets.idle = func(full, now int64) bool { return full <= now }
	l.buckets.score = func(full, _ int64) int64 { return full } // the fullest goes first
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keygate_ratelimit_evictions_total",
		Help: "Rate-limit buckets evicted while not yet full, to stay within the key cap.",
	})
	l.buckets.evicted = evictions.Inc
	l.named.init(cfg.MaxKeys)
	l.named.idle = func(b namedBucket, now int64) bool { return b.full <= now }
	l.named.score = func(b namedBucket, _ int64) int64 { return b.full }
	l.named.evicted = evictions.Inc
	l.denied = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "keygate_ratelimit_denied_total",
		Help: "Requests denied with rate_limited.",
	})
	if cfg.Registerer == nil {
		return l, nil
	}
	for _, c := range []prometheus.Collector{
		l.denied, evictions,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "keygate_ratelimit_buckets",
			Help: "Rate-limit buckets held (keys used within about the last minute).",
		}, func() float64 { return float64(l.buckets.len() + l.named.len()) }),
	} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("ratelimit: registering metrics: %w", err)
		}
	}
	return l, nil
}

// Allow takes one request from keyID's bucket, whose limit is perMinute
// (the caller resolves a null limit to --rate-limit). perMinute <= 0 is
// unlimited: always allowed, nothing is tracked.
func (l *Limiter) Allow(keyID string, perMinute int) Result {
	if perMinute <= 0 {
		return Result{Allowed: true}
	}
	return l.allow(keyID, perMinute, l.now())
}

func (l *Limiter) allow(keyID string, perMinute int, now time.Time) Result {
	if perMinute <= 0 {
		return Result{Allowed: true}
	}
	perMinute = min(perMinute, maxPerMinute)
	n := int64(perMinute)
	step := int64(time.Minute) / n // refill time of one token
	// The capacity in time. Rounding step down keeps exactly n requests
	// in a full bucket; it may fall short of a minute by under n ns.
	capacity := step * n
	at := int64(now.Sub(l.epoch))

	s := l.mainShard(keyID)
	s.mu.Lock()
	full, ok := s.m[keyID]
	spent := min(max(full-at, 0), capacity)
	if spent+step > capacity {
		s.mu.Unlock()
		l.denied.Inc()
		return Result{Limit: perMinute, Remaining: 0, Reset: time.Duration(spent),
			RetryAfter: time.Duration(spent + step - capacity)}
	}
	spent += step
	if ok {
		s.m[keyID] = at + spent
	} else {
		l.buckets.admit(s, at)
		// A copy, so the map does not pin whatever buffer keyID came from.
		s.m[strings.Clone(keyID)] = at + spent
	}
	s.mu.Unlock()
	return Result{Allowed: true, Limit: perMinute, Remaining: int((capacity - spent) / step),
		Reset: time.Duration(spent)}
}

// Run drops full buckets every 15 seconds until ctx ends, then returns nil,
// so memory and the buckets gauge fall when traffic stops. It is optional:
// without it each shard sweeps itself on inserts and the cap still holds.
func (l *Limiter) Run(ctx context.Context) error {
	t := time.NewTicker(time.Duration(sweepEvery))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			l.sweep(l.now())
		}
	}
}

func (l *Limiter) sweep(now time.Time) {
	l.buckets.sweep(int64(now.Sub(l.epoch)))
	l.named.sweep(int64(now.Sub(l.epoch)))
}

// Len reports the buckets held, main and named.
func (l *Limiter) Len() int { return l.buckets.len() + l.named.len() }

// ResetSeconds is ratelimit-reset: whole seconds until the bucket is
// full again.
func (r Result) ResetSeconds() int64 { return ceilSeconds(r.Reset) }

// Headers returns the header values for r: ratelimit-limit,
// ratelimit-remaining, ratelimit-reset (whole seconds until full, rounded
// up) and, when denied, retry-after (see FormatRetryAfter); retryAfter is
// "" when allowed. All are "" for an unlimited key (Limit 0), which sends
// no rate-limit header.
func (r Result) Headers() (limit, remaining, reset, retryAfter string) {
	if r.Limit <= 0 {
		return "", "", "", ""
	}
	limit = strconv.Itoa(r.Limit)
	remaining = strconv.Itoa(r.Remaining)
	reset = strconv.FormatInt(ceilSeconds(r.Reset), 10)
	if !r.Allowed {
		retryAfter = FormatRetryAfter(r.RetryAfter)
	}
	return limit, remaining, reset, retryAfter
}

// FormatRetryAfter returns the retry-after value for d: whole seconds,
// rounded up and at least 1, so a client that obeys it is not early.
// extauthz uses it for both rate_limited and too_many_failed_attempts.
func FormatRetryAfter(d time.Duration) string {
	return strconv.FormatInt(max(ceilSeconds(d), 1), 10)
}

func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}
