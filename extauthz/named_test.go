package extauthz

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

// namedFixture serves Check with a limiter on a manual clock and a policy
// whose POST /v1/search rule applies the named limit "search".
func namedFixture(t *testing.T) (*fixture, *manualClock) {
	t.Helper()
	clock := &manualClock{t: testNow}
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("named.yaml", []byte(`
rules:
  - {methods: [POST], path: "/v1/search", ratelimit: search}
`))
	if err != nil {
		t.Fatal(err)
	}
	return newFixture(t, Config{Limiter: lim, DefaultRateLimit: 100, Policy: func() *policy.Policy { return pol }}), clock
}

func withLimits(id string, perMinute int, limits ...keygate.RateLimit) func(*keygate.KeyRecord) {
	return func(r *keygate.KeyRecord) {
		r.Key.ID = id
		r.Key.RateLimitPerMinute = &perMinute
		r.Key.RateLimits = limits
	}
}

func rlHeaders(limit, remaining, reset string) map[string]string {
	return map[string]string{"ratelimit-limit": limit, "ratelimit-remaining": remaining, "ratelimit-reset": reset}
}

func assertAllowHeaders(t *testing.T, resp *authv3.CheckResponse, want map[string]string) {
	t.Helper()
	allowed(t, resp)
	if diff := cmp.Diff(want, headerMap(resp.GetOkResponse().GetResponseHeadersToAdd())); diff != "" {
		t.Errorf("allow rate-limit headers (-want +got):\n%s", diff)
	}
}

func rateLimitedWith(limit, remaining, reset, retry string) map[string]string {
	h := rlHeaders(limit, remaining, reset)
	h["content-type"] = "application/json"
	h["retry-after"] = retry
	return h
}

func TestCheck_NamedLimitAppliesOnlyOnItsRoute(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_named", 100, keygate.RateLimit{Name: "search", Limit: 2, DurationSeconds: 60}))
	search := func() *authv3.CheckResponse {
		return f.checkAt("POST", "/v1/search", map[string]string{"x-api-key": tok}, nil)
	}
	// Allows report the named limit: it has the fewest left.
	assertAllowHeaders(t, search(), rlHeaders("2", "1", "30"))
	assertAllowHeaders(t, search(), rlHeaders("2", "0", "60"))
	// The deny carries the named limit's headers, retry-after included.
	assertDeniedHeaders(t, search(), 429, codes.ResourceExhausted, keygate.CodeRateLimited, rateLimitedWith("2", "0", "60", "30"))
	// Elsewhere only the main limit applies: 2 of 100 spent, the denied
	// request spent none.
	assertAllowHeaders(t, f.checkAt("POST", "/v1/things", map[string]string{"x-api-key": tok}, nil), rlHeaders("100", "97", "2"))
}

func TestCheck_NamedLimitKeyWithoutThatNameIsUnaffected(t *testing.T) {
	f, _ := namedFixture(t)
	other := f.key(withLimits("key_other", 5, keygate.RateLimit{Name: "upload", Limit: 1, DurationSeconds: 60}))
	plain := f.key(withLimits("key_plain", 5))
	for _, tok := range []string{other, plain} {
		for i := range 5 {
			assertAllowHeaders(t, f.checkAt("POST", "/v1/search", map[string]string{"x-api-key": tok}, nil),
				rlHeaders("5", string(rune('4'-i)), []string{"12", "24", "36", "48", "60"}[i]))
		}
		// Its main limit still holds there.
		assertDeniedHeaders(t, f.checkAt("POST", "/v1/search", map[string]string{"x-api-key": tok}, nil),
			429, codes.ResourceExhausted, keygate.CodeRateLimited, rateLimitedWith("5", "0", "60", "12"))
	}
}

func TestCheck_NamedLimitMainDeniesWithItsHeadersAndSpendsNoNamedToken(t *testing.T) {
	f, clock := namedFixture(t)
	tok := f.key(withLimits("key_main", 2, keygate.RateLimit{Name: "search", Limit: 4, DurationSeconds: 86400}))
	h := map[string]string{"x-api-key": tok}
	allowed(t, f.checkAt("POST", "/v1/things", h, nil))
	allowed(t, f.checkAt("POST", "/v1/things", h, nil))
	for range 3 {
		assertDeniedHeaders(t, f.checkAt("POST", "/v1/search", h, nil), 429, codes.ResourceExhausted, keygate.CodeRateLimited,
			rateLimitedWith("2", "0", "60", "30"))
	}
	clock.Add(30 * time.Second) // one main token back
	// The main limit (0 left) is the one reported: fewer than 3 of 4.
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", h, nil), rlHeaders("2", "0", "60"))
	// The three denials took nothing from "search": all four of its
	// requests are still to come, the last denied by it.
	clock.Add(time.Minute)
	allowed(t, f.checkAt("POST", "/v1/search", h, nil))
	allowed(t, f.checkAt("POST", "/v1/search", h, nil))
	clock.Add(time.Minute)
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", h, nil), rlHeaders("4", "0", "86280"))
	assertDeniedHeaders(t, f.checkAt("POST", "/v1/search", h, nil), 429, codes.ResourceExhausted, keygate.CodeRateLimited,
		rateLimitedWith("4", "0", "86280", "21480"))
}

func TestCheck_NamedLimitDenialSpendsNoMainToken(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_n", 10, keygate.RateLimit{Name: "search", Limit: 1, DurationSeconds: 10}))
	h := map[string]string{"x-api-key": tok}
	allowed(t, f.checkAt("POST", "/v1/search", h, nil))
	for range 20 {
		assertDeniedHeaders(t, f.checkAt("POST", "/v1/search", h, nil), 429, codes.ResourceExhausted, keygate.CodeRateLimited,
			rateLimitedWith("1", "0", "10", "10"))
	}
	// 1 of 10 main spent, not 21 (which would deny).
	assertAllowHeaders(t, f.checkAt("POST", "/v1/things", h, nil), rlHeaders("10", "8", "12"))
}

func TestCheck_NamedLimitSelectedByTheContextExtension(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_ext", 0, // unlimited main: only the named limit
		keygate.RateLimit{Name: "search", Limit: 5, DurationSeconds: 60},
		keygate.RateLimit{Name: "bulk", Limit: 1, DurationSeconds: 86400}))
	h := map[string]string{"x-api-key": tok}
	bulk := map[string]string{policy.ExtRateLimit: "bulk"}
	assertAllowHeaders(t, f.checkAt("GET", "/v1/export", h, bulk), rlHeaders("1", "0", "86400"))
	assertDeniedHeaders(t, f.checkAt("GET", "/v1/export", h, bulk), 429, codes.ResourceExhausted, keygate.CodeRateLimited,
		rateLimitedWith("1", "0", "86400", "86400"))
	// The extension wins over the file's rule on the same route.
	assertDeniedHeaders(t, f.checkAt("POST", "/v1/search", h, bulk), 429, codes.ResourceExhausted, keygate.CodeRateLimited, nil)
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", h, nil), rlHeaders("5", "4", "12"))
	// Unlimited main, no named limit on the route: no headers at all.
	assertAllowHeaders(t, f.checkAt("GET", "/v1/things", h, nil), map[string]string{})
}

func TestCheck_MalformedRateLimitExtensionFailsClosed(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_m", 10, keygate.RateLimit{Name: "search", Limit: 5, DurationSeconds: 60}))
	for _, v := range []string{"", "Search", "search,bulk", "a b"} {
		resp := f.checkAt("POST", "/v1/search", map[string]string{"x-api-key": tok}, map[string]string{policy.ExtRateLimit: v})
		assertDeniedHeaders(t, resp, 403, codes.PermissionDenied, keygate.CodeForbidden, nil)
	}
	// A well-formed name the key lacks is no error: main limit only.
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", map[string]string{"x-api-key": tok}, map[string]string{policy.ExtRateLimit: "nope"}),
		rlHeaders("10", "9", "6"))
}

// A PATCH of the named limit reaches the decision with the key's new
// view; the bucket keeps the fraction it had spent.
func TestCheck_NamedLimitBucketFollowsAChangedLimit(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_p", 0, keygate.RateLimit{Name: "search", Limit: 4, DurationSeconds: 60}))
	h := map[string]string{"x-api-key": tok}
	allowed(t, f.checkAt("POST", "/v1/search", h, nil))
	allowed(t, f.checkAt("POST", "/v1/search", h, nil)) // half spent
	var rec *keygate.KeyRecord
	for _, r := range f.lookup.recs {
		rec = r
	}
	rec.Key.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 40, DurationSeconds: 3600}}
	// Half of 40 left, 19 after this one: not a fresh bucket of 40.
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", h, nil), rlHeaders("40", "19", "1890"))
	rec.Key.RateLimits = nil // dropped: the route's limit no longer applies
	assertAllowHeaders(t, f.checkAt("POST", "/v1/search", h, nil), map[string]string{})
}

// serve's wire path (Register) decides a named limit as Check does, over
// a real gRPC connection.
func TestWire_NamedLimitOverRealGRPC(t *testing.T) {
	f, _ := namedFixture(t)
	tok := f.key(withLimits("key_w", 100, keygate.RateLimit{Name: "search", Limit: 1, DurationSeconds: 60}))
	client := authv3.NewAuthorizationClient(startWireServer(t, f.srv.checkWire))
	req := checkRequest("POST", "/v1/search", map[string]string{"x-api-key": tok})
	resp, err := client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	assertAllowHeaders(t, resp, rlHeaders("1", "0", "60"))
	if resp, err = client.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	assertDeniedHeaders(t, resp, 429, codes.ResourceExhausted, keygate.CodeRateLimited, rateLimitedWith("1", "0", "60", "60"))
	req.Attributes.ContextExtensions = map[string]string{policy.ExtRateLimit: "BAD"}
	if resp, err = client.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	assertDeniedHeaders(t, resp, 403, codes.PermissionDenied, keygate.CodeForbidden, nil)
}
