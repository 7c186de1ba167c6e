package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
)

// Lookups on a hot standby (--read-database-url).
//
// A standby replays the primary's WAL, so what it answers is the primary's
// state at some earlier commit. That is harmless for a replica exactly when
// the standby has replayed every key event the replica has applied to its
// cache: an event's data changes commit with the event, and events commit
// in sequence order (the events lock), so a snapshot holding event n holds
// every change up to it. Each standby lookup therefore reads, in the same
// statement and so the same snapshot, the standby's position — max(seq) of
// the key_events rows it can see (not the sequence object, which runs
// ahead of commits and is not transactional) — and its answer is used only
// when that position is at least the replica's (StandbyGate.Position).
//
// Why that keeps both guarantees:
//   - Revoked stays revoked: once the replica has applied the revocation's
//     event n (its cache entry invalidated), Position is at least n, so a
//     standby that has not replayed the revocation is not believed; the
//     primary answers.
//   - Created is found: a key created through any replica is committed with
//     its key.created event n, which names its token hash. Applying n
//     invalidates a negative cache entry for the hash, and the next lookup
//     again requires a standby at n or later, which holds the key, or asks
//     the primary.
//
// The cache depends on Position being raised before the invalidation it
// stands for (cache.Follower.Position): a load that began after an
// invalidation then sees its event's sequence here, even while the
// follower is still applying it.
//
// While the notification connection is unhealthy, the replica cannot know
// how far behind its own position is, so every lookup goes to the primary;
// so do lookups while the standby is failing.

// StandbyGate is what the store asks before it uses a standby's answer.
type StandbyGate struct {
	// Position is the highest event sequence this replica has applied, or
	// begun to apply, to its cache (cache.Follower.Position).
	Position func() int64
	// Healthy reports whether the replica's notification connection is up
	// and its events log was read recently; false sends every lookup to
	// the primary.
	Healthy func() bool
	// Timeout bounds one standby lookup: a standby that does not answer in
	// time (stuck behind a replay lock, or unreachable) is given up on for
	// this lookup, and the primary answers. Zero means DefaultStandbyTimeout.
	Timeout time.Duration
	// Registerer receives the standby metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultStandbyTimeout is StandbyGate.Timeout's default.
const DefaultStandbyTimeout = time.Second

// standbyRetry is how long lookups skip a standby after it failed.
const standbyRetry = 5 * time.Second

// Fallback reasons, the values of keygate_standby_fallbacks_total{reason}.
const (
	fallbackBehind    = "behind"    // the standby had not replayed the replica's position
	fallbackError     = "error"     // the standby failed or timed out
	fallbackRetry     = "retry"     // skipped: the standby failed less than standbyRetry ago
	fallbackUnhealthy = "unhealthy" // the notification connection is not healthy
)

type standby struct {
	gate    StandbyGate
	retryAt atomic.Int64 // unix nanoseconds before which the standby is skipped

	answered  prometheus.Counter
	fallbacks *prometheus.CounterVec
}

// HasStandby reports whether the store was opened with a ReadURL.
func (s *Store) HasStandby() bool { return s.read != nil }

// UseStandby starts using the standby of Config.ReadURL for lookups, under
// gate. Until it is called, or without a ReadURL, every lookup goes to the
// primary: only a replica that follows the events log has a position to
// compare with. Call it once, before serving.
func (s *Store) UseStandby(gate StandbyGate) error {
	if s.read == nil {
		return errors.New("postgres: no --read-database-url to use")
	}
	if gate.Position == nil || gate.Healthy == nil {
		return errors.New("postgres: a standby needs Position and Healthy")
	}
	if gate.Timeout <= 0 {
		gate.Timeout = DefaultStandbyTimeout
	}
	sb := &standby{
		gate: gate,
		answered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_standby_lookups_total",
			Help: "Cache misses answered by the hot standby (--read-database-url).",
		}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_standby_fallbacks_total",
			Help: "Cache misses the primary answered instead of the standby, by reason: behind (the standby had not replayed this replica's event position), error, retry (the standby failed recently), unhealthy (the notification connection is down).",
		}, []string{"reason"}),
	}
	for _, r := range []string{fallbackBehind, fallbackError, fallbackRetry, fallbackUnhealthy} {
		sb.fallbacks.WithLabelValues(r)
	}
	if gate.Registerer != nil {
		for _, c := range []prometheus.Collector{sb.answered, sb.fallbacks} {
			if err := gate.Registerer.Register(c); err != nil {
				return fmt.Errorf("postgres: registering standby metrics: %w", err)
			}
		}
	}
	if !s.standby.CompareAndSwap(nil, sb) {
		return errors.New("postgres: UseStandby called twice")
	}
	return nil
}

// standbyLookup is lookupSelect with the standby's event position, in one
// statement so in one snapshot: always one row, whose lookup columns are
// NULL when no token has the hash. When pruning emptied the log, the
// position is the pruning mark.
const standbyLookup = `SELECT GREATEST((SELECT max(seq) FROM key_events), (SELECT pruned_through FROM key_events_meta LIMIT 1)), found.*
	FROM (SELECT 1) AS one
	LEFT JOIN LATERAL (` + lookupSelect + `) AS found ON true`

// lookupStandby answers from the standby when it may (answered true), with
// the record or keygate.ErrNotFound; otherwise the primary must answer.
func (s *Store) lookupStandby(ctx context.Context, h keygate.Hash) (rec *keygate.KeyRecord, err error, answered bool) {
	sb := s.standby.Load()
	if sb == nil {
		return nil, nil, false
	}
	if !sb.gate.Healthy() {
		sb.fallbacks.WithLabelValues(fallbackUnhealthy).Inc()
		return nil, nil, false
	}
	if time.Now().UnixNano() < sb.retryAt.Load() {
		sb.fallbacks.WithLabelValues(fallbackRetry).Inc()
		return nil, nil, false
	}
	// Read before the query: a later invalidation can only raise it, and
	// a load that raced one is not cached past it (cache generations).
	need := sb.gate.Position()
	qctx, cancel := context.WithTimeout(ctx, sb.gate.Timeout)
	defer cancel()
	rec, pos, err := s.queryStandby(qctx, h)
	switch {
	case err != nil && !errors.Is(err, keygate.ErrNotFound):
		if ctx.Err() != nil {
			// The caller gave up: so would a query on the primary.
			return nil, fmt.Errorf("postgres: lookup on the standby: %w", err), true
		}
		sb.fallbacks.WithLabelValues(fallbackError).Inc()
		if sb.retryAt.Swap(time.Now().Add(standbyRetry).UnixNano()) < time.Now().UnixNano() {
			s.log.Warn("standby lookup failed; lookups go to the primary for a while", "err", err, "retry_in", standbyRetry)
		}
		return nil, nil, false
	case pos < need:
		sb.fallbacks.WithLabelValues(fallbackBehind).Inc()
		return nil, nil, false
	}
	sb.answered.Inc()
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup: %w", err), true
	}
	return rec, nil, true
}

// queryStandby runs standbyLookup: the record (or keygate.ErrNotFound) and
// the standby's position in the same snapshot.
func (s *Store) queryStandby(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, int64, error) {
	rows, err := s.read.Query(ctx, standbyLookup, h[:])
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, 0, err
		}
		return nil, 0, errors.New("standby lookup returned no row")
	}
	var pos int64
	var rec *keygate.KeyRecord
	if rows.RawValues()[1] == nil {
		// No token has the hash: every lookup column is NULL.
		dest := make([]any, len(rows.FieldDescriptions()))
		dest[0] = &pos
		err = rows.Scan(dest...)
		if err == nil {
			err = keygate.ErrNotFound
		}
	} else {
		rec, err = s.scanRecord(rows, &pos)
	}
	rows.Close()
	if rerr := rows.Err(); rerr != nil {
		return nil, 0, rerr
	}
	return rec, pos, err
}
