package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
)

// fakeLookup answers from a map of token hash to record.
type fakeLookup struct {
	recs    map[keygate.Hash]*keygate.KeyRecord
	err     error
	queries atomic.Int64
}

func (f *fakeLookup) LookupKey(_ context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	f.queries.Add(1)
	if f.err != nil {
		return nil, f.err
	}
	if r, ok := f.recs[h]; ok {
		return r, nil
	}
	return nil, keygate.ErrNotFound
}

// View builds the record's view anew on every call, as Direct does, so a
// test may change a record between checks.
func (f *fakeLookup) View(ctx context.Context, h keygate.Hash) (*keygate.KeyView, error) {
	return Direct(f).View(ctx, h)
}

var testNow = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

type fixture struct {
	t      *testing.T
	lookup *fakeLookup
	srv    *Server
	format apikey.Format
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{t: t, lookup: &fakeLookup{recs: map[keygate.Hash]*keygate.KeyRecord{}}, format: apikey.DefaultFormat()}
	cfg.Format = f.format
	cfg.Now = func() time.Time { return testNow }
	if cfg.DocsURL == "" {
		cfg.DocsURL = "https://docs.example/errors"
	}
	srv, err := New(f.lookup, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	return f
}

// key adds a key record and returns its token.
func (f *fixture) key(mod func(*keygate.KeyRecord)) string {
	f.t.Helper()
	rec := &keygate.KeyRecord{
		Key: keygate.Key{
			ID: "key_0123456789abcdefghij", OrgID: "acme", UserID: "alice", Name: "ci",
			Type: keygate.Secret, Environment: keygate.Live, Scopes: []string{"read", "write"},
			Metadata: json.RawMessage(`{"plan":"pro"}`),
		},
		LoadedAt: testNow.Add(-1500 * time.Millisecond),
	}
	if mod != nil {
		mod(rec)
	}
	tok, err := f.format.Generate(rec.Key.Type, rec.Key.Environment)
	if err != nil {
		f.t.Fatal(err)
	}
	f.lookup.recs[tok.Hash()] = rec
	return tok.String()
}

func (f *fixture) check(method string, headers map[string]string) *authv3.CheckResponse {
	f.t.Helper()
	return f.checkAt(method, "/v1/things", headers, nil)
}

func (f *fixture) checkAt(method, path string, headers, ext map[string]string) *authv3.CheckResponse {
	f.t.Helper()
	req := checkRequest(method, path, headers)
	req.Attributes.ContextExtensions = ext
	resp, err := f.srv.Check(context.Background(), req)
	if err != nil {
		f.t.Fatalf("Check returned a gRPC error: %v", err)
	}
	return resp
}

func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: method, Path: path, Host: "api.example", Headers: headers},
	}}}
}

type denyWant struct {
	http      int
	grpc      codes.Code
	code      keygate.Code
	authn     string // www-authenticate, "" for none
	retry     string
	requestID string
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse, want denyWant) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != want.grpc {
		t.Errorf("status.code = %v, want %v", got, want.grpc)
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("not denied: %v", resp)
	}
	if got := int(d.GetStatus().GetCode()); got != want.http {
		t.Errorf("HTTP status = %d, want %d", got, want.http)
	}
	hs := map[string]string{}
	for _, h := range d.GetHeaders() {
		if h.GetAppend() == nil || h.GetAppend().GetValue() {
			t.Errorf("deny header %q: append = %v, want present and false", h.GetHeader().GetKey(), h.GetAppend())
		}
		hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	wantHS := map[string]string{"content-type": "application/json"}
	if want.authn != "" {
		wantHS["www-authenticate"] = want.authn
	}
	if want.retry != "" {
		wantHS["retry-after"] = want.retry
	}
	if diff := cmp.Diff(wantHS, hs); diff != "" {
		t.Errorf("deny headers (-want +got):\n%s", diff)
	}
	var body struct {
		Error struct {
			Code    keygate.Code `json:"code"`
			Message string       `json:"message"`
			DocsURL string       `json:"docs_url"`
		} `json:"error"`
		Meta struct {
			RequestID string `json:"request_id"`
		} `json:"meta"`
	}
	dec := json.NewDecoder(strings.NewReader(d.GetBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("deny body %q: %v", d.GetBody(), err)
	}
	if body.Error.Code != want.code {
		t.Errorf("body code = %q, want %q", body.Error.Code, want.code)
	}
	switch want.code {
	case keygate.CodeInvalidRequest:
		if !strings.HasPrefix(body.Error.Message, "The request path is not normalized: it ") {
			t.Errorf("body message = %q, want the rule of normalization the path broke", body.Error.Message)
		}
	case keygate.CodeInsufficientPermissions:
		if !strings.HasPrefix(body.Error.Message, "This route requires the scope \"") {
			t.Errorf("body message = %q, want the scope the route requires", body.Error.Message)
		}
	default:
		if body.Error.Message != want.code.Message() {
			t.Errorf("body message = %q, want %q", body.Error.Message, want.code.Message())
		}
	}
	if wantDocs := "https://docs.example/errors#" + string(want.code); body.Error.DocsURL != wantDocs {
		t.Errorf("docs_url = %q, want %q", body.Error.DocsURL, wantDocs)
	}
	switch {
	case want.requestID != "" && body.Meta.RequestID != want.requestID:
		t.Errorf("request_id = %q, want %q", body.Meta.RequestID, want.requestID)
	case want.requestID == "" && !strings.HasPrefix(body.Meta.RequestID, "req_"):
		t.Errorf("request_id = %q, want a generated req_ id", body.Meta.RequestID)
	}
}

const (
	invalidToken = `Bearer realm="keygate", error="invalid_token"`
	noToken      = `Bearer realm="keygate"`
)

func TestCheck_DeniesWithEveryCode(t *testing.T) {
	f := newFixture(t, Config{})
	past, future := testNow.Add(-time.Second), testNow.Add(time.Hour)
	active := f.key(nil)
	revoked := f.key(func(r *keygate.KeyRecord) { r.Key.RevokedAt = &past })
	expired := f.key(func(r *keygate.KeyRecord) { r.Key.ExpiresAt = &past })
	inactive := f.key(func(r *keygate.KeyRecord) { r.Key.DisabledAt = &past })
	revokedAndExpired := f.key(func(r *keygate.KeyRecord) { r.Key.RevokedAt, r.Key.ExpiresAt = &past, &past })
	expiredAndInactive := f.key(func(r *keygate.KeyRecord) { r.Key.ExpiresAt, r.Key.DisabledAt = &past, &past })
	orgOff := f.key(func(r *keygate.KeyRecord) { r.OrgDisabled = true })
	graceOver := f.key(func(r *keygate.KeyRecord) { r.TokenExpiresAt = &past })
	inGrace := f.key(func(r *keygate.KeyRecord) { r.TokenExpiresAt = &future })
	readOnly := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"} })
	publishable := f.key(func(r *keygate.KeyRecord) { r.Key.Type = keygate.Publishable })
	unknown, _ := f.format.Generate(keygate.Secret, keygate.Live)
	badSum := active[:len(active)-1] + flip(active[len(active)-1])

	tests := []struct {
		name    string
		method  string
		headers map[string]string
		want    denyWant
	}{
		{"no credential", "GET", nil, denyWant{401, codes.Unauthenticated, keygate.CodeMissingAPIKey, noToken, "", ""}},
		{"empty x-api-key only", "GET", map[string]string{"x-api-key": "  "}, denyWant{401, codes.Unauthenticated, keygate.CodeMissingAPIKey, noToken, "", ""}},
		{"basic scheme", "GET", map[string]string{"authorization": "Basic YWxhZGRpbjpvcGVu"}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAuthorizationFormat, invalidToken, "", ""}},
		{"bearer without token", "GET", map[string]string{"authorization": "Bearer "}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAuthorizationFormat, invalidToken, "", ""}},
		{"bare token in authorization", "GET", map[string]string{"authorization": active}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAuthorizationFormat, invalidToken, "", ""}},
		{"two different tokens", "GET", map[string]string{"authorization": "Bearer " + active, "x-api-key": readOnly}, denyWant{400, codes.InvalidArgument, keygate.CodeConflictingCredentials, "", "", ""}},
		{"comma-joined x-api-key", "GET", map[string]string{"x-api-key": active + "," + active}, denyWant{400, codes.InvalidArgument, keygate.CodeConflictingCredentials, "", "", ""}},
		{"comma-joined bearer", "GET", map[string]string{"authorization": "Bearer " + active + ", Bearer " + readOnly}, denyWant{400, codes.InvalidArgument, keygate.CodeConflictingCredentials, "", "", ""}},
		{"malformed token", "GET", map[string]string{"x-api-key": "sk_live_short"}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"bad checksum", "GET", map[string]string{"x-api-key": badSum}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"unknown key", "GET", map[string]string{"x-api-key": unknown.String()}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"revoked", "GET", map[string]string{"x-api-key": revoked}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"revoked wins over expired", "GET", map[string]string{"x-api-key": revokedAndExpired}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"rolled token past grace", "GET", map[string]string{"x-api-key": graceOver}, denyWant{401, codes.Unauthenticated, keygate.CodeInvalidAPIKey, invalidToken, "", ""}},
		{"expired", "GET", map[string]string{"x-api-key": expired}, denyWant{401, codes.Unauthenticated, keygate.CodeAPIKeyExpired, invalidToken, "", ""}},
		{"expired wins over inactive", "GET", map[string]string{"x-api-key": expiredAndInactive}, denyWant{401, codes.Unauthenticated, keygate.CodeAPIKeyExpired, invalidToken, "", ""}},
		{"inactive", "GET", map[string]string{"x-api-key": inactive}, denyWant{401, codes.Unauthenticated, keygate.CodeAPIKeyInactive, invalidToken, "", ""}},
		{"organization disabled", "GET", map[string]string{"x-api-key": orgOff}, denyWant{403, codes.PermissionDenied, keygate.CodeOrganizationDisabled, "", "", ""}},
		{"write without write scope", "POST", map[string]string{"x-api-key": readOnly}, denyWant{403, codes.PermissionDenied, keygate.CodeInsufficientPermissions, "", "", ""}},
		{"delete without write scope", "DELETE", map[string]string{"x-api-key": readOnly}, denyWant{403, codes.PermissionDenied, keygate.CodeInsufficientPermissions, "", "", ""}},
		{"publishable key", "GET", map[string]string{"x-api-key": publishable}, denyWant{403, codes.PermissionDenied, keygate.CodeForbidden, "", "", ""}},
		{"request id echoed", "GET", map[string]string{"x-request-id": "abc-123"}, denyWant{401, codes.Unauthenticated, keygate.CodeMissingAPIKey, noToken, "", "abc-123"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertDenied(t, f.check(tt.method, tt.headers), tt.want)
		})
	}
	// In grace is not denied.
	if resp := f.check("GET", map[string]string{"x-api-key": inGrace}); resp.GetOkResponse() == nil {
		t.Errorf("a rolled token within its grace was denied: %v", resp)
	}
}

func TestCheck_StoreErrorIsServiceUnavailableNeverAllow(t *testing.T) {
	f := newFixture(t, Config{})
	tok := f.key(nil)
	f.lookup.err = errors.New("dial tcp 127.0.0.1:5432: connection refused")
	assertDenied(t, f.check("GET", map[string]string{"x-api-key": tok}),
		denyWant{503, codes.Unavailable, keygate.CodeServiceUnavailable, "", "1", ""})
}

func TestCheck_MalformedTokensNeverReachTheLookup(t *testing.T) {
	f := newFixture(t, Config{})
	good := f.key(nil)
	for _, tok := range []string{
		"x", "sk_live_", good[:len(good)-1], good + "0", good[:len(good)-1] + flip(good[len(good)-1]),
		strings.ToUpper(good[:2]) + good[2:], "sk_prod_" + good[8:], "pk_live_" + good[8:], "sk-live-" + good[8:],
		good[:20] + "!" + good[21:], good[:20] + "é" + good[22:], strings.Repeat("a", 1<<16),
	} {
		f.check("GET", map[string]string{"x-api-key": tok})
	}
	if n := f.lookup.queries.Load(); n != 0 {
		t.Errorf("lookups for malformed tokens = %d, want 0", n)
	}
}

// flip returns another base62 character than c.
func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func allowHeaders(t *testing.T, resp *authv3.CheckResponse) map[string]string {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil || codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Fatalf("not allowed: %v", resp)
	}
	out := map[string]string{}
	for _, h := range ok.GetHeaders() {
		// An unset append makes newer Envoy append, so a client's value
		// would survive beside keygate's.
		if h.GetAppend() == nil {
			t.Fatalf("header %q: append is nil", h.GetHeader().GetKey())
		}
		if h.GetAppend().GetValue() {
			t.Errorf("header %q: append = true, want false", h.GetHeader().GetKey())
		}
		out[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return out
}

func TestCheck_AllowSetsIdentityHeadersAndRemovesSmuggledOnes(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true})
	tok := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"admin", "read", "write"} })
	resp := f.check("GET", map[string]string{
		"authorization":         "Bearer " + tok,
		"x-keygate-org-id":      "evil",
		"x-keygate-project-ids": "p9",
		"x-keygate-admin":       "true",
		"X-Keygate-Role":        "root",
		"accept":                "*/*",
	})
	got := allowHeaders(t, resp)
	want := map[string]string{
		"x-keygate-key-id":      "key_0123456789abcdefghij",
		"x-keygate-org-id":      "acme",
		"x-keygate-user-id":     "alice",
		"x-keygate-scopes":      "admin,read,write",
		"x-keygate-key-type":    "secret",
		"x-keygate-environment": "live",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("headers set (-want +got):\n%s", diff)
	}
	remove := append([]string(nil), resp.GetOkResponse().GetHeadersToRemove()...)
	sort.Strings(remove)
	wantRemove := []string{"authorization", "x-keygate-admin", "x-keygate-project-ids", "x-keygate-role"}
	if diff := cmp.Diff(wantRemove, remove); diff != "" {
		t.Errorf("headers_to_remove (-want +got):\n%s", diff)
	}
	for _, name := range remove {
		if _, set := got[name]; set {
			t.Errorf("header %q is both set and removed", name)
		}
	}
}

func TestCheck_AllowMetadata(t *testing.T) {
	f := newFixture(t, Config{})
	tok := f.key(nil)
	resp := f.check("GET", map[string]string{"x-api-key": tok})
	got := resp.GetDynamicMetadata().AsMap()
	want := map[string]any{
		"key_id": "key_0123456789abcdefghij", "org_id": "acme", "user_id": "alice",
		"scopes": []any{"read", "write"}, "environment": "live",
		"metadata": map[string]any{"plan": "pro"}, "cache_age_ms": float64(1500),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dynamic_metadata (-want +got):\n%s", diff)
	}
}

func TestCheck_ProjectHeaderOnlyForRestrictedKeys(t *testing.T) {
	f := newFixture(t, Config{})
	restricted := f.key(func(r *keygate.KeyRecord) { r.Key.ProjectIDs = []string{"a", "b"} })
	all := f.key(nil)
	var names []string
	for _, h := range f.check("GET", map[string]string{"x-api-key": restricted}).GetOkResponse().GetHeaders() {
		names = append(names, h.GetHeader().GetKey()+"="+h.GetHeader().GetValue())
	}
	if len(names) == 0 || names[len(names)-1] != "x-keygate-project-ids=a,b" {
		t.Errorf("restricted key headers = %v, want x-keygate-project-ids=a,b last", names)
	}
	for _, h := range f.check("GET", map[string]string{"x-api-key": all}).GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-keygate-project-ids" {
			t.Errorf("unrestricted key sets %v", h)
		}
	}
}

func TestCheck_CredentialHeaders(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true})
	tok := f.key(nil)
	tests := []struct {
		name       string
		headers    map[string]string
		wantRemove []string
	}{
		{"x-api-key", map[string]string{"x-api-key": tok}, []string{"x-api-key"}},
		{"bearer", map[string]string{"authorization": "Bearer " + tok}, []string{"authorization"}},
		{"bearer lower-case scheme and spaces", map[string]string{"authorization": "  bearer \t " + tok + "  "}, []string{"authorization"}},
		{"BEARER", map[string]string{"authorization": "BEARER " + tok}, []string{"authorization"}},
		{"both equal", map[string]string{"authorization": "Bearer " + tok, "x-api-key": " " + tok}, []string{"authorization", "x-api-key"}},
		// The upstream's own authorization stays.
		{"x-api-key beside basic", map[string]string{"x-api-key": tok, "authorization": "Basic dXNlcjpwYXNz"}, []string{"x-api-key"}},
		{"x-api-key beside empty bearer", map[string]string{"x-api-key": tok, "authorization": "Bearer"}, []string{"x-api-key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := f.check("GET", tt.headers)
			allowHeaders(t, resp)
			got := append([]string(nil), resp.GetOkResponse().GetHeadersToRemove()...)
			sort.Strings(got)
			if diff := cmp.Diff(tt.wantRemove, got); diff != "" {
				t.Errorf("headers_to_remove (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheck_StripCredentialsFalseKeepsThem(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: false})
	tok := f.key(nil)
	resp := f.check("GET", map[string]string{"authorization": "Bearer " + tok, "x-keygate-user-id": "mallory"})
	allowHeaders(t, resp)
	if got := resp.GetOkResponse().GetHeadersToRemove(); len(got) != 0 {
		t.Errorf("headers_to_remove = %v, want none (the client's x-keygate-user-id is overwritten, not removed)", got)
	}
}

func TestCheck_RawHeaderMap(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true})
	tok := f.key(nil)
	other := f.key(nil)
	raw := func(kv ...string) *authv3.CheckRequest {
		var hs []*corev3.HeaderValue
		for i := 0; i < len(kv); i += 2 {
			hs = append(hs, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		req := checkRequest("GET", "/", nil)
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: hs}
		return req
	}
	resp, _ := f.srv.Check(context.Background(), raw("x-api-key", tok, "x-keygate-org-id", "evil"))
	allowHeaders(t, resp)
	if diff := cmp.Diff([]string{"x-api-key"}, resp.GetOkResponse().GetHeadersToRemove()); diff != "" {
		t.Errorf("raw header_map removals (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"x-api-key twice, same token", raw("x-api-key", tok, "x-api-key", tok)},
		{"authorization twice", raw("authorization", "Bearer "+tok, "authorization", "Bearer "+other)},
		{"bearer and basic", raw("authorization", "Bearer "+tok, "authorization", "Basic eDp5")},
		{"basic and bearer beside x-api-key", raw("authorization", "Basic eDp5", "authorization", "Bearer "+tok, "x-api-key", tok)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := f.srv.Check(context.Background(), tt.req)
			assertDenied(t, resp, denyWant{400, codes.InvalidArgument, keygate.CodeConflictingCredentials, "", "", ""})
		})
	}
}

func TestCredentials(t *testing.T) {
	tests := []struct {
		name     string
		headers  [][2]string
		wantTok  string
		wantFrom uint8
		wantCode keygate.Code
	}{
		{"none", nil, "", 0, keygate.CodeMissingAPIKey},
		{"x-api-key", [][2]string{{"x-api-key", "t1"}}, "t1", fromAPIKey, ""},
		{"x-api-key trimmed", [][2]string{{"x-api-key", " \tt1 "}}, "t1", fromAPIKey, ""},
		{"X-API-KEY name case", [][2]string{{"X-Api-Key", "t1"}}, "t1", fromAPIKey, ""},
		{"bearer", [][2]string{{"authorization", "Bearer t1"}}, "t1", fromAuthorization, ""},
		{"bearer tab", [][2]string{{"authorization", "Bearer\tt1"}}, "t1", fromAuthorization, ""},
		{"bearer mixed case", [][2]string{{"authorization", "bEaReR t1"}}, "t1", fromAuthorization, ""},
		{"both equal", [][2]string{{"authorization", "Bearer t1"}, {"x-api-key", "t1"}}, "t1", fromAPIKey | fromAuthorization, ""},
		{"both different", [][2]string{{"authorization", "Bearer t1"}, {"x-api-key", "t2"}}, "", 0, keygate.CodeConflictingCredentials},
		{"x-api-key twice", [][2]string{{"x-api-key", "t1"}, {"x-api-key", "t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"x-api-key comma", [][2]string{{"x-api-key", "t1,t2"}}, "", 0, keygate.CodeConflictingCredentials},
		{"bearer comma", [][2]string{{"authorization", "Bearer t1,Bearer t2"}}, "", 0, keygate.CodeConflictingCredentials},
		{"bearer twice", [][2]string{{"authorization", "Bearer t1"}, {"authorization", "Bearer t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"basic", [][2]string{{"authorization", "Basic abc"}}, "", 0, keygate.CodeInvalidAuthorizationFormat},
		{"scheme only", [][2]string{{"authorization", "Bearer"}}, "", 0, keygate.CodeInvalidAuthorizationFormat},
		{"bearer spaces only", [][2]string{{"authorization", "Bearer    "}}, "", 0, keygate.CodeInvalidAuthorizationFormat},
		{"empty authorization", [][2]string{{"authorization", ""}}, "", 0, keygate.CodeInvalidAuthorizationFormat},
		{"bearerX scheme", [][2]string{{"authorization", "BearerX t1"}}, "", 0, keygate.CodeInvalidAuthorizationFormat},
		{"basic beside x-api-key", [][2]string{{"authorization", "Basic abc"}, {"x-api-key", "t1"}}, "t1", fromAPIKey, ""},
		{"digest with commas beside x-api-key", [][2]string{{"authorization", `Digest a="1", b="2"`}, {"x-api-key", "t1"}}, "t1", fromAPIKey, ""},
		{"empty x-api-key beside bearer", [][2]string{{"x-api-key", ""}, {"authorization", "Bearer t1"}}, "t1", fromAuthorization, ""},
		// Issue 12, item 6: several values of a credential header are
		// conflicting_credentials whatever their schemes.
		{"bearer and basic entries", [][2]string{{"authorization", "Bearer t1"}, {"authorization", "Basic abc"}}, "", 0, keygate.CodeConflictingCredentials},
		{"basic and bearer entries beside x-api-key", [][2]string{{"authorization", "Basic abc"}, {"authorization", "Bearer t1"}, {"x-api-key", "t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"two basic entries beside x-api-key", [][2]string{{"authorization", "Basic abc"}, {"authorization", "Basic def"}, {"x-api-key", "t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"joined basic then bearer", [][2]string{{"authorization", "Basic x, Bearer t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"joined basic then bearer beside x-api-key", [][2]string{{"authorization", "Basic x, Bearer t1"}, {"x-api-key", "t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"joined basic then lower-case bearer", [][2]string{{"authorization", "Basic x,bearer t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"x-api-key entry twice, one empty", [][2]string{{"x-api-key", ""}, {"x-api-key", "t1"}}, "", 0, keygate.CodeConflictingCredentials},
		{"x-api-key with a trailing comma", [][2]string{{"x-api-key", "t1,"}}, "", 0, keygate.CodeConflictingCredentials},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c credentials
			for _, h := range tt.headers {
				c.add(h[0], h[1])
			}
			tok, from, code := c.token()
			if tok != tt.wantTok || from != tt.wantFrom || code != tt.wantCode {
				t.Errorf("token() = %q, %b, %q; want %q, %b, %q", tok, from, code, tt.wantTok, tt.wantFrom, tt.wantCode)
			}
		})
	}
}

func TestConfig_ValidateHeaderPrefix(t *testing.T) {
	for _, p := range []string{"X-Keygate-", "x-keygate", "x keygate-", "x:k-"} {
		c := Config{HeaderPrefix: p}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "--header-prefix") {
			t.Errorf("Validate(%q) = %v, want an error naming --header-prefix", p, err)
		}
	}
	c := Config{HeaderPrefix: "x-auth-"}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(x-auth-) = %v", err)
	}
}

func TestJSONString_MatchesEncodingJSON(t *testing.T) {
	for _, id := range []string{"", "r1", "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90", `a"b`, `a\b`, "<&>", "tab\there", "é", "\xff", "\u2028", "~ !"} {
		want, _ := json.Marshal(id)
		if got := jsonString(id); got != string(want) {
			t.Errorf("jsonString(%q) = %s, want %s", id, got, want)
		}
	}
}

// One view serves requests of every shape: nothing one allow builds may
// carry over into the next (removals, rate-limit headers, cache_age_ms).
func TestAllow_OneViewServesEveryRequestShape(t *testing.T) {
	now := testNow
	f := newFixture(t, Config{StripCredentials: true})
	tok := f.key(nil)
	srv, err := New(f.lookup, Config{Format: f.format, StripCredentials: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		headers map[string]string
		advance time.Duration
		remove  []string
		ageMS   float64
	}{
		{"x-api-key", map[string]string{"x-api-key": tok}, 0, []string{"x-api-key"}, 1500},
		{"authorization", map[string]string{"authorization": "Bearer " + tok}, 0, []string{"authorization"}, 1500},
		{"both", map[string]string{"authorization": "Bearer " + tok, "x-api-key": tok}, 0, []string{"x-api-key", "authorization"}, 1500},
		{"smuggled identity header", map[string]string{"x-api-key": tok, "x-keygate-plan": "gold"}, 0, []string{"x-api-key", "x-keygate-plan"}, 1500},
		{"x-api-key again", map[string]string{"x-api-key": tok}, 0, []string{"x-api-key"}, 1500},
		{"a millisecond later", map[string]string{"x-api-key": tok}, time.Millisecond, []string{"x-api-key"}, 1501},
		{"a second later", map[string]string{"x-api-key": tok}, time.Second, []string{"x-api-key"}, 2501},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			req := checkRequest("GET", "/v1/things", tt.headers)
			resp, _ := srv.Check(context.Background(), req)
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("denied: %v", resp)
			}
			if diff := cmp.Diff(tt.remove, ok.GetHeadersToRemove()); diff != "" {
				t.Errorf("headers_to_remove (-want +got):\n%s", diff)
			}
			if len(ok.GetResponseHeadersToAdd()) != 0 {
				t.Errorf("response_headers_to_add = %v, want none (no rate limit)", ok.GetResponseHeadersToAdd())
			}
			fields := resp.GetDynamicMetadata().GetFields()
			if got := fields["cache_age_ms"].GetNumberValue(); got != tt.ageMS {
				t.Errorf("cache_age_ms = %v, want %v", got, tt.ageMS)
			}
			if len(fields) != 7 || fields["key_id"].GetStringValue() != "key_0123456789abcdefghij" ||
				fields["metadata"].GetStructValue().AsMap()["plan"] != "pro" {
				t.Errorf("dynamic_metadata = %v", fields)
			}
			var scopes string
			for _, h := range ok.GetHeaders() {
				if h.GetHeader().GetKey() == "x-keygate-scopes" {
					scopes = h.GetHeader().GetValue()
				}
			}
			if scopes != "read,write" {
				t.Errorf("x-keygate-scopes = %q", scopes)
			}
		})
	}
}
