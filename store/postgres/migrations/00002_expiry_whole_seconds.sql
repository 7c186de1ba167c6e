-- Key expiry is kept to whole seconds (SPEC §2): the expires_at shown is
-- the instant the key stops working. Keys stored before that rule with a
-- fraction of a second round up to the next whole second, as new ones do.

-- +goose Up
UPDATE api_keys SET expires_at = date_trunc('second', expires_at) + interval '1 second'
WHERE expires_at IS NOT NULL AND expires_at <> date_trunc('second', expires_at);

-- +goose Down
-- Nothing to undo: whole seconds are valid before this migration too.
SELECT 1;
