package httpauthz_test

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/manage"
)

func body(t *testing.T, r interface{ Read([]byte) (int, error) }) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mangle changes a token's last character: a well-formed token of no key.
func mangle(tok string) string {
	last := byte('x')
	if tok[len(tok)-1] == last {
		last = 'y'
	}
	return tok[:len(tok)-1] + string(last)
}

func TestEnvoyEndpoint_AllowCarriesIdentityRateLimitAndHeadersToRemove(t *testing.T) {
	g := startGate(t, gateOpts{defaultLimit: 100})
	id, tok := g.key(manage.NewKey{Scopes: []string{"read"}})
	resp := rawRequest(t, g.addr, "GET", "/authz/v1/things?page=2", map[string]string{
		"x-api-key": tok, "x-keygate-key-id": "forged", "x-keygate-extra": "forged", "x-request-id": "req-1"})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, body %s", resp.StatusCode, body(t, resp.Body))
	}
	for name, want := range map[string]string{
		"x-keygate-key-id": id, "x-keygate-org-id": "acme", "x-keygate-user-id": "alice", "x-keygate-scopes": "read",
		"x-keygate-key-type": "secret", "x-keygate-environment": "live", "ratelimit-limit": "100", "ratelimit-remaining": "99",
	} {
		if got := resp.Header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got := resp.Header.Get("x-keygate-project-ids"); got != "" {
		t.Errorf("unrestricted key: x-keygate-project-ids = %q, want none", got)
	}
	remove := strings.Split(resp.Header.Get("x-envoy-auth-headers-to-remove"), ",")
	slices.Sort(remove)
	if want := []string{"x-api-key", "x-keygate-extra"}; !slices.Equal(remove, want) {
		t.Errorf("x-envoy-auth-headers-to-remove = %q, want %q", remove, want)
	}
	if len(body(t, resp.Body)) != 0 {
		t.Error("an allow has a body")
	}
}

// A deny over HTTP is Check's deny: the same status, headers and JSON body,
// byte for byte.
func TestEnvoyEndpoint_DenyIsChecksDeny(t *testing.T) {
	g := startGate(t, gateOpts{})
	_, viewer := g.key(manage.NewKey{Scopes: []string{"read"}})
	cases := []struct {
		name, method string
		headers      map[string]string
		status       int
		code         string
	}{
		{"missing", "GET", map[string]string{}, 401, "missing_api_key"},
		{"unknown", "GET", map[string]string{"x-api-key": mangle(viewer)}, 401, "invalid_api_key"},
		{"conflict", "GET", map[string]string{"x-api-key": viewer, "authorization": "Bearer kg_live_other"}, 400, "conflicting_credentials"},
		{"scope", "POST", map[string]string{"x-api-key": viewer}, 403, "insufficient_permissions"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.headers["x-request-id"] = "req-" + tc.name
			resp := rawRequest(t, g.addr, tc.method, "/authz/v1/things", tc.headers)
			got := body(t, resp.Body)

			hdrs := map[string]string{":path": "/v1/things", ":method": tc.method}
			for k, v := range tc.headers {
				hdrs[k] = v
			}
			want, err := g.az.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
					Method: tc.method, Path: "/v1/things", Headers: hdrs}}}})
			if err != nil {
				t.Fatal(err)
			}
			d := want.GetDeniedResponse()
			if d == nil {
				t.Fatal("Check allowed")
			}
			if resp.StatusCode != int(d.GetStatus().GetCode()) || (tc.status != 0 && resp.StatusCode != tc.status) {
				t.Errorf("status %d, Check's %d, want %d", resp.StatusCode, d.GetStatus().GetCode(), tc.status)
			}
			if string(got) != d.GetBody() {
				t.Errorf("body\n%s\nCheck's\n%s", got, d.GetBody())
			}
			for _, h := range d.GetHeaders() {
				if v := resp.Header.Get(h.GetHeader().GetKey()); v != h.GetHeader().GetValue() {
					t.Errorf("%s = %q, Check's %q", h.GetHeader().GetKey(), v, h.GetHeader().GetValue())
				}
			}
			db := decodeDeny(t, got)
			if tc.code != "" && db.Error.Code != tc.code {
				t.Errorf("code %q, want %q", db.Error.Code, tc.code)
			}
			if db.Meta.RequestID != "req-"+tc.name {
				t.Errorf("request_id %q", db.Meta.RequestID)
			}
		})
	}
}

// The path judged is the raw request target: SPEC §3's rules deny what Go's
// ServeMux would have cleaned or decoded, through both endpoints.
func TestRawPathsAreJudgedNeverCleaned(t *testing.T) {
	g := startGate(t, gateOpts{})
	_, tok := g.key(manage.NewKey{Scopes: []string{"read"}})
	for _, path := range []string{"//v1/things", "/v1//things", "/v1/%2fthings", "/v1/%2Fthings", "/v1/things;jsessionid=1",
		"/v1/../admin", "/v1/./things", "/v1/%2e%2e/admin", "/v1\\things"} {
		t.Run(path, func(t *testing.T) {
			for _, ep := range []struct{ name, target, uri string }{
				{"envoy", "/authz" + path, ""}, {"forward-auth", "/forward-auth", path}} {
				h := map[string]string{"x-api-key": tok}
				if ep.uri != "" {
					h["x-forwarded-method"], h["x-forwarded-uri"] = "GET", ep.uri
				}
				resp := rawRequest(t, g.addr, "GET", ep.target, h)
				b := body(t, resp.Body)
				if resp.StatusCode != 400 || decodeDeny(t, b).Error.Code != "invalid_request" {
					t.Errorf("%s: status %d body %s, want 400 invalid_request", ep.name, resp.StatusCode, b)
				}
			}
		})
	}
	// The same key on a normalized path is allowed, so the denies above
	// are the path's.
	for _, ep := range []struct{ target, uri string }{{"/authz/v1/things?q=%2f", ""}, {"/forward-auth", "/v1/things?q=a//b"}} {
		h := map[string]string{"x-api-key": tok}
		if ep.uri != "" {
			h["x-forwarded-method"], h["x-forwarded-uri"] = "GET", ep.uri
		}
		if resp := rawRequest(t, g.addr, "GET", ep.target, h); resp.StatusCode != 200 {
			t.Errorf("%s %s: status %d, want 200", ep.target, ep.uri, resp.StatusCode)
		}
	}
}

func TestForwardAuth_OriginalMethodAndURI(t *testing.T) {
	g := startGate(t, gateOpts{})
	_, tok := g.key(manage.NewKey{Scopes: []string{"read"}})
	cases := []struct {
		name    string
		headers map[string]string
		status  int
		code    string
	}{
		{"forwarded", map[string]string{"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things"}, 200, ""},
		{"original", map[string]string{"x-original-method": "GET", "x-original-uri": "/v1/things"}, 200, ""},
		{"both agree", map[string]string{"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things",
			"x-original-method": "GET", "x-original-uri": "/v1/things"}, 200, ""},
		// The method judged is the original one, not the subrequest's GET.
		{"original POST needs write", map[string]string{"x-forwarded-method": "POST", "x-forwarded-uri": "/v1/things"}, 403, "insufficient_permissions"},
		{"methods disagree", map[string]string{"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things",
			"x-original-method": "POST"}, 400, "invalid_request"},
		{"URIs disagree", map[string]string{"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things",
			"x-original-uri": "/v1/admin"}, 400, "invalid_request"},
		// Two lines of one header (the map keys differ in case only).
		{"method sent twice, differing", map[string]string{"x-forwarded-method": "GET", "X-Forwarded-Method": "POST",
			"x-forwarded-uri": "/v1/things"}, 400, "invalid_request"},
		{"URI sent twice, alike", map[string]string{"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things",
			"X-Forwarded-Uri": "/v1/things"}, 200, ""},
		{"no method", map[string]string{"x-forwarded-uri": "/v1/things"}, 400, "invalid_request"},
		{"no URI", map[string]string{"x-forwarded-method": "GET"}, 400, "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.headers["x-api-key"] = tok
			resp := rawRequest(t, g.addr, "GET", "/forward-auth", tc.headers)
			b := body(t, resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d body %s, want %d", resp.StatusCode, b, tc.status)
			}
			if tc.code != "" {
				if d := decodeDeny(t, b); d.Error.Code != tc.code {
					t.Errorf("code %q, want %q", d.Error.Code, tc.code)
				}
			}
		})
	}
}

// A client that reaches /forward-auth directly (not from --trusted-proxies)
// cannot name the method and URI judged: its headers are not read.
func TestForwardAuth_UntrustedPeerHeadersIgnored(t *testing.T) {
	g := startGate(t, gateOpts{trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	_, tok := g.key(manage.NewKey{Scopes: []string{"read"}})
	resp := rawRequest(t, g.addr, "GET", "/forward-auth", map[string]string{"x-api-key": tok,
		"x-forwarded-method": "GET", "x-forwarded-uri": "/v1/things"})
	b := body(t, resp.Body)
	if d := decodeDeny(t, b); resp.StatusCode != 400 || d.Error.Code != "invalid_request" || !strings.Contains(d.Error.Message, "trusted proxy") {
		t.Fatalf("status %d body %s, want 400 invalid_request naming the trusted proxies", resp.StatusCode, b)
	}
	// The Envoy endpoint reads no such headers and still answers.
	if resp := rawRequest(t, g.addr, "GET", "/authz/v1/things", map[string]string{"x-api-key": tok}); resp.StatusCode != 200 {
		t.Fatalf("envoy endpoint: status %d", resp.StatusCode)
	}
}

// The throttle counts the client of SPEC §16: x-forwarded-for's right-most
// untrusted address from a trusted peer, the peer otherwise; never the
// --client-ip-header, which Check reads.
func TestClientAddress_XForwardedForOnlyFromTrustedPeers(t *testing.T) {
	fail := func(t *testing.T, g *gate, xff string) (int, string) {
		t.Helper()
		h := map[string]string{"x-api-key": "kg_live_bad", "x-real-ip": "198.51.100.99"}
		if xff != "" {
			h["x-forwarded-for"] = xff
		}
		resp := rawRequest(t, g.addr, "GET", "/authz/v1/things", h)
		return resp.StatusCode, decodeDeny(t, body(t, resp.Body)).Error.Code
	}
	t.Run("trusted peer", func(t *testing.T) {
		g := startGate(t, gateOpts{failedLimit: 2, clientIPHeader: "x-real-ip"})
		for range 2 {
			if s, c := fail(t, g, "1.1.1.1, 203.0.113.7, 127.0.0.2"); s != 401 {
				t.Fatalf("status %d %s, want 401", s, c)
			}
		}
		if s, c := fail(t, g, "9.9.9.9, 203.0.113.7"); s != 429 || c != "too_many_failed_attempts" {
			t.Fatalf("203.0.113.7 after 2 failures: %d %s, want 429 too_many_failed_attempts", s, c)
		}
		if s, c := fail(t, g, "203.0.113.8"); s != 401 {
			t.Fatalf("another client behind the same proxy: %d %s, want 401", s, c)
		}
	})
	t.Run("untrusted peer", func(t *testing.T) {
		g := startGate(t, gateOpts{failedLimit: 2, trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		fail(t, g, "203.0.113.1")
		fail(t, g, "203.0.113.2")
		// Both failures were the peer's (127.0.0.1), whatever it wrote.
		if s, c := fail(t, g, "203.0.113.3"); s != 429 || c != "too_many_failed_attempts" {
			t.Fatalf("%d %s, want 429 too_many_failed_attempts for the peer", s, c)
		}
	})
}

func TestUnknownTargetsAreNotFound(t *testing.T) {
	g := startGate(t, gateOpts{})
	for _, target := range []string{"/", "/authzv1/things", "/forward-auth/x", "/v1/things"} {
		if resp := rawRequest(t, g.addr, "GET", target, nil); resp.StatusCode != 404 {
			t.Errorf("%s: status %d, want 404", target, resp.StatusCode)
		}
	}
}

var _ = extauthz.HeadersToRemove
