-- Warm start (SPEC §10) reads the most recently used keys that are not
-- revoked: last_used_at descending, never-used keys after them, newest
-- first. This index holds them in that order, so the query reads only the
-- keys it returns instead of sorting the whole table (at a million keys,
-- 10 000 of them in under a second instead of 13 seconds).
--
-- Building it holds off writes to api_keys (not lookups) for its
-- duration: about a second and a half at a million keys. Not
-- CONCURRENTLY: that waits for every other transaction in the database,
-- including replicas waiting for the migration lock, which is a deadlock.

-- +goose Up
CREATE INDEX api_keys_recent
    ON api_keys (last_used_at DESC NULLS LAST, created_at DESC, id DESC)
    WHERE revoked_at IS NULL;

-- +goose Down
DROP INDEX api_keys_recent;
