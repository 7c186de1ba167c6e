package analytics

import (
	"net/url"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// Range is a validated usage query's buckets: [From, To), both bucket
// starts of Granularity.
type Range struct {
	Granularity store.Granularity
	From, To    time.Time
}

// Longest ranges a query may ask for (SPEC §9).
const (
	MaxHourRange = 31 * 24 * time.Hour
	MaxDayRange  = 400 * 24 * time.Hour
)

// Default spans when from is left out: the last 24 hours by hour, the
// last 30 days by day, each ending with the current bucket.
const (
	DefaultHourSpan = 24 * time.Hour
	DefaultDaySpan  = 30 * 24 * time.Hour
)

// ParseRange reads granularity, from and to (RFC 3339) from q at now:
// both ends rounded down to bucket starts. A missing to is the end of the
// current bucket (so the current hour or day is in); a missing from is
// the default span before to. Errors are invalid_request naming the
// parameter.
func ParseRange(q url.Values, now time.Time) (Range, error) {
	one := func(name string) (string, bool, error) {
		v, ok := q[name]
		if !ok {
			return "", false, nil
		}
		if len(v) != 1 || v[0] == "" {
			return "", false, keygate.ParamErrorf(name, "%s must be given once, not empty.", name)
		}
		return v[0], true, nil
	}
	var r Range
	g, ok, err := one("granularity")
	switch {
	case err != nil:
		return Range{}, err
	case !ok || g == string(store.Hour):
		r.Granularity = store.Hour
	case g == string(store.Day):
		r.Granularity = store.Day
	default:
		return Range{}, keygate.ParamErrorf("granularity", "granularity must be hour or day.")
	}
	span, max := DefaultHourSpan, MaxHourRange
	if r.Granularity == store.Day {
		span, max = DefaultDaySpan, MaxDayRange
	}
	parse := func(name string) (time.Time, bool, error) {
		v, ok, err := one(name)
		if err != nil || !ok {
			return time.Time{}, false, err
		}
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return time.Time{}, false, keygate.ParamErrorf(name, "%s must be an RFC 3339 time, such as 2026-11-22T10:00:00Z.", name)
		}
		return r.Granularity.Truncate(t), true, nil
	}
	var hasTo bool
	if r.To, hasTo, err = parse("to"); err != nil {
		return Range{}, err
	}
	if !hasTo {
		r.To = r.Granularity.Truncate(now).Add(bucketLen(r.Granularity))
	}
	var hasFrom bool
	if r.From, hasFrom, err = parse("from"); err != nil {
		return Range{}, err
	}
	if !hasFrom {
		r.From = r.To.Add(-span)
	}
	if r.From.After(r.To) {
		return Range{}, keygate.ParamErrorf("from", "from must not be after to.")
	}
	if r.To.Sub(r.From) > max {
		return Range{}, keygate.ParamErrorf("from", "The range from %s to %s is longer than the %d days a query by %s may span.",
			r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), int(max/(24*time.Hour)), r.Granularity)
	}
	return r, nil
}

func bucketLen(g store.Granularity) time.Duration {
	if g == store.Day {
		return 24 * time.Hour
	}
	return time.Hour
}
