-- Usage analytics (SPEC §9): per key and per hour (UTC), the allowed
-- Checks and the denials that name the key, one column per counted code,
-- added to by every replica's write-behind. Daily rows outlive the hourly
-- ones (400 days against --usage-retention). No foreign key: a row may be
-- written for a key as it is being revoked, and usage outlives the key.

-- +goose Up
CREATE TABLE usage_hourly (
	key_id text NOT NULL,
	org_id text NOT NULL,
	start timestamptz NOT NULL,
	allowed bigint NOT NULL DEFAULT 0,
	api_key_inactive bigint NOT NULL DEFAULT 0,
	api_key_expired bigint NOT NULL DEFAULT 0,
	organization_disabled bigint NOT NULL DEFAULT 0,
	source_not_allowed bigint NOT NULL DEFAULT 0,
	insufficient_permissions bigint NOT NULL DEFAULT 0,
	forbidden bigint NOT NULL DEFAULT 0,
	rate_limited bigint NOT NULL DEFAULT 0,
	usage_exceeded bigint NOT NULL DEFAULT 0,
	invalid_api_key bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, start)
);
CREATE INDEX usage_hourly_org ON usage_hourly (org_id, start);
CREATE INDEX usage_hourly_start ON usage_hourly (start);

CREATE TABLE usage_daily (LIKE usage_hourly INCLUDING DEFAULTS, PRIMARY KEY (key_id, start));
CREATE INDEX usage_daily_org ON usage_daily (org_id, start);
CREATE INDEX usage_daily_start ON usage_daily (start);

-- +goose Down
DROP TABLE usage_daily;
DROP TABLE usage_hourly;
