package analytics

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// FuzzParseRange feeds the usage endpoints' query parameters (they come
// from the network) to ParseRange: it never panics, every refusal is
// invalid_request naming one of the three parameters, and every range it
// accepts is aligned to its buckets, not reversed, and within the longest
// span SPEC §9 allows.
func FuzzParseRange(f *testing.F) {
	f.Add("hour", "2026-12-05T10:00:00Z", "2026-12-06T10:00:00Z", uint8(7))
	f.Add("day", "2026-01-01T00:00:00+02:00", "2027-02-05T00:00:00Z", uint8(7))
	f.Add("week", "", "", uint8(1))
	f.Add("", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", uint8(7))
	f.Add("hour", "2026-12-06T10:30:00.999999999-23:59", "2026-12-06T10:00:00Z", uint8(6))
	now := time.Date(2026, 12, 6, 12, 34, 56, 0, time.UTC)
	f.Fuzz(func(t *testing.T, g, from, to string, present uint8) {
		q := url.Values{}
		for i, kv := range [][2]string{{"granularity", g}, {"from", from}, {"to", to}} {
			if present&(1<<i) != 0 {
				q.Set(kv[0], kv[1])
			}
		}
		r, err := ParseRange(q, now)
		if err != nil {
			var e *keygate.Error
			if !errors.As(err, &e) || e.Code != keygate.CodeInvalidRequest || (e.Param != "granularity" && e.Param != "from" && e.Param != "to") {
				t.Fatalf("ParseRange(%v) = %v, want invalid_request naming a parameter", q, err)
			}
			return
		}
		max := MaxHourRange
		switch r.Granularity {
		case store.Hour:
		case store.Day:
			max = MaxDayRange
		default:
			t.Fatalf("ParseRange(%v): granularity %q", q, r.Granularity)
		}
		if !r.From.Equal(r.Granularity.Truncate(r.From)) || !r.To.Equal(r.Granularity.Truncate(r.To)) {
			t.Errorf("ParseRange(%v) = [%v, %v), not on %s boundaries", q, r.From, r.To, r.Granularity)
		}
		if r.To.Before(r.From) || r.To.Sub(r.From) > max {
			t.Errorf("ParseRange(%v) = [%v, %v): reversed or longer than %v", q, r.From, r.To, max)
		}
	})
}
