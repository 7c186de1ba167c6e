package extauthz

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
)

// BenchmarkCheckNamedLimit is BenchmarkCheckFromTheWire's hit with and
// without a named rate limit (SPEC §9), limits too large ever to deny:
//   - none: the key's main limit is 0 (unlimited) and the route names no
//     limit (the BenchmarkCheckFromTheWire case);
//   - main: a main limit of its own, so the allow carries ratelimit-*;
//   - key-has-named: the key has named limits, the route names none;
//   - named: the route names the key's limit, main unlimited;
//   - main+named: both buckets, taken together.
func BenchmarkCheckNamedLimit(b *testing.B) {
	const big = 1<<31 - 1
	limits := []keygate.RateLimit{{Name: "bulk", Limit: 5, DurationSeconds: 60}, {Name: "search", Limit: 1_000_000_000, DurationSeconds: 1}}
	for _, tc := range []struct {
		name   string
		main   int
		limits []keygate.RateLimit
		route  string
	}{
		{"none", 0, nil, ""},
		{"main", big, nil, ""},
		{"key-has-named", 0, limits, ""},
		{"named", 0, limits, "search"},
		{"main+named", big, limits, "search"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFixture(&testing.T{}, Config{StripCredentials: true})
			tok := f.key(func(r *keygate.KeyRecord) {
				r.LoadedAt = time.Now()
				r.Key.RateLimitPerMinute = &tc.main
				r.Key.RateLimits = tc.limits
			})
			lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
			if err != nil {
				b.Fatal(err)
			}
			srv := benchServer(b, f, Config{Limiter: lim, DefaultRateLimit: 100})
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
			if tc.route != "" {
				req.Attributes.ContextExtensions[policy.ExtRateLimit] = tc.route
			}
			raw, err := proto.Marshal(req)
			if err != nil {
				b.Fatal(err)
			}
			warm(srv, []*authv3.CheckRequest{req})
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
		})
	}
}
