package extauthz

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/ratelimit"
)

// foreignKey adds a record for an imported token of another system, of
// the given stored type and environment.
func (f *fixture) foreignKey(token string, typ keygate.KeyType, env keygate.Environment) {
	f.t.Helper()
	rec := *f.lookup.recs[apikey.HashString(f.key(nil))] // a native key's record, copied
	rec.Key.ID, rec.Key.Type, rec.Key.Environment, rec.Key.Prefix = "key_imported0123456789", typ, env, token[:7]
	f.lookup.recs[apikey.HashString(token)] = &rec
}

// TestCheck_ForeignTokens pins SPEC §9: with --foreign-tokens a credential
// without the native shape is looked up by its hash, on every transport and
// from either credential header; without the flag, or for a credential
// that cannot be a token (length, spaces, non-ASCII) it is invalid_api_key
// with no lookup; a native shape with a wrong checksum is never looked up.
func TestCheck_ForeignTokens(t *testing.T) {
	const foreign = "ghp_legacyToken0123456789ABCDEF" // another system's shape
	native, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
	if err != nil {
		t.Fatal(err)
	}
	badSum := native.String()[:len(native.String())-6] + "000000"
	for _, flag := range []bool{false, true} {
		f := newFixture(t, Config{ForeignTokens: flag})
		f.foreignKey(foreign, keygate.Secret, keygate.Test)
		// A native-shaped token with a bad checksum whose hash is stored:
		// found only if it were looked up.
		f.foreignKey(badSum, keygate.Secret, keygate.Live)
		tests := []struct {
			name    string
			headers map[string]string
			allowed bool // with the flag
			lookup  bool // with the flag
		}{
			{"foreign, bearer", map[string]string{"authorization": "Bearer " + foreign}, true, true},
			{"foreign, x-api-key", map[string]string{"x-api-key": foreign}, true, true},
			{"foreign, both headers", map[string]string{"x-api-key": foreign, "authorization": "bearer  " + foreign + " "}, true, true},
			{"foreign, unknown", map[string]string{"x-api-key": foreign + "x"}, false, true},
			{"native shape, bad checksum", map[string]string{"x-api-key": badSum}, false, false},
			{"15 characters", map[string]string{"x-api-key": foreign[:15]}, false, false},
			{"257 characters", map[string]string{"x-api-key": strings.Repeat("a", 257)}, false, false},
			{"a space inside", map[string]string{"authorization": "Bearer ghp_legacy Token0123456789"}, false, false},
			{"not ASCII", map[string]string{"x-api-key": "ghp_legacyTökén0123456789"}, false, false},
			{"a control character", map[string]string{"x-api-key": "ghp_legacy\x01Token0123456789"}, false, false},
		}
		for _, tt := range tests {
			before := f.lookup.queries.Load()
			resp := f.check("GET", tt.headers)
			looked := f.lookup.queries.Load() != before
			if allowed := resp.GetOkResponse() != nil; allowed != (flag && tt.allowed) {
				t.Errorf("flag %v, %s: allowed = %v", flag, tt.name, allowed)
			}
			if looked != (flag && tt.lookup) {
				t.Errorf("flag %v, %s: looked up = %v, want %v", flag, tt.name, looked, flag && tt.lookup)
			}
			if !(flag && tt.allowed) {
				if d := resp.GetDeniedResponse(); d == nil || !strings.Contains(d.GetBody(), string(keygate.CodeInvalidAPIKey)) {
					t.Errorf("flag %v, %s: deny %v, want invalid_api_key", flag, tt.name, d)
				}
			}

			// The wire path and the HTTP authorizer decide the same.
			raw, err := proto.Marshal(checkRequest("GET", "/v1/things", tt.headers))
			if err != nil {
				t.Fatal(err)
			}
			in := &checkInput{}
			if err := decodeCheckRequest(raw, in); err != nil {
				t.Fatal(err)
			}
			w, _ := f.srv.checkWire(context.Background(), in)
			if allowed := w.b[0] == tagCheckResponseStatus && w.b[1] == 0; allowed != (flag && tt.allowed) {
				t.Errorf("flag %v, %s: wire allowed = %v", flag, tt.name, allowed)
			}
			req := HTTPRequest{Method: "GET", Path: "/v1/things", ClientAddr: netip.MustParseAddr("203.0.113.7")}
			for k, v := range tt.headers {
				req.Headers = append(req.Headers, HTTPHeader{k, v})
			}
			a := f.srv.DecideHTTP(context.Background(), req)
			if allowed := a.Status == 200; allowed != (flag && tt.allowed) {
				t.Errorf("flag %v, %s: DecideHTTP = %d %s", flag, tt.name, a.Status, a.Code)
			}
		}
	}

	// What an imported key reports is its record's: the stored type and
	// environment, whatever its token looks like.
	f := newFixture(t, Config{ForeignTokens: true})
	f.foreignKey(foreign, keygate.Secret, keygate.Test)
	h := allowHeaders(t, f.check("GET", map[string]string{"x-api-key": foreign}))
	if h["x-keygate-key-id"] != "key_imported0123456789" || h["x-keygate-key-type"] != "secret" || h["x-keygate-environment"] != "test" {
		t.Errorf("allow headers %v", h)
	}
}

// BenchmarkCheckForeignTokenFromTheWire is BenchmarkCheckFromTheWire's
// cache hit for an imported token of another system (64 characters, over
// a native token's length) with --foreign-tokens.
func BenchmarkCheckForeignTokenFromTheWire(b *testing.B) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	token := "legacy_" + strings.Repeat("0123456789", 5) + "abcdefg"
	f.foreignKey(token, keygate.Secret, keygate.Live)
	unlimited := 0
	f.lookup.recs[apikey.HashString(token)].Key.RateLimitPerMinute = &unlimited
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	srv := benchServer(b, f, Config{Limiter: lim, DefaultRateLimit: 100, ForeignTokens: true})
	runWire(b, srv, wireRequest(b, srv, token, nil))
}
