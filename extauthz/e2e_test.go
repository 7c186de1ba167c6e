package extauthz_test

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
)

// backends are the stores the end-to-end tests run against.
func backends() map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"postgres": func(t *testing.T) store.Store {
			ctx := context.Background()
			st, err := postgres.Open(ctx, postgres.Config{URL: pgtest.NewDatabase(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			if err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			return st
		},
		"sqlite": func(t *testing.T) store.Store {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "keygate.db")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			if err := st.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
}

type e2e struct {
	t        *testing.T
	st       store.Store
	svc      *manage.Service
	cache    *cache.Cache
	follower *cache.Follower
	client   authv3.AuthorizationClient
	now      time.Time
}

// startE2E serves Check on 127.0.0.1 over real gRPC, deciding from st
// through the cache, with the decision's clock at now; opts adjust the
// decision's configuration (a limiter, a policy).
func startE2E(t *testing.T, st store.Store, now time.Time, opts ...func(*extauthz.Config)) *e2e {
	t.Helper()
	format := apikey.DefaultFormat()
	cfg := extauthz.Config{Format: format, StripCredentials: true, DocsURL: "https://keygate.dev/errors", Now: func() time.Time { return now }}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := cache.New(st, cache.Config{MaxBytes: 1 << 24, TTL: time.Minute, NegativeTTL: time.Second, Metadata: extauthz.MetadataEncoding})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	f, err := cache.NewFollower(st, c, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv, err := extauthz.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, srv)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &e2e{t: t, st: st, svc: manage.New(st, format, func() time.Time { return now }), cache: c, follower: f,
		client: authv3.NewAuthorizationClient(conn), now: now}
}

func (e *e2e) key(nk manage.NewKey) (keygate.Key, string) {
	e.t.Helper()
	if nk.OrgID == "" {
		nk.OrgID = "acme"
	}
	if nk.UserID == "" {
		nk.UserID = "alice"
	}
	if nk.Name == "" {
		nk.Name = "e2e"
	}
	nk.CreateOrganization = true
	ck, err := e.svc.CreateKey(context.Background(), nk, keygate.Actor{})
	if err != nil {
		e.t.Fatal(err)
	}
	return ck.Key, ck.Token.String()
}

func (e *e2e) check(method string, headers map[string]string) *authv3.CheckResponse {
	e.t.Helper()
	return e.checkAt(method, "/v1/things", headers)
}

func (e *e2e) checkAt(method, path string, headers map[string]string) *authv3.CheckResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "api.example", Headers: headers,
		}},
	}})
	if err != nil {
		e.t.Fatalf("Check over gRPC: %v (a decision must never be a gRPC error)", err)
	}
	return resp
}

// sync applies what the events log says, as the follower does every poll.
func (e *e2e) sync() {
	e.t.Helper()
	if err := e.follower.Sync(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func denied(t *testing.T, resp *authv3.CheckResponse, httpStatus int, grpcCode codes.Code, code keygate.Code) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("allowed, want %s: %v", code, resp)
	}
	if got := codes.Code(resp.GetStatus().GetCode()); got != grpcCode {
		t.Errorf("status.code = %v, want %v", got, grpcCode)
	}
	if got := int(d.GetStatus().GetCode()); got != httpStatus {
		t.Errorf("HTTP status = %d, want %d", got, httpStatus)
	}
	var body struct {
		Error struct {
			Code    keygate.Code `json:"code"`
			DocsURL string       `json:"docs_url"`
		} `json:"error"`
		Meta struct {
			RequestID string `json:"request_id"`
		} `json:"meta"`
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		t.Fatalf("body %q: %v", d.GetBody(), err)
	}
	if body.Error.Code != code || body.Error.DocsURL != "https://keygate.dev/errors#"+string(code) || body.Meta.RequestID == "" {
		t.Errorf("body = %s, want code %s with docs_url and request_id", d.GetBody(), code)
	}
	var ct string
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == "content-type" {
			ct = h.GetHeader().GetValue()
		}
	}
	if ct != "application/json" {
		t.Errorf("content-type = %q, want application/json", ct)
	}
}

func TestE2E_CheckDecidesFromTheStore(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second)
			e := startE2E(t, open(t), now)
			ctx := context.Background()

			_, active := e.key(manage.NewKey{Role: "member", Metadata: json.RawMessage(`{"plan":"pro"}`)})
			_, viewer := e.key(manage.NewKey{Role: "viewer"})
			_, publishable := e.key(manage.NewKey{Role: "member", Type: keygate.Publishable})
			_, restricted := e.key(manage.NewKey{Role: "member", ProjectIDs: []string{"p1"}})
			inactiveKey, inactive := e.key(manage.NewKey{Role: "member"})
			revokedKey, revoked := e.key(manage.NewKey{Role: "member"})
			soon := now.Add(time.Hour)
			_, expiring := e.key(manage.NewKey{Role: "member", ExpiresAt: &soon})
			_, otherOrg := e.key(manage.NewKey{OrgID: "globex", Role: "member"})

			off := false
			if _, err := e.st.UpdateKey(ctx, "acme", inactiveKey.ID, store.KeyUpdate{Active: &off}, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.RevokeKey(ctx, "acme", revokedKey.ID, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.svc.DisableOrganization(ctx, "globex", keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			unknown, _ := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)

			resp := e.check("GET", map[string]string{"authorization": "Bearer " + active, "x-keygate-org-id": "globex"})
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Fatalf("active key denied: %v", resp.GetDeniedResponse().GetBody())
			}
			set := map[string]string{}
			for _, h := range ok.GetHeaders() {
				if h.GetAppend() == nil || h.GetAppend().GetValue() {
					t.Errorf("header %s: append %v, want present and false", h.GetHeader().GetKey(), h.GetAppend())
				}
				set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if set["x-keygate-org-id"] != "acme" || set["x-keygate-user-id"] != "alice" || set["x-keygate-scopes"] != "read,write" {
				t.Errorf("identity headers = %v", set)
			}
			if got := resp.GetDynamicMetadata().GetFields()["metadata"].GetStructValue().AsMap()["plan"]; got != "pro" {
				t.Errorf("dynamic_metadata.metadata.plan = %v, want pro", got)
			}
			if rm := ok.GetHeadersToRemove(); len(rm) != 1 || rm[0] != "authorization" {
				t.Errorf("headers_to_remove = %v, want [authorization] (the smuggled org id is overwritten)", rm)
			}

			tests := []struct {
				name    string
				method  string
				headers map[string]string
				http    int
				grpc    codes.Code
				code    keygate.Code
			}{
				{"missing", "GET", map[string]string{}, 401, codes.Unauthenticated, keygate.CodeMissingAPIKey},
				{"basic", "GET", map[string]string{"authorization": "Basic Zm9vOmJhcg=="}, 401, codes.Unauthenticated, keygate.CodeInvalidAuthorizationFormat},
				{"conflicting", "GET", map[string]string{"authorization": "Bearer " + active, "x-api-key": viewer}, 400, codes.InvalidArgument, keygate.CodeConflictingCredentials},
				{"malformed", "GET", map[string]string{"x-api-key": "sk_live_nope"}, 401, codes.Unauthenticated, keygate.CodeInvalidAPIKey},
				{"unknown", "GET", map[string]string{"x-api-key": unknown.String()}, 401, codes.Unauthenticated, keygate.CodeInvalidAPIKey},
				{"revoked", "GET", map[string]string{"x-api-key": revoked}, 401, codes.Unauthenticated, keygate.CodeInvalidAPIKey},
				{"inactive", "GET", map[string]string{"x-api-key": inactive}, 401, codes.Unauthenticated, keygate.CodeAPIKeyInactive},
				{"organization disabled", "GET", map[string]string{"x-api-key": otherOrg}, 403, codes.PermissionDenied, keygate.CodeOrganizationDisabled},
				{"viewer writes", "POST", map[string]string{"x-api-key": viewer}, 403, codes.PermissionDenied, keygate.CodeInsufficientPermissions},
				{"publishable", "GET", map[string]string{"x-api-key": publishable}, 403, codes.PermissionDenied, keygate.CodeForbidden},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					denied(t, e.check(tt.method, tt.headers), tt.http, tt.grpc, tt.code)
				})
			}
			// Route policy: projects and normalization.
			restrictedH := map[string]string{"x-api-key": restricted}
			denied(t, e.checkAt("GET", "/v1/projects/p2/things", restrictedH), 403, codes.PermissionDenied, keygate.CodeForbidden)
			denied(t, e.checkAt("GET", "/v1/projects/p1/../p2", restrictedH), 400, codes.InvalidArgument, keygate.CodeInvalidRequest)
			if resp := e.checkAt("GET", "/v1/projects/p1/things", restrictedH); resp.GetOkResponse() == nil {
				t.Errorf("restricted key denied on its own project: %s", resp.GetDeniedResponse().GetBody())
			} else if got := headerValue(resp.GetOkResponse().GetHeaders(), "x-keygate-project-ids"); got != "p1" {
				t.Errorf("x-keygate-project-ids = %q, want p1", got)
			}

			// Expiry is the decision's clock against expires_at.
			if resp := e.check("GET", map[string]string{"x-api-key": expiring}); resp.GetOkResponse() == nil {
				t.Fatalf("key expiring in an hour denied: %s", resp.GetDeniedResponse().GetBody())
			}
			later := startE2E(t, e.st, now.Add(2*time.Hour))
			denied(t, later.check("GET", map[string]string{"x-api-key": expiring}), 401, codes.Unauthenticated, keygate.CodeAPIKeyExpired)
		})
	}
}

func TestE2E_RevocationAppliedFromTheEventsLog(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			e := startE2E(t, open(t), time.Now())
			k, tok := e.key(manage.NewKey{Role: "member"})
			h := map[string]string{"x-api-key": tok}
			for i := 0; i < 3; i++ { // warm the cache
				if e.check("GET", h).GetOkResponse() == nil {
					t.Fatal("fresh key denied")
				}
			}
			if _, err := e.svc.RevokeKey(context.Background(), "acme", k.ID, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			e.sync()
			denied(t, e.check("GET", h), 401, codes.Unauthenticated, keygate.CodeInvalidAPIKey)
		})
	}
}

func TestE2E_StoreGoneIsServiceUnavailableNeverAllow(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			e := startE2E(t, st, time.Now())
			_, cached := e.key(manage.NewKey{Role: "member"})
			_, uncached := e.key(manage.NewKey{Role: "member"})
			if e.check("GET", map[string]string{"x-api-key": cached}).GetOkResponse() == nil {
				t.Fatal("fresh key denied")
			}
			st.Close() // the store goes away mid-run
			resp := e.check("GET", map[string]string{"x-api-key": uncached})
			denied(t, resp, 503, codes.Unavailable, keygate.CodeServiceUnavailable)
			var retry string
			for _, h := range resp.GetDeniedResponse().GetHeaders() {
				if h.GetHeader().GetKey() == "retry-after" {
					retry = h.GetHeader().GetValue()
				}
			}
			if retry == "" {
				t.Error("503 without retry-after")
			}
		})
	}
}

func headerValue(hs []*corev3.HeaderValueOption, name string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// BenchmarkCheckMiss is a Check whose lookup goes to PostgreSQL every time:
// the cost of a cache miss, through the store's pool, on loopback.
func BenchmarkCheckMiss(b *testing.B) {
	ctx := context.Background()
	st, err := postgres.Open(ctx, postgres.Config{URL: pgtest.NewDatabase(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	svc := manage.New(st, apikey.DefaultFormat(), time.Now)
	ck, err := svc.CreateKey(ctx, manage.NewKey{OrgID: "acme", UserID: "alice", Name: "bench", Role: "member", CreateOrganization: true}, keygate.Actor{})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := extauthz.New(extauthz.Direct(st), extauthz.Config{StripCredentials: true})
	if err != nil {
		b.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"x-api-key": ck.Token.String()}},
	}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, _ := srv.Check(ctx, req)
		if resp.GetOkResponse() == nil {
			b.Fatal("denied")
		}
	}
}
