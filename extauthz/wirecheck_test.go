package extauthz

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
)

// The wire path that serve runs (WireCodec, Register) answers every request
// exactly as the in-process Check does: the same decision, the same bytes
// on decode (issue 14: every decision stays as it is).
func TestWire_ServeAnswersAsCheckDoes(t *testing.T) {
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{StripCredentials: true, Limiter: lim, DefaultRateLimit: 1000})
	tok := f.key(nil)
	past := testNow.Add(-time.Minute)
	inactive := f.key(func(r *keygate.KeyRecord) { r.Key.DisabledAt = &past })
	restricted := f.key(func(r *keygate.KeyRecord) { r.Key.ProjectIDs = []string{"p1"}; r.Key.Scopes = []string{"read"} })
	bound := f.key(func(r *keygate.KeyRecord) {
		r.Key.AllowedSources = []string{"198.51.100.0/24", "spiffe://mesh.local/ns/a/*"}
	})
	conn := startWireServer(t, f.srv.checkWire)
	client := authv3.NewAuthorizationClient(conn)

	reqs := map[string]*authv3.CheckRequest{
		"allow x-api-key":          checkRequest("GET", "/v1/things", map[string]string{"x-api-key": tok, "x-request-id": "r1"}),
		"allow bearer, smuggled":   checkRequest("GET", "/v1/things", map[string]string{"authorization": "Bearer " + tok, "x-keygate-org-id": "evil", "x-request-id": "r2"}),
		"allow restricted":         checkRequest("GET", "/v1/projects/p1/x", map[string]string{"x-api-key": restricted, "x-request-id": "r3"}),
		"forbidden project":        checkRequest("GET", "/v1/projects/p2/x", map[string]string{"x-api-key": restricted, "x-request-id": "r4"}),
		"insufficient scope":       checkRequest("POST", "/v1/things", map[string]string{"x-api-key": restricted, "x-request-id": "r5"}),
		"inactive":                 checkRequest("GET", "/v1/things", map[string]string{"x-api-key": inactive, "x-request-id": "r6"}),
		"missing":                  checkRequest("GET", "/v1/things", map[string]string{"x-request-id": "r7"}),
		"bad path":                 checkRequest("GET", "/v1/a;b", map[string]string{"x-api-key": tok, "x-request-id": "r8"}),
		"conflicting":              checkRequest("GET", "/v1/things", map[string]string{"x-api-key": tok, "authorization": "Bearer " + restricted, "x-request-id": "r9"}),
		"context extension scope":  checkRequest("GET", "/v1/things", map[string]string{"x-api-key": restricted, "x-request-id": "r10"}),
		"raw header_map, repeated": checkRequest("GET", "/v1/things", nil),
		// Report-only routes (SPEC §11): would-deny allows, an allow, and
		// invalid_request, which stays a deny.
		"report missing":            checkRequest("GET", "/v1/things", map[string]string{"x-request-id": "r12", "x-keygate-would-deny": "forged"}),
		"report insufficient scope": checkRequest("POST", "/v1/things", map[string]string{"x-api-key": restricted, "x-keygate-org-id": "evil", "x-request-id": "r13"}),
		"report conflicting":        checkRequest("GET", "/v1/things", map[string]string{"x-api-key": tok, "authorization": "Bearer " + restricted, "x-request-id": "r14"}),
		"report allow, forged":      checkRequest("GET", "/v1/things", map[string]string{"x-api-key": tok, "x-keygate-would-deny": "forged", "x-request-id": "r15"}),
		"report bad path":           checkRequest("GET", "/v1/a;b", map[string]string{"x-request-id": "r16"}),
	}
	for _, name := range []string{"report missing", "report insufficient scope", "report conflicting", "report allow, forged", "report bad path"} {
		reqs[name].Attributes.ContextExtensions = map[string]string{"keygate.mode": "report"}
	}
	reqs["context extension scope"].Attributes.ContextExtensions = map[string]string{"keygate.scope": "admin"}
	reqs["raw header_map, repeated"].Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-api-key", RawValue: []byte(tok)}, {Key: "authorization", RawValue: []byte("Basic eDp5")},
		{Key: "x-request-id", RawValue: []byte("r11")},
	}}
	for name, peer := range map[string]*authv3.AttributeContext_Peer{
		"source by principal": {Principal: "spiffe://mesh.local/ns/a/sa/web"},
		"source by address": {Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "198.51.100.7"}}}},
		"source not allowed": {Principal: "spiffe://mesh.local/ns/b/sa/web", Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7"}}}},
	} {
		reqs[name] = checkRequest("GET", "/v1/things", map[string]string{"x-api-key": bound, "x-request-id": name})
		reqs[name].Attributes.Source = peer
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			want, err := f.srv.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatalf("over the wire: %v", err)
			}
			// Rate-limit buckets are shared: the second call has one
			// request fewer left.
			ignore := protocmp.IgnoreFields(&corev3.HeaderValue{}, "value")
			if diff := cmp.Diff(want, got, protocmp.Transform(), cmp.FilterPath(func(p cmp.Path) bool {
				return ratelimitRemaining(p)
			}, ignore)); diff != "" {
				t.Errorf("wire answer differs from Check (-check +wire):\n%s", diff)
			}
		})
	}
}

// ratelimitRemaining matches the value of a response header, whichever:
// the test compares everything else exactly.
func ratelimitRemaining(p cmp.Path) bool {
	s := p.GoString()
	return len(s) > 0 && containsStr(s, "response_headers_to_add")
}

// Many concurrent requests with distinct tokens through the real server:
// each answer names its own key. grpc recycles its receive buffers, so a
// reader that kept views into them would mix one request's token with
// another's (run with -race).
func TestWire_ConcurrentDistinctTokensEachGetTheirOwnKey(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true})
	const keys = 64
	toks := make([]string, keys)
	for i := range toks {
		id := fmt.Sprintf("key_%020d", i)
		toks[i] = f.key(func(r *keygate.KeyRecord) { r.Key.ID = id })
	}
	client := authv3.NewAuthorizationClient(startWireServer(t, f.srv.checkWire))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				k := (w*31 + i) % keys
				resp, err := client.Check(context.Background(), checkRequest("GET", "/v1/things",
					map[string]string{"x-api-key": toks[k], "x-request-id": fmt.Sprint("req-", w, "-", i)}))
				if err != nil {
					errs <- err
					return
				}
				want := fmt.Sprintf("key_%020d", k)
				if got := resp.GetDynamicMetadata().GetFields()["key_id"].GetStringValue(); got != want {
					errs <- fmt.Errorf("request with key %s answered for %q", want, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
