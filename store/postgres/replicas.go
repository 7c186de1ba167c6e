package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/store"
)

// ReplicasChannel is the channel every replica report NOTIFYs (payload:
// the replica id), so a write waiting for acknowledgements hears them
// without polling the table.
const ReplicasChannel = "keygate_replicas"

// ReportReplica registers r or, when registered, records that it was seen
// now (the database's clock) with r.AppliedSeq (never moving it back), and
// NOTIFYs ReplicasChannel. A replica forgotten while away registers again.
func (s *Store) ReportReplica(ctx context.Context, r store.Replica) error {
	_, err := s.pool.Exec(ctx, `WITH r AS (
			INSERT INTO replicas (replica_id, hostname, version, started_at, last_seen_at, applied_seq)
			VALUES ($1, $2, $3, $4, now(), $5)
			ON CONFLICT (replica_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at,
				applied_seq = GREATEST(replicas.applied_seq, EXCLUDED.applied_seq)
			RETURNING replica_id)
		SELECT pg_notify('`+ReplicasChannel+`', replica_id) FROM r`,
		r.ID, r.Hostname, r.Version, trunc(r.StartedAt), r.AppliedSeq)
	if err != nil {
		return fmt.Errorf("postgres: report replica: %w", err)
	}
	return nil
}

// DeregisterReplica removes replica id: it stopped and serves no more.
func (s *Store) DeregisterReplica(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM replicas WHERE replica_id = $1`, id); err != nil {
		return fmt.Errorf("postgres: deregister replica: %w", err)
	}
	return nil
}

// ForgetReplicas deletes the replicas not seen for longer than age.
func (s *Store) ForgetReplicas(ctx context.Context, age time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM replicas WHERE last_seen_at < now() - $1::bigint * interval '1 microsecond'`,
		age.Microseconds())
	if err != nil {
		return 0, fmt.Errorf("postgres: forget replicas: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Replicas lists the registered replicas, oldest first, each live when
// seen within liveWithin, with its lag behind the events log.
func (s *Store) Replicas(ctx context.Context, liveWithin time.Duration) ([]store.ReplicaStatus, error) {
	rows, err := s.pool.Query(ctx, `WITH head AS (`+latestSeqQuery+` AS seq)
		SELECT r.replica_id, r.hostname, r.version, r.started_at, r.last_seen_at, r.applied_seq,
			r.last_seen_at >= now() - $1::bigint * interval '1 microsecond',
			GREATEST((SELECT seq FROM head) - r.applied_seq, 0),
			COALESCE(EXTRACT(EPOCH FROM now() - (SELECT e.created_at FROM key_events e
				WHERE e.seq > r.applied_seq ORDER BY e.seq LIMIT 1))::float8, 0)
		FROM replicas r ORDER BY r.started_at, r.replica_id`, liveWithin.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("postgres: replicas: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.ReplicaStatus, error) {
		var r store.ReplicaStatus
		err := row.Scan(&r.ID, &r.Hostname, &r.Version, &r.StartedAt, &r.LastSeenAt, &r.AppliedSeq,
			&r.Live, &r.LagEvents, &r.LagSeconds)
		r.StartedAt, r.LastSeenAt = r.StartedAt.UTC(), r.LastSeenAt.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: replicas: %w", err)
	}
	return list, nil
}

// ListenReplicas LISTENs on ReplicasChannel over a dedicated connection
// and calls notify for every report, until ctx ends (nil) or the
// connection fails (its error: the caller reconnects). notify also runs
// once LISTEN is in place, since reports may have come before it.
func (s *Store) ListenReplicas(ctx context.Context, notify func()) error {
	conn, err := s.ListenConn(ctx)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ReplicasChannel}.Sanitize()); err != nil {
		return fmt.Errorf("postgres: LISTEN %s: %w", ReplicasChannel, err)
	}
	notify()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("postgres: replica notifications: %w", err)
		}
		notify()
	}
}
