-- Usage-limited keys (SPEC §9), as in the PostgreSQL store: remaining is
-- the uses not yet leased (null: unlimited), usage_epoch counts refills
-- and changes of remaining, refilled_at (unix microseconds) is the start
-- of the refill period last applied.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN remaining INTEGER CHECK (remaining >= 0);
ALTER TABLE api_keys ADD COLUMN refill_interval TEXT CHECK (refill_interval IN ('daily', 'monthly'));
ALTER TABLE api_keys ADD COLUMN refill_amount INTEGER CHECK (refill_amount >= 0);
ALTER TABLE api_keys ADD COLUMN usage_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN refilled_at INTEGER;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN refilled_at;
ALTER TABLE api_keys DROP COLUMN usage_epoch;
ALTER TABLE api_keys DROP COLUMN refill_amount;
ALTER TABLE api_keys DROP COLUMN refill_interval;
ALTER TABLE api_keys DROP COLUMN remaining;
