package extauthz_test

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/analytics"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
)

// countingWriter counts the store writes the counter makes.
type countingWriter struct {
	st     store.UsageStore
	writes int
	rows   int
}

func (w *countingWriter) RecordUsage(ctx context.Context, c []store.UsageCount) error {
	w.writes++
	w.rows += len(c)
	return w.st.RecordUsage(ctx, c)
}

// Every code that names a key is counted against it, through the real gRPC
// server as serve runs it (the wire codec), and nothing else is: not a
// missing or unknown token, not a malformed path. A would-deny of a
// report-only route counts as allowed. One flush writes each key once.
func TestAnalytics_CountsPerCodeMatchTheChecksSent(t *testing.T) {
	for name, open := range backends() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			st := open(t)
			now := time.Now().UTC().Truncate(time.Second)
			clock := now
			format := apikey.DefaultFormat()
			svc := manage.New(st, format, func() time.Time { return now })
			mk := func(nk manage.NewKey) (keygate.Key, string) {
				t.Helper()
				if nk.OrgID == "" {
					nk.OrgID = "acme"
				}
				nk.UserID, nk.Name, nk.CreateOrganization = "alice", "analytics", true
				ck, err := svc.CreateKey(ctx, nk, keygate.Actor{})
				if err != nil {
					t.Fatal(err)
				}
				return ck.Key, ck.Token.String()
			}
			one := 1
			member, memberTok := mk(manage.NewKey{Role: "member"})
			viewer, viewerTok := mk(manage.NewKey{Role: "viewer"})
			inactive, inactiveTok := mk(manage.NewKey{Role: "member"})
			expiring, expiringTok := mk(manage.NewKey{Role: "member", ExpiresAt: ptr(now.Add(time.Hour))})
			shut, shutTok := mk(manage.NewKey{OrgID: "shut", Role: "member"})
			bound, boundTok := mk(manage.NewKey{Role: "member", AllowedSources: []string{"10.0.0.0/8"}})
			pub, pubTok := mk(manage.NewKey{Role: "member", Type: keygate.Publishable})
			limited, limitedTok := mk(manage.NewKey{Role: "member", RateLimitPerMinute: &one})
			revoked, revokedTok := mk(manage.NewKey{Role: "member"})
			active := false
			if _, err := st.UpdateKey(ctx, "acme", inactive.ID, store.KeyUpdate{Active: &active}, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.DisableOrganization(ctx, "shut", keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.RevokeKey(ctx, "acme", revoked.ID, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}

			c, err := cache.New(st, cache.Config{MaxBytes: 1 << 24, TTL: time.Minute, NegativeTTL: time.Second, Metadata: extauthz.MetadataEncoding})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			w := &countingWriter{st: st}
			counter, err := analytics.New(w, analytics.Config{Interval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
			if err != nil {
				t.Fatal(err)
			}
			srv, err := extauthz.New(c, extauthz.Config{Format: format, StripCredentials: true, Limiter: lim, DefaultRateLimit: 1000,
				Analytics: counter, Now: func() time.Time { return clock }})
			if err != nil {
				t.Fatal(err)
			}
			codec, err := extauthz.WireCodec()
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer(append(extauthz.ServerOptions(), codec)...)
			srv.Register(gs)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = gs.Serve(ln) }()
			t.Cleanup(gs.Stop)
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			client := authv3.NewAuthorizationClient(conn)
			check := func(method, path, tok string, ext map[string]string, want keygate.Code) {
				t.Helper()
				h := map[string]string{}
				if tok != "" {
					h["authorization"] = "Bearer " + tok
				}
				resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
						SocketAddress: &corev3.SocketAddress{Address: "192.0.2.9"}}}},
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Method: method, Path: path, Host: "api.example", Headers: h}},
					ContextExtensions: ext,
				}})
				if err != nil {
					t.Fatal(err)
				}
				got := keygate.Code("")
				if d := resp.GetDeniedResponse(); d != nil {
					got = codeOf(t, d.GetBody())
				}
				if got != want {
					t.Fatalf("%s %s with %s: got %q, want %q", method, path, tok[:min(len(tok), 12)], got, want)
				}
			}
			report := map[string]string{"keygate.mode": "report"}
			for range 3 {
				check("GET", "/v1/things", memberTok, nil, "")
			}
			check("POST", "/v1/things", viewerTok, nil, keygate.CodeInsufficientPermissions)
			check("POST", "/v1/things", viewerTok, report, "") // a would-deny: allowed
			check("GET", "/v1/things", viewerTok, nil, "")
			check("GET", "/v1/things", inactiveTok, nil, keygate.CodeAPIKeyInactive)
			check("GET", "/v1/things", shutTok, nil, keygate.CodeOrganizationDisabled)
			check("GET", "/v1/things", boundTok, nil, keygate.CodeSourceNotAllowed)
			check("GET", "/v1/things", pubTok, nil, keygate.CodeForbidden)
			check("GET", "/v1/things", limitedTok, nil, "")
			check("GET", "/v1/things", limitedTok, nil, keygate.CodeRateLimited)
			check("GET", "/v1/things", limitedTok, nil, keygate.CodeRateLimited)
			check("GET", "/v1/things", revokedTok, nil, keygate.CodeInvalidAPIKey)
			// Not counted: no key named.
			check("GET", "/v1/things", "", nil, keygate.CodeMissingAPIKey)
			forged, _ := format.Generate(keygate.Secret, keygate.Live)
			check("GET", "/v1/things", forged.String(), nil, keygate.CodeInvalidAPIKey)
			check("GET", "/v1/things", memberTok[:len(memberTok)-1]+"x", nil, keygate.CodeInvalidAPIKey)
			// A key's deny that is not in the list: not counted.
			check("GET", "/v1//things", memberTok, nil, keygate.CodeInvalidRequest)
			clock = now.Add(2 * time.Hour) // expired now, and in the next hours
			check("GET", "/v1/things", expiringTok, nil, keygate.CodeAPIKeyExpired)
			check("GET", "/v1/things", memberTok, nil, "")

			if err := counter.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if w.writes != 1 {
				t.Errorf("one flush made %d writes; want 1", w.writes)
			}
			// member has two hours; every other key one.
			if w.rows != 10 {
				t.Errorf("one flush wrote %d rows; want 10 (9 keys, one of them in two hours)", w.rows)
			}
			want := map[string][2]any{ // key → {allowed, by_code}
				member.ID:   {int64(4), map[string]int64{}},
				viewer.ID:   {int64(2), map[string]int64{"insufficient_permissions": 1}},
				inactive.ID: {int64(0), map[string]int64{"api_key_inactive": 1}},
				expiring.ID: {int64(0), map[string]int64{"api_key_expired": 1}},
				shut.ID:     {int64(0), map[string]int64{"organization_disabled": 1}},
				bound.ID:    {int64(0), map[string]int64{"source_not_allowed": 1}},
				pub.ID:      {int64(0), map[string]int64{"forbidden": 1}},
				limited.ID:  {int64(1), map[string]int64{"rate_limited": 2}},
				revoked.ID:  {int64(0), map[string]int64{"invalid_api_key": 1}},
			}
			for id, wv := range want {
				buckets, err := st.Usage(ctx, store.UsageQuery{KeyID: id, Granularity: store.Day,
					From: store.Day.Truncate(now), To: store.Day.Truncate(now).Add(48 * time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				var allowed int64
				by := map[string]int64{}
				for _, b := range buckets {
					allowed += b.Allowed
					for c, n := range b.ByCode {
						by[c] += n
					}
				}
				if allowed != wv[0].(int64) || !cmp.Equal(by, wv[1].(map[string]int64)) {
					t.Errorf("key %s: allowed %d, by_code %v; want %v, %v", id, allowed, by, wv[0], wv[1])
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func codeOf(t *testing.T, body string) keygate.Code {
	t.Helper()
	var b struct {
		Error struct {
			Code keygate.Code `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("deny body %q: %v", body, err)
	}
	return b.Error.Code
}
