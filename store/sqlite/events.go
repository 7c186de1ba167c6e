package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// defaultEventsLimit is the batch size when Events is asked for none.
const defaultEventsLimit = 1000

// LatestEventSeq returns the highest sequence in the log, or how far it was
// pruned when pruning emptied it.
func (s *Store) LatestEventSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.db.QueryRowContext(ctx, `SELECT max(coalesce((SELECT max(seq) FROM key_events), 0), pruned_through)
		FROM key_events_meta`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("sqlite: latest event seq: %w", err)
	}
	return seq, nil
}

// Events returns up to limit events with Seq > after. The pruning mark and
// the events are read in one statement, hence one snapshot, so a
// concurrent PruneEvents cannot open an unreported gap.
func (s *Store) Events(ctx context.Context, after int64, limit int) ([]keygate.Event, error) {
	if limit <= 0 {
		limit = defaultEventsLimit
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.pruned_through, e.seq, e.kind, e.org_id, coalesce(e.key_id, ''), e.hashes, e.created_at
		FROM key_events_meta m
		LEFT JOIN (SELECT * FROM key_events WHERE seq > ? ORDER BY seq LIMIT ?) e ON 1
		ORDER BY e.seq`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: events: %w", err)
	}
	defer rows.Close()
	var events []keygate.Event
	var pruned int64
	for rows.Next() {
		var (
			seq, created   sql.NullInt64
			kind, org, key sql.NullString
			hashes         []byte
		)
		if err := rows.Scan(&pruned, &seq, &kind, &org, &key, &hashes, &created); err != nil {
			return nil, fmt.Errorf("sqlite: events: %w", err)
		}
		if !seq.Valid {
			continue // no events after `after`
		}
		ev := keygate.Event{Seq: seq.Int64, Kind: keygate.EventKind(kind.String), OrgID: org.String,
			KeyID: key.String, CreatedAt: fromUS(created.Int64)}
		const n = len(keygate.Hash{})
		if len(hashes)%n != 0 {
			return nil, fmt.Errorf("sqlite: events: seq %d holds %d bytes of hashes", ev.Seq, len(hashes))
		}
		for i := 0; i < len(hashes); i += n {
			ev.Hashes = append(ev.Hashes, keygate.Hash(hashes[i:i+n]))
		}
		events = append(events, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: events: %w", err)
	}
	if after < pruned {
		return nil, fmt.Errorf("sqlite: events after %d (pruned through %d): %w", after, pruned, store.ErrEventsPruned)
	}
	return events, nil
}

// PruneEvents deletes the events created before t, as a prefix of the log:
// every event up to the newest one created before t, so the log stays
// contiguous above the mark it records.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	defer tx.Rollback()
	var cut sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT max(seq) FROM key_events WHERE created_at < ?`,
		toUS(trunc(before))).Scan(&cut); err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	if !cut.Valid {
		return 0, nil
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM key_events WHERE seq <= ?`, cut.Int64)
	if err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	n, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `UPDATE key_events_meta SET pruned_through = max(pruned_through, ?)`, cut.Int64); err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlite: prune events: %w", err)
	}
	return n, nil
}
