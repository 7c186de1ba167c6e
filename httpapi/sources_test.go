package httpapi_test

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

// doFrom sends r straight to the handler as if from peer addr (ip:port):
// the test server's peer is loopback, a trusted proxy.
func (e *env) doFrom(addr string, r req) response {
	e.t.Helper()
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	hr.RemoteAddr = addr
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	e.srv.Config.Handler.ServeHTTP(rec, hr)
	return response{Status: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func TestAllowedSources_KeyJSONAndValidation(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		plain := e.create(owner, `{"name":"plain"}`)
		if plain.AllowedSources == nil || len(plain.AllowedSources) != 0 {
			t.Errorf("unbound key: allowed_sources = %#v, want []", plain.AllowedSources)
		}
		if !strings.Contains(string(e.get("/v1/api-keys/"+plain.ID, owner).Body), `"allowed_sources":[]`) {
			t.Errorf("GET: allowed_sources is not []")
		}
		bound := e.create(owner, `{"name":"bound","allowed_sources":["spiffe://mesh.local/ns/a/*","10.0.0.0/8","2001:db8::1"]}`)
		if want := []string{"10.0.0.0/8", "2001:db8::1", "spiffe://mesh.local/ns/a/*"}; !slices.Equal(bound.AllowedSources, want) {
			t.Errorf("allowed_sources = %v, want %v", bound.AllowedSources, want)
		}
		wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: owner,
			body: `{"name":"x","allowed_sources":["10.0.0.0/8","10.0.0.1/8"]}`}), 400, keygate.CodeInvalidRequest, "allowed_sources[1]")
		wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: owner,
			body: `{"name":"x","allowed_sources":"10.0.0.0/8"}`}), 400, keygate.CodeInvalidRequest, "allowed_sources")
		many := `"192.0.2.1"` + strings.Repeat(`,"192.0.2.1"`, 32)
		wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: owner,
			body: `{"name":"x","allowed_sources":[` + many + `]}`}), 400, keygate.CodeInvalidRequest, "allowed_sources")
		wantError(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + plain.ID, token: owner,
			body: `{"allowed_sources":["spiffe://Mesh/x"]}`}), 400, keygate.CodeInvalidRequest, "allowed_sources[0]")
		r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + plain.ID, token: owner, body: `{"allowed_sources":["192.0.2.0/24"]}`})
		want(t, r, 200)
		if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data.AllowedSources; !slices.Equal(got, []string{"192.0.2.0/24"}) {
			t.Errorf("PATCH: allowed_sources = %v", got)
		}
		// The decision now holds the key to its source.
		if code := e.check(plain.Key, "192.0.2.9"); code != "" {
			t.Errorf("check from inside = %s", code)
		}
		if code := e.check(plain.Key, "198.51.100.9"); code != keygate.CodeSourceNotAllowed {
			t.Errorf("check from outside = %q, want source_not_allowed", code)
		}
	})
}

// The management API holds its callers to their key's sources, and a
// bound caller cannot hand out more than its own (SPEC §11).
func TestAllowedSources_APICaller(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, caller := e.key(manage.NewKey{AllowedSources: []string{"198.51.100.0/24", "spiffe://mesh.local/ns/a/*"}})
		const inside, outside = "198.51.100.4:5000", "203.0.113.4:5000"
		want(t, e.doFrom(inside, req{method: "GET", path: "/v1/api-keys", token: caller}), 200)
		wantError(t, e.doFrom(outside, req{method: "GET", path: "/v1/api-keys", token: caller}), 403, keygate.CodeSourceNotAllowed, "")
		wantError(t, e.doFrom("[2001:db8::1]:5000", req{method: "GET", path: "/v1/api-keys", token: caller}), 403, keygate.CodeSourceNotAllowed, "")
		// Loopback is a trusted proxy by default: it stands for a proxy.
		wantError(t, e.get("/v1/api-keys", caller), 403, keygate.CodeSourceNotAllowed, "")

		r := e.doFrom(inside, req{method: "POST", path: "/v1/api-keys", token: caller, body: `{"name":"default"}`})
		want(t, r, 201)
		def := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data
		if want := []string{"198.51.100.0/24", "spiffe://mesh.local/ns/a/*"}; !slices.Equal(def.AllowedSources, want) {
			t.Errorf("default allowed_sources = %v, want the caller's %v", def.AllowedSources, want)
		}
		r = e.doFrom(inside, req{method: "POST", path: "/v1/api-keys", token: caller,
			body: `{"name":"narrow","allowed_sources":["198.51.100.128/25","spiffe://mesh.local/ns/a/sa/web"]}`})
		want(t, r, 201)
		narrow := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data
		for _, body := range []string{
			`{"name":"x","allowed_sources":[]}`,
			`{"name":"x","allowed_sources":["198.51.0.0/16"]}`,
			`{"name":"x","allowed_sources":["0.0.0.0/0"]}`,
			`{"name":"x","allowed_sources":["spiffe://other.local/ns/a/x"]}`,
			`{"name":"x","allowed_sources":["spiffe://mesh.local/*"]}`,
		} {
			wantError(t, e.doFrom(inside, req{method: "POST", path: "/v1/api-keys", token: caller, body: body}),
				403, keygate.CodeInsufficientPermissions, "allowed_sources")
		}
		for _, body := range []string{
			`{"allowed_sources":[]}`,
			`{"allowed_sources":["198.51.0.0/16"]}`,
			`{"allowed_sources":["spiffe://other.local/x"]}`,
		} {
			wantError(t, e.doFrom(inside, req{method: "PATCH", path: "/v1/api-keys/" + narrow.ID, token: caller, body: body}),
				403, keygate.CodeInsufficientPermissions, "allowed_sources")
		}
		// Widening the key, but within the caller, is fine.
		want(t, e.doFrom(inside, req{method: "PATCH", path: "/v1/api-keys/" + narrow.ID, token: caller,
			body: `{"allowed_sources":["198.51.100.0/24"]}`}), 200)
	})
}
