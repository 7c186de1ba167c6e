package extauthz

import (
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

// BenchmarkCheckNamedLimit is BenchmarkCheckFromTheWire's hit with and
// without a named rate limit (SPEC §9), limits too large ever to deny:
//   - none: the key's main limit is 0 (unlimited) and the route names no
//     limit (the BenchmarkCheckFromTheWire case);
//   - main: a main limit of its own, so the allow carries ratelimit-*;
//   - key-has-named: the key has named limits, the route names none;
//   - named: the route names the key's limit, main unlimited;
//   - main+named: both buckets, taken together.
func BenchmarkCheckNamedLimit(b *testing.B) {
	const big = 1<<31 - 1
	limits := []keygate.RateLimit{{Name: "bulk", Limit: 5, DurationSeconds: 60}, {Name: "search", Limit: 1_000_000_000, DurationSeconds: 1}}
	for _, tc := range []struct {
		name   string
		main   int
		limits []keygate.RateLimit
		route  string
	}{
		{"none", 0, nil, ""},
		{"main", big, nil, ""},
		{"key-has-named", 0, limits, ""},
		{"named", 0, limits, "search"},
		{"main+named", big, limits, "search"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFixture(&testing.T{}, Config{StripCredentials: true})
			tok := f.key(func(r *keygate.KeyRecord) {
				r.LoadedAt = time.Now()
				r.Key.RateLimitPerMinute = &tc.main
				r.Key.RateLimits = tc.limits
			})
			lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
			if err != nil {
				b.Fatal(err)
			}
			srv := benchServer(b, f, Config{Limiter: lim, DefaultRateLimit: 100})
			var ext map[string]string
			if tc.route != "" {
				ext = map[string]string{policy.ExtRateLimit: tc.route}
			}
			runWire(b, srv, wireRequest(b, srv, tok, ext))
		})
	}
}
