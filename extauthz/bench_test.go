package extauthz

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

// The benchmarks here are in-process: the decision and its response,
// without gRPC. The load harness (bench/) measures over gRPC. None of them
// is fast or slow by assertion: figures are judged in BENCHMARKS.md.

// benchHeaders are the headers of a typical request through an edge Envoy.
func benchHeaders(tok string) map[string]string {
	return map[string]string{
		"authorization": "Bearer " + tok, "accept": "*/*", "user-agent": "curl/8.5.0",
		"x-request-id": "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90", "x-forwarded-proto": "https",
	}
}

// benchServer is a Server deciding through a real cache over f's records,
// configured by cfg (Format and StripCredentials are filled in).
func benchServer(b *testing.B, f *fixture, cfg Config) *Server {
	b.Helper()
	cfg.Format, cfg.StripCredentials = f.format, true
	c, err := cache.New(f.lookup, cache.Config{MaxBytes: 1 << 26, TTL: time.Hour, NegativeTTL: time.Hour, Metadata: MetadataEncoding})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	srv, err := New(c, cfg)
	if err != nil {
		b.Fatal(err)
	}
	return srv
}

// warm checks every request until it is cached (ristretto's Set is
// asynchronous and may drop a Set under contention).
func warm(srv *Server, reqs []*authv3.CheckRequest) {
	ctx := context.Background()
	for range 20 {
		for _, req := range reqs {
			_, _ = srv.Check(ctx, req)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runParallel checks reqs round-robin from every goroutine, failing on a
// decision other than want (allow when want is "").
func runParallel(b *testing.B, srv *Server, reqs []*authv3.CheckRequest, want keygate.Code) {
	b.Helper()
	warm(srv, reqs)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			resp, _ := srv.Check(ctx, reqs[i%len(reqs)])
			i++
			if (want == "") != (resp.GetOkResponse() != nil) {
				b.Fatalf("want %q, got %v", want, resp)
			}
		}
	})
}

// BenchmarkCheck is the in-process decision on a cache hit, response
// included: what every allowed request through Envoy costs keygate, less
// gRPC. The clock is fixed, so cache_age_ms never changes and every allow
// shares one dynamic_metadata; BenchmarkCheckWallClock and
// BenchmarkCheckManyKeys pay for its rebuilds.
func BenchmarkCheck(b *testing.B) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(nil)
	srv := benchServer(b, f, Config{Now: func() time.Time { return testNow }})
	runParallel(b, srv, []*authv3.CheckRequest{checkRequest("GET", "/v1/things", benchHeaders(tok))}, "")
}

// BenchmarkCheckWallClock is BenchmarkCheck on the real clock, as served:
// cache_age_ms moves every millisecond, so one allow in each millisecond
// rebuilds the dynamic metadata of the key.
func BenchmarkCheckWallClock(b *testing.B) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(func(r *keygate.KeyRecord) { r.LoadedAt = time.Now() })
	srv := benchServer(b, f, Config{})
	runParallel(b, srv, []*authv3.CheckRequest{checkRequest("GET", "/v1/things", benchHeaders(tok))}, "")
}

// BenchmarkCheckManyKeys is a hit on the real clock over 10 000 cached
// keys taken in turn: every allow misses the CPU caches and rebuilds its
// dynamic metadata, the worst case of the hit path.
func BenchmarkCheckManyKeys(b *testing.B) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	reqs := make([]*authv3.CheckRequest, 10_000)
	for i := range reqs {
		tok := f.key(func(r *keygate.KeyRecord) {
			r.Key.ID = fmt.Sprintf("key_%020d", i)
			r.LoadedAt = time.Now()
		})
		reqs[i] = checkRequest("GET", "/v1/things", benchHeaders(tok))
	}
	srv := benchServer(b, f, Config{})
	runParallel(b, srv, reqs, "")
}

// fiftyRulesYAML is a 50-rule policy file whose rule for DELETE
// /v1/svc47/items/* is the 49th, as in policy's BenchmarkResolve50Rules:
// a request for it is tested against 48 rules first.
func fiftyRulesYAML() string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 48 {
		if i%5 == 0 {
			fmt.Fprintf(&b, "  - {methods: [GET, HEAD], path: \"/*/svc%d/**\", scope: svc%d.read}\n", i, i)
		} else {
			fmt.Fprintf(&b, "  - {methods: [GET, HEAD], path: \"/v1/svc%d/**\", scope: svc%d.read}\n", i, i)
		}
	}
	b.WriteString("  - {methods: [DELETE], path: \"/v1/svc47/items/*\", scope: svc47.delete}\n")
	b.WriteString("  - {path: \"/**\", scope: write}\n")
	return b.String()
}

// benchPolicy checks DELETE /v1/svc47/items/42 on a hit under pol (nil:
// the default policy, where DELETE needs write).
func benchPolicy(b *testing.B, pol *policy.Policy) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read", "svc47.delete", "write"} })
	cfg := Config{Now: func() time.Time { return testNow }}
	if pol != nil {
		cfg.Policy = func() *policy.Policy { return pol }
	}
	srv := benchServer(b, f, cfg)
	runParallel(b, srv, []*authv3.CheckRequest{checkRequest("DELETE", "/v1/svc47/items/42?force=true", benchHeaders(tok))}, "")
}

// BenchmarkCheckPolicy50 is a hit decided by a 50-rule policy file, the
// request matching the 49th rule; compare BenchmarkCheckPolicyDefault,
// the same request under the default policy (issue 6: within 20 %).
func BenchmarkCheckPolicy50(b *testing.B) {
	pol, err := policy.Parse("fifty.yaml", []byte(fiftyRulesYAML()))
	if err != nil {
		b.Fatal(err)
	}
	if pol.Len() != 50 {
		b.Fatalf("got %d rules, want 50", pol.Len())
	}
	benchPolicy(b, pol)
}

// BenchmarkCheckPolicyDefault is BenchmarkCheckPolicy50's request under
// the default policy.
func BenchmarkCheckPolicyDefault(b *testing.B) { benchPolicy(b, nil) }

// BenchmarkCheckDenyUnknown is a deny for a well-formed unknown key from
// the negative cache.
func BenchmarkCheckDenyUnknown(b *testing.B) {
	f := newFixture(&testing.T{}, Config{})
	srv := benchServer(b, f, Config{})
	tok, _ := f.format.Generate(keygate.Secret, keygate.Live)
	req := checkRequest("GET", "/", map[string]string{"x-api-key": tok.String(), "x-request-id": "r1"})
	warm(srv, []*authv3.CheckRequest{req})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = srv.Check(ctx, req)
	}
}

// BenchmarkCheckDenyMalformed is a deny for a token with a wrong checksum:
// decided before the cache.
func BenchmarkCheckDenyMalformed(b *testing.B) {
	f := newFixture(&testing.T{}, Config{})
	srv := benchServer(b, f, Config{})
	tok, _ := f.format.Generate(keygate.Secret, keygate.Live)
	bad := tok.String()[:len(tok.String())-6] + "000000"
	req := checkRequest("GET", "/", map[string]string{"x-api-key": bad, "x-request-id": "r1"})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = srv.Check(ctx, req)
	}
}

// BenchmarkCheckFromTheWire is a hit as serve answers it, less the gRPC
// transport: a realistic CheckRequest's bytes read with the wire reader,
// the decision (a key whose own rate limit is 0, unlimited, beside the
// server default: it never runs dry, and its allows carry no ratelimit-*
// headers), and the allow written into a pooled buffer that is
// handed back, as grpc does once the bytes are sent. BenchmarkCheckProto
// is the same request through protobuf: Unmarshal, the in-process Check,
// Marshal.
func BenchmarkCheckFromTheWire(b *testing.B) {
	benchCheckFromTheWire(b)
}

// benchCheckFromTheWire is BenchmarkCheckFromTheWire with the server's
// configuration changed by mods.
func benchCheckFromTheWire(b *testing.B, mods ...func(*Config)) {
	srv, raw := benchWire(b, mods...)
	runWire(b, srv, raw)
}

// runWire is the loop of the wire benchmarks: raw (a CheckRequest's
// bytes) read with the wire reader, decided, and the allow written into a
// pooled buffer that is handed back, on every CPU.
func runWire(b *testing.B, srv *Server, raw []byte) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			in := checkInputs.Get().(*checkInput)
			if err := decodeCheckRequest(raw, in); err != nil {
				b.Fatal(err)
			}
			w, _ := srv.checkWire(ctx, in)
			in.reset()
			checkInputs.Put(in)
			if w.b[0] != tagCheckResponseStatus || w.b[1] != 0 {
				b.Fatal("not an allow")
			}
			out, err := wireCodec{}.Marshal(w)
			if err != nil {
				b.Fatal(err)
			}
			out.Free()
		}
	})
}

func BenchmarkCheckProto(b *testing.B) {
	srv, raw := benchWire(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := &authv3.CheckRequest{}
			if err := proto.Unmarshal(raw, req); err != nil {
				b.Fatal(err)
			}
			resp, _ := srv.Check(ctx, req)
			if _, err := proto.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchKeyServer is a server deciding through a real cache on the real
// clock, with a limiter and --rate-limit's default, and the token of its
// one key, whose own limit is 0 (unlimited), so no run ever denies.
func benchKeyServer(b *testing.B, mods ...func(*Config)) (*Server, string) {
	b.Helper()
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(func(r *keygate.KeyRecord) {
		r.LoadedAt = time.Now()
		unlimited := 0
		r.Key.RateLimitPerMinute = &unlimited
	})
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{Limiter: lim, DefaultRateLimit: 100}
	for _, m := range mods {
		m(&cfg)
	}
	return benchServer(b, f, cfg), tok
}

// benchWire is benchKeyServer and the bytes of a typical Envoy request for
// its key (ten headers, a source address, a route's context extension).
func benchWire(b *testing.B, mods ...func(*Config)) (*Server, []byte) {
	b.Helper()
	srv, tok := benchKeyServer(b, mods...)
	return srv, wireRequest(b, srv, tok, nil)
}

// wireRequest is the bytes of a realistic CheckRequest of GET /v1/things
// with tok, from 203.0.113.7, whose route sets keygate.scope read and the
// context extensions in ext; srv has decided it once, so the key is
// cached.
func wireRequest(b *testing.B, srv *Server, tok string, ext map[string]string) []byte {
	b.Helper()
	headers := benchHeaders(tok)
	for k, v := range map[string]string{":authority": "api.example", ":method": "GET", ":path": "/v1/things",
		":scheme": "https", "x-forwarded-for": "203.0.113.7"} {
		headers[k] = v
	}
	req := checkRequest("GET", "/v1/things", headers)
	req.Attributes.Source = &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: "203.0.113.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}},
	}}}
	req.Attributes.ContextExtensions = map[string]string{"keygate.scope": "read"}
	for k, v := range ext {
		req.Attributes.ContextExtensions[k] = v
	}
	raw, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	warm(srv, []*authv3.CheckRequest{req})
	return raw
}

// BenchmarkCheckPolicy50Modes is BenchmarkCheckPolicy50 with one more
// rule that makes a route report-only: the mode is then known only by
// matching the rules, before authentication, and the route is resolved
// once for both.
func BenchmarkCheckPolicy50Modes(b *testing.B) {
	pol, err := policy.Parse("fifty-modes.yaml", []byte(strings.Replace(fiftyRulesYAML(), "rules:\n",
		"rules:\n  - {path: \"/v1/canary/**\", scope: read, mode: report}\n", 1)))
	if err != nil {
		b.Fatal(err)
	}
	benchPolicy(b, pol)
}
