-- A leak report (SPEC §13) is audited as api_key.leaked with where the
-- token was found: the report's url and source. Null for every other event.

-- +goose Up
ALTER TABLE audit_events ADD COLUMN url text, ADD COLUMN source text;

-- +goose Down
ALTER TABLE audit_events DROP COLUMN url, DROP COLUMN source;
