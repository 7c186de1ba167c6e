package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/leak"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
	keyusage "github.com/keygate/keygate/usage"
)

// clock is real time plus an offset that tests move forward: the stores,
// the decision and the API all read it, so a grace period can pass without
// sleeping. A frozen clock stands at one instant, to the nanosecond.
type clock struct{ off, frozen atomic.Int64 }

func (c *clock) now() time.Time {
	base := time.Now()
	if f := c.frozen.Load(); f != 0 {
		base = time.Unix(0, f)
	}
	return base.Add(time.Duration(c.off.Load()))
}

func (c *clock) advance(d time.Duration) { c.off.Add(int64(d)) }

// freeze stops the clock at t; advance still moves it.
func (c *clock) freeze(t time.Time) {
	c.off.Store(0)
	c.frozen.Store(t.UnixNano())
}

// backends opens each real store with the test's clock: PostgreSQL in its
// own database, SQLite in a temporary file.
var backends = map[string]func(t *testing.T, now func() time.Time) store.Store{
	"postgres": func(t *testing.T, now func() time.Time) store.Store {
		st, err := postgres.Open(context.Background(), postgres.Config{URL: pgtest.NewDatabase(t), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return migrated(t, st)
	},
	"sqlite": func(t *testing.T, now func() time.Time) store.Store {
		st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "keygate.db"), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		return migrated(t, st)
	},
}

func migrated(t *testing.T, st store.Store) store.Store {
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// eachStore runs test against every backend, in parallel.
func eachStore(t *testing.T, test func(t *testing.T, e *env)) {
	eachStoreWith(t, options{}, test)
}

func eachStoreWith(t *testing.T, o options, test func(t *testing.T, e *env)) {
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := &clock{}
			test(t, newEnv(t, open(t, c.now), c, o))
		})
	}
}

type options struct {
	failedAuthLimit  int // 0: 1000
	defaultRateLimit int // --rate-limit; 0: 100
	// syncer, if set, replaces the follower as the API's Syncer.
	syncer httpapi.Syncer
	// leakAction and leakKeys configure POST /v1/leaked-keys.
	leakAction store.LeakAction
	leakKeys   *leak.KeySet
	// propagator, if set, is what ?wait=true waits with.
	propagator httpapi.Propagator
	// foreignTokens is --foreign-tokens.
	foreignTokens bool
}

const docsURL = "https://keygate.dev/errors"

// env is one keygate as serve wires it: the store, the cache in front of
// it with its follower, the decision, and the management API on a real
// listener on 127.0.0.1, sharing the decision's throttle and cache.
type env struct {
	t        *testing.T
	st       store.Store
	cli      *manage.Service // what the CLI uses: no actor
	cache    *cache.Cache
	follower *cache.Follower
	authz    *extauthz.Server
	usage    *usage
	srv      *httptest.Server
	clock    *clock
	metrics  *prometheus.Registry // what the handler registers and /metrics serves
}

type usage struct {
	mu   sync.Mutex
	keys []string
}

func (u *usage) Record(id string, _ time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.keys = append(u.keys, id)
}

func (u *usage) recorded() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.keys...)
}

func newEnv(t *testing.T, st store.Store, c *clock, o options) *env {
	t.Helper()
	if o.failedAuthLimit == 0 {
		o.failedAuthLimit = 1000
	}
	if o.defaultRateLimit == 0 {
		o.defaultRateLimit = 100
	}
	format := apikey.DefaultFormat()
	throttle, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: o.failedAuthLimit, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	cfg := extauthz.Config{Format: format, StripCredentials: true, DocsURL: docsURL, Now: c.now,
		DefaultRateLimit: o.defaultRateLimit, Throttle: throttle, ForeignTokens: o.foreignTokens}
	cfg.Uses = keyusage.New(keyusage.Config{Store: st})
	keys, err := cache.New(st, cache.Config{MaxBytes: 1 << 24, TTL: time.Hour, NegativeTTL: time.Minute, Metadata: extauthz.MetadataEncoding, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(keys.Close)
	// The follower never polls here: what the API sees of its own writes
	// comes from the Sync it makes before answering.
	f, err := cache.NewFollower(st, keys, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	authz, err := extauthz.New(keys, cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := &usage{}
	var syncer httpapi.Syncer = f
	if o.syncer != nil {
		syncer = o.syncer
	}
	leaks, err := leak.New(leak.Config{Store: st, Format: format, Action: o.leakAction, Keys: o.leakKeys,
		Throttle: throttle, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	h := httpapi.NewHandler(httpapi.Config{Leaks: leaks,
		Store: st, Auth: authz, Syncer: syncer, Propagator: o.propagator, Usage: u, Analytics: st, DocsURL: docsURL, Now: c.now, Registerer: reg, Gatherer: reg,
		Manage: manage.New(st, format, c.now, manage.WithDefaultRateLimit(o.defaultRateLimit)),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, st: st, cli: manage.New(st, format, c.now), cache: keys, follower: f, authz: authz,
		usage: u, srv: srv, clock: c, metrics: reg}
}

// key creates a key as the CLI does (organization created when missing,
// no actor). Defaults: organization acme, user alice, role owner.
func (e *env) key(nk manage.NewKey) (keygate.Key, string) {
	e.t.Helper()
	if nk.OrgID == "" {
		nk.OrgID = "acme"
	}
	if nk.UserID == "" {
		nk.UserID = "alice"
	}
	if nk.Name == "" {
		nk.Name = "test key"
	}
	if nk.Role == "" && nk.Scopes == nil {
		nk.Role = "owner"
	}
	nk.CreateOrganization = true
	ck, err := e.cli.CreateKey(context.Background(), nk, keygate.Actor{})
	if err != nil {
		e.t.Fatal(err)
	}
	return ck.Key, ck.Token.String()
}

// response is one answer of the API.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// req is one call: a JSON body unless contentType says otherwise.
type req struct {
	method, path, token, body string
	contentType               string // "" with a body: application/json
	header                    map[string]string
}

func (e *env) do(r req) response {
	e.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, e.srv.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	switch {
	case r.contentType != "":
		hr.Header.Set("Content-Type", r.contentType)
	case r.body != "":
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	return e.send(hr)
}

func (e *env) send(hr *http.Request) response {
	e.t.Helper()
	resp, err := e.srv.Client().Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

func (e *env) get(path, token string) response {
	return e.do(req{method: "GET", path: path, token: token})
}

// decode parses the body into v, failing on unknown fields: the tests pin
// the exact shape.
func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	return v
}

// want checks the status of r, and for an error its code and param.
func want(t *testing.T, r response, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
}

// paramNull is the param of wantError for "param": null, present and
// null (a body that does not parse); "" wants param absent.
const paramNull = "(null)"

func wantError(t *testing.T, r response, status int, code keygate.Code, param string) httpapi.ErrorBody {
	t.Helper()
	if r.Status != status {
		t.Errorf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	b := decode[httpapi.ErrorBody](t, r)
	// The raw member tells absent from null, which the decoded body cannot.
	var raw struct {
		Error map[string]json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &raw); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	gotParam := ""
	if p, ok := raw.Error["param"]; ok {
		gotParam = paramNull
		if string(p) != "null" && json.Unmarshal(p, &gotParam) != nil {
			t.Errorf("param = %s, want a string or null", p)
		}
	}
	if b.Error.Code != code || gotParam != param {
		t.Errorf("error = %s param %q, want %s param %q; body %s", b.Error.Code, gotParam, code, param, r.Body)
	}
	if b.Error.DocsURL != docsURL+"#"+string(code) || b.Meta.RequestID == "" || r.Header.Get("x-request-id") != b.Meta.RequestID {
		t.Errorf("envelope: docs_url %q, request_id %q, x-request-id %q", b.Error.DocsURL, b.Meta.RequestID, r.Header.Get("x-request-id"))
	}
	if r.Header.Get("content-type") != "application/json" {
		t.Errorf("content-type = %q", r.Header.Get("content-type"))
	}
	return b
}

func (e *env) create(token, body string) httpapi.CreatedAPIKey {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/v1/api-keys", token: token, body: body})
	want(e.t, r, http.StatusCreated)
	return decode[httpapi.Data[httpapi.CreatedAPIKey]](e.t, r).Data
}

// check asks the decision, through the same cache the API syncs, about a
// GET with token from addr; "" means allowed.
func (e *env) check(token, addr string) keygate.Code {
	e.t.Helper()
	resp, err := e.authz.Check(context.Background(), checkRequest(addr, map[string]string{"authorization": "Bearer " + token}))
	if err != nil {
		e.t.Fatal(err)
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		return ""
	}
	var body httpapi.ErrorBody
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		e.t.Fatalf("deny body %q: %v", d.GetBody(), err)
	}
	return body.Error.Code
}

// checkRequest is what Envoy sends for a GET /v1/things from addr.
func checkRequest(addr string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: addr}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things", Headers: headers,
		}},
	}}
}
