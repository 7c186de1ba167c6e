-- A key's named rate limits (SPEC §9): a JSON array of
-- {"name", "limit", "duration_seconds"}, sorted by name. Empty: none.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN rate_limits TEXT NOT NULL DEFAULT '[]' CHECK (json_type(rate_limits) = 'array');

-- +goose Down
ALTER TABLE api_keys DROP COLUMN rate_limits;
