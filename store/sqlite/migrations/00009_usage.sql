-- Usage analytics (SPEC §9): per key and per hour (UTC), the allowed
-- Checks and the denials that name the key, one column per counted code.
-- start is the bucket's start in microseconds since the Unix epoch, like
-- every time here. Daily rows outlive the hourly ones.

-- +goose Up
CREATE TABLE usage_hourly (
	key_id TEXT NOT NULL,
	org_id TEXT NOT NULL,
	start INTEGER NOT NULL,
	allowed INTEGER NOT NULL DEFAULT 0,
	api_key_inactive INTEGER NOT NULL DEFAULT 0,
	api_key_expired INTEGER NOT NULL DEFAULT 0,
	organization_disabled INTEGER NOT NULL DEFAULT 0,
	source_not_allowed INTEGER NOT NULL DEFAULT 0,
	insufficient_permissions INTEGER NOT NULL DEFAULT 0,
	forbidden INTEGER NOT NULL DEFAULT 0,
	rate_limited INTEGER NOT NULL DEFAULT 0,
	usage_exceeded INTEGER NOT NULL DEFAULT 0,
	invalid_api_key INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, start)
);
CREATE INDEX usage_hourly_org ON usage_hourly (org_id, start);
CREATE INDEX usage_hourly_start ON usage_hourly (start);

CREATE TABLE usage_daily (
	key_id TEXT NOT NULL,
	org_id TEXT NOT NULL,
	start INTEGER NOT NULL,
	allowed INTEGER NOT NULL DEFAULT 0,
	api_key_inactive INTEGER NOT NULL DEFAULT 0,
	api_key_expired INTEGER NOT NULL DEFAULT 0,
	organization_disabled INTEGER NOT NULL DEFAULT 0,
	source_not_allowed INTEGER NOT NULL DEFAULT 0,
	insufficient_permissions INTEGER NOT NULL DEFAULT 0,
	forbidden INTEGER NOT NULL DEFAULT 0,
	rate_limited INTEGER NOT NULL DEFAULT 0,
	usage_exceeded INTEGER NOT NULL DEFAULT 0,
	invalid_api_key INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (key_id, start)
);
CREATE INDEX usage_daily_org ON usage_daily (org_id, start);
CREATE INDEX usage_daily_start ON usage_daily (start);

-- +goose Down
DROP TABLE usage_daily;
DROP TABLE usage_hourly;
