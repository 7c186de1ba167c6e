package httpapi_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

func TestRateLimits_KeyJSONAndValidation(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		plain := e.create(owner, `{"name":"plain"}`)
		if plain.RateLimits == nil || len(plain.RateLimits) != 0 {
			t.Errorf("key without named limits: rate_limits = %#v, want []", plain.RateLimits)
		}
		if !strings.Contains(string(e.get("/v1/api-keys/"+plain.ID, owner).Body), `"rate_limits":[]`) {
			t.Errorf("GET: rate_limits is not []")
		}
		limited := e.create(owner, `{"name":"limited","rate_limits":[{"name":"upload","limit":5,"duration_seconds":60},{"duration_seconds":1,"limit":2,"name":"search"}]}`)
		wantLimits := []keygate.RateLimit{{Name: "search", Limit: 2, DurationSeconds: 1}, {Name: "upload", Limit: 5, DurationSeconds: 60}}
		if !slices.Equal(limited.RateLimits, wantLimits) {
			t.Errorf("rate_limits = %v, want %v (sorted by name)", limited.RateLimits, wantLimits)
		}
		if body := string(e.get("/v1/api-keys/"+limited.ID, owner).Body); !strings.Contains(body,
			`"rate_limits":[{"name":"search","limit":2,"duration_seconds":1},{"name":"upload","limit":5,"duration_seconds":60}]`) {
			t.Errorf("GET: %s", body)
		}
		if null := e.create(owner, `{"name":"null","rate_limits":null}`); len(null.RateLimits) != 0 {
			t.Errorf("rate_limits null on create = %v, want []", null.RateLimits)
		}
		for _, tc := range []struct{ body, param string }{
			{`{"name":"x","rate_limits":{"name":"a"}}`, "rate_limits"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1,"duration_seconds":1},"a"]}`, "rate_limits[1]"},
			{`{"name":"x","rate_limits":[null]}`, "rate_limits[0]"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1,"duration_seconds":1,"burst":3}]}`, "rate_limits[0].burst"},
			{`{"name":"x","rate_limits":[{"limit":1,"duration_seconds":1}]}`, "rate_limits[0].name"},
			{`{"name":"x","rate_limits":[{"name":"a","duration_seconds":1}]}`, "rate_limits[0].limit"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1}]}`, "rate_limits[0].duration_seconds"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":"5","duration_seconds":1}]}`, "rate_limits[0].limit"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1.5,"duration_seconds":1}]}`, "rate_limits[0].limit"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":0,"duration_seconds":1}]}`, "rate_limits[0].limit"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1,"duration_seconds":86401}]}`, "rate_limits[0].duration_seconds"},
			{`{"name":"x","rate_limits":[{"name":7,"limit":1,"duration_seconds":1}]}`, "rate_limits[0].name"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1,"duration_seconds":1},{"name":"b","limit":1,"duration_seconds":1},{"name":"B","limit":1,"duration_seconds":1}]}`, "rate_limits[2].name"},
			{`{"name":"x","rate_limits":[{"name":"a","limit":1,"duration_seconds":1},{"name":"a","limit":2,"duration_seconds":1}]}`, "rate_limits[1].name"},
			{`{"name":"x","rate_limits":[` + strings.Repeat(`{"name":"a","limit":1,"duration_seconds":1},`, 8) + `{"name":"a","limit":1,"duration_seconds":1}]}`, "rate_limits"},
		} {
			wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: owner, body: tc.body}), 400, keygate.CodeInvalidRequest, tc.param)
		}
		wantError(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + plain.ID, token: owner,
			body: `{"rate_limits":[{"name":"ok","limit":1,"duration_seconds":1},{"name":"x y","limit":1,"duration_seconds":1}]}`}),
			400, keygate.CodeInvalidRequest, "rate_limits[1].name")
		// PATCH replaces the list; null and [] clear it.
		r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + plain.ID, token: owner, body: `{"rate_limits":[{"name":"bulk","limit":1,"duration_seconds":86400}]}`})
		want(t, r, 200)
		if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data.RateLimits; !slices.Equal(got, []keygate.RateLimit{{Name: "bulk", Limit: 1, DurationSeconds: 86400}}) {
			t.Errorf("PATCH: rate_limits = %v", got)
		}
		for _, clear := range []string{`{"rate_limits":null}`, `{"rate_limits":[]}`} {
			r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + limited.ID, token: owner, body: clear})
			want(t, r, 200)
			if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data.RateLimits; got == nil || len(got) != 0 {
				t.Errorf("PATCH %s: rate_limits = %#v, want []", clear, got)
			}
		}
	})
}

// Attack: a caller with named limits cannot mint a key without them, or
// with a looser one, nor PATCH one away (SPEC §9, §5).
func TestRateLimits_APICallerCannotShedItsLimits(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, caller := e.key(manage.NewKey{RateLimits: []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}}})
		def := e.create(caller, `{"name":"default"}`)
		if want := []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}}; !slices.Equal(def.RateLimits, want) {
			t.Errorf("default rate_limits = %v, want the caller's %v", def.RateLimits, want)
		}
		for _, body := range []string{
			`{"name":"x","rate_limits":[]}`,
			`{"name":"x","rate_limits":null}`,
			`{"name":"x","rate_limits":[{"name":"other","limit":1,"duration_seconds":60}]}`,
			`{"name":"x","rate_limits":[{"name":"search","limit":11,"duration_seconds":60}]}`,
			`{"name":"x","rate_limits":[{"name":"search","limit":10,"duration_seconds":59}]}`,
		} {
			wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: caller, body: body}),
				403, keygate.CodeInsufficientPermissions, "rate_limits")
		}
		strict := e.create(caller, `{"name":"strict","rate_limits":[{"name":"search","limit":1,"duration_seconds":60},{"name":"bulk","limit":1,"duration_seconds":3600}]}`)
		for _, body := range []string{
			`{"rate_limits":[]}`,
			`{"rate_limits":null}`,
			`{"rate_limits":[{"name":"bulk","limit":1,"duration_seconds":3600}]}`,
			`{"rate_limits":[{"name":"search","limit":100,"duration_seconds":60}]}`,
		} {
			wantError(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + strict.ID, token: caller, body: body}),
				403, keygate.CodeInsufficientPermissions, "rate_limits")
		}
		// Up to its own limit, and dropping a limit it lacks, is fine.
		want(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + strict.ID, token: caller,
			body: `{"rate_limits":[{"name":"search","limit":10,"duration_seconds":60}]}`}), 200)
	})
}
