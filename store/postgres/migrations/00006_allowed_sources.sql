-- A key may be bound to the sources it is used from (SPEC §11): CIDRs,
-- addresses and SPIFFE IDs in canonical form, sorted. Empty: anywhere.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN allowed_sources text[] NOT NULL DEFAULT '{}';

-- +goose Down
ALTER TABLE api_keys DROP COLUMN allowed_sources;
