// Package analytics counts, per key and per UTC hour, the allowed Checks
// and the denials that name the key (SPEC §9), and writes the counts
// behind like lastused: each flush writes every key's counts once, in
// batches, so the request rate never drives the database's write rate.
package analytics

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/internal/flushloop"
	"github.com/keygate/keygate/store"
)

// Writer is the store's batched usage write: one statement per call.
type Writer interface {
	RecordUsage(ctx context.Context, counts []store.UsageCount) error
}

// Config configures a Counter.
type Config struct {
	Interval time.Duration // --last-used-flush
	// BatchSize bounds the rows written by one statement.
	BatchSize int
	// FlushTimeout bounds the final flush at shutdown.
	FlushTimeout time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

const shards = 32

// slots are a bucket's counters: allowed, then store.UsageCodes.
const slots = 1 + len(store.UsageCodes)

// slot is the counter of code ("" for an allow), or -1 for a code that is
// not counted. Codes are matched by their string, so a code another part
// of keygate adds (usage_exceeded) is counted as soon as it is denied with.
func slot(code keygate.Code) int {
	if code == "" {
		return 0
	}
	for i, c := range store.UsageCodes {
		if string(code) == c {
			return i + 1
		}
	}
	return -1
}

// bucket is one key's hour.
type bucket struct {
	id   string
	hour int64 // unix seconds of the hour's start
}

type counts struct {
	org string
	n   [slots]int64
}

// Counter counts uses of keys in memory until the next flush.
type Counter struct {
	w      Writer
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard

	flushes prometheus.Counter
	rows    prometheus.Counter
	errs    prometheus.Counter
}

type shard struct {
	mu      sync.Mutex
	pending map[bucket]counts
}

// New returns a Counter writing to w.
func New(w Writer, cfg Config) (*Counter, error) {
	if cfg.Interval <= 0 {
		return nil, errors.New("analytics: flush interval must be positive")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 1000
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Counter{
		w: w, cfg: cfg, seed: maphash.MakeSeed(),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_usage_flushes_total", Help: "Flushes of pending usage counts (usage analytics).",
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_usage_rows_written_total", Help: "Hourly usage rows (one key, one hour) added to the store.",
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_usage_flush_errors_total", Help: "Failed usage writes (kept and retried at the next flush).",
		}),
	}
	for i := range c.shards {
		c.shards[i].pending = map[bucket]counts{}
	}
	if cfg.Registerer != nil {
		for _, m := range []prometheus.Collector{c.flushes, c.rows, c.errs} {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// Count notes one Check of key id (of organization org) at at that was
// allowed (code "") or denied with code; codes that are not counted are
// ignored. It is called on every decision that names a key, so it only
// touches memory, and allocates only for a key's first use in an hour
// since the last flush.
func (c *Counter) Count(id, org string, code keygate.Code, at time.Time) {
	i := slot(code)
	if i < 0 {
		return
	}
	sec := at.Unix()
	b := bucket{id: id, hour: sec - ((sec%3600)+3600)%3600}
	s := &c.shards[maphash.String(c.seed, id)%shards]
	s.mu.Lock()
	n := s.pending[b]
	n.org = org
	n.n[i]++
	s.pending[b] = n
	s.mu.Unlock()
}

// add merges counts back (a failed write), under the shard's lock.
func (c *Counter) add(b bucket, n counts) {
	s := &c.shards[maphash.String(c.seed, b.id)%shards]
	s.mu.Lock()
	p := s.pending[b]
	p.org = n.org
	for i := range p.n {
		p.n[i] += n.n[i]
	}
	s.pending[b] = p
	s.mu.Unlock()
}

// Run flushes every interval until ctx ends, then flushes what is pending
// once more (the graceful-shutdown flush) and returns.
func (c *Counter) Run(ctx context.Context) error {
	return flushloop.Run(ctx, c.cfg.Interval, c.cfg.FlushTimeout, c.Flush, c.cfg.Logger, "usage analytics")
}

// Flush writes every pending count, in batches of at most BatchSize rows.
// On failure the unwritten counts go back to pending for the next flush.
func (c *Counter) Flush(ctx context.Context) error {
	var rows []store.UsageCount
	var taken []bucket
	var takenN []counts
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		if len(s.pending) == 0 {
			s.mu.Unlock()
			continue
		}
		old := s.pending
		s.pending = make(map[bucket]counts, len(old))
		s.mu.Unlock()
		for b, n := range old {
			u := store.UsageCount{KeyID: b.id, OrgID: n.org, Hour: time.Unix(b.hour, 0).UTC(), Allowed: n.n[0]}
			copy(u.Denied[:], n.n[1:])
			rows = append(rows, u)
			taken = append(taken, b)
			takenN = append(takenN, n)
		}
	}
	if len(rows) == 0 {
		return nil
	}
	c.flushes.Inc()
	for done := 0; done < len(rows); {
		n := min(len(rows)-done, c.cfg.BatchSize)
		if err := c.w.RecordUsage(ctx, rows[done:done+n]); err != nil {
			c.errs.Inc()
			for i := done; i < len(rows); i++ {
				c.add(taken[i], takenN[i])
			}
			return err
		}
		c.rows.Add(float64(n))
		done += n
	}
	return nil
}
