-- The keygate schema on SQLite. Times are INTEGER microseconds since the
-- Unix epoch (UTC), so they sort, compare and round-trip exactly; scopes
-- and project_ids are JSON arrays of strings, metadata a JSON object, and
-- key_events.hashes the concatenation of 32-byte SHA-256 hashes.

-- +goose Up
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
) STRICT;

CREATE TABLE api_keys (
    id                    TEXT PRIMARY KEY,
    org_id                TEXT NOT NULL REFERENCES organizations (id),
    user_id               TEXT NOT NULL,
    name                  TEXT NOT NULL,
    type                  TEXT NOT NULL CHECK (type IN ('secret', 'publishable')),
    environment           TEXT NOT NULL CHECK (environment IN ('live', 'test')),
    scopes                TEXT NOT NULL DEFAULT '[]' CHECK (json_type(scopes) = 'array'),
    project_ids           TEXT NOT NULL DEFAULT '[]' CHECK (json_type(project_ids) = 'array'),
    rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute >= 0),
    metadata              TEXT NOT NULL DEFAULT '{}' CHECK (json_type(metadata) = 'object'),
    prefix                TEXT NOT NULL,
    last4                 TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    last_used_at          INTEGER,
    expires_at            INTEGER,
    disabled_at           INTEGER,
    revoked_at            INTEGER
) STRICT;

-- Listing: newest first within an organization, revoked keys never listed.
CREATE INDEX api_keys_list ON api_keys (org_id, created_at DESC, id DESC) WHERE revoked_at IS NULL;

-- A key has one current token (expires_at null) and, after a roll with a
-- grace period, old tokens that stop working at expires_at.
CREATE TABLE key_tokens (
    hash       BLOB PRIMARY KEY CHECK (length(hash) = 32),
    key_id     TEXT NOT NULL REFERENCES api_keys (id),
    expires_at INTEGER
) STRICT;
CREATE INDEX key_tokens_key_id ON key_tokens (key_id);

-- The key-events log that other processes poll. AUTOINCREMENT: a sequence
-- number is never reused, even after the newest events are pruned.
CREATE TABLE key_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    org_id     TEXT NOT NULL,
    key_id     TEXT,
    hashes     BLOB NOT NULL DEFAULT x'',
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX key_events_created_at ON key_events (created_at);

-- How far the events log was pruned: a gap in seq says nothing, this mark does.
CREATE TABLE key_events_meta (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO key_events_meta (id) VALUES (1);

CREATE TABLE audit_events (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL,
    action       TEXT NOT NULL,
    actor_key_id TEXT,
    key_id       TEXT,
    request_id   TEXT,
    created_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX audit_events_list ON audit_events (org_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE audit_events;
DROP TABLE key_events_meta;
DROP TABLE key_events;
DROP TABLE key_tokens;
DROP TABLE api_keys;
DROP TABLE organizations;
