package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// FallbackPoll bounds how long a waiter goes without reading the registry
// when no report notification arrives (a LISTEN can die silently).
const FallbackPoll = 250 * time.Millisecond

// Notifications is what a Waiter hears reports through: it LISTENs (on
// store/postgres's ReplicasChannel) and calls notify for every report
// until ctx ends (nil) or the connection fails.
type Notifications func(ctx context.Context, notify func()) error

// Waiter waits until the live replicas have applied an event.
type Waiter struct {
	reg        Registry
	listen     Notifications
	liveWithin time.Duration
	logger     *slog.Logger
	now        func() time.Time

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at every report
	waiting int           // Waits in progress
	since   time.Time     // when waiting last became 0
	wake    chan struct{} // a Wait began: Run listens
}

// linger is how long Run keeps its LISTEN connection after the last Wait
// ended: a burst of waited writes shares one connection, and a replica
// that nobody waits on holds none.
const linger = 10 * time.Second

// NewWaiter returns a waiter over reg; Run keeps its notifications
// coming. Without Run, Wait still works on the fallback poll alone.
func NewWaiter(reg Registry, listen Notifications, liveWithin time.Duration, logger *slog.Logger) *Waiter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Waiter{reg: reg, listen: listen, liveWithin: liveWithin, logger: logger, now: time.Now,
		changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// Run listens for reports while Waits are in progress (and for linger
// after the last), reconnecting with backoff, until ctx ends; it returns
// nil then.
func (w *Waiter) Run(ctx context.Context) error {
	if w.listen == nil {
		return nil
	}
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		}
		for w.busy() {
			began := time.Now()
			err := w.listenWhileBusy(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err == nil {
				break // idle for linger
			}
			if time.Since(began) > 10*time.Second {
				backoff = 100 * time.Millisecond
			}
			w.logger.Warn("replica report notifications lost; waits poll every 250ms until they return", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
		}
	}
}

// listenWhileBusy listens until no Wait has been in progress for linger
// (nil) or the connection fails.
func (w *Waiter) listenWhileBusy(ctx context.Context) error {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.listen(lctx, w.broadcast) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err == nil && ctx.Err() == nil {
				err = errors.New("fleet: notifications ended")
			}
			return err
		case <-tick.C:
			if !w.busy() {
				cancel()
				<-done
				return nil
			}
		}
	}
}

// busy: a Wait is in progress or ended less than linger ago.
func (w *Waiter) busy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting > 0 || w.now().Sub(w.since) < linger
}

func (w *Waiter) begin() {
	w.mu.Lock()
	w.waiting++
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Waiter) end() {
	w.mu.Lock()
	w.waiting--
	if w.waiting == 0 {
		w.since = w.now()
	}
	w.mu.Unlock()
}

func (w *Waiter) broadcast() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

func (w *Waiter) next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Wait returns when every live replica has applied event seq, or when
// timeout has passed, with the propagation as it was then. It reads the
// registry when a report is notified, and at least every FallbackPoll.
// An error means the registry could not be read at all.
func (w *Waiter) Wait(ctx context.Context, seq int64, timeout time.Duration) (Propagation, error) {
	w.begin()
	defer w.end()
	start := w.now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var (
		p       Propagation
		lastErr error
		read    bool
	)
	for {
		changed := w.next() // before the read, so no report falls between
		list, err := w.reg.Replicas(ctx, w.liveWithin)
		if err == nil {
			p, read = propagation(list, seq), true
			if p.Complete {
				break
			}
		} else {
			lastErr = err
		}
		poll := time.NewTimer(FallbackPoll)
		select {
		case <-ctx.Done():
			poll.Stop()
			return w.finish(p, read, start, ctx.Err())
		case <-deadline.C:
			poll.Stop()
			return w.finish(p, read, start, lastErr)
		case <-changed:
		case <-poll.C:
		}
		poll.Stop()
	}
	p.MS = w.now().Sub(start).Milliseconds()
	return p, nil
}

// finish is the answer at the timeout: the last propagation read, or an
// error when none could be read.
func (w *Waiter) finish(p Propagation, read bool, start time.Time, err error) (Propagation, error) {
	if !read {
		if err == nil {
			err = errors.New("fleet: timed out before the registry could be read")
		}
		return Propagation{}, err
	}
	p.MS = w.now().Sub(start).Milliseconds()
	return p, nil
}
