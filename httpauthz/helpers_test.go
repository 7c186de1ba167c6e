package httpauthz_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/httpauthz"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store/postgres"
)

// gate is keygate's decision over PostgreSQL through the cache, served by
// the httpauthz handler on 127.0.0.1.
type gate struct {
	t    *testing.T
	svc  *manage.Service
	az   *extauthz.Server
	addr string // host:port of --authz-http-addr
	url  string
}

type gateOpts struct {
	trusted        []netip.Prefix
	failedLimit    int // --failed-auth-limit; 0 off
	defaultLimit   int // --rate-limit; 0 unlimited
	clientIPHeader string
}

func startGate(t *testing.T, o gateOpts) *gate {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, postgres.Config{URL: pgtest.NewDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(st, cache.Config{MaxBytes: 1 << 24, TTL: time.Minute, NegativeTTL: time.Second, Metadata: extauthz.MetadataEncoding})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cfg := extauthz.Config{Format: apikey.DefaultFormat(), StripCredentials: true, DocsURL: "https://keygate.dev/errors",
		TrustedProxies: o.trusted, DefaultRateLimit: o.defaultLimit, ClientIPHeader: o.clientIPHeader}
	if o.failedLimit > 0 {
		if cfg.Throttle, err = ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: o.failedLimit}); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Limiter, err = ratelimit.NewLimiter(ratelimit.LimiterConfig{}); err != nil {
		t.Fatal(err)
	}
	az, err := extauthz.New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpauthz.NewServer(httpauthz.New(az, httpauthz.Config{TrustedProxies: o.trusted}))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return &gate{t: t, svc: manage.New(st, apikey.DefaultFormat(), time.Now), az: az,
		addr: ln.Addr().String(), url: "http://" + ln.Addr().String()}
}

// key creates a key and returns its id and token.
func (g *gate) key(nk manage.NewKey) (string, string) {
	g.t.Helper()
	if nk.OrgID == "" {
		nk.OrgID = "acme"
	}
	if nk.UserID == "" {
		nk.UserID = "alice"
	}
	nk.Name = "httpauthz"
	nk.CreateOrganization = true
	ck, err := g.svc.CreateKey(context.Background(), nk, keygate.Actor{})
	if err != nil {
		g.t.Fatal(err)
	}
	return ck.Key.ID, ck.Token.String()
}

// rawRequest sends request line and headers exactly as given, so that the
// request target reaches the server unchanged, and returns the response.
func rawRequest(t *testing.T, addr, method, target string, headers map[string]string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: keygate\r\nConnection: close\r\n")
	for k, v := range headers {
		b.WriteString(k + ": " + v + "\r\n")
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// denyBody is a deny's JSON.
type denyBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		DocsURL string `json:"docs_url"`
	} `json:"error"`
	Meta struct {
		RequestID string `json:"request_id"`
	} `json:"meta"`
}

func decodeDeny(t *testing.T, body []byte) denyBody {
	t.Helper()
	var d denyBody
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deny body %q: %v", body, err)
	}
	return d
}
