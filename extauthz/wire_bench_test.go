package extauthz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// The wire benchmarks compare the fast paths with protobuf's on the same
// data: an Envoy CheckRequest with ten headers (wireEnvoyRequest) and a
// typical allow (wireTypicalAllow). Figures are judged in BENCHMARKS.md.

// BenchmarkDecodeCheckRequest is one Check request read from its wire
// form: by decodeCheckRequest into a recycled input (as checkServiceDesc
// serves), into a new one, and by proto.Unmarshal into a new message (as
// grpc's proto codec does).
func BenchmarkDecodeCheckRequest(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"headers", wireEnvoyRequest("kg_live_2Xc9TQmPz8WfK3rLbN6yHv0aJdE4sGu7")},
		{"header_map", wireRawRequest("kg_live_2Xc9TQmPz8WfK3rLbN6yHv0aJdE4sGu7")},
	} {
		data := mustMarshal(b, bc.req)
		b.Run(bc.name+"/wire", func(b *testing.B) {
			var in checkInput
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeCheckRequest(data, &in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/wire-new-input", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decodeCheckRequest(data, new(checkInput)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/proto", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := proto.Unmarshal(data, new(authv3.CheckRequest)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeAllow is one allow written in wire form: by appendAllow
// into a new buffer (as a response is), by appendAllow into a reused one,
// by proto.Marshal of a message already built, and by allowProto and
// proto.Marshal together (what the proto path pays per allow).
func BenchmarkEncodeAllow(b *testing.B) {
	for _, bc := range []struct {
		name string
		a    *allowOut
	}{
		{"typical", wireTypicalAllow()},
		{"ratelimited", wireRateLimitedAllow()},
	} {
		a := bc.a
		b.Run(bc.name+"/wire", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = appendAllow(nil, a)
			}
		})
		b.Run(bc.name+"/wire-reused-buffer", func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				buf = appendAllow(buf[:0], a)
			}
		})
		msg := allowProto(a)
		b.Run(bc.name+"/proto-marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/proto-build-marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := proto.Marshal(allowProto(a)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
