package extauthz_test

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
)

// Named rate limits end to end (SPEC §9): created through manage, stored,
// cached, selected by the policy file and by keygate.ratelimit, decided
// over real gRPC, and a PATCH that drops the limit reaches the decision
// through the events log.
func TestE2E_NamedRateLimitFromTheStore(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second)
			pol, err := policy.Parse("e2e.yaml", []byte("rules:\n  - {methods: [POST], path: /v1/search, ratelimit: search}\n"))
			if err != nil {
				t.Fatal(err)
			}
			e := startE2E(t, open(t), now, func(c *extauthz.Config) {
				lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: func() time.Time { return now }})
				if err != nil {
					t.Fatal(err)
				}
				c.Limiter, c.DefaultRateLimit = lim, 100
				c.Policy = func() *policy.Policy { return pol }
			})
			k, tok := e.key(manage.NewKey{Role: "member", RateLimits: []keygate.RateLimit{
				{Name: "search", Limit: 2, DurationSeconds: 60}, {Name: "export", Limit: 1, DurationSeconds: 3600}}})
			_, plain := e.key(manage.NewKey{Role: "member"})
			check := func(tok, method, path string, ext map[string]string) *authv3.CheckResponse {
				t.Helper()
				resp, err := e.client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					ContextExtensions: ext,
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Method: method, Path: path, Host: "api.example", Headers: map[string]string{"x-api-key": tok},
					}},
				}})
				if err != nil {
					t.Fatalf("Check over gRPC: %v", err)
				}
				return resp
			}
			for i := range 2 {
				resp := check(tok, "POST", "/v1/search", nil)
				if resp.GetOkResponse() == nil {
					t.Fatalf("search %d denied: %s", i+1, resp.GetDeniedResponse().GetBody())
				}
				if got := headerValue(resp.GetOkResponse().GetResponseHeadersToAdd(), "ratelimit-limit"); got != "2" {
					t.Errorf("search %d: ratelimit-limit = %q, want the named limit's 2", i+1, got)
				}
			}
			resp := check(tok, "POST", "/v1/search", nil)
			denied(t, resp, 429, codes.ResourceExhausted, keygate.CodeRateLimited)
			if got := headerValue(resp.GetDeniedResponse().GetHeaders(), "retry-after"); got != "30" {
				t.Errorf("retry-after = %q, want 30", got)
			}
			// Elsewhere, and for a key without the limit, only the main one.
			if resp := check(tok, "GET", "/v1/things", nil); resp.GetOkResponse() == nil {
				t.Errorf("other route denied: %s", resp.GetDeniedResponse().GetBody())
			}
			for range 5 {
				if resp := check(plain, "POST", "/v1/search", nil); resp.GetOkResponse() == nil {
					t.Fatalf("key without the limit denied: %s", resp.GetDeniedResponse().GetBody())
				}
			}
			// The extension selects another of the key's limits.
			exportExt := map[string]string{policy.ExtRateLimit: "export"}
			if resp := check(tok, "GET", "/v1/exports", exportExt); resp.GetOkResponse() == nil {
				t.Fatalf("export denied: %s", resp.GetDeniedResponse().GetBody())
			}
			denied(t, check(tok, "GET", "/v1/exports", exportExt), 429, codes.ResourceExhausted, keygate.CodeRateLimited)
			denied(t, check(tok, "GET", "/v1/exports", map[string]string{policy.ExtRateLimit: "Export"}), 403, codes.PermissionDenied, keygate.CodeForbidden)

			// An owner drops the limits: after the event, search is free.
			if _, err := e.st.UpdateKey(context.Background(), "acme", k.ID, storeUpdateLimits(nil), keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			e.sync()
			if resp := check(tok, "POST", "/v1/search", nil); resp.GetOkResponse() == nil {
				t.Errorf("search after the limit was dropped: %s", resp.GetDeniedResponse().GetBody())
			}
		})
	}
}

func storeUpdateLimits(list []keygate.RateLimit) store.KeyUpdate {
	if list == nil {
		list = []keygate.RateLimit{}
	}
	return store.KeyUpdate{RateLimits: &list}
}
