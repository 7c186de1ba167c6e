package extauthz

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// reportPolicy marks /report/** report-only, and /report/enforced/**
// (first) enforced.
const reportPolicy = `
rules:
  - {path: "/report/enforced/**", mode: enforce}
  - {path: "/report/**", mode: report}
`

type reportFixture struct {
	*fixture
	logs  *lockedBuffer
	reg   *prometheus.Registry
	clock *manualClock
}

func newReportFixture(t *testing.T) *reportFixture {
	t.Helper()
	pol, err := policy.Parse("report.yaml", []byte(reportPolicy))
	if err != nil {
		t.Fatal(err)
	}
	clock := &manualClock{t: testNow}
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 1, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	reg := prometheus.NewRegistry()
	f := newFixture(t, Config{
		StripCredentials: true,
		Policy:           func() *policy.Policy { return pol },
		Limiter:          lim, DefaultRateLimit: 1000, Throttle: th,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Registerer: reg,
	})
	return &reportFixture{fixture: f, logs: logs, reg: reg, clock: clock}
}

// reportReq is a Check on the report route: the policy file's when ext
// is nil.
func reportReq(method, path, source string, headers, ext map[string]string) *authv3.CheckRequest {
	req := checkRequest(method, path, headers)
	req.Attributes.ContextExtensions = ext
	if source != "" {
		req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}},
		}}}
	}
	return req
}

func (f *reportFixture) do(req *authv3.CheckRequest) *authv3.CheckResponse {
	f.t.Helper()
	resp, err := f.srv.Check(context.Background(), req)
	if err != nil {
		f.t.Fatalf("Check returned a gRPC error: %v", err)
	}
	return resp
}

// assertWouldDeny checks that resp is the allow of a report-only route for
// code: only x-keygate-would-deny set, remove removed exactly, no
// ratelimit-* headers, metadata {would_deny: code}.
func assertWouldDeny(t *testing.T, resp *authv3.CheckResponse, code keygate.Code, remove []string) {
	t.Helper()
	if diff := cmp.Diff(map[string]string{"x-keygate-would-deny": string(code)}, allowHeaders(t, resp)); diff != "" {
		t.Errorf("headers set (-want +got):\n%s", diff)
	}
	ok := resp.GetOkResponse()
	got := slices.Clone(ok.GetHeadersToRemove())
	slices.Sort(got)
	remove = slices.Clone(remove)
	slices.Sort(remove)
	if diff := cmp.Diff(remove, got, cmp.Comparer(func(a, b []string) bool { return slices.Equal(a, b) })); diff != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", diff)
	}
	if hs := ok.GetResponseHeadersToAdd(); len(hs) != 0 {
		t.Errorf("response_headers_to_add = %v, want none", hs)
	}
	want := &structpb.Struct{Fields: map[string]*structpb.Value{"would_deny": structpb.NewStringValue(string(code))}}
	if got := resp.GetDynamicMetadata(); !structEqual(got, want) {
		t.Errorf("dynamic_metadata = %v, want %v", got, want)
	}
}

func structEqual(a, b *structpb.Struct) bool {
	aj, _ := a.MarshalJSON()
	bj, _ := b.MarshalJSON()
	return bytes.Equal(aj, bj)
}

var reportExt = map[string]string{policy.ExtMode: "report"}

func TestReport_EveryDenyBecomesAWouldDeny(t *testing.T) {
	f := newReportFixture(t)
	past := testNow.Add(-time.Second)
	active := f.key(nil)
	readOnly := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"}; r.Key.ID = "key_readonly" })
	restricted := f.key(func(r *keygate.KeyRecord) { r.Key.ProjectIDs = []string{"p1"}; r.Key.ID = "key_restricted" })
	publishable := f.key(func(r *keygate.KeyRecord) { r.Key.Type = keygate.Publishable; r.Key.ID = "key_publishable" })
	inactive := f.key(func(r *keygate.KeyRecord) { r.Key.DisabledAt = &past; r.Key.ID = "key_inactive" })
	expired := f.key(func(r *keygate.KeyRecord) { r.Key.ExpiresAt = &past; r.Key.ID = "key_expired" })
	orgOff := f.key(func(r *keygate.KeyRecord) { r.OrgDisabled = true; r.Key.ID = "key_orgoff" })
	one := 1
	limited := f.key(func(r *keygate.KeyRecord) { r.Key.RateLimitPerMinute = &one; r.Key.ID = "key_limited" })
	bound := f.key(func(r *keygate.KeyRecord) { r.Key.AllowedSources = []string{"198.51.100.0/24"}; r.Key.ID = "key_bound" })
	unknown, _ := f.format.Generate(keygate.Secret, keygate.Live)

	tests := []struct {
		name    string
		method  string
		path    string
		source  string
		headers map[string]string
		ext     map[string]string // nil: the policy file's report route
		setup   func(t *testing.T)
		code    keygate.Code
		keyID   string // logged, when known
		remove  []string
	}{
		{name: "missing", headers: nil, code: keygate.CodeMissingAPIKey},
		{name: "invalid format", headers: map[string]string{"authorization": "Basic eDp5"},
			code: keygate.CodeInvalidAuthorizationFormat, remove: []string{"authorization"}},
		{name: "conflicting", headers: map[string]string{"x-api-key": active, "authorization": "Bearer " + readOnly},
			code: keygate.CodeConflictingCredentials, remove: []string{"x-api-key", "authorization"}},
		{name: "invalid key", headers: map[string]string{"x-api-key": unknown.String()},
			code: keygate.CodeInvalidAPIKey, remove: []string{"x-api-key"}},
		{name: "inactive", headers: map[string]string{"x-api-key": inactive}, code: keygate.CodeAPIKeyInactive,
			keyID: "key_inactive", remove: []string{"x-api-key"}},
		{name: "expired", headers: map[string]string{"authorization": "Bearer " + expired}, code: keygate.CodeAPIKeyExpired,
			keyID: "key_expired", remove: []string{"authorization"}},
		{name: "organization disabled", headers: map[string]string{"x-api-key": orgOff}, code: keygate.CodeOrganizationDisabled,
			keyID: "key_orgoff", remove: []string{"x-api-key"}},
		{name: "source not allowed", source: "203.0.113.50", headers: map[string]string{"x-api-key": bound},
			code: keygate.CodeSourceNotAllowed, keyID: "key_bound", remove: []string{"x-api-key"}},
		{name: "insufficient permissions", method: "POST", headers: map[string]string{"x-api-key": readOnly},
			code: keygate.CodeInsufficientPermissions, keyID: "key_readonly", remove: []string{"x-api-key"}},
		{name: "forbidden project", path: "/v1/projects/p2/x", headers: map[string]string{"x-api-key": restricted},
			ext: reportExt, code: keygate.CodeForbidden, keyID: "key_restricted", remove: []string{"x-api-key"}},
		{name: "publishable", headers: map[string]string{"x-api-key": publishable}, code: keygate.CodeForbidden,
			keyID: "key_publishable", remove: []string{"x-api-key"}},
		{name: "rate limited", headers: map[string]string{"x-api-key": limited}, code: keygate.CodeRateLimited,
			keyID: "key_limited", remove: []string{"x-api-key"},
			setup: func(t *testing.T) {
				// The one request a minute, allowed on the enforced route.
				allowed(t, f.do(reportReq("GET", "/v1/things", "", map[string]string{"x-api-key": limited}, nil)))
			}},
		{name: "too many failed attempts", source: "203.0.113.9", headers: map[string]string{"x-api-key": unknown.String()},
			code: keygate.CodeTooManyFailedAttempts, remove: []string{"x-api-key"},
			setup: func(t *testing.T) {
				// One failure (limit 1), itself a would-deny on this route.
				f.do(reportReq("GET", "/report/x", "203.0.113.9", map[string]string{"x-api-key": "sk_live_guess"}, nil))
			}},
		{name: "service unavailable", headers: map[string]string{"x-api-key": active}, code: keygate.CodeServiceUnavailable,
			remove: []string{"x-api-key"},
			setup: func(t *testing.T) {
				f.lookup.err = errors.New("dial tcp 127.0.0.1:5432: connection refused")
				t.Cleanup(func() { f.lookup.err = nil })
			}},
		{name: "context extension on a path the file enforces", path: "/v1/things", headers: nil, ext: reportExt,
			code: keygate.CodeMissingAPIKey},
		{name: "forged would-deny and identity headers", headers: map[string]string{
			"x-keygate-would-deny": "nothing", "x-keygate-key-id": "key_forged", "X-Keygate-Org-Id": "evil"},
			code: keygate.CodeMissingAPIKey, remove: []string{"x-keygate-key-id", "x-keygate-org-id"}},
		{name: "non-Bearer authorization beside x-api-key stays", headers: map[string]string{"x-api-key": unknown.String(), "authorization": "Basic eDp5"},
			code: keygate.CodeInvalidAPIKey, remove: []string{"x-api-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.method == "" {
				tt.method = "GET"
			}
			if tt.path == "" {
				tt.path = "/report/things"
			}
			if tt.setup != nil {
				tt.setup(t)
			}
			before := testutil.ToFloat64(f.srv.m.wouldDeny[tt.code])
			logsBefore := len(f.logs.String())

			req := reportReq(tt.method, tt.path, tt.source, tt.headers, tt.ext)
			assertWouldDeny(t, f.do(req), tt.code, tt.remove)

			if got := testutil.ToFloat64(f.srv.m.wouldDeny[tt.code]) - before; got != 1 {
				t.Errorf("keygate_would_deny_total{code=%q} grew by %v, want 1", tt.code, got)
			}
			line := f.logs.String()[logsBefore:]
			if !strings.Contains(line, "level=INFO") || !strings.Contains(line, "code="+string(tt.code)) {
				t.Errorf("log %q: want an INFO line with code=%s", line, tt.code)
			}
			if tt.keyID != "" && !strings.Contains(line, "key_id="+tt.keyID) {
				t.Errorf("log %q: want key_id=%s", line, tt.keyID)
			}
			for _, v := range tt.headers {
				if tok := strings.TrimPrefix(v, "Bearer "); len(tok) > 20 && strings.Contains(line, tok) {
					t.Errorf("log %q holds the token", line)
				}
			}

			// The same request on an enforced route is denied with the code.
			if tt.ext == nil {
				if tt.setup != nil && tt.code == keygate.CodeServiceUnavailable {
					tt.setup(t)
				}
				resp := f.do(reportReq(tt.method, "/report/enforced/things", tt.source, tt.headers, nil))
				if d := resp.GetDeniedResponse(); d == nil || !jsonHasCode(d.GetBody(), tt.code) {
					t.Errorf("enforced route: %v, want a deny with %s", resp, tt.code)
				}
			}
		})
	}
	if got := testutil.CollectAndCount(f.reg, "keygate_would_deny_total"); got == 0 {
		t.Error("keygate_would_deny_total is not registered")
	}
}

func TestReport_InvalidRequestStaysADeny(t *testing.T) {
	f := newReportFixture(t)
	tok := f.key(nil)
	for _, tt := range []struct {
		name    string
		path    string
		headers map[string]string
	}{
		{"valid key", "/report/a;b", map[string]string{"x-api-key": tok}},
		// missing_api_key comes first in the order of checks, but a path
		// that is not normalized is never allowed through.
		{"no credential", "/report//x", nil},
		{"invalid key", "/report/%2e%2e/admin", map[string]string{"x-api-key": "sk_live_guess"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, ext := range []map[string]string{nil, reportExt} {
				resp := f.do(reportReq("GET", tt.path, "", tt.headers, ext))
				assertDeniedHeaders(t, resp, 400, codes.InvalidArgument, keygate.CodeInvalidRequest, nil)
			}
		})
	}
	for code, c := range f.srv.m.wouldDeny {
		if n := testutil.ToFloat64(c); n != 0 {
			t.Errorf("keygate_would_deny_total{code=%q} = %v, want 0", code, n)
		}
	}
}

func TestReport_EnforceRoutesUnchanged(t *testing.T) {
	f := newReportFixture(t)
	readOnly := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"} })
	cases := []struct {
		path string
		ext  map[string]string
	}{
		{"/v1/things", nil},         // no rule: default enforce
		{"/report/enforced/x", nil}, // rule enforce
		{"/report/x", map[string]string{policy.ExtMode: "enforce"}},                          // extension over the file's report
		{"/v1/things", map[string]string{policy.ExtPublishable: "false"}},                    // other extensions only
		{"/report/x", map[string]string{policy.ExtMode: "Report"}},                           // invalid: fails closed
		{"/report/x", map[string]string{policy.ExtMode: "report", policy.ExtScope: "Admin"}}, // invalid scope: reported
	}
	for _, c := range cases[:4] {
		assertDenied(t, f.do(reportReq("POST", c.path, "", map[string]string{"x-api-key": readOnly}, c.ext)),
			denyWant{403, codes.PermissionDenied, keygate.CodeInsufficientPermissions, "", "", ""})
		assertDenied(t, f.do(reportReq("GET", c.path, "", nil, c.ext)),
			denyWant{401, codes.Unauthenticated, keygate.CodeMissingAPIKey, noToken, "", ""})
	}
	// An invalid keygate.mode is an operator error: enforce, and the route
	// policy step denies.
	assertDenied(t, f.do(reportReq("GET", cases[4].path, "", map[string]string{"x-api-key": readOnly}, cases[4].ext)),
		denyWant{403, codes.PermissionDenied, keygate.CodeForbidden, "", "", ""})
	// A valid keygate.mode: report with another invalid extension reports
	// the forbidden it would give.
	assertWouldDeny(t, f.do(reportReq("GET", cases[5].path, "", map[string]string{"x-api-key": readOnly}, cases[5].ext)),
		keygate.CodeForbidden, []string{"x-api-key"})
}

func TestReport_AllowedRequestsGetIdentityAndConsumeRateLimits(t *testing.T) {
	f := newReportFixture(t)
	two := 2
	tok := f.key(func(r *keygate.KeyRecord) { r.Key.RateLimitPerMinute = &two })
	u := &usage{}
	f.srv.cfg.Usage = u
	hdr := map[string]string{"x-api-key": tok, "x-keygate-would-deny": "forged"}
	for i := range 2 {
		resp := f.do(reportReq("GET", "/report/x", "", hdr, nil))
		got := allowHeaders(t, resp)
		if got["x-keygate-key-id"] != "key_0123456789abcdefghij" {
			t.Errorf("allow %d: identity headers %v", i, got)
		}
		if _, ok := got["x-keygate-would-deny"]; ok {
			t.Errorf("allow %d sets x-keygate-would-deny", i)
		}
		if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Contains(rm, "x-keygate-would-deny") {
			t.Errorf("allow %d: forged x-keygate-would-deny not removed: %v", i, rm)
		}
		if rl := headerMap(resp.GetOkResponse().GetResponseHeadersToAdd()); rl["ratelimit-limit"] != "2" {
			t.Errorf("allow %d: ratelimit headers %v", i, rl)
		}
	}
	if len(u.ids) != 2 {
		t.Errorf("usage recorded %d times, want 2", len(u.ids))
	}
	// The bucket is spent: reported here, denied on an enforced route.
	assertWouldDeny(t, f.do(reportReq("GET", "/report/x", "", hdr, nil)), keygate.CodeRateLimited, []string{"x-api-key"})
	assertDeniedHeaders(t, f.do(reportReq("GET", "/v1/things", "", hdr, nil)), 429, codes.ResourceExhausted, keygate.CodeRateLimited, nil)
	if len(u.ids) != 2 {
		t.Errorf("usage recorded for a would-deny: %d, want 2", len(u.ids))
	}
	// A minute later the bucket is full again.
	f.clock.Add(time.Minute)
	allowed(t, f.do(reportReq("GET", "/report/x", "", hdr, nil)))
}

func TestReport_StripCredentialsFalseKeepsThem(t *testing.T) {
	f := newReportFixture(t)
	f.srv.cfg.StripCredentials = false
	assertWouldDeny(t, f.do(reportReq("GET", "/report/x", "", map[string]string{"x-api-key": "sk_live_guess", "x-keygate-scopes": "admin"}, nil)),
		keygate.CodeInvalidAPIKey, []string{"x-keygate-scopes"})
}

func TestReport_HeaderPrefix(t *testing.T) {
	pol, err := policy.Parse("report.yaml", []byte(reportPolicy))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{HeaderPrefix: "x-auth-", StripCredentials: true, Policy: func() *policy.Policy { return pol }})
	resp := f.checkAt("GET", "/report/x", map[string]string{"x-auth-would-deny": "forged", "x-auth-key-id": "k"}, nil)
	if diff := cmp.Diff(map[string]string{"x-auth-would-deny": "missing_api_key"}, allowHeaders(t, resp)); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(rm, []string{"x-auth-key-id"}) {
		t.Errorf("headers_to_remove = %v, want [x-auth-key-id]", rm)
	}
}

func TestReport_DecideHTTP(t *testing.T) {
	f := newReportFixture(t)
	tok := f.key(nil)
	a := f.srv.DecideHTTP(context.Background(), HTTPRequest{
		Method: "GET", Path: "/report/x", ClientAddr: netip.MustParseAddr("192.0.2.1"),
		Headers: []HTTPHeader{{"x-api-key", "sk_live_guess"}, {"x-keygate-would-deny", "forged"}, {"x-keygate-org-id", "evil"}},
	})
	want := HTTPAnswer{
		Status: 200, WouldDeny: keygate.CodeInvalidAPIKey,
		Headers: []HTTPHeader{
			{"x-keygate-would-deny", "invalid_api_key"},
			{HeadersToRemove, "x-api-key,x-keygate-org-id"},
		},
		Identity:  []HTTPHeader{{"x-keygate-would-deny", "invalid_api_key"}},
		RateLimit: []HTTPHeader{},
		Remove:    []string{"x-api-key", "x-keygate-org-id"},
	}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Errorf("DecideHTTP would-deny (-want +got):\n%s", diff)
	}
	// Allowed: identity, no would-deny.
	a = f.srv.DecideHTTP(context.Background(), HTTPRequest{Method: "GET", Path: "/report/x", Headers: []HTTPHeader{{"x-api-key", tok}}})
	if a.Status != 200 || a.WouldDeny != "" || len(a.Identity) < 6 {
		t.Errorf("DecideHTTP allow = %+v", a)
	}
	// Not normalized: a deny.
	a = f.srv.DecideHTTP(context.Background(), HTTPRequest{Method: "GET", Path: "/report//x"})
	if a.Code != keygate.CodeInvalidRequest || a.Status != 400 {
		t.Errorf("DecideHTTP unnormalized = %+v, want invalid_request", a)
	}
}
