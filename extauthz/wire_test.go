package extauthz

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// inputDiff compares checkInputs; an empty slice equals a nil one.
func inputDiff(want, got checkInput) string {
	return cmp.Diff(want, got, cmp.AllowUnexported(checkInput{}, wireHeader{}), cmpopts.EquateEmpty(),
		cmpopts.EquateComparable(netip.Addr{}))
}

// Wire-format builders for requests that protobuf's Marshal cannot write:
// fields repeated, out of order, with wrong wire types, or malformed.
func pbBytes(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func pbString(num protowire.Number, s string) []byte { return pbBytes(num, []byte(s)) }

func pbVarint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(protowire.AppendTag(nil, num, protowire.VarintType), v)
}

func pbMsg(fields ...[]byte) []byte { return slices.Concat(fields...) }

// pbEntry is a map entry.
func pbEntry(num protowire.Number, k, v string) []byte {
	return pbBytes(num, pbMsg(pbString(fnMapKey, k), pbString(fnMapValue, v)))
}

// pbHTTP is a CheckRequest whose attributes.request.http has fields.
func pbHTTP(fields ...[]byte) []byte {
	return pbBytes(fnCheckRequestAttributes, pbBytes(fnAttributesRequest, pbBytes(fnRequestHTTP, pbMsg(fields...))))
}

// pbAttrs is a CheckRequest whose attributes have fields.
func pbAttrs(fields ...[]byte) []byte { return pbBytes(fnCheckRequestAttributes, pbMsg(fields...)) }

// pbSource is a CheckRequest whose source address has fields.
func pbSource(fields ...[]byte) []byte {
	return pbAttrs(pbBytes(fnAttributesSource, pbBytes(fnPeerAddress, pbMsg(fields...))))
}

func pbHeaderValue(key, value, raw string) []byte {
	var hv []byte
	if key != "" {
		hv = append(hv, pbString(fnHeaderValueKey, key)...)
	}
	if value != "" {
		hv = append(hv, pbString(fnHeaderValueValue, value)...)
	}
	if raw != "" {
		hv = append(hv, pbString(fnHeaderValueRawValue, raw)...)
	}
	return pbBytes(fnHeaderMapHeaders, hv)
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wireEnvoyRequest is a CheckRequest as Envoy sends it: both peers, the
// request time, ten headers, and metadata contexts.
func wireEnvoyRequest(tok string) *authv3.CheckRequest {
	peer := func(addr string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer("10.12.0.7", 51234),
		Destination: peer("10.12.3.9", 8080),
		Request: &authv3.AttributeContext_Request{
			Time: &timestamppb.Timestamp{Seconds: 1767225600, Nanos: 123456789},
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     "13950381928372615502",
				Method: "GET",
				Headers: map[string]string{
					":authority": "api.example.com", ":method": "GET", ":path": "/v1/things?limit=10", ":scheme": "https",
					"authorization": "Bearer " + tok, "accept": "application/json", "user-agent": "curl/8.5.0",
					"x-request-id": "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90", "x-forwarded-proto": "https",
					"x-envoy-external-address": "203.0.113.10",
				},
				Path:     "/v1/things?limit=10",
				Host:     "api.example.com",
				Scheme:   "https",
				Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions:    map[string]string{"keygate.scope": "read"},
		MetadataContext:      &corev3.Metadata{},
		RouteMetadataContext: &corev3.Metadata{},
	}}
}

// wireRawRequest is wireEnvoyRequest with encode_raw_headers: the headers
// in header_map with raw values.
func wireRawRequest(tok string) *authv3.CheckRequest {
	req := wireEnvoyRequest(tok)
	http := req.Attributes.Request.Http
	hm := &corev3.HeaderMap{}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range http.Headers {
			if !yield(k) {
				return
			}
		}
	}) {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(http.Headers[k])})
	}
	http.Headers, http.HeaderMap = nil, hm
	return req
}

// fieldTag is a field and the tag (number<<3 | wire type) the code uses for it.
type fieldTag struct {
	msg  proto.Message
	name protoreflect.Name
	tag  uint64
}

// checkFieldTags checks tags against the generated descriptors.
func checkFieldTags(t *testing.T, fields []fieldTag) {
	t.Helper()
	for _, f := range fields {
		md := f.msg.ProtoReflect().Descriptor()
		fd := md.Fields().ByName(f.name)
		if fd == nil {
			t.Errorf("%s has no field %s", md.FullName(), f.name)
			continue
		}
		if got := uint64(protowire.EncodeTag(fd.Number(), wireTypeOf(fd.Kind()))); got != f.tag {
			t.Errorf("%s: tag %#x (field %d), the code uses %#x (field %d)", fd.FullName(), got, fd.Number(), f.tag, f.tag>>3)
		}
	}
}

// TestWire_FieldNumbersMatchGoControlPlane checks every field number and
// wire type the reader uses against the descriptors
// generated into go-control-plane and protobuf.
func TestWire_FieldNumbersMatchGoControlPlane(t *testing.T) {
	bytesTag := func(n protowire.Number) uint64 { return uint64(protowire.EncodeTag(n, protowire.BytesType)) }
	fields := []fieldTag{
		{(*authv3.CheckRequest)(nil), "attributes", bytesTag(fnCheckRequestAttributes)},
		{(*authv3.AttributeContext)(nil), "source", bytesTag(fnAttributesSource)},
		{(*authv3.AttributeContext)(nil), "request", bytesTag(fnAttributesRequest)},
		{(*authv3.AttributeContext)(nil), "context_extensions", bytesTag(fnAttributesContextExtensions)},
		{(*authv3.AttributeContext_Peer)(nil), "address", bytesTag(fnPeerAddress)},
		{(*authv3.AttributeContext_Peer)(nil), "principal", bytesTag(fnPeerPrincipal)},
		{(*corev3.Address)(nil), "socket_address", bytesTag(fnAddressSocketAddress)},
		{(*corev3.SocketAddress)(nil), "address", bytesTag(fnSocketAddressAddress)},
		{(*authv3.AttributeContext_Request)(nil), "http", bytesTag(fnRequestHTTP)},
		{(*authv3.AttributeContext_HttpRequest)(nil), "id", bytesTag(fnHTTPID)},
		{(*authv3.AttributeContext_HttpRequest)(nil), "method", bytesTag(fnHTTPMethod)},
		{(*authv3.AttributeContext_HttpRequest)(nil), "headers", bytesTag(fnHTTPHeaders)},
		{(*authv3.AttributeContext_HttpRequest)(nil), "path", bytesTag(fnHTTPPath)},
		{(*authv3.AttributeContext_HttpRequest)(nil), "header_map", bytesTag(fnHTTPHeaderMap)},
		{(*corev3.HeaderMap)(nil), "headers", bytesTag(fnHeaderMapHeaders)},
		{(*corev3.HeaderValue)(nil), "key", bytesTag(fnHeaderValueKey)},
		{(*corev3.HeaderValue)(nil), "value", bytesTag(fnHeaderValueValue)},
		{(*corev3.HeaderValue)(nil), "raw_value", bytesTag(fnHeaderValueRawValue)},
	}
	checkFieldTags(t, fields)
	// The map entries both sides read and write.
	for _, fd := range []protoreflect.FieldDescriptor{
		(*authv3.AttributeContext)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnAttributesContextExtensions),
		(*authv3.AttributeContext_HttpRequest)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnHTTPHeaders),
		(*structpb.Struct)(nil).ProtoReflect().Descriptor().Fields().ByName("fields"),
	} {
		if !fd.IsMap() || fd.MapKey().Number() != fnMapKey || fd.MapValue().Number() != fnMapValue || fd.MapKey().Kind() != protoreflect.StringKind {
			t.Errorf("%s is not a map<string, …> with key 1 and value 2", fd.FullName())
		}
	}
	// The strings read are proto3 strings (UTF-8 checked); raw_value is bytes.
	for _, fd := range []protoreflect.FieldDescriptor{
		(*authv3.AttributeContext_HttpRequest)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnHTTPMethod),
		(*authv3.AttributeContext_Peer)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnPeerPrincipal),
		(*corev3.HeaderValue)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnHeaderValueKey),
	} {
		if fd.Kind() != protoreflect.StringKind || !enforceUTF8(fd) {
			t.Errorf("%s is not a UTF-8 checked string", fd.FullName())
		}
	}
	if fd := (*corev3.HeaderValue)(nil).ProtoReflect().Descriptor().Fields().ByNumber(fnHeaderValueRawValue); fd.Kind() != protoreflect.BytesKind {
		t.Errorf("%s is %v, want bytes", fd.FullName(), fd.Kind())
	}
	// socket_address's oneof siblings clear the source address.
	var siblings []protowire.Number
	for n := protowire.Number(1); n < 64; n++ {
		if r := wireSchema().address.rule(n); r != nil && r.clearsAddress {
			siblings = append(siblings, n)
		}
	}
	if want := []protowire.Number{2, 3}; !slices.Equal(siblings, want) {
		t.Errorf("Address oneof siblings of socket_address = %v, want %v (pipe, envoy_internal_address)", siblings, want)
	}
}

// TestWire_SchemaIsProto3Only pins what the schema compiler assumes of
// every message a CheckRequest can hold: proto3 (no groups, no
// extensions, no required fields, UTF-8 checked strings) and no lazy
// fields. A go-control-plane upgrade breaking it fails here.
func TestWire_SchemaIsProto3Only(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		if md.Syntax() != protoreflect.Proto3 {
			t.Errorf("%s is %v, not proto3", md.FullName(), md.Syntax())
		}
		if md.ExtensionRanges().Len() > 0 {
			t.Errorf("%s has extension ranges", md.FullName())
		}
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.Kind() == protoreflect.GroupKind || fd.Cardinality() == protoreflect.Required {
				t.Errorf("%s is a group or required", fd.FullName())
			}
			if o, ok := fd.Options().(*descriptorpb.FieldOptions); ok && (o.GetLazy() || o.GetUnverifiedLazy()) {
				t.Errorf("%s is lazy", fd.FullName())
			}
			if fd.Message() != nil {
				walk(fd.Message())
			}
		}
	}
	walk((*authv3.CheckRequest)(nil).ProtoReflect().Descriptor())
	if len(seen) < 15 {
		t.Errorf("walked only %d message types", len(seen))
	}
}

// TestDecodeCheckRequest_ReadsWhatTheDecisionReads decodes requests
// marshalled by protobuf, each into the input the decision reads, the same
// as inputFromProto gives.
func TestDecodeCheckRequest_ReadsWhatTheDecisionReads(t *testing.T) {
	httpReq := func(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want checkInput
	}{
		{"empty request", &authv3.CheckRequest{}, checkInput{}},
		{
			"Envoy's request: headers map in name order",
			wireEnvoyRequest("tok"),
			checkInput{
				method: "GET", path: "/v1/things?limit=10", id: "13950381928372615502",
				headers: []wireHeader{
					{":authority", "api.example.com"}, {":method", "GET"}, {":path", "/v1/things?limit=10"}, {":scheme", "https"},
					{"accept", "application/json"}, {"authorization", "Bearer tok"}, {"user-agent", "curl/8.5.0"},
					{"x-envoy-external-address", "203.0.113.10"}, {"x-forwarded-proto", "https"},
					{"x-request-id", "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90"},
				},
				sourceAddress: "10.12.0.7",
				ext:           []wireHeader{{"keygate.scope", "read"}},
			},
		},
		{
			"header_map in wire order, raw_value over value, repeats kept",
			httpReq(&authv3.AttributeContext_HttpRequest{HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
				{Key: "x-api-key", Value: "ignored", RawValue: []byte("raw-token")},
				{Key: "accept", Value: "text/plain"},
				{Key: "x-api-key", RawValue: []byte("second")},
				{Key: "x-bin", RawValue: []byte{0xff, 0xfe}}, // raw_value is bytes: any bytes
				{},
			}}}),
			checkInput{headers: []wireHeader{
				{"x-api-key", "raw-token"}, {"accept", "text/plain"}, {"x-api-key", "second"}, {"x-bin", "\xff\xfe"}, {"", ""},
			}},
		},
		{
			"header_map with entries replaces the headers map",
			httpReq(&authv3.AttributeContext_HttpRequest{
				Headers:   map[string]string{"x-api-key": "from-map"},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "authorization", RawValue: []byte("Bearer raw")}}},
			}),
			checkInput{headers: []wireHeader{{"authorization", "Bearer raw"}}},
		},
		{
			"empty header_map falls back to the headers map",
			httpReq(&authv3.AttributeContext_HttpRequest{
				Headers:   map[string]string{"x-api-key": "from-map", "X-Api-Key": "upper"},
				HeaderMap: &corev3.HeaderMap{},
			}),
			checkInput{headers: []wireHeader{{"X-Api-Key", "upper"}, {"x-api-key", "from-map"}}},
		},
		{
			"source address and principal, not the destination's",
			&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: &authv3.AttributeContext_Peer{
					Address:   &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "2001:db8::1"}}},
					Principal: "spiffe://cluster.local/ns/default/sa/client",
					Service:   "client",
					Labels:    map[string]string{"app": "client"},
				},
				Destination: &authv3.AttributeContext_Peer{
					Address:   &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.2"}}},
					Principal: "server",
				},
			}},
			checkInput{sourceAddress: "2001:db8::1", principal: "spiffe://cluster.local/ns/default/sa/client"},
		},
		{
			"a pipe source has no address",
			&authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{
				Address: &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock"}}},
			}}},
			checkInput{},
		},
		{
			"context extensions in key order, metadata skipped",
			&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				ContextExtensions: map[string]string{"keygate.project": "/p/*", "keygate.scope": "write", "a": ""},
				MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
					"envoy.filters.http.jwt_authn": {Fields: map[string]*structpb.Value{"sub": structpb.NewStringValue("user")}},
				}},
			}},
			checkInput{ext: []wireHeader{{"a", ""}, {"keygate.project", "/p/*"}, {"keygate.scope", "write"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustMarshal(t, tt.req)
			var got checkInput
			if err := decodeCheckRequest(b, &got); err != nil {
				t.Fatalf("decodeCheckRequest: %v", err)
			}
			if d := inputDiff(tt.want, got); d != "" {
				t.Errorf("decodeCheckRequest (-want +got):\n%s", d)
			}
			if d := inputDiff(tt.want, inputFromProto(tt.req)); d != "" {
				t.Errorf("inputFromProto (-want +got):\n%s", d)
			}
		})
	}
}

// wireMergeCases are requests only a hand can write, each read by
// protobuf's merge rules; they seed FuzzDecodeCheckRequest too.
var wireMergeCases = []struct {
	name string
	b    []byte
	want checkInput
}{
	{
		"attributes sent twice merge",
		pbMsg(pbHTTP(pbString(fnHTTPMethod, "GET")), pbHTTP(pbString(fnHTTPPath, "/x"))),
		checkInput{method: "GET", path: "/x"},
	},
	{
		"the last scalar wins",
		pbHTTP(pbString(fnHTTPMethod, "GET"), pbString(fnHTTPPath, "/a"), pbString(fnHTTPMethod, "POST")),
		checkInput{method: "POST", path: "/a"},
	},
	{
		"a repeated map key: the later entry replaces the earlier",
		pbHTTP(pbEntry(fnHTTPHeaders, "x-api-key", "first"), pbEntry(fnHTTPHeaders, "accept", "*/*"), pbEntry(fnHTTPHeaders, "x-api-key", "second")),
		checkInput{headers: []wireHeader{{"accept", "*/*"}, {"x-api-key", "second"}}},
	},
	{
		"map entries without key or value",
		pbHTTP(pbBytes(fnHTTPHeaders, pbString(fnMapValue, "no-key")), pbBytes(fnHTTPHeaders, pbString(fnMapKey, "no-value")), pbBytes(fnHTTPHeaders, nil)),
		checkInput{headers: []wireHeader{{"", ""}, {"no-value", ""}}},
	},
	{
		"a map entry's key sent twice: the last wins",
		pbAttrs(pbBytes(fnAttributesContextExtensions, pbMsg(pbString(fnMapKey, "a"), pbString(fnMapValue, "1"), pbString(fnMapKey, "b")))),
		checkInput{ext: []wireHeader{{"b", "1"}}},
	},
	{
		"header_map sent twice appends; map entries before and after are dropped",
		pbHTTP(
			pbEntry(fnHTTPHeaders, "x-api-key", "from-map"),
			pbBytes(fnHTTPHeaderMap, pbHeaderValue("a", "1", "")),
			pbEntry(fnHTTPHeaders, "x-api-key", "from-map-2"),
			pbBytes(fnHTTPHeaderMap, pbHeaderValue("b", "2", "raw")),
		),
		checkInput{headers: []wireHeader{{"a", "1"}, {"b", "raw"}}},
	},
	{
		"an empty header_map keeps the headers map",
		pbHTTP(pbBytes(fnHTTPHeaderMap, nil), pbEntry(fnHTTPHeaders, "x", "1"), pbBytes(fnHTTPHeaderMap, nil)),
		checkInput{headers: []wireHeader{{"x", "1"}}},
	},
	{
		"a header value's fields sent twice: the last wins, an empty raw_value gives value",
		pbHTTP(pbBytes(fnHTTPHeaderMap, pbBytes(fnHeaderMapHeaders, pbMsg(
			pbString(fnHeaderValueKey, "k1"), pbString(fnHeaderValueRawValue, "raw"), pbString(fnHeaderValueValue, "v"),
			pbString(fnHeaderValueKey, "k2"), pbString(fnHeaderValueRawValue, ""),
		)))),
		checkInput{headers: []wireHeader{{"k2", "v"}}},
	},
	{
		"socket_address sent twice merges",
		pbSource(
			pbBytes(fnAddressSocketAddress, pbString(fnSocketAddressAddress, "10.0.0.1")),
			pbBytes(fnAddressSocketAddress, pbVarint(3, 443)), // port_value only
		),
		checkInput{sourceAddress: "10.0.0.1"},
	},
	{
		"a pipe after socket_address replaces it, a socket_address after that starts afresh",
		pbMsg(
			pbSource(pbBytes(fnAddressSocketAddress, pbString(fnSocketAddressAddress, "10.0.0.1"))),
			pbSource(pbBytes(2, pbString(1, "/run/sock"))),
			pbSource(pbBytes(fnAddressSocketAddress, pbVarint(3, 443))),
		),
		checkInput{},
	},
	{
		"envoy_internal_address after socket_address replaces it",
		pbSource(pbBytes(fnAddressSocketAddress, pbString(fnSocketAddressAddress, "10.0.0.1")), pbBytes(3, nil)),
		checkInput{},
	},
	{
		"a pipe with the wrong wire type is unknown and replaces nothing",
		pbSource(pbBytes(fnAddressSocketAddress, pbString(fnSocketAddressAddress, "10.0.0.1")), pbVarint(2, 1)),
		checkInput{sourceAddress: "10.0.0.1"},
	},
	{
		"known fields with the wrong wire type are unknown fields",
		pbMsg(
			pbHTTP(pbString(fnHTTPMethod, "GET"), pbVarint(fnHTTPMethod, 7), pbVarint(fnHTTPHeaders, 1), pbVarint(fnHTTPHeaderMap, 1)),
			pbAttrs(pbVarint(fnAttributesContextExtensions, 3), pbVarint(fnAttributesSource, 1)),
			pbHTTP(protowire.AppendFixed32(protowire.AppendTag(nil, fnHTTPPath, protowire.Fixed32Type), 1)),
			pbHTTP(pbBytes(fnHTTPHeaders, pbMsg(pbVarint(fnMapKey, 1), pbString(fnMapValue, "v")))),
			pbHTTP(pbVarint(9, 100), pbString(9, "size is an int64: as bytes it is unknown")),
		),
		checkInput{method: "GET", headers: []wireHeader{{"", "v"}}},
	},
	{
		"unknown fields and groups are skipped",
		pbMsg(
			pbVarint(99, 1),
			protowire.AppendTag(pbVarint(1000, 5), 7, protowire.StartGroupType),
			pbVarint(8, 0),
			protowire.AppendTag(nil, 7, protowire.EndGroupType),
			pbHTTP(pbString(1000, "unknown"), pbString(fnHTTPMethod, "GET")),
		),
		checkInput{method: "GET"},
	},
	{
		"the request time is checked and skipped",
		pbAttrs(pbBytes(fnAttributesRequest, pbBytes(1, pbMsg(pbVarint(1, 5), pbVarint(2, 7))))),
		checkInput{},
	},
}

// TestDecodeCheckRequest_FollowsProtobufMergeRules reads each hand-written
// request as the want says, which is also what protobuf reads.
func TestDecodeCheckRequest_FollowsProtobufMergeRules(t *testing.T) {
	for _, tt := range wireMergeCases {
		t.Run(tt.name, func(t *testing.T) {
			var got checkInput
			if err := decodeCheckRequest(tt.b, &got); err != nil {
				t.Fatalf("decodeCheckRequest: %v", err)
			}
			if d := inputDiff(tt.want, got); d != "" {
				t.Errorf("decodeCheckRequest (-want +got):\n%s", d)
			}
			var req authv3.CheckRequest
			if err := proto.Unmarshal(tt.b, &req); err != nil {
				t.Fatalf("proto.Unmarshal refuses it: %v", err)
			}
			if d := inputDiff(tt.want, inputFromProto(&req)); d != "" {
				t.Errorf("protobuf reads (-want +got):\n%s", d)
			}
		})
	}
}

// nestedListValue is a google.protobuf.Value holding levels ListValues
// nested in Values, written front to back (wrapping would copy it levels
// times).
func nestedListValue(levels int) []byte {
	// sizes[i] is the content size of the i-th message from the inside:
	// even i a Value, odd i a ListValue.
	sizes := make([]int, 2*levels+1)
	for i := 1; i < len(sizes); i++ {
		sizes[i] = 1 + protowire.SizeBytes(sizes[i-1])
	}
	b := make([]byte, 0, sizes[len(sizes)-1])
	for i := len(sizes) - 1; i > 0; i-- {
		num := protowire.Number(1) // in a ListValue: values
		if i%2 == 0 {
			num = 6 // in a Value: list_value
		}
		b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.BytesType), uint64(sizes[i-1]))
	}
	return b
}

// deepRequest is a CheckRequest holding a Struct in metadata_context with
// a Value nesting levels ListValues.
func deepRequest(levels int) []byte {
	st := pbBytes(1, pbMsg(pbString(fnMapKey, "v"), pbBytes(fnMapValue, nestedListValue(levels)))) // Struct.fields
	md := pbBytes(1, pbMsg(pbString(fnMapKey, "f"), pbBytes(fnMapValue, st)))                      // Metadata.filter_metadata
	return pbAttrs(pbBytes(11, md))                                                                // metadata_context
}

// TestDecodeCheckRequest_RefusesWhatProtobufRefuses covers each way
// proto.Unmarshal fails, in fields read and in fields skipped: the reader
// fails the same way and leaves no input.
func TestDecodeCheckRequest_RefusesWhatProtobufRefuses(t *testing.T) {
	bad := "bad\xffutf8"
	// The deepest request protobuf accepts.
	deepest := 0
	for lo, hi := 1, protowire.DefaultRecursionLimit; lo <= hi; {
		mid := (lo + hi) / 2
		if proto.Unmarshal(deepRequest(mid), &authv3.CheckRequest{}) == nil {
			deepest, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	if deepest == 0 || deepest == protowire.DefaultRecursionLimit {
		t.Fatalf("found no depth limit (deepest %d)", deepest)
	}
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"invalid UTF-8 in method", pbHTTP(pbString(fnHTTPMethod, bad)), errWireUTF8},
		{"invalid UTF-8 in a headers map key", pbHTTP(pbEntry(fnHTTPHeaders, bad, "v")), errWireUTF8},
		{"invalid UTF-8 in a headers map value", pbHTTP(pbEntry(fnHTTPHeaders, "k", bad)), errWireUTF8},
		{"invalid UTF-8 in a dropped headers map entry", pbHTTP(pbBytes(fnHTTPHeaderMap, pbHeaderValue("a", "1", "")), pbEntry(fnHTTPHeaders, "k", bad)), errWireUTF8},
		{"invalid UTF-8 in a header_map value", pbHTTP(pbBytes(fnHTTPHeaderMap, pbHeaderValue("k", bad, "raw"))), errWireUTF8},
		{"invalid UTF-8 in a context extension", pbAttrs(pbEntry(fnAttributesContextExtensions, "k", bad)), errWireUTF8},
		{"invalid UTF-8 in the principal", pbAttrs(pbBytes(fnAttributesSource, pbString(fnPeerPrincipal, bad))), errWireUTF8},
		{"invalid UTF-8 in the source address", pbSource(pbBytes(fnAddressSocketAddress, pbString(fnSocketAddressAddress, bad))), errWireUTF8},
		{"invalid UTF-8 in host, skipped", pbHTTP(pbString(5, bad)), errWireUTF8},
		{"invalid UTF-8 in the destination's principal, skipped", pbAttrs(pbBytes(2, pbString(fnPeerPrincipal, bad))), errWireUTF8},
		{"invalid UTF-8 in a pipe path, skipped", pbSource(pbBytes(2, pbString(1, bad))), errWireUTF8},
		{"invalid UTF-8 in a source label, skipped", pbAttrs(pbBytes(fnAttributesSource, pbEntry(3, "k", bad))), errWireUTF8},
		{"invalid UTF-8 deep in metadata_context", pbAttrs(pbBytes(11, pbBytes(1, pbMsg(pbString(fnMapKey, "f"),
			pbBytes(fnMapValue, pbBytes(1, pbMsg(pbString(fnMapKey, "k"), pbBytes(fnMapValue, pbString(3, bad))))))))), errWireUTF8},
		{"invalid UTF-8 in a field of unknown contents is fine, in a known string is not", pbMsg(pbString(77, bad), pbHTTP(pbString(6, bad))), errWireUTF8},
		{"truncated length", pbHTTP(pbString(fnHTTPMethod, "GET"))[:8], errWireMalformed},
		{"length past the end of a nested message", pbAttrs(append(protowire.AppendTag(nil, fnAttributesRequest, protowire.BytesType), 50, 1)), errWireMalformed},
		{"field number 0", pbVarint(0, 1), errWireMalformed},
		{"field number above 2^29-1", protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 1), errWireMalformed},
		{"an end-group tag outside a group", protowire.AppendTag(nil, 1, protowire.EndGroupType), errWireMalformed},
		{"an end-group tag in a map entry", pbHTTP(pbBytes(fnHTTPHeaders, protowire.AppendTag(nil, 1, protowire.EndGroupType))), errWireMalformed},
		{"a group without its end", pbHTTP(protowire.AppendTag(nil, 50, protowire.StartGroupType)), errWireMalformed},
		{"a group ended by another number", pbMsg(protowire.AppendTag(nil, 50, protowire.StartGroupType), protowire.AppendTag(nil, 51, protowire.EndGroupType)), errWireMalformed},
		{"reserved wire type 6", pbHTTP(protowire.AppendVarint(nil, 9<<3|6)), errWireMalformed},
		{"a varint of 11 bytes", pbHTTP(append(protowire.AppendTag(nil, 9, protowire.VarintType), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01)), errWireMalformed},
		{"a truncated fixed64", pbAttrs(pbBytes(fnAttributesRequest, pbBytes(1, []byte{1 << 3, 1, 2 << 3}))), errWireMalformed},
		{"a truncated timestamp seconds", pbAttrs(pbBytes(fnAttributesRequest, pbBytes(1, []byte{1 << 3}))), errWireMalformed},
		{"one level deeper than protobuf's recursion limit", deepRequest(deepest + 1), errWireDepth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			perr := proto.Unmarshal(tt.b, &authv3.CheckRequest{})
			if (perr == nil) != (tt.want == nil) {
				t.Fatalf("proto.Unmarshal: %v, the test expects error %v", perr, tt.want)
			}
			// Decode into an input already holding a request: an error
			// leaves it empty.
			var in checkInput
			if err := decodeCheckRequest(mustMarshal(t, wireEnvoyRequest("tok")), &in); err != nil {
				t.Fatal(err)
			}
			err := decodeCheckRequest(tt.b, &in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("decodeCheckRequest: %v, want %v (protobuf: %v)", err, tt.want, perr)
			}
			if err != nil {
				if d := inputDiff(checkInput{}, in); d != "" {
					t.Errorf("input after an error (-want +got):\n%s", d)
				}
			}
		})
	}
	t.Run("the deepest request protobuf accepts", func(t *testing.T) {
		var in checkInput
		if err := decodeCheckRequest(deepRequest(deepest), &in); err != nil {
			t.Errorf("decodeCheckRequest at depth %d: %v", deepest, err)
		}
	})
}

// TestDecodeCheckRequest_StringsAreCopies: grpc-go reuses the buffer a
// request came in as soon as the codec returns, so nothing decoded may
// point into it.
func TestDecodeCheckRequest_StringsAreCopies(t *testing.T) {
	for _, req := range []*authv3.CheckRequest{wireEnvoyRequest("tok-1"), wireRawRequest("tok-2")} {
		b := mustMarshal(t, req)
		var in checkInput
		if err := decodeCheckRequest(b, &in); err != nil {
			t.Fatal(err)
		}
		want := inputFromProto(req)
		lo, hi := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[0]))+uintptr(len(b))
		strs := []string{in.method, in.path, in.id, in.sourceAddress, in.principal}
		for _, h := range slices.Concat(in.headers, in.ext) {
			strs = append(strs, h.name, h.value)
		}
		for _, s := range strs {
			if p := uintptr(unsafe.Pointer(unsafe.StringData(s))); s != "" && p >= lo && p < hi {
				t.Errorf("%q points into the request buffer", s)
			}
		}
		for i := range b {
			b[i] = 0xAA // what the next request would write there
		}
		if d := inputDiff(want, in); d != "" {
			t.Errorf("input after the buffer was reused (-want +got):\n%s", d)
		}
	}
}

// TestDecodeCheckRequest_ReusedInputHoldsOnlyTheNewRequest decodes
// requests of every shape in turn into one checkInput, as the pool does.
func TestDecodeCheckRequest_ReusedInputHoldsOnlyTheNewRequest(t *testing.T) {
	reqs := []*authv3.CheckRequest{wireEnvoyRequest("a"), wireRawRequest("b"), {}, wireEnvoyRequest("c"), wireRawRequest("d")}
	var in checkInput
	for i, req := range reqs {
		if err := decodeCheckRequest(mustMarshal(t, req), &in); err != nil {
			t.Fatal(err)
		}
		if d := inputDiff(inputFromProto(req), in); d != "" {
			t.Errorf("request %d (-want +got):\n%s", i, d)
		}
	}
}

// TestDecodeCheckRequest_Allocations: a reused input costs one allocation
// (its strings), a new one two (its lists too).
func TestDecodeCheckRequest_Allocations(t *testing.T) {
	b := mustMarshal(t, wireEnvoyRequest("tok"))
	var in checkInput
	if n := testing.AllocsPerRun(100, func() { _ = decodeCheckRequest(b, &in) }); n > 1 {
		t.Errorf("decode into a reused input: %v allocations, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = decodeCheckRequest(b, new(checkInput)) }); n > 3 {
		t.Errorf("decode into a new input: %v allocations, want at most 3", n)
	}
}

// TestWireMsg_PackedNumbers: no CheckRequest field is a repeated number
// today, but the schema compiler handles them as protobuf does (packed or
// not, a malformed run refused), so an upgrade adding one stays exact.
// HealthStatusSet.statuses is a repeated enum.
func TestWireMsg_PackedNumbers(t *testing.T) {
	m := compileWireMsg((*corev3.HealthStatusSet)(nil).ProtoReflect().Descriptor(), map[protoreflect.FullName]*wireMsg{})
	tests := []struct {
		name string
		b    []byte
	}{
		{"unpacked", pbMsg(pbVarint(1, 1), pbVarint(1, 2))},
		{"packed", pbBytes(1, []byte{1, 2, 0x80, 0x01})},
		{"packed, truncated varint", pbBytes(1, []byte{1, 0x80})},
		{"fixed32: not its wire type, unknown", protowire.AppendFixed32(protowire.AppendTag(nil, 1, protowire.Fixed32Type), 3)},
		{"packed, past the end", append(protowire.AppendTag(nil, 1, protowire.BytesType), 5, 1)},
	}
	for _, tt := range tests {
		perr := proto.Unmarshal(tt.b, &corev3.HealthStatusSet{})
		err := m.checkMessage(tt.b, protowire.DefaultRecursionLimit)
		if (err == nil) != (perr == nil) {
			t.Errorf("%s: check: %v, proto.Unmarshal: %v", tt.name, err, perr)
		}
	}
}
