package extauthz

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/cache"
)

// BenchmarkCheck is the in-process decision on a cache hit, response
// included: what every allowed request through Envoy costs keygate, less
// gRPC.
func BenchmarkCheck(b *testing.B) {
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(nil)
	cfg := Config{HeaderPrefix: DefaultHeaderPrefix}
	c, err := cache.New(f.lookup, cache.Config{MaxBytes: 1 << 24, TTL: time.Hour, NegativeTTL: time.Minute, Prepare: cfg.Prepare})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	srv, err := New(c, Config{Format: f.format, StripCredentials: true, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	req := checkRequest("GET", "/v1/things", map[string]string{
		"authorization": "Bearer " + tok, "accept": "*/*", "user-agent": "curl/8.5.0",
		"x-request-id": "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90", "x-forwarded-proto": "https",
	})
	ctx := context.Background()
	// Warm until the entry is stored (ristretto's Set is asynchronous).
	for i := 0; i < 100; i++ {
		_, _ = srv.Check(ctx, req)
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, _ := srv.Check(ctx, req)
			if resp.GetOkResponse() == nil {
				b.Fatal("denied")
			}
		}
	})
}

// BenchmarkCheckDenyUnknown is a deny for a well-formed unknown key from
// the negative cache.
func BenchmarkCheckDenyUnknown(b *testing.B) {
	f := newFixture(&testing.T{}, Config{})
	c, err := cache.New(f.lookup, cache.Config{MaxBytes: 1 << 24, TTL: time.Hour, NegativeTTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	srv, err := New(c, Config{Format: f.format})
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := f.format.Generate(keygate.Secret, keygate.Live)
	req := checkRequest("GET", "/", map[string]string{"x-api-key": tok.String(), "x-request-id": "r1"})
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		_, _ = srv.Check(ctx, req)
		time.Sleep(time.Millisecond)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, _ = srv.Check(ctx, req)
	}
}
