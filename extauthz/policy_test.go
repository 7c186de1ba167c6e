package extauthz

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

func allowed(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	if resp.GetOkResponse() == nil {
		t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
	}
}

func TestCheck_RoutePolicy(t *testing.T) {
	pol, err := policy.Parse("policy.yaml", []byte(`
rules:
  - {path: "/v1/admin/**", scope: admin}
  - {methods: [POST], path: "/v1/uploads", scope: write, publishable: true}
  - {methods: [GET, HEAD], path: "/v1/**", scope: read}
projects:
  - "/v1/projects/{project}/**"
  - "/v1/projects/{project}"
`))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Policy: func() *policy.Policy { return pol }})
	member := f.key(nil)
	admin := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"admin", "read", "write"} })
	pub := f.key(func(r *keygate.KeyRecord) { r.Key.Type = keygate.Publishable })
	p1 := f.key(func(r *keygate.KeyRecord) { r.Key.ProjectIDs = []string{"p1", "p3"} })
	h := func(tok string) map[string]string { return map[string]string{"x-api-key": tok} }
	forbidden := denyWant{403, codes.PermissionDenied, keygate.CodeForbidden, "", "", ""}
	insufficient := denyWant{403, codes.PermissionDenied, keygate.CodeInsufficientPermissions, "", "", ""}
	badPath := denyWant{400, codes.InvalidArgument, keygate.CodeInvalidRequest, "", "", ""}

	tests := []struct {
		name   string
		method string
		path   string
		tok    string
		ext    map[string]string
		want   *denyWant // nil: allowed
	}{
		{"file rule: admin route needs admin", "GET", "/v1/admin/users", member, nil, &insufficient},
		{"file rule: admin allowed", "GET", "/v1/admin", admin, nil, nil},
		{"file rule: publishable upload", "POST", "/v1/uploads", pub, nil, nil},
		{"publishable key off a publishable route", "GET", "/v1/things", pub, nil, &forbidden},
		{"publishable key, route marked by context_extensions", "GET", "/v1/things", pub, map[string]string{"keygate.publishable": "true"}, nil},
		{"context_extensions scope wins over the file", "GET", "/v1/things", member, map[string]string{"keygate.scope": "admin"}, &insufficient},
		{"context_extensions publishable false wins over the file", "POST", "/v1/uploads", pub, map[string]string{"keygate.publishable": "false"}, &forbidden},
		{"query string ignored by rules", "GET", "/v1/admin/x?scope=read", member, nil, &insufficient},
		{"default method mapping past the file's rules", "DELETE", "/v1/things", member, nil, nil},
		{"project in the key's list", "GET", "/v1/projects/p1/files", p1, nil, nil},
		{"project itself", "GET", "/v1/projects/p3", p1, nil, nil},
		{"another project", "GET", "/v1/projects/p2/files", p1, nil, &forbidden},
		{"path with no project", "GET", "/v1/things", p1, nil, nil},
		{"context_extensions project pattern", "GET", "/v2/p2/files", p1, map[string]string{"keygate.project": "/v2/{project}/**"}, &forbidden},
		{"invalid context_extensions fail closed", "GET", "/v1/things", member, map[string]string{"keygate.publishable": "yes"}, &forbidden},
		{"unrestricted key on any project", "GET", "/v1/projects/p2", member, nil, nil},
		{"dot-dot segment", "GET", "/v1/projects/p1/../p2", p1, nil, &badPath},
		{"double slash", "GET", "/v1//admin", member, nil, &badPath},
		{"encoded slash", "GET", "/v1/projects/p1%2F..%2Fp2", p1, nil, &badPath},
		{"encoded dot upper case", "GET", "/v1/%2E%2E/admin", member, nil, &badPath},
		{"backslash", "GET", `/v1\admin`, member, nil, &badPath},
		{"encoded backslash", "GET", "/v1/%5cadmin", member, nil, &badPath},
		{"trailing dot", "GET", "/v1/admin/.", member, nil, &badPath},
		{"encoded unreserved letter", "GET", "/v1/project%73/p2", p1, nil, &badPath},
		{"dots in the query are fine", "GET", "/v1/things?next=/../x", member, nil, nil},
		{"path parameter hides the admin route", "GET", "/v1/admin;x/users", member, nil, &badPath},
		{"dot-dot-semicolon escapes the project", "GET", "/v1/projects/p1/..;/p2/secrets", p1, nil, &badPath},
		{"encoded semicolon", "GET", "/v1/admin%3Bx/users", member, nil, &badPath},
		{"semicolon in the query is fine", "GET", "/v1/things?a=1;b=2", member, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.checkAt(tt.method, tt.path, h(tt.tok), tt.ext)
			if tt.want == nil {
				allowed(t, resp)
				return
			}
			assertDenied(t, resp, *tt.want)
		})
	}
}

// A deny says what to fix: the scope the route needs, the rule of
// normalization the path broke (issue 13, item 10).
func TestCheck_DenyMessagesNameTheScopeAndThePathRule(t *testing.T) {
	f := newFixture(t, Config{})
	reader := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"} })
	for _, tt := range []struct{ method, path, want string }{
		{"POST", "/v1/things", `This route requires the scope \"write\", which the API key lacks.`},
		{"GET", "/v1/admin;x/users", `The request path is not normalized: it contains ; or %3b (a path parameter, which upstreams strip or resolve).`},
		{"GET", "/v1//things", `The request path is not normalized: it contains //.`},
	} {
		body := f.checkAt(tt.method, tt.path, map[string]string{"x-api-key": reader}, nil).GetDeniedResponse().GetBody()
		if !strings.Contains(body, `"message":"`+tt.want+`"`) {
			t.Errorf("%s %s: body %s; want the message %s", tt.method, tt.path, body, tt.want)
		}
	}
}

// The path check comes after the key's status: an unknown key on a bad
// path is invalid_api_key, a good key on it invalid_request.
func TestCheck_PathCheckedAfterAuthentication(t *testing.T) {
	f := newFixture(t, Config{})
	assertDenied(t, f.checkAt("GET", "/a/../b", nil, nil), denyWant{401, codes.Unauthenticated, keygate.CodeMissingAPIKey, noToken, "", ""})
}

type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *manualClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *manualClock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }

func headerMap(hs []*corev3.HeaderValueOption) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

func TestCheck_RateLimit(t *testing.T) {
	clock := &manualClock{t: testNow}
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Limiter: lim, DefaultRateLimit: 100})
	three := 3
	limited := f.key(func(r *keygate.KeyRecord) { r.Key.RateLimitPerMinute = &three; r.Key.ID = "key_limited" })
	zero := 0
	unlimited := f.key(func(r *keygate.KeyRecord) { r.Key.RateLimitPerMinute = &zero; r.Key.ID = "key_unlimited" })
	byDefault := f.key(func(r *keygate.KeyRecord) { r.Key.ID = "key_default" })

	for i := 0; i < 3; i++ {
		resp := f.check("GET", map[string]string{"x-api-key": limited})
		allowed(t, resp)
		got := headerMap(resp.GetOkResponse().GetResponseHeadersToAdd())
		want := map[string]string{"ratelimit-limit": "3", "ratelimit-remaining": strconv.Itoa(2 - i), "ratelimit-reset": strconv.Itoa(20 * (i + 1))}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("allow %d rate-limit headers (-want +got):\n%s", i+1, diff)
		}
	}
	resp := f.check("GET", map[string]string{"x-api-key": limited})
	assertDeniedHeaders(t, resp, 429, codes.ResourceExhausted, keygate.CodeRateLimited, map[string]string{
		"content-type": "application/json", "ratelimit-limit": "3", "ratelimit-remaining": "0", "ratelimit-reset": "60", "retry-after": "20",
	})
	clock.Add(20 * time.Second) // one token back
	allowed(t, f.check("GET", map[string]string{"x-api-key": limited}))
	assertDeniedHeaders(t, f.check("GET", map[string]string{"x-api-key": limited}), 429, codes.ResourceExhausted, keygate.CodeRateLimited, nil)

	for i := 0; i < 200; i++ {
		resp := f.check("GET", map[string]string{"x-api-key": unlimited})
		allowed(t, resp)
		if hs := resp.GetOkResponse().GetResponseHeadersToAdd(); len(hs) != 0 {
			t.Fatalf("unlimited key got rate-limit headers %v", hs)
		}
	}
	for i := 0; i < 100; i++ {
		allowed(t, f.check("GET", map[string]string{"x-api-key": byDefault}))
	}
	assertDeniedHeaders(t, f.check("GET", map[string]string{"x-api-key": byDefault}), 429, codes.ResourceExhausted, keygate.CodeRateLimited, nil)
}

// assertDeniedHeaders checks status and code, and the exact headers when
// want is not nil.
func assertDeniedHeaders(t *testing.T, resp *authv3.CheckResponse, httpStatus int, grpcCode codes.Code, code keygate.Code, want map[string]string) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("allowed, want %s", code)
	}
	if int(d.GetStatus().GetCode()) != httpStatus || codes.Code(resp.GetStatus().GetCode()) != grpcCode {
		t.Errorf("status = %d/%v, want %d/%v", d.GetStatus().GetCode(), codes.Code(resp.GetStatus().GetCode()), httpStatus, grpcCode)
	}
	if want != nil {
		if diff := cmp.Diff(want, headerMap(d.GetHeaders())); diff != "" {
			t.Errorf("deny headers (-want +got):\n%s", diff)
		}
	}
	if !jsonHasCode(d.GetBody(), code) {
		t.Errorf("body %s, want code %s", d.GetBody(), code)
	}
}

func jsonHasCode(body string, code keygate.Code) bool {
	return len(body) > 0 && (string(code) == "" || containsStr(body, `"code":"`+string(code)+`"`))
}

func containsStr(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestCheck_FailedAuthThrottle(t *testing.T) {
	clock := &manualClock{t: testNow}
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 5, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Throttle: th, ClientIPHeader: "x-envoy-external-address"})
	good := f.key(nil)
	from := func(source string, headers map[string]string) *authv3.CheckResponse {
		req := checkRequest("GET", "/v1/things", headers)
		req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}},
		}}}
		resp, _ := f.srv.Check(t.Context(), req)
		return resp
	}
	bad := map[string]string{"x-api-key": "sk_live_guess"}
	for i := 0; i < 5; i++ {
		assertDeniedHeaders(t, from("203.0.113.7", bad), 401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, nil)
	}
	// Inactive and missing keys are not counted failures.
	for i := 0; i < 3; i++ {
		from("198.51.100.1", nil)
	}
	allowed(t, from("198.51.100.1", map[string]string{"x-api-key": good}))

	resp := from("203.0.113.7", map[string]string{"x-api-key": good})
	assertDeniedHeaders(t, resp, 429, codes.ResourceExhausted, keygate.CodeTooManyFailedAttempts, nil)
	if headerMap(resp.GetDeniedResponse().GetHeaders())["retry-after"] == "" {
		t.Error("too_many_failed_attempts without retry-after")
	}
	// The same /64 is the same client; another address is not.
	for i := 0; i < 5; i++ {
		from("2001:db8:1:2::1", bad)
	}
	assertDeniedHeaders(t, from("2001:db8:1:2:ffff::9", map[string]string{"x-api-key": good}), 429, codes.ResourceExhausted, keygate.CodeTooManyFailedAttempts, nil)
	allowed(t, from("2001:db8:1:3::1", map[string]string{"x-api-key": good}))

	// Behind a load balancer, the client is the header's address.
	for i := 0; i < 5; i++ {
		from("10.0.0.1", map[string]string{"x-api-key": "nope", "x-envoy-external-address": "192.0.2.50"})
	}
	allowed(t, from("10.0.0.1", map[string]string{"x-api-key": good, "x-envoy-external-address": "192.0.2.51"}))
	assertDeniedHeaders(t, from("10.0.0.1", map[string]string{"x-api-key": good, "x-envoy-external-address": "192.0.2.50"}), 429, codes.ResourceExhausted, keygate.CodeTooManyFailedAttempts, nil)

	// No address, no throttle.
	for i := 0; i < 10; i++ {
		from("", bad)
	}
	allowed(t, from("", map[string]string{"x-api-key": good}))

	// The window frees a slot a minute later (to the throttle's 5 s slots).
	clock.Add(66 * time.Second)
	allowed(t, from("203.0.113.7", map[string]string{"x-api-key": good}))
}

type usage struct{ ids []string }

func (u *usage) Record(id string, _ time.Time) { u.ids = append(u.ids, id) }

func TestCheck_UsageRecordedOnAllowOnly(t *testing.T) {
	u := &usage{}
	f := newFixture(t, Config{Usage: u})
	tok := f.key(nil)
	ro := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"}; r.Key.ID = "key_ro" })
	f.check("GET", map[string]string{"x-api-key": tok})
	f.check("POST", map[string]string{"x-api-key": ro}) // denied
	if diff := cmp.Diff([]string{"key_0123456789abcdefghij"}, u.ids); diff != "" {
		t.Errorf("recorded uses (-want +got):\n%s", diff)
	}
}

func TestAuthenticate_SameStepsAsCheck(t *testing.T) {
	clock := &manualClock{t: testNow}
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 2, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Throttle: th})
	good := f.key(nil)
	past := testNow.Add(-time.Minute)
	inactive := f.key(func(r *keygate.KeyRecord) { r.Key.DisabledAt = &past })
	addr := netip.MustParseAddr("192.0.2.9")
	tests := []struct {
		name   string
		header http.Header
		want   keygate.Code
	}{
		{"bearer", http.Header{"Authorization": {"Bearer " + good}}, ""},
		{"x-api-key", http.Header{"X-Api-Key": {good}}, ""},
		{"inactive", http.Header{"X-Api-Key": {inactive}}, keygate.CodeAPIKeyInactive},
		{"missing", http.Header{}, keygate.CodeMissingAPIKey},
		{"two x-api-key values", http.Header{"X-Api-Key": {good, good}}, keygate.CodeConflictingCredentials},
		{"basic", http.Header{"Authorization": {"Basic eDp5"}}, keygate.CodeInvalidAuthorizationFormat},
		{"throttled after two failures", http.Header{"X-Api-Key": {good}}, keygate.CodeTooManyFailedAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.srv.Authenticate(t.Context(), tt.header, addr)
			if a.Code != tt.want {
				t.Fatalf("Authenticate = %q, want %q", a.Code, tt.want)
			}
			if tt.want == "" && a.View.ID() != "key_0123456789abcdefghij" {
				t.Errorf("view id = %q", a.View.ID())
			}
			if tt.want == keygate.CodeTooManyFailedAttempts && a.RetryAfter <= 0 {
				t.Errorf("RetryAfter = %v, want > 0", a.RetryAfter)
			}
		})
	}
}
