package store

import (
	"context"
	"time"
)

// UsageStore keeps usage analytics (SPEC §9): per key, the allowed Checks
// and the denials that name the key, in hourly rows (pruned after
// --usage-retention) and daily rows (kept 400 days).
type UsageStore interface {
	// RecordUsage adds counts to the hourly and daily rows they fall in,
	// creating them when missing: one statement (PostgreSQL) or one
	// transaction (the embedded store) for the whole batch.
	RecordUsage(ctx context.Context, counts []UsageCount) error
	// Usage returns q's buckets that saw traffic, oldest first. With
	// KeyID set, a key that is not in OrgID (or, with UserID set, not that
	// user's) is keygate.ErrNotFound; a revoked key is found.
	Usage(ctx context.Context, q UsageQuery) ([]UsageBucket, error)
	// TopKeys returns the n keys of q.OrgID with the most allowed Checks
	// in q's range, most first (ties by key id).
	TopKeys(ctx context.Context, q UsageQuery, n int) ([]KeyAllowed, error)
	// PruneUsage deletes at most limit hourly rows older than hourly and
	// at most limit daily rows older than daily, and returns how many.
	PruneUsage(ctx context.Context, hourly, daily time.Time, limit int) (int64, error)
}

// UsageCodes are the deny codes usage analytics count, in the order of
// their columns: the denials that name a key (SPEC §9). invalid_api_key
// is counted only for a token that resolved to a key (revoked or rolled
// away); usage_exceeded only once the decision has that step.
var UsageCodes = [...]string{
	"api_key_inactive", "api_key_expired", "organization_disabled", "source_not_allowed",
	"insufficient_permissions", "forbidden", "rate_limited", "usage_exceeded", "invalid_api_key",
}

// UsageCount is what one replica counted for one key in one hour.
type UsageCount struct {
	KeyID   string
	OrgID   string
	Hour    time.Time // the hour's start, UTC
	Allowed int64
	Denied  [len(UsageCodes)]int64 // by UsageCodes' index
}

// Granularity is the width of a usage bucket.
type Granularity string

// Granularities of usage buckets.
const (
	Hour Granularity = "hour"
	Day  Granularity = "day"
)

// Table is the table both stores keep the buckets of g in.
func (g Granularity) Table() string {
	if g == Day {
		return "usage_daily"
	}
	return "usage_hourly"
}

// Truncate rounds t down to the start of its bucket, in UTC.
func (g Granularity) Truncate(t time.Time) time.Time {
	t = t.UTC()
	if g == Day {
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	}
	return t.Truncate(time.Hour)
}

// UsageQuery selects usage buckets.
type UsageQuery struct {
	OrgID string // "" with KeyID: any organization (the operator's CLI)
	KeyID string // "": the organization's totals
	// UserID, with KeyID, requires the key to be this user's ("": any).
	UserID      string
	Granularity Granularity
	From, To    time.Time // bucket starts; the range is [From, To)
}

// UsageBucket is the counts of one bucket.
type UsageBucket struct {
	Start   time.Time
	Allowed int64
	Denied  int64
	ByCode  map[string]int64 // only codes with a count
}

// KeyAllowed is one entry of TopKeys.
type KeyAllowed struct {
	KeyID   string
	Allowed int64
}

// NewUsageBucket is the bucket starting at start with allowed and the
// denials by UsageCodes' index.
func NewUsageBucket(start time.Time, allowed int64, denied []int64) UsageBucket {
	b := UsageBucket{Start: start.UTC(), Allowed: allowed, ByCode: map[string]int64{}}
	for i, n := range denied {
		if n != 0 {
			b.ByCode[UsageCodes[i]] = n
			b.Denied += n
		}
	}
	return b
}
