-- The replica registry (SPEC §12): every `serve` on PostgreSQL upserts its
-- row at start, within 50 ms of applying events and at every heartbeat, so
-- a write can wait until every live replica has applied its event.
-- last_seen_at is the database's clock, so liveness never depends on the
-- replicas' clocks agreeing.

-- +goose Up
CREATE TABLE replicas (
    replica_id   text PRIMARY KEY,
    hostname     text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    applied_seq  bigint NOT NULL DEFAULT 0
);
CREATE INDEX replicas_last_seen ON replicas (last_seen_at);

-- +goose Down
DROP TABLE replicas;
