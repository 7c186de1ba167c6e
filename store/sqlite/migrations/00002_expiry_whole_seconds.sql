-- Key expiry is kept to whole seconds (SPEC §2): the expires_at shown is
-- the instant the key stops working. Keys stored before that rule with a
-- fraction of a second (times are unix microseconds here) round up to the
-- next whole second, as new ones do.

-- +goose Up
UPDATE api_keys SET expires_at = (expires_at / 1000000 + 1) * 1000000
WHERE expires_at IS NOT NULL AND expires_at % 1000000 <> 0 AND expires_at > 0;
UPDATE api_keys SET expires_at = (expires_at / 1000000) * 1000000
WHERE expires_at IS NOT NULL AND expires_at % 1000000 <> 0 AND expires_at < 0;

-- +goose Down
SELECT 1;
