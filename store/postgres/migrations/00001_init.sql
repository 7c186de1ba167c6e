-- The keygate schema on PostgreSQL. Times are timestamptz with microsecond
-- precision; the store truncates every time it writes to microseconds so
-- that what it returns equals what it was given.

-- +goose Up
CREATE TABLE organizations (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL,
    disabled_at timestamptz
);

CREATE TABLE api_keys (
    id                    text PRIMARY KEY,
    org_id                text NOT NULL REFERENCES organizations (id),
    user_id               text NOT NULL,
    name                  text NOT NULL,
    type                  text NOT NULL CHECK (type IN ('secret', 'publishable')),
    environment           text NOT NULL CHECK (environment IN ('live', 'test')),
    scopes                text[] NOT NULL DEFAULT '{}',
    project_ids           text[] NOT NULL DEFAULT '{}',
    rate_limit_per_minute integer CHECK (rate_limit_per_minute >= 0),
    metadata              jsonb NOT NULL DEFAULT '{}',
    prefix                text NOT NULL,
    last4                 text NOT NULL,
    created_at            timestamptz NOT NULL,
    last_used_at          timestamptz,
    expires_at            timestamptz,
    disabled_at           timestamptz,
    revoked_at            timestamptz
);

-- Listing: newest first within an organization, revoked keys never listed.
CREATE INDEX api_keys_list ON api_keys (org_id, created_at DESC, id DESC) WHERE revoked_at IS NULL;

-- A key has one current token (expires_at null) and, after a roll with a
-- grace period, old tokens that stop working at expires_at.
CREATE TABLE key_tokens (
    hash       bytea PRIMARY KEY CHECK (length(hash) = 32),
    key_id     text NOT NULL REFERENCES api_keys (id),
    expires_at timestamptz
);
CREATE INDEX key_tokens_key_id ON key_tokens (key_id);

-- The key-events log that replicas follow. hashes names the tokens whose
-- cached records an event makes stale (empty for organization events).
CREATE TABLE key_events (
    seq        bigserial PRIMARY KEY,
    kind       text NOT NULL,
    org_id     text NOT NULL,
    key_id     text,
    hashes     bytea[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);
CREATE INDEX key_events_created_at ON key_events (created_at);

-- How far the events log was pruned: sequences skip on rollback, so a gap
-- in seq says nothing; this mark does.
CREATE TABLE key_events_meta (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO key_events_meta DEFAULT VALUES;

CREATE TABLE audit_events (
    id           text PRIMARY KEY,
    org_id       text NOT NULL,
    action       text NOT NULL,
    actor_key_id text,
    key_id       text,
    request_id   text,
    created_at   timestamptz NOT NULL
);
CREATE INDEX audit_events_list ON audit_events (org_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE audit_events;
DROP TABLE key_events_meta;
DROP TABLE key_events;
DROP TABLE key_tokens;
DROP TABLE api_keys;
DROP TABLE organizations;
