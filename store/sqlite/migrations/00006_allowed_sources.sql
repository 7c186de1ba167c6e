-- A key may be bound to the sources it is used from (SPEC §11): a JSON
-- array of CIDRs, addresses and SPIFFE IDs in canonical form, sorted.
-- Empty: anywhere.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN allowed_sources TEXT NOT NULL DEFAULT '[]' CHECK (json_type(allowed_sources) = 'array');

-- +goose Down
ALTER TABLE api_keys DROP COLUMN allowed_sources;
