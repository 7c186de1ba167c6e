-- Usage-limited keys (SPEC §9). remaining is the uses not yet leased to a
-- replica (null: unlimited); usage_epoch counts refills and changes of
-- remaining, voiding leases of older epochs; refilled_at is the start of
-- the refill period last applied, so a refill happens once per period
-- however many replicas claim at the boundary.

-- +goose Up
ALTER TABLE api_keys
	ADD COLUMN remaining bigint CHECK (remaining >= 0),
	ADD COLUMN refill_interval text CHECK (refill_interval IN ('daily', 'monthly')),
	ADD COLUMN refill_amount bigint CHECK (refill_amount >= 0),
	ADD COLUMN usage_epoch bigint NOT NULL DEFAULT 0,
	ADD COLUMN refilled_at timestamptz,
	ADD CONSTRAINT api_keys_refill_whole CHECK ((refill_interval IS NULL) = (refill_amount IS NULL));

-- +goose Down
ALTER TABLE api_keys
	DROP CONSTRAINT api_keys_refill_whole,
	DROP COLUMN refilled_at,
	DROP COLUMN usage_epoch,
	DROP COLUMN refill_amount,
	DROP COLUMN refill_interval,
	DROP COLUMN remaining;
