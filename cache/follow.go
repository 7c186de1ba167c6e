package cache

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// EventSource is the part of the store that a Follower reads.
type EventSource interface {
	LatestEventSeq(ctx context.Context) (int64, error)
	Events(ctx context.Context, after int64, limit int) ([]keygate.Event, error)
}

// Invalidator is what a Follower applies events to.
type Invalidator interface {
	Apply(keygate.Event)
	Purge()
	// MarkSynced records that every event committed before t is applied.
	MarkSynced(t time.Time)
}

// eventBatch is how many events one read of the log returns at most.
const eventBatch = 1000

// Follower applies the key-events log to a cache by polling it: every
// interval it reads the events after the last one it applied. Sequence
// numbers become visible in commit order, so reading Seq > last never skips
// an event that committed late.
type Follower struct {
	src      EventSource
	inv      Invalidator
	interval time.Duration
	logger   *slog.Logger
	now      func() time.Time

	last atomic.Int64 // last applied sequence
	// position is raised to an event's sequence before the event is
	// applied (and to the log's end before a purge): see Position.
	position atomic.Int64
	// syncedAt is the last complete read of the log; nil before the first.
	// A time.Time keeps the monotonic reading that SinceSync measures with.
	syncedAt atomic.Pointer[time.Time]
	wake     chan struct{}
	// syncMu makes Syncs one at a time: Run's and the management API's
	// (which syncs before it answers a revoke) would otherwise race on last.
	syncMu sync.Mutex

	applied prometheus.Counter
	purges  prometheus.Counter
	errors  prometheus.Counter
	replays prometheus.Counter
}

// NewFollower returns a follower that polls src every interval and applies
// what it reads to inv. Metrics go to reg when it is not nil.
func NewFollower(src EventSource, inv Invalidator, interval time.Duration, logger *slog.Logger, reg prometheus.Registerer) (*Follower, error) {
	if interval <= 0 {
		return nil, errors.New("cache: poll interval must be positive")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Follower{
		src: src, inv: inv, interval: interval, logger: logger, now: time.Now,
		wake: make(chan struct{}, 1),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_events_replays_total",
			Help: "Reads of the events log from the last applied event after the notification connection (re)connected.",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_events_applied_total",
			Help: "Key events applied to the cache.",
		}),
		purges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_events_log_purges_total",
			Help: "Full cache purges because the events log no longer reached back to the last applied event.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_events_read_errors_total",
			Help: "Failed reads of the events log.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{f.applied, f.purges, f.errors, f.replays,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "keygate_events_last_seq",
				Help: "Sequence of the last key event applied.",
			}, func() float64 { return float64(f.last.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "keygate_events_seconds_since_sync",
				Help: "Seconds since the events log was last read to its end.",
			}, func() float64 { return f.SinceSync().Seconds() }),
		} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return f, nil
}

// LastSeq is the sequence of the last event applied.
func (f *Follower) LastSeq() int64 { return f.last.Load() }

// Position is the highest sequence the follower has applied or begun to
// apply. It is raised before the invalidation it stands for, so a lookup
// that began after an invalidation reads at least that event's sequence
// here (LastSeq may still lag it): a hot standby that has replayed this
// far holds everything the invalidation made stale (store/postgres).
func (f *Follower) Position() int64 { return f.position.Load() }

// SinceSync is how long ago the log was last read to its end; very long
// before the first read.
func (f *Follower) SinceSync() time.Duration {
	t := f.syncedAt.Load()
	if t == nil {
		return time.Duration(1<<63 - 1)
	}
	return f.now().Sub(*t)
}

// Start finds the end of the log, from where Run follows it. A replica
// starts with an empty cache, so nothing before the end can concern it.
func (f *Follower) Start(ctx context.Context) error {
	seq, err := f.src.LatestEventSeq(ctx)
	if err != nil {
		return err
	}
	f.position.Store(seq)
	f.last.Store(seq)
	now := f.now()
	f.syncedAt.Store(&now)
	return nil
}

// Wake makes Run read the log now rather than at its next poll: a
// notification said something was committed.
func (f *Follower) Wake() {
	select {
	case f.wake <- struct{}{}:
	default: // a read is already due
	}
}

// Replay is Wake after the notification connection (re)connected: events
// committed while it was down are read from the last applied one.
func (f *Follower) Replay() {
	f.replays.Inc()
	f.Wake()
}

// Run follows the log until ctx ends; it returns nil then. It reads the log
// every interval and whenever woken. Call Start first; Run retries it while
// the store is unreachable if not.
func (f *Follower) Run(ctx context.Context) error {
	t := time.NewTicker(f.interval)
	defer t.Stop()
	started := f.syncedAt.Load() != nil
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-f.wake:
		}
		if !started {
			if err := f.Start(ctx); err != nil {
				f.errors.Inc()
				f.logger.Warn("events log: cannot read its end", "err", err)
				continue
			}
			started = true
			continue
		}
		if err := f.Sync(ctx); err != nil && ctx.Err() == nil {
			f.errors.Inc()
			f.logger.Warn("events log: read failed; retrying", "err", err, "last_seq", f.last.Load())
		}
	}
}

// Sync reads and applies every event after the last one applied. When the
// log was pruned past that point, it purges the whole cache and continues
// from the log's end.
func (f *Follower) Sync(ctx context.Context) error {
	f.syncMu.Lock()
	defer f.syncMu.Unlock()
	start := f.now()
	for {
		evs, err := f.src.Events(ctx, f.last.Load(), eventBatch)
		if errors.Is(err, store.ErrEventsPruned) {
			seq, err := f.src.LatestEventSeq(ctx)
			if err != nil {
				return err
			}
			f.position.Store(seq)
			f.inv.Purge()
			f.purges.Inc()
			f.logger.Warn("events log pruned past the last applied event; cache purged", "last_seq", f.last.Load(), "now_seq", seq)
			f.last.Store(seq)
			continue
		}
		if err != nil {
			return err
		}
		for _, ev := range evs {
			f.position.Store(ev.Seq)
			f.inv.Apply(ev)
			f.applied.Inc()
			f.last.Store(ev.Seq)
		}
		if len(evs) < eventBatch {
			// Everything committed before start is now applied.
			f.syncedAt.Store(&start)
			f.inv.MarkSynced(start)
			return nil
		}
	}
}
