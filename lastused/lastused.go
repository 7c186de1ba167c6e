// Package lastused records when keys were last used and writes it behind,
// in batches: at most one write per key per flush interval, so the request
// rate never drives the database's write rate (SPEC §4).
package lastused

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/internal/flushloop"
	"github.com/keygate/keygate/store"
)

// Writer is the store's batched last-used write: one statement per call.
type Writer interface {
	RecordLastUsed(ctx context.Context, uses []store.LastUse) error
}

// Config configures a Tracker.
type Config struct {
	Interval time.Duration // --last-used-flush
	// BatchSize bounds the keys written by one statement.
	BatchSize int
	// FlushTimeout bounds the final flush at shutdown.
	FlushTimeout time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

const shards = 32

// Tracker remembers the latest use of each key since the last flush.
type Tracker struct {
	w      Writer
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard

	flushes prometheus.Counter
	written prometheus.Counter
	errs    prometheus.Counter
}

type shard struct {
	mu      sync.Mutex
	pending map[string]time.Time
}

// New returns a Tracker writing to w.
func New(w Writer, cfg Config) (*Tracker, error) {
	if cfg.Interval <= 0 {
		return nil, errors.New("lastused: flush interval must be positive")
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
	t := &Tracker{
		w: w, cfg: cfg, seed: maphash.MakeSeed(),
		flushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_last_used_flushes_total", Help: "Flushes of pending last-used times.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_last_used_keys_written_total", Help: "Keys whose last_used_at was written.",
		}),
		errs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_last_used_flush_errors_total", Help: "Failed last-used writes (retried at the next flush).",
		}),
	}
	for i := range t.shards {
		t.shards[i].pending = map[string]time.Time{}
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{t.flushes, t.written, t.errs} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

// Record notes that key id was used at at. It is called on every allowed
// request, so it only touches memory.
func (t *Tracker) Record(id string, at time.Time) {
	s := &t.shards[maphash.String(t.seed, id)%shards]
	s.mu.Lock()
	if prev, ok := s.pending[id]; !ok || at.After(prev) {
		s.pending[id] = at
	}
	s.mu.Unlock()
}

// Run flushes every interval until ctx ends, then flushes what is pending
// once more (the graceful-shutdown flush) and returns.
func (t *Tracker) Run(ctx context.Context) error {
	return flushloop.Run(ctx, t.cfg.Interval, t.cfg.FlushTimeout, t.Flush, t.cfg.Logger, "last-used")
}

// Flush writes every pending use, in batches of at most BatchSize keys. On
// failure the unwritten uses go back to pending for the next flush.
func (t *Tracker) Flush(ctx context.Context) error {
	var uses []store.LastUse
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for id, at := range s.pending {
			uses = append(uses, store.LastUse{KeyID: id, At: at})
		}
		if len(s.pending) > 0 {
			s.pending = map[string]time.Time{}
		}
		s.mu.Unlock()
	}
	if len(uses) == 0 {
		return nil
	}
	t.flushes.Inc()
	for len(uses) > 0 {
		n := min(len(uses), t.cfg.BatchSize)
		if err := t.w.RecordLastUsed(ctx, uses[:n]); err != nil {
			t.errs.Inc()
			for _, u := range uses {
				t.Record(u.KeyID, u.At)
			}
			return err
		}
		t.written.Add(float64(n))
		uses = uses[n:]
	}
	return nil
}
