package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// defaultEventsLimit is the batch size when Events is asked for none.
const defaultEventsLimit = 1000

const latestSeqQuery = `SELECT GREATEST((SELECT max(seq) FROM key_events), (SELECT pruned_through FROM key_events_meta LIMIT 1))`

// LatestEventSeq returns the highest sequence in the log, or how far it was
// pruned when pruning emptied it.
func (s *Store) LatestEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, latestSeqQuery).Scan(&seq); err != nil {
		return 0, fmt.Errorf("postgres: latest event seq: %w", err)
	}
	return seq, nil
}

// eventsQuery reads the pruning mark and up to $2 events after $1. The
// mark's table holds one row, but the planner, without statistics on a
// fresh database, takes it for thousands: joined to the events that makes
// a plan costly enough for JIT compilation, which took most of a second
// per read (every replica reads the log after every event). LIMIT 1 tells
// the planner what the CHECK constraint already guarantees.
const eventsQuery = `SELECT m.pruned_through, e.seq, e.kind, e.org_id, COALESCE(e.key_id, ''), e.hashes, e.created_at
		FROM (SELECT pruned_through FROM key_events_meta LIMIT 1) m
		LEFT JOIN LATERAL (SELECT * FROM key_events WHERE seq > $1 ORDER BY seq LIMIT $2) e ON true
		ORDER BY e.seq`

// Events returns up to limit events with Seq > after. The pruning mark and
// the events are read in one statement, hence one snapshot, so a
// concurrent PruneEvents cannot open an unreported gap.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]keygate.Event, error) {
	if limit <= 0 {
		limit = defaultEventsLimit
	}
	rows, err := s.pool.Query(ctx, eventsQuery, after, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: events: %w", err)
	}
	defer rows.Close()
	var events []keygate.Event
	var pruned int64
	for rows.Next() {
		var (
			seq       *int64
			kind, org *string
			key       *string
			hashes    [][]byte
			createdAt *time.Time
		)
		if err := rows.Scan(&pruned, &seq, &kind, &org, &key, &hashes, &createdAt); err != nil {
			return nil, fmt.Errorf("postgres: events: %w", err)
		}
		if seq == nil {
			continue // no events after `after`
		}
		ev := keygate.Event{Seq: *seq, Kind: keygate.EventKind(*kind), OrgID: *org, KeyID: *key, CreatedAt: createdAt.UTC()}
		for _, h := range hashes {
			if len(h) != len(keygate.Hash{}) {
				return nil, fmt.Errorf("postgres: events: seq %d holds a hash of %d bytes", ev.Seq, len(h))
			}
			ev.Hashes = append(ev.Hashes, keygate.Hash(h))
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: events: %w", err)
	}
	if after < pruned {
		return nil, fmt.Errorf("postgres: events after %d (pruned through %d): %w", after, pruned, store.ErrEventsPruned)
	}
	return events, nil
}

// PruneEvents deletes the events created before t, as a prefix of the log:
// every event up to the newest one created before t, so the log stays
// contiguous above the mark it records.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `WITH cut AS (
			SELECT max(seq) AS seq FROM key_events WHERE created_at < $1),
		del AS (
			DELETE FROM key_events WHERE seq <= (SELECT seq FROM cut) RETURNING 1),
		mark AS (
			UPDATE key_events_meta SET pruned_through = GREATEST(pruned_through, (SELECT seq FROM cut))
			WHERE (SELECT seq FROM cut) IS NOT NULL)
		SELECT count(*) FROM del`, trunc(before)).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: prune events: %w", err)
	}
	return n, nil
}
