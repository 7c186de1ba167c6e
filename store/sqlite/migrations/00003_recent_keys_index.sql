-- Warm start (SPEC §10) reads the most recently used keys that are not
-- revoked: last_used_at descending, never-used keys after them (SQLite
-- sorts nulls first, so last in a descending order), newest first. This
-- index holds them in that order, so the query reads only the keys it
-- returns instead of sorting the whole table.

-- +goose Up
CREATE INDEX api_keys_recent ON api_keys (last_used_at DESC, created_at DESC, id DESC) WHERE revoked_at IS NULL;

-- +goose Down
DROP INDEX api_keys_recent;
