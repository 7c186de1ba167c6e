package extauthz

import (
	"slices"
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

// wireAllowFragments is the part of an allow that depends on the key
// alone, pre-encoded once per key: the alternative to building the allow
// per request with appendAllow that issue 14 asks to measure. A request
// then adds its own parts: the headers to remove, the ratelimit-* headers
// and cache_age_ms. (Test code: it is here to be measured.)
type wireAllowFragments struct{ headers, meta []byte }

func newWireAllowFragments(a *allowOut) *wireAllowFragments {
	f := &wireAllowFragments{meta: encAppendKeyMeta(nil, &a.meta)}
	for _, h := range a.headers {
		f.headers = encAppendHeaderOption(f.headers, tagOKHeaders, h)
	}
	return f
}

// appendAllow appends the allow of the key f was built for.
func (f *wireAllowFragments) appendAllow(b []byte, remove []string, responseHeaders []wireHeader, ageMS int64) []byte {
	ok := len(f.headers)
	for _, name := range remove {
		ok += encFieldSize(len(name))
	}
	for _, h := range responseHeaders {
		ok += encFieldSize(encHeaderOptionSize(h))
	}
	meta := len(f.meta) + encCacheAgeSize
	b = slices.Grow(b, 2+encFieldSize(ok)+encFieldSize(meta))
	b = append(b, tagCheckResponseStatus, 0)
	b = encAppendLen(b, tagCheckResponseOK, ok)
	b = append(b, f.headers...)
	for _, name := range remove {
		b = append(encAppendLen(b, tagOKHeadersToRemove, len(name)), name...)
	}
	for _, h := range responseHeaders {
		b = encAppendHeaderOption(b, tagOKResponseHeadersToAdd, h)
	}
	b = encAppendLen(b, tagCheckResponseDynamicMetadata, meta)
	b = append(b, f.meta...)
	return encAppendCacheAge(b, ageMS)
}

// BenchmarkEncodeAllow is one allow written in wire form: by appendAllow
// into a new buffer (as a response is), by appendAllow into a reused one,
// from per-key pre-encoded fragments (wireAllowFragments, reporting their
// bytes per key), by proto.Marshal of a message already built, and by
// allowProto and proto.Marshal together (what the proto path pays per
// allow).
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
		f := newWireAllowFragments(a)
		b.Run(bc.name+"/fragments", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = f.appendAllow(nil, a.remove, a.responseHeaders, a.meta.cacheAgeMS)
			}
			b.ReportMetric(float64(len(f.headers)+len(f.meta)), "fragment-B/key")
		})
		b.Run(bc.name+"/fragments-reused-buffer", func(b *testing.B) {
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				buf = f.appendAllow(buf[:0], a.remove, a.responseHeaders, a.meta.cacheAgeMS)
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
