// Package usage spends the uses of usage-limited keys (SPEC §9) without a
// database write per request: each replica holds a lease of a few uses per
// key, claimed from the store with one atomic statement
// (store.ClaimUses), and spends it locally.
//
// Guarantees, whatever the number of replicas:
//   - exact: the store hands out each use at most once (a claim takes
//     min(n, remaining)), so the allows of all replicas together never
//     exceed remaining; a replica that crashes loses its lease, it never
//     grants extra uses;
//   - epochs: a refill or a PATCH of remaining starts a new usage epoch.
//     A lease of an older epoch is void as soon as the replica sees the
//     new one (the key event reloads its cached view, or its own claim
//     answers a newer epoch), and at the refill boundary by its own
//     clock, so the uses of an epoch never exceed the value that started
//     it;
//   - write rate: the lease grows while a key spends it fast (doubling
//     up to MaxLease) and shrinks when it is idle, and is capped at a
//     fraction of what the store has left, so one replica does not hoard
//     a nearly spent key; a spent key is denied locally for Recheck
//     before the store is asked again.
//
// Unspent leases are given back on shutdown (Close), only to the epoch
// they were taken in.
package usage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// Store is what the manager needs of the key store.
type Store interface {
	ClaimUses(ctx context.Context, keyID string, want int64, now time.Time) (store.UsageClaim, error)
	ReturnUses(ctx context.Context, keyID string, epoch, n int64) (bool, error)
}

// Config configures a Manager.
type Config struct {
	Store Store
	// MaxLease caps the uses one claim takes (default 1000).
	MaxLease int64
	// HoardShare caps a claim at remaining/HoardShare of what the store
	// has left (default 8), so that eight replicas can share the last
	// uses of a key.
	HoardShare int64
	// Fast is how soon after the previous claim a new one counts as the
	// key spending its lease fast, which doubles the next lease; a claim
	// after 4×Fast halves it (default 1s).
	Fast time.Duration
	// Recheck is how long a key found spent is denied without asking the
	// store again (default 1s): uses given back by another replica, or a
	// PATCH this replica has not heard of yet, count after at most that.
	Recheck time.Duration
	Logger  *slog.Logger
}

// Manager leases and spends the uses of usage-limited keys. It is safe
// for concurrent use.
type Manager struct {
	cfg  Config
	keys sync.Map // key id → *keyState

	claims, granted, returned, voided, claimErrors prometheus.Counter
}

// keyState is one key's lease on this replica.
type keyState struct {
	mu    sync.Mutex
	epoch int64 // the newest usage epoch seen
	lease int64 // unspent uses of epoch, this replica's own
	// until is when the lease stops being valid: the next refill at the
	// time of the claim (zero: no refill).
	until time.Time
	// stored is what the store had left after this replica's last claim;
	// known once a claim answered.
	stored int64
	known  bool
	size   int64     // the next claim's size
	last   time.Time // the last claim
	// spentUntil: a spent key is denied locally until then.
	spentUntil time.Time
	// used is the last Spend, for Sweep.
	used time.Time
	// gone: Sweep forgot this state; a Spend that loaded it before must
	// load the key's state again.
	gone bool
}

// New returns a Manager over cfg.Store.
func New(cfg Config) *Manager {
	if cfg.MaxLease <= 0 {
		cfg.MaxLease = 1000
	}
	if cfg.HoardShare <= 0 {
		cfg.HoardShare = 8
	}
	if cfg.Fast <= 0 {
		cfg.Fast = time.Second
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &Manager{cfg: cfg,
		claims:      counter("keygate_usage_claims_total", "Claims of uses of usage-limited keys: the database writes the request rate does not drive."),
		granted:     counter("keygate_usage_claimed_uses_total", "Uses the claims took into this replica's leases."),
		returned:    counter("keygate_usage_returned_uses_total", "Unspent uses of leases given back at a graceful stop."),
		voided:      counter("keygate_usage_voided_uses_total", "Unspent uses of leases voided by a new usage epoch (a refill or a PATCH of remaining)."),
		claimErrors: counter("keygate_usage_claim_errors_total", "Claims that failed (the request was denied service_unavailable)."),
	}
}

// Register registers the manager's metrics (no per-key label) with reg.
func (m *Manager) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.claims, m.granted, m.returned, m.voided, m.claimErrors} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("usage: registering metrics: %w", err)
		}
	}
	return nil
}

// Result is the answer of Spend.
type Result struct {
	// Code is "" to allow, usage_exceeded when the key has fewer uses
	// than the cost, service_unavailable when the store could not be
	// asked, invalid_api_key when the store no longer has the key live.
	Code keygate.Code
	// Remaining is the uses left after this one as this replica knows it
	// (its lease and what the store had at its last claim); -1 when the
	// key turned out to be unlimited.
	Remaining int64
	// RetryAfter is, on usage_exceeded, the time until the next refill
	// (zero: the key has no refill).
	RetryAfter time.Duration
	// Epoch is the usage epoch the uses were spent from.
	Epoch int64
}

// Spend spends cost uses of key keyID, whose cached view was loaded in
// usage epoch epoch with refill interval refill ("" for none), at now.
func (m *Manager) Spend(ctx context.Context, keyID string, epoch int64, refill keygate.RefillInterval, cost int64, now time.Time) Result {
	st := m.locked(keyID)
	defer st.mu.Unlock()
	st.used = now
	if epoch > st.epoch {
		// A refill or PATCH this replica learned of from the key event:
		// the old lease is void.
		m.voided.Add(float64(st.lease))
		st.epoch, st.lease, st.known, st.size, st.spentUntil = epoch, 0, false, 0, time.Time{}
	}
	if !st.until.IsZero() && !now.Before(st.until) {
		// The refill boundary passed: the lease belonged to the period
		// before it.
		m.voided.Add(float64(st.lease))
		st.lease, st.known, st.until, st.spentUntil = 0, false, time.Time{}, time.Time{}
	}
	if st.known && st.lease >= cost {
		return st.spend(cost)
	}
	if st.known && now.Before(st.spentUntil) {
		return m.exceeded(refill, now, st.epoch)
	}
	want := max(st.nextSize(now, m.cfg), cost-st.lease)
	c, err := m.cfg.Store.ClaimUses(ctx, keyID, want, now)
	m.claims.Inc()
	if err != nil {
		m.claimErrors.Inc()
		if errors.Is(err, keygate.ErrNotFound) {
			// Revoked meanwhile (the cached view has not heard yet): a
			// revoked key is invalid_api_key (SPEC §3).
			return Result{Code: keygate.CodeInvalidAPIKey, Epoch: st.epoch}
		}
		m.cfg.Logger.Warn("usage: claiming uses failed; denying", "key_id", keyID, "err", err)
		return Result{Code: keygate.CodeServiceUnavailable, Epoch: st.epoch}
	}
	if !c.Limited {
		// Unlimited now (a PATCH the cache has not seen yet).
		return Result{Remaining: -1, Epoch: st.epoch}
	}
	st.last = now
	if c.Epoch != st.epoch {
		// A refill the claim applied (or another replica did), or a
		// PATCH: whatever was left of the old lease is void.
		if c.Epoch > st.epoch {
			m.voided.Add(float64(st.lease))
			st.lease = 0
		}
		st.epoch = c.Epoch
	}
	st.lease += c.Granted
	m.granted.Add(float64(c.Granted))
	st.stored, st.known = c.Remaining, true
	st.until = time.Time{}
	if c.Refill != nil {
		refill = c.Refill.Interval
		st.until = refill.Next(now)
	}
	if st.lease >= cost {
		return st.spend(cost)
	}
	// Spent: the lease may keep the few uses it has for a cheaper request.
	st.spentUntil = now.Add(m.cfg.Recheck)
	if !st.until.IsZero() && st.until.Before(st.spentUntil) {
		st.spentUntil = st.until
	}
	return m.exceeded(refill, now, st.epoch)
}

func (st *keyState) spend(cost int64) Result {
	st.lease -= cost
	return Result{Remaining: st.lease + st.stored, Epoch: st.epoch}
}

func (m *Manager) exceeded(refill keygate.RefillInterval, now time.Time, epoch int64) Result {
	r := Result{Code: keygate.CodeUsageExceeded, Epoch: epoch}
	if refill.Valid() {
		r.RetryAfter = refill.Next(now).Sub(now)
	}
	return r
}

// nextSize is the size of the next claim: doubled when the last lease was
// spent within Fast, halved when the key was idle for 4×Fast, at most
// MaxLease and at most a HoardShare-th of what the store had left.
func (st *keyState) nextSize(now time.Time, cfg Config) int64 {
	switch since := now.Sub(st.last); {
	case st.size == 0:
		st.size = 1
	case since < cfg.Fast:
		st.size *= 2
	case since > 4*cfg.Fast:
		st.size = max(1, st.size/2)
	}
	st.size = min(st.size, cfg.MaxLease)
	if st.known {
		st.size = min(st.size, max(1, st.stored/cfg.HoardShare))
	}
	return max(st.size, 1)
}

// locked returns key keyID's state, locked, never one Sweep has forgotten
// meanwhile (a lease claimed into it would be neither spent nor given
// back).
func (m *Manager) locked(keyID string) *keyState {
	for {
		st := m.state(keyID)
		st.mu.Lock()
		if !st.gone {
			return st
		}
		st.mu.Unlock()
	}
}

func (m *Manager) state(keyID string) *keyState {
	if st, ok := m.keys.Load(keyID); ok {
		return st.(*keyState)
	}
	st, _ := m.keys.LoadOrStore(keyID, &keyState{})
	return st.(*keyState)
}

// Close gives every unspent lease back to the store, each only to the
// epoch it was taken in and only before its refill boundary (a graceful
// shutdown; a crash loses them). Spend must not be called afterwards.
func (m *Manager) Close(ctx context.Context, now time.Time) error {
	var errs []error
	for k, v := range m.keys.Range {
		id, st := k.(string), v.(*keyState)
		st.mu.Lock()
		n, epoch, valid := st.lease, st.epoch, st.known && (st.until.IsZero() || now.Before(st.until))
		st.lease = 0
		st.mu.Unlock()
		if n <= 0 || !valid {
			continue
		}
		if ok, err := m.cfg.Store.ReturnUses(ctx, id, epoch, n); err != nil {
			errs = append(errs, err)
		} else if ok {
			m.returned.Add(float64(n))
		}
	}
	return errors.Join(errs...)
}

// Sweep forgets the keys not spent since before idle ago, so the
// manager's memory follows the keys in use, not every key ever used. An
// idle key's unspent lease is given back to the store first (to its own
// epoch, before its refill boundary, as Close does), so no use is stranded
// on a replica that stopped seeing the key; a lease its refill boundary
// voided is dropped. A key forgotten starts again with a lease of one
// use. The error is the first give-back that failed (those uses are lost,
// as in a crash).
func (m *Manager) Sweep(ctx context.Context, now time.Time, idle time.Duration) error {
	var errs []error
	for k, v := range m.keys.Range {
		id, st := k.(string), v.(*keyState)
		st.mu.Lock()
		if now.Sub(st.used) <= idle || !m.keys.CompareAndDelete(k, v) {
			st.mu.Unlock()
			continue
		}
		st.gone = true
		n, epoch := st.lease, st.epoch
		giveBack := n > 0 && st.known && (st.until.IsZero() || now.Before(st.until))
		if n > 0 && !giveBack {
			m.voided.Add(float64(n))
		}
		st.lease = 0
		st.mu.Unlock()
		if !giveBack {
			continue
		}
		switch ok, err := m.cfg.Store.ReturnUses(ctx, id, epoch, n); {
		case err != nil:
			errs = append(errs, err)
		case ok:
			m.returned.Add(float64(n))
		default: // a newer epoch: the lease was void already
			m.voided.Add(float64(n))
		}
	}
	return errors.Join(errs...)
}

// Run sweeps every minute, forgetting keys idle for ten minutes (and
// giving back their leases), until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if err := m.Sweep(ctx, now, 10*time.Minute); err != nil && ctx.Err() == nil {
				m.cfg.Logger.Warn("usage: giving back an idle key's lease failed; those uses are lost", "err", err)
			}
		}
	}
}

// Held is the unspent uses this replica holds of key keyID (for tests and
// the shown remaining).
func (m *Manager) Held(keyID string) int64 {
	st := m.locked(keyID)
	defer st.mu.Unlock()
	return st.lease
}
