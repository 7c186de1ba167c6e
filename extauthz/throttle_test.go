package extauthz

import (
	"net/http"
	"net/netip"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/ratelimit"
)

// checkFrom sends a Check whose Envoy peer is source.
func (f *fixture) checkFrom(source string, headers map[string]string) *authv3.CheckResponse {
	f.t.Helper()
	req := checkRequest("GET", "/v1/things", headers)
	req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}},
	}}}
	resp, err := f.srv.Check(f.t.Context(), req)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

// newCachedFixture is a fixture whose lookup goes through the real cache,
// so the decision can ask it which tokens it knows.
func newCachedFixture(t *testing.T, cfg Config) (*fixture, *cache.Cache) {
	t.Helper()
	f := newFixture(t, cfg)
	c, err := cache.New(f.lookup, cache.Config{MaxBytes: 1 << 20, TTL: time.Hour, NegativeTTL: time.Minute,
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv, err := New(c, f.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	return f, c
}

// Behind a NAT or a gateway many clients share one address: one scanner
// among them must not lock out the keys that work there, while the
// blocked address still cannot test guesses (issue 12, item 12).
func TestCheck_BlockedAddressStillAnswersKnownLiveKeys(t *testing.T) {
	clock := &manualClock{t: testNow}
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 3, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f, c := newCachedFixture(t, Config{Throttle: th})
	owner := f.key(nil)
	past := testNow.Add(-time.Minute)
	inactive := f.key(func(r *keygate.KeyRecord) { r.Key.DisabledAt = &past; r.Key.ID = "key_inactive" })
	unseen := f.key(func(r *keygate.KeyRecord) { r.Key.ID = "key_unseen" })
	// The owner and the inactive key have been used from elsewhere: cached.
	allowed(t, f.checkFrom("198.51.100.1", map[string]string{"x-api-key": owner}))
	f.checkFrom("198.51.100.1", map[string]string{"x-api-key": inactive})
	waitKnown(t, c, owner, f)
	waitKnown(t, c, inactive, f)

	const shared = "203.0.113.7"
	guess, _ := f.format.Generate(keygate.Secret, keygate.Live)
	for i := 0; i < 3; i++ {
		assertDenied(t, f.checkFrom(shared, map[string]string{"x-api-key": guess.String()}),
			denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, `Bearer realm="keygate", error="invalid_token"`, "", ""})
	}
	queries := f.lookup.queries.Load()
	tooMany := denyWant{429, codes.ResourceExhausted, keygate.CodeTooManyFailedAttempts, "", "65", ""}

	// A live key this replica knows is still decided as usual.
	allowed(t, f.checkFrom(shared, map[string]string{"x-api-key": owner}))
	// Any other token is refused without a lookup: guesses stay untestable,
	// even a real key's that this replica has not seen.
	for _, headers := range []map[string]string{
		{"x-api-key": guess.String()},
		{"x-api-key": unseen},
		{"x-api-key": "sk_live_malformed"},
		{"authorization": "Basic eDp5"},
		nil,
	} {
		assertDenied(t, f.checkFrom(shared, headers), tooMany)
	}
	// A known token whose key is not live is still refused as throttled.
	assertDenied(t, f.checkFrom(shared, map[string]string{"x-api-key": inactive}), tooMany)
	if n := f.lookup.queries.Load(); n != queries {
		t.Errorf("the blocked address caused %d store lookups, want 0", n-queries)
	}
}

func waitKnown(t *testing.T, c *cache.Cache, tok string, f *fixture) {
	t.Helper()
	parsed, err := f.format.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !c.Known(parsed.Hash()) {
		if time.Now().After(deadline) {
			t.Fatal("the cache never stored the key")
		}
		time.Sleep(time.Millisecond)
	}
}

// With --client-ip-header x-forwarded-for the client is the right-most
// address not inside --trusted-proxies: rotating the left-most entries,
// which the client writes, neither escapes the throttle nor blocks the
// address it names (issue 12, item 3).
func TestCheck_ThrottleCountsTheRightMostUntrustedForwardedAddress(t *testing.T) {
	clock := &manualClock{t: testNow}
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 3, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Throttle: th, ClientIPHeader: "x-forwarded-for",
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	good := f.key(nil)
	const victim = "192.0.2.10"
	for _, forged := range []string{"1.1.1.1", "2.2.2.2", victim} {
		f.checkFrom("10.0.0.2", map[string]string{"x-api-key": "nope", "x-forwarded-for": forged + ", 203.0.113.66, 10.0.0.9"})
	}
	tooMany := denyWant{429, codes.ResourceExhausted, keygate.CodeTooManyFailedAttempts, "", "65", ""}
	assertDenied(t, f.checkFrom("10.0.0.2", map[string]string{"x-api-key": good, "x-forwarded-for": "4.4.4.4, 203.0.113.66"}), tooMany)
	allowed(t, f.checkFrom("10.0.0.2", map[string]string{"x-api-key": good, "x-forwarded-for": victim}))
	allowed(t, f.checkFrom("10.0.0.2", map[string]string{"x-api-key": good, "x-forwarded-for": "203.0.113.66, " + victim + ", 10.0.0.3"}))
}

// The management API reads --client-ip-header only from a peer inside
// --trusted-proxies: a direct caller of --http-addr could otherwise name
// any address, to escape the throttle or to get someone else blocked
// (issue 12, item 4).
func TestServer_ClientAddrBelievesTheHeaderOnlyFromTrustedPeers(t *testing.T) {
	f := newFixture(t, Config{ClientIPHeader: "x-envoy-external-address"})
	tests := []struct {
		name, remote string
		header       []string
		want         string
	}{
		{"direct caller names a victim", "203.0.113.7:40000", []string{"192.0.2.10"}, "203.0.113.7"},
		{"loopback proxy", "127.0.0.1:40000", []string{"192.0.2.10"}, "192.0.2.10"},
		{"loopback proxy, repeated lines read as one list", "[::1]:40000", []string{"192.0.2.10", "198.51.100.4"}, "198.51.100.4"},
		{"no header", "127.0.0.1:40000", nil, "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "/v1/whoami", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.header {
				r.Header.Add("X-Envoy-External-Address", v)
			}
			if got := f.srv.ClientAddr(r); got != netip.MustParseAddr(tt.want) {
				t.Errorf("ClientAddr = %v, want %s", got, tt.want)
			}
		})
	}
}
