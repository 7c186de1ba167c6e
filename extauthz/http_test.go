package extauthz

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
)

// benchHTTP is benchWire's request as an HTTP authorizer receives it: the
// same key, server default rate limit and headers (less the pseudo-headers,
// which HTTP carries in its request line).
func benchHTTP(b *testing.B) (*Server, HTTPRequest) {
	b.Helper()
	srv, tok := benchKeyServer(b)
	hs := benchHeaders(tok)
	hs["x-forwarded-for"] = "203.0.113.7"
	req := HTTPRequest{Method: "GET", Path: "/v1/things", ClientAddr: netip.MustParseAddr("203.0.113.7")}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range hs {
			if !yield(k) {
				return
			}
		}
	}) {
		req.Headers = append(req.Headers, HTTPHeader{k, hs[k]})
	}
	if a := srv.DecideHTTP(context.Background(), req); a.Status != 200 {
		b.Fatalf("not an allow: %d %s", a.Status, a.Body)
	}
	return srv, req
}

// BenchmarkDecideHTTP is BenchmarkCheckFromTheWire's hit as the HTTP
// authorizer decides it (SPEC §16), less the HTTP transport: the request
// converted, the decision, the answer in HTTP form.
func BenchmarkDecideHTTP(b *testing.B) {
	srv, req := benchHTTP(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if a := srv.DecideHTTP(ctx, req); a.Status != 200 {
				b.Fatal("not an allow")
			}
		}
	})
}

// DecideHTTP counts failures against the address the transport resolved,
// never the --client-ip-header it would read from a Check.
func TestDecideHTTP_ThrottleCountsTheResolvedAddress(t *testing.T) {
	f := newFixture(t, Config{})
	th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(f.lookup, Config{Throttle: th, ClientIPHeader: "x-real-ip"})
	if err != nil {
		t.Fatal(err)
	}
	bad := func(addr string) HTTPAnswer {
		return srv.DecideHTTP(context.Background(), HTTPRequest{Method: "GET", Path: "/", ClientAddr: netip.MustParseAddr(addr),
			Headers: []HTTPHeader{{"x-api-key", "kg_live_bad"}, {"x-real-ip", "198.51.100.1"}}})
	}
	if a := bad("203.0.113.1"); a.Code != keygate.CodeInvalidAPIKey {
		t.Fatalf("first failure: %s", a.Code)
	}
	if a := bad("203.0.113.2"); a.Code != keygate.CodeInvalidAPIKey {
		t.Fatalf("another address: %s, want invalid_api_key (x-real-ip must not count)", a.Code)
	}
	if a := bad("203.0.113.1"); a.Code != keygate.CodeTooManyFailedAttempts || a.Status != 429 {
		t.Fatalf("the first address again: %s %d, want too_many_failed_attempts", a.Code, a.Status)
	}
}

// A Reject is an invalid_request deny with that message and the request's id.
func TestDecideHTTP_Reject(t *testing.T) {
	f := newFixture(t, Config{})
	srv, err := New(f.lookup, Config{DocsURL: "https://d"})
	if err != nil {
		t.Fatal(err)
	}
	a := srv.DecideHTTP(context.Background(), HTTPRequest{Reject: "No method.", Headers: []HTTPHeader{{"X-Request-Id", "r9"}}})
	want := `{"error":{"code":"invalid_request","message":"No method.","docs_url":"https://d#invalid_request"},"meta":{"request_id":"r9"}}`
	if a.Status != 400 || a.Code != keygate.CodeInvalidRequest || a.Body != want {
		t.Fatalf("%d %s %s", a.Status, a.Code, a.Body)
	}
}
