package extauthz

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzDecodeCheckRequest holds the request reader to proto.Unmarshal: for
// any bytes it never panics; when protobuf accepts them it accepts them
// too and reads exactly what inputFromProto reads from protobuf's message,
// whether into a new input or into a used one; when protobuf refuses them
// it refuses them too and leaves the input empty.
func FuzzDecodeCheckRequest(f *testing.F) {
	for _, req := range []*authv3.CheckRequest{
		wireEnvoyRequest("kg_live_0123456789abcdef"),
		wireRawRequest("kg_live_0123456789abcdef"),
		{},
		{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{
				Address:   &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}},
				Principal: "spiffe://cluster.local/ns/a/sa/b", Labels: map[string]string{"app": "web"},
			},
			ContextExtensions: map[string]string{"keygate.scope": "admin", "keygate.publishable": "true"},
			MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"jwt": {Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue("u"), "n": structpb.NewNumberValue(1),
					"l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true), structpb.NewNullValue()}})}},
			}},
			TlsSession: &authv3.AttributeContext_TLSSession{Sni: "api.example.com"},
		}},
	} {
		f.Add(mustMarshal(f, req))
	}
	for _, c := range wireMergeCases {
		f.Add(c.b)
	}
	// Two requests back to back: every message sent twice.
	f.Add(slices.Concat(mustMarshal(f, wireEnvoyRequest("a")), mustMarshal(f, wireRawRequest("b"))))
	f.Add(deepRequest(3))
	f.Add(pbHTTP(pbString(fnHTTPMethod, "bad\xff")))
	f.Add(pbHTTP(pbString(5, "bad\xff")))

	used := mustMarshal(f, wireRawRequest("previous-token"))
	f.Fuzz(func(t *testing.T, b []byte) { decodesLikeProtobuf(t, b, used) })
}

// decodesLikeProtobuf fails t unless decodeCheckRequest reads b exactly as
// proto.Unmarshal and inputFromProto do, into a new input and into one
// that held the request used.
func decodesLikeProtobuf(t *testing.T, b, used []byte) {
	t.Helper()
	var req authv3.CheckRequest
	perr := proto.Unmarshal(b, &req)

	buf := slices.Clone(b)
	var in checkInput
	err := decodeCheckRequest(buf, &in)
	if (err == nil) != (perr == nil) {
		t.Fatalf("decodeCheckRequest: %v; proto.Unmarshal: %v", err, perr)
	}
	if err != nil {
		if d := inputDiff(checkInput{}, in); d != "" {
			t.Fatalf("input left after an error (-want +got):\n%s", d)
		}
		return
	}
	want := inputFromProto(&req)
	for i := range buf {
		buf[i] ^= 0xA5 // grpc reuses the buffer: the input must not change
	}
	if d := inputDiff(want, in); d != "" {
		t.Fatalf("decodeCheckRequest differs from protobuf (-proto +wire):\n%s", d)
	}

	var again checkInput
	if err := decodeCheckRequest(used, &again); err != nil {
		t.Fatal(err)
	}
	if err := decodeCheckRequest(b, &again); err != nil {
		t.Fatalf("into a used input: %v", err)
	}
	if d := inputDiff(want, again); d != "" {
		t.Fatalf("into a used input (-proto +wire):\n%s", d)
	}
}

// FuzzDecodeCheckRequestStructured is FuzzDecodeCheckRequest on requests
// built by a grammar from the fuzz bytes rather than on the bytes
// themselves: fields of the CheckRequest schema and unknown ones, in any
// order and number, with a wire type not their own now and then, and
// strings from the headers keygate reads, so that random inputs reach
// the merge rules (messages sent twice, repeated map keys, header_map
// beside headers, oneof members) that mutated bytes rarely reach.
func FuzzDecodeCheckRequestStructured(f *testing.F) {
	f.Add([]byte("\x04\x00\x03\x01\x02\x03\x02\x01\x05"))
	f.Add([]byte("\x06\x00\x05\x03\x01\x04\x02\x02\x03\x02\x0d\x01\x00\x03\x00\x02\x01\x05\x09\x01\x01\x00\x0c"))
	f.Add(bytes.Repeat([]byte{5, 0, 4, 3, 2, 1, 2, 7, 9, 13}, 12))
	used := mustMarshal(f, wireRawRequest("previous-token"))
	root := (*authv3.CheckRequest)(nil).ProtoReflect().Descriptor()
	f.Fuzz(func(t *testing.T, program []byte) {
		src := &fuzzSource{b: program}
		src.utf8 = src.byte()%4 != 0 // random strings mostly valid: one bad string refuses all
		decodesLikeProtobuf(t, src.message(root, 7), used)
	})
}

// fuzzReadFields are the fields decodeCheckRequest reads, or clear what
// it reads.
var fuzzReadFields = map[protoreflect.FullName]bool{
	"envoy.service.auth.v3.CheckRequest.attributes":                 true,
	"envoy.service.auth.v3.AttributeContext.source":                 true,
	"envoy.service.auth.v3.AttributeContext.request":                true,
	"envoy.service.auth.v3.AttributeContext.context_extensions":     true,
	"envoy.service.auth.v3.AttributeContext.Peer.address":           true,
	"envoy.service.auth.v3.AttributeContext.Peer.principal":         true,
	"envoy.config.core.v3.Address.socket_address":                   true,
	"envoy.config.core.v3.Address.pipe":                             true,
	"envoy.config.core.v3.Address.envoy_internal_address":           true,
	"envoy.config.core.v3.SocketAddress.address":                    true,
	"envoy.service.auth.v3.AttributeContext.Request.http":           true,
	"envoy.service.auth.v3.AttributeContext.HttpRequest.id":         true,
	"envoy.service.auth.v3.AttributeContext.HttpRequest.method":     true,
	"envoy.service.auth.v3.AttributeContext.HttpRequest.headers":    true,
	"envoy.service.auth.v3.AttributeContext.HttpRequest.path":       true,
	"envoy.service.auth.v3.AttributeContext.HttpRequest.header_map": true,
	"envoy.config.core.v3.HeaderMap.headers":                        true,
	"envoy.config.core.v3.HeaderValue.key":                          true,
	"envoy.config.core.v3.HeaderValue.value":                        true,
	"envoy.config.core.v3.HeaderValue.raw_value":                    true,
}

// fuzzStrings are the values the grammar picks from most often.
var fuzzStrings = []string{
	"", "x-api-key", "authorization", "Bearer kg_tok", "kg_tok", "x-request-id", "GET", "/v1/things",
	"10.0.0.1", "spiffe://a/b", "keygate.scope", "X-Api-Key", "bad\xffutf8", "\xc3",
}

// message is a message of type md written as the fuzz bytes say.
func (s *fuzzSource) message(md protoreflect.MessageDescriptor, depth int) []byte {
	var b []byte
	fields := md.Fields()
	for range s.n(7) {
		c := s.byte()
		if c%16 == 15 || fields.Len() == 0 {
			b = s.field(b, protowire.Number(20+c%40), protowire.Type(s.n(5)), nil, depth)
			continue
		}
		fd := fields.Get(int(c>>4) % fields.Len())
		if c%4 != 0 {
			// Mostly the fields the reader reads, on the way to them.
			var read []protoreflect.FieldDescriptor
			for i := range fields.Len() {
				if fuzzReadFields[fields.Get(i).FullName()] || md.IsMapEntry() {
					read = append(read, fields.Get(i))
				}
			}
			if len(read) > 0 {
				fd = read[int(c>>4)%len(read)]
			}
		}
		typ := wireTypeOf(fd.Kind())
		if s.byte()%16 == 0 {
			typ = protowire.Type(s.n(5)) // perhaps not its own
		}
		var sub protoreflect.MessageDescriptor
		if fd.Message() != nil && typ == protowire.BytesType {
			sub = fd.Message()
		}
		b = s.field(b, fd.Number(), typ, sub, depth)
	}
	return b
}

// field appends a field num of wire type typ: a message of type sub when
// set, else a value of typ.
func (s *fuzzSource) field(b []byte, num protowire.Number, typ protowire.Type, sub protoreflect.MessageDescriptor, depth int) []byte {
	switch typ {
	case protowire.VarintType:
		return protowire.AppendVarint(protowire.AppendTag(b, num, typ), s.uint64()>>(s.n(63)))
	case protowire.Fixed32Type:
		return protowire.AppendFixed32(protowire.AppendTag(b, num, typ), uint32(s.uint64()))
	case protowire.Fixed64Type:
		return protowire.AppendFixed64(protowire.AppendTag(b, num, typ), s.uint64())
	case protowire.BytesType:
		var v []byte
		switch {
		case sub != nil && depth > 0:
			v = s.message(sub, depth-1)
		case sub != nil:
		case s.byte()%4 == 0:
			v = []byte(s.string())
		default:
			v = []byte(fuzzStrings[s.n(len(fuzzStrings)-1)])
		}
		return protowire.AppendBytes(protowire.AppendTag(b, num, typ), v)
	}
	// A group of one varint.
	b = protowire.AppendTag(b, num, protowire.StartGroupType)
	b = protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), 1)
	return protowire.AppendTag(b, num, protowire.EndGroupType)
}

// fuzzSource turns fuzz bytes into values; it gives zeros once they run out.
type fuzzSource struct {
	b    []byte
	utf8 bool // make every string valid UTF-8
}

func (s *fuzzSource) byte() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *fuzzSource) n(max int) int { return int(s.byte()) % (max + 1) }

func (s *fuzzSource) string() string {
	n := min(s.n(40), len(s.b))
	str := string(s.b[:n])
	s.b = s.b[n:]
	if s.utf8 {
		str = strings.ToValidUTF8(str, "\uFFFD")
	}
	return str
}

func (s *fuzzSource) uint64() uint64 {
	var v [8]byte
	n := copy(v[:], s.b)
	s.b = s.b[n:]
	return binary.LittleEndian.Uint64(v[:])
}

func (s *fuzzSource) headers(max int) []wireHeader {
	hs := make([]wireHeader, s.n(max))
	for i := range hs {
		hs[i] = wireHeader{s.string(), s.string()}
	}
	return hs
}

func (s *fuzzSource) strings(max int) []string {
	ss := make([]string, s.n(max))
	for i := range ss {
		ss[i] = s.string()
	}
	return ss
}

// value is a random Struct value, nesting at most depth levels.
func (s *fuzzSource) value(depth int) *structpb.Value {
	kind := s.n(5)
	if depth == 0 {
		kind %= 4
	}
	switch kind {
	case 0:
		return structpb.NewNullValue()
	case 1:
		return structpb.NewNumberValue(math.Float64frombits(s.uint64()))
	case 2:
		return structpb.NewStringValue(strings.ToValidUTF8(s.string(), "?"))
	case 3:
		return structpb.NewBoolValue(s.byte()&1 == 1)
	case 4:
		return structpb.NewStructValue(s.structure(depth - 1))
	}
	l := &structpb.ListValue{}
	for range s.n(4) {
		l.Values = append(l.Values, s.value(depth-1))
	}
	return structpb.NewListValue(l)
}

func (s *fuzzSource) structure(depth int) *structpb.Struct {
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for range s.n(4) {
		st.Fields[strings.ToValidUTF8(s.string(), "?")] = s.value(depth)
	}
	return st
}

// allow is a random allowOut. Its metadata is an encoded Struct, as
// encodeMetadata gives: always valid.
func (s *fuzzSource) allow(t *testing.T) *allowOut {
	a := &allowOut{
		headers:         s.headers(10),
		remove:          s.strings(4),
		responseHeaders: s.headers(4),
		meta: allowMeta{
			keyID: s.string(), orgID: s.string(), userID: s.string(),
			scopes: s.strings(6), environment: s.string(),
			cacheAgeMS: int64(s.uint64()),
		},
	}
	if s.byte()&1 == 1 {
		b, err := proto.Marshal(s.structure(3))
		if err != nil {
			t.Fatal(err)
		}
		a.meta.metadata = b
	}
	if s.byte()&1 == 1 { // a report-only route's would-deny allow
		a.meta.wouldDeny = s.string()
	}
	return a
}

// FuzzAllowEncoding holds appendAllow to protobuf: for any allow, what it
// appends decodes (proto.Unmarshal) to a message proto.Equal to allowProto's,
// of the size proto.Marshal gives. An allow with a string that is not
// UTF-8 is one proto.Marshal refuses, and then proto.Unmarshal refuses
// appendAllow's bytes too.
func FuzzAllowEncoding(f *testing.F) {
	f.Add([]byte("\x00"))
	f.Add([]byte("\x06\x0fx-keygate-key-id\x0bkey_0123456789\x0fx-keygate-org-id\x06org_42" +
		"\x01\x09x-api-key\x03\x0fratelimit-limit\x03100\x13ratelimit-remaining\x0299\x0fratelimit-reset\x0260" +
		"\x0bkey_0123456789\x06org_42\x07user_07\x02\x04read\x05write\x04live\x10\x27\x00\x00\x00\x00\x00\x00\x01\x04\x02\x04team\x02\x03pay"))
	f.Add(bytes.Repeat([]byte{0xff, 0x03, 0xc3, 0x28, 0x00}, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		src := &fuzzSource{b: b}
		src.utf8 = src.byte()&1 == 0 // mostly valid strings, as keygate's are
		a := src.allow(t)

		prefix := []byte("before")
		out := appendAllow(slices.Clone(prefix), a)
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("appendAllow overwrote what b held")
		}
		out = out[len(prefix):]
		want := allowProto(a)
		var got authv3.CheckResponse
		err := proto.Unmarshal(out, &got)
		if !a.validUTF8() {
			if err == nil {
				t.Fatalf("proto.Unmarshal accepted an allow with invalid UTF-8")
			}
			if _, err := proto.Marshal(want); err == nil {
				t.Fatalf("proto.Marshal accepted an allow validUTF8 calls invalid")
			}
			return
		}
		if err != nil {
			t.Fatalf("proto.Unmarshal(appendAllow): %v", err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("appendAllow differs from allowProto (-proto +wire):\n%s", cmp.Diff(want, &got, protocmp.Transform()))
		}
		if n := proto.Size(want); n != len(out) {
			t.Fatalf("appendAllow wrote %d bytes, proto.Marshal writes %d", len(out), n)
		}
	})
}

// FuzzDenyEncoding holds appendDeny to denyProto as FuzzAllowEncoding
// holds appendAllow to allowProto.
func FuzzDenyEncoding(f *testing.F) {
	f.Add([]byte("\x00\x10\x0funauthenticated\x91\x01\x02\x0ccontent-type\x10application/json\x10www-authenticate\x16Bearer realm=\"keygate\"\x20{\"error\":{\"code\":\"x\"}}"))
	f.Add([]byte("\x01\xff\xff\xff\xff\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		src := &fuzzSource{b: b}
		src.utf8 = src.byte()&1 == 0
		d := &denyOut{
			code: int32(src.uint64()), message: src.string(), httpStatus: int32(src.uint64() >> 7),
			headers: src.headers(6), body: src.string(),
		}
		out := appendDeny(nil, d)
		want := denyProto(d)
		var got authv3.CheckResponse
		err := proto.Unmarshal(out, &got)
		if !d.validUTF8() {
			if err == nil {
				t.Fatalf("proto.Unmarshal accepted a deny with invalid UTF-8")
			}
			return
		}
		if err != nil {
			t.Fatalf("proto.Unmarshal(appendDeny): %v", err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("appendDeny differs from denyProto (-proto +wire):\n%s", cmp.Diff(want, &got, protocmp.Transform()))
		}
		if n := proto.Size(want); n != len(out) {
			t.Fatalf("appendDeny wrote %d bytes, proto.Marshal writes %d", len(out), n)
		}
	})
}
