package extauthz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"unicode/utf8"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// allowOut is everything an allow carries; appendAllow writes it as a
// CheckResponse and allowProto builds the same message with protobuf.
type allowOut struct {
	// headers are set on the upstream request, each replacing any value
	// the client sent (append: false).
	headers []wireHeader
	remove  []string // headers_to_remove
	// responseHeaders are added to the client's response (ratelimit-*),
	// append: false too.
	responseHeaders []wireHeader
	meta            allowMeta
}

// allowMeta is the allow's dynamic_metadata (SPEC §3).
type allowMeta struct {
	keyID, orgID, userID string
	scopes               []string // a list value
	environment          string
	// metadata is the key's metadata as an encoded google.protobuf.Struct
	// (encodeMetadata); empty is the empty Struct {}.
	metadata   []byte
	cacheAgeMS int64 // a number value
	// remaining, when hasRemaining, is a usage-limited key's uses left
	// after this one (SPEC §9): a number value after cache_age_ms.
	remaining    int64
	hasRemaining bool
	// wouldDeny, when set, makes this the allow of a report-only route
	// for a request the decision would deny (SPEC §11): the dynamic
	// metadata is then {would_deny: <code>} alone, every other field
	// unset.
	wouldDeny string
}

// The dynamic metadata's field names, in the order appendAllow writes them.
const (
	metaKeyID       = "key_id"
	metaOrgID       = "org_id"
	metaUserID      = "user_id"
	metaScopes      = "scopes"
	metaEnvironment = "environment"
	metaMetadata    = "metadata"
	metaCacheAge    = "cache_age_ms"
	metaWouldDeny   = "would_deny"
	metaRemaining   = "remaining"
)

// Tags of the response fields the encoders write: every field number is
// below 16, so each tag is one byte (TestWire_FieldNumbersMatchGoControlPlane
// checks the numbers).
const (
	tagCheckResponseStatus          = 1<<3 | 2 // CheckResponse.status
	tagCheckResponseDenied          = 2<<3 | 2 // CheckResponse.denied_response
	tagCheckResponseOK              = 3<<3 | 2 // CheckResponse.ok_response
	tagCheckResponseDynamicMetadata = 4<<3 | 2 // CheckResponse.dynamic_metadata

	tagOKHeaders              = 2<<3 | 2 // OkHttpResponse.headers
	tagOKHeadersToRemove      = 5<<3 | 2 // OkHttpResponse.headers_to_remove
	tagOKResponseHeadersToAdd = 6<<3 | 2 // OkHttpResponse.response_headers_to_add

	tagDeniedStatus  = 1<<3 | 2 // DeniedHttpResponse.status
	tagDeniedHeaders = 2<<3 | 2 // DeniedHttpResponse.headers
	tagDeniedBody    = 3<<3 | 2 // DeniedHttpResponse.body

	tagHTTPStatusCode = 1<<3 | 0 // type.v3.HttpStatus.code (enum)

	tagRPCStatusCode    = 1<<3 | 0 // google.rpc.Status.code
	tagRPCStatusMessage = 2<<3 | 2 // google.rpc.Status.message

	tagHeaderOptionHeader = 1<<3 | 2 // HeaderValueOption.header
	tagHeaderOptionAppend = 2<<3 | 2 // HeaderValueOption.append (BoolValue)
	tagHeaderKey          = 1<<3 | 2 // HeaderValue.key
	tagHeaderValue        = 2<<3 | 2 // HeaderValue.value

	tagStructFields = 1<<3 | 2 // Struct.fields (map<string, Value>)
	tagEntryKey     = 1<<3 | 2 // a map entry's key
	tagEntryValue   = 2<<3 | 2 // a map entry's value
	tagValueNumber  = 2<<3 | 1 // Value.number_value (double)
	tagValueString  = 3<<3 | 2 // Value.string_value
	tagValueStruct  = 5<<3 | 2 // Value.struct_value
	tagValueList    = 6<<3 | 2 // Value.list_value
	tagListValues   = 1<<3 | 2 // ListValue.values
)

// appendAllow appends to b the wire form of the allow a: a CheckResponse
// with status {code: 0}, an ok_response and the dynamic metadata, which
// proto.Unmarshal reads back as allowProto(a) (FuzzAllowEncoding). It
// sizes the message first and grows b once.
//
// Like proto.Marshal it writes the strings as they are; unlike it, it
// cannot fail, so a string that is not valid UTF-8 (which proto.Marshal
// refuses) makes a response Envoy refuses. a.validUTF8 says whether that
// can happen; every string keygate puts in an allow comes from a validated
// key record or is ASCII.
func appendAllow(b []byte, a *allowOut) []byte {
	ok := allowOKSize(a)
	meta := allowMetaSize(&a.meta)
	b = slices.Grow(b, 2+1+protowire.SizeBytes(ok)+1+protowire.SizeBytes(meta))

	b = append(b, tagCheckResponseStatus, 0) // status {code: OK}: all defaults
	b = encAppendLen(b, tagCheckResponseOK, ok)
	for _, h := range a.headers {
		b = encAppendHeaderOption(b, tagOKHeaders, h)
	}
	for _, name := range a.remove {
		b = encAppendLen(b, tagOKHeadersToRemove, len(name))
		b = append(b, name...)
	}
	for _, h := range a.responseHeaders {
		b = encAppendHeaderOption(b, tagOKResponseHeadersToAdd, h)
	}

	b = encAppendLen(b, tagCheckResponseDynamicMetadata, meta)
	if a.meta.wouldDeny != "" {
		return encAppendStringEntry(b, metaWouldDeny, a.meta.wouldDeny)
	}
	b = encAppendKeyMeta(b, &a.meta)
	b = encAppendCacheAge(b, a.meta.cacheAgeMS)
	if a.meta.hasRemaining {
		b = encAppendNumberEntry(b, metaRemaining, a.meta.remaining)
	}
	return b
}

// encRemainingSize is the size of the remaining field: a number Value.
var encRemainingSize = encFieldSize(encEntrySize(metaRemaining, 1+8))

// encAppendNumberEntry appends a Struct.fields entry whose Value is the
// number n.
func encAppendNumberEntry(b []byte, key string, n int64) []byte {
	b = encAppendEntryHead(b, key, 1+8)
	b = append(b, tagValueNumber)
	return protowire.AppendFixed64(b, math.Float64bits(float64(n)))
}

// encAppendKeyMeta appends the dynamic metadata fields that depend on the
// key alone: all but cache_age_ms.
func encAppendKeyMeta(b []byte, m *allowMeta) []byte {
	b = encAppendStringEntry(b, metaKeyID, m.keyID)
	b = encAppendStringEntry(b, metaOrgID, m.orgID)
	b = encAppendStringEntry(b, metaUserID, m.userID)
	list := encListSize(m.scopes)
	b = encAppendEntryHead(b, metaScopes, encFieldSize(list))
	b = encAppendLen(b, tagValueList, list)
	for _, s := range m.scopes {
		b = encAppendLen(b, tagListValues, encStringValueSize(s))
		b = encAppendLen(b, tagValueString, len(s))
		b = append(b, s...)
	}
	b = encAppendStringEntry(b, metaEnvironment, m.environment)
	b = encAppendEntryHead(b, metaMetadata, encFieldSize(len(m.metadata)))
	b = encAppendLen(b, tagValueStruct, len(m.metadata))
	return append(b, m.metadata...)
}

func encKeyMetaSize(m *allowMeta) int {
	return encFieldSize(encStringEntrySize(metaKeyID, m.keyID)) +
		encFieldSize(encStringEntrySize(metaOrgID, m.orgID)) +
		encFieldSize(encStringEntrySize(metaUserID, m.userID)) +
		encFieldSize(encEntrySize(metaScopes, encFieldSize(encListSize(m.scopes)))) +
		encFieldSize(encStringEntrySize(metaEnvironment, m.environment)) +
		encFieldSize(encEntrySize(metaMetadata, encFieldSize(len(m.metadata))))
}

// encCacheAgeSize is the size of the cache_age_ms field: a number Value
// is a tag and eight bytes.
var encCacheAgeSize = encFieldSize(encEntrySize(metaCacheAge, 1+8))

// encAppendCacheAge appends the cache_age_ms field.
func encAppendCacheAge(b []byte, ageMS int64) []byte {
	b = encAppendEntryHead(b, metaCacheAge, 1+8)
	b = append(b, tagValueNumber)
	return protowire.AppendFixed64(b, math.Float64bits(float64(ageMS)))
}

func allowOKSize(a *allowOut) int {
	n := 0
	for _, h := range a.headers {
		n += encFieldSize(encHeaderOptionSize(h))
	}
	for _, name := range a.remove {
		n += encFieldSize(len(name))
	}
	for _, h := range a.responseHeaders {
		n += encFieldSize(encHeaderOptionSize(h))
	}
	return n
}

func allowMetaSize(m *allowMeta) int {
	if m.wouldDeny != "" {
		return encFieldSize(encStringEntrySize(metaWouldDeny, m.wouldDeny))
	}
	n := encKeyMetaSize(m) + encCacheAgeSize
	if m.hasRemaining {
		n += encRemainingSize
	}
	return n
}

// encFieldSize is the size of a length-delimited field of n bytes with a
// one-byte tag.
func encFieldSize(n int) int {
	if n < 0x80 {
		return 2 + n // a one-byte length: most fields
	}
	return 1 + protowire.SizeBytes(n)
}

// encAppendLen appends a one-byte tag and a length.
func encAppendLen(b []byte, tag byte, n int) []byte {
	if n < 0x80 {
		return append(b, tag, byte(n))
	}
	return protowire.AppendVarint(append(b, tag), uint64(n))
}

// encOptionalSize is the size of a proto3 string field holding s: nothing
// when s is empty, as proto.Marshal writes it.
func encOptionalSize(s string) int {
	if s == "" {
		return 0
	}
	return encFieldSize(len(s))
}

func encAppendOptional(b []byte, tag byte, s string) []byte {
	if s == "" {
		return b
	}
	return append(encAppendLen(b, tag, len(s)), s...)
}

// encHeaderOptionSize is the size of HeaderValueOption{header: {key, value},
// append: BoolValue{false}}; the BoolValue is present and empty.
func encHeaderOptionSize(h wireHeader) int {
	return encFieldSize(encOptionalSize(h.name)+encOptionalSize(h.value)) + 2
}

func encAppendHeaderOption(b []byte, tag byte, h wireHeader) []byte {
	hv := encOptionalSize(h.name) + encOptionalSize(h.value)
	b = encAppendLen(b, tag, encFieldSize(hv)+2)
	b = encAppendLen(b, tagHeaderOptionHeader, hv)
	b = encAppendOptional(b, tagHeaderKey, h.name)
	b = encAppendOptional(b, tagHeaderValue, h.value)
	return append(b, tagHeaderOptionAppend, 0)
}

// A Value's member is always written, even empty: a oneof member has
// presence.
func encStringValueSize(s string) int { return encFieldSize(len(s)) }

func encListSize(ss []string) int {
	n := 0
	for _, s := range ss {
		n += encFieldSize(encStringValueSize(s))
	}
	return n
}

// encEntrySize is the size of a Struct.fields entry whose Value is value bytes.
func encEntrySize(key string, value int) int { return encFieldSize(len(key)) + encFieldSize(value) }

func encStringEntrySize(key, s string) int { return encEntrySize(key, encStringValueSize(s)) }

// encAppendEntryHead appends a Struct.fields entry up to its Value's contents.
func encAppendEntryHead(b []byte, key string, value int) []byte {
	b = encAppendLen(b, tagStructFields, encEntrySize(key, value))
	b = append(encAppendLen(b, tagEntryKey, len(key)), key...)
	return encAppendLen(b, tagEntryValue, value)
}

func encAppendStringEntry(b []byte, key, s string) []byte {
	b = encAppendEntryHead(b, key, encStringValueSize(s))
	return append(encAppendLen(b, tagValueString, len(s)), s...)
}

// allowProto is the allow a as a protobuf message, for the in-process
// Check API: the message appendAllow writes.
func allowProto(a *allowOut) *authv3.CheckResponse {
	ok := &authv3.OkHttpResponse{
		Headers:              wireHeaderOptions(a.headers),
		HeadersToRemove:      a.remove,
		ResponseHeadersToAdd: wireHeaderOptions(a.responseHeaders),
	}
	m := &a.meta
	if m.wouldDeny != "" {
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
			DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
				metaWouldDeny: structpb.NewStringValue(m.wouldDeny),
			}},
		}
	}
	scopes := make([]*structpb.Value, len(m.scopes))
	for i, s := range m.scopes {
		scopes[i] = structpb.NewStringValue(s)
	}
	md := &structpb.Struct{}
	if len(m.metadata) > 0 {
		// encodeMetadata's output, which always decodes.
		_ = proto.Unmarshal(m.metadata, md)
	}
	fields := map[string]*structpb.Value{
		metaKeyID:       structpb.NewStringValue(m.keyID),
		metaOrgID:       structpb.NewStringValue(m.orgID),
		metaUserID:      structpb.NewStringValue(m.userID),
		metaScopes:      structpb.NewListValue(&structpb.ListValue{Values: scopes}),
		metaEnvironment: structpb.NewStringValue(m.environment),
		metaMetadata:    structpb.NewStructValue(md),
		metaCacheAge:    structpb.NewNumberValue(float64(m.cacheAgeMS)),
	}
	if m.hasRemaining {
		fields[metaRemaining] = structpb.NewNumberValue(float64(m.remaining))
	}
	return &authv3.CheckResponse{
		Status:          &rpcstatus.Status{},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: &structpb.Struct{Fields: fields},
	}
}

func wireHeaderOptions(hs []wireHeader) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = &corev3.HeaderValueOption{
			Header: &corev3.HeaderValue{Key: h.name, Value: h.value},
			Append: wrapperspb.Bool(false),
		}
	}
	return out
}

// validUTF8 reports whether every string of a is valid UTF-8, which
// proto.Marshal requires of proto3 strings and appendAllow assumes.
func (a *allowOut) validUTF8() bool {
	m := &a.meta
	if !wireHeadersValidUTF8(a.headers) || !wireStringsValidUTF8(a.remove) || !wireHeadersValidUTF8(a.responseHeaders) {
		return false
	}
	if m.wouldDeny != "" { // the only metadata written
		return utf8.ValidString(m.wouldDeny)
	}
	return wireStringsValidUTF8([]string{m.keyID, m.orgID, m.userID, m.environment}) && wireStringsValidUTF8(m.scopes)
}

// encodeMetadata is a key's metadata JSON object as the encoded Struct
// allowMeta.metadata holds: nil for an empty, null or unparsable object,
// which the allow carries as {} (as metadataValue does).
func encodeMetadata(raw json.RawMessage) []byte {
	var m map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return nil
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return nil
	}
	return b
}

// denyOut is everything a deny carries; appendDeny writes it as a
// CheckResponse and denyProto builds the same message with protobuf.
type denyOut struct {
	code       int32  // status.code: the gRPC code
	message    string // status.message
	httpStatus int32  // denied_response.status.code
	headers    []wireHeader
	body       string
}

// appendDeny appends to b the wire form of the deny d, which
// proto.Unmarshal reads back as denyProto(d) (FuzzDenyEncoding).
func appendDeny(b []byte, d *denyOut) []byte {
	status := encRPCStatusSize(d.code, d.message)
	httpStatus := encVarintFieldSize(d.httpStatus)
	denied := encFieldSize(httpStatus) + encOptionalSize(d.body)
	for _, h := range d.headers {
		denied += encFieldSize(encHeaderOptionSize(h))
	}
	b = slices.Grow(b, encFieldSize(status)+encFieldSize(denied))

	b = encAppendLen(b, tagCheckResponseStatus, status)
	b = encAppendVarintField(b, tagRPCStatusCode, d.code)
	b = encAppendOptional(b, tagRPCStatusMessage, d.message)
	b = encAppendLen(b, tagCheckResponseDenied, denied)
	b = encAppendLen(b, tagDeniedStatus, httpStatus)
	b = encAppendVarintField(b, tagHTTPStatusCode, d.httpStatus)
	for _, h := range d.headers {
		b = encAppendHeaderOption(b, tagDeniedHeaders, h)
	}
	return encAppendOptional(b, tagDeniedBody, d.body)
}

func encRPCStatusSize(code int32, message string) int {
	return encVarintFieldSize(code) + encOptionalSize(message)
}

// encVarintFieldSize is the size of a proto3 int32 or enum field holding v:
// nothing when it is 0; a negative v takes ten bytes, sign-extended.
func encVarintFieldSize(v int32) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(uint64(int64(v)))
}

func encAppendVarintField(b []byte, tag byte, v int32) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(append(b, tag), uint64(int64(v)))
}

// denyProto is the deny d as a protobuf message: the message appendDeny
// writes.
func denyProto(d *denyOut) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: d.code, Message: d.message},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.httpStatus)},
			Headers: wireHeaderOptions(d.headers),
			Body:    d.body,
		}},
	}
}

// validUTF8 reports whether every string of d is valid UTF-8.
func (d *denyOut) validUTF8() bool {
	return wireHeadersValidUTF8(d.headers) && wireStringsValidUTF8([]string{d.message, d.body})
}

func wireHeadersValidUTF8(hs []wireHeader) bool {
	for _, h := range hs {
		if !utf8.ValidString(h.name) || !utf8.ValidString(h.value) {
			return false
		}
	}
	return true
}

func wireStringsValidUTF8(ss []string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// wireResponse is a CheckResponse in wire form (appendAllow, appendDeny):
// wireCodec sends its bytes as they are. When pooled is set, b lies in that
// buffer of grpc's buffer pool, which takes it back once the bytes are
// written.
type wireResponse struct {
	b      []byte
	pooled *[]byte
}

// wireResponses recycles wireResponses: wireCodec.Marshal puts each back
// once it has taken its bytes.
var wireResponses = sync.Pool{New: func() any { return new(wireResponse) }}

// wireBufSize is the pooled buffer an answer is written into; a typical
// allow takes 350–500 bytes, a deny less.
const wireBufSize = 1024

// encode writes the answer into a buffer from grpc's pool, falling back
// to a buffer of its own when the answer outgrows it.
func (a *answer) encode() *wireResponse {
	w := wireResponses.Get().(*wireResponse)
	pool := mem.DefaultBufferPool()
	buf := pool.Get(wireBufSize)
	b := a.wire((*buf)[:0])
	if cap(b) == cap(*buf) && unsafe.SliceData(b) == unsafe.SliceData(*buf) {
		*buf = b
		w.b, w.pooled = b, buf
		return w
	}
	pool.Put(buf) // it grew into a buffer of its own
	w.b, w.pooled = b, nil
	return w
}

// errEmptyResponse is wireCodec's answer to an empty wireResponse. An
// empty CheckResponse has status OK, which Envoy takes for an allow: it
// is never sent.
var errEmptyResponse = errors.New("extauthz: empty Check response refused (it would allow)")

// wireCodec is the server's gRPC codec (install it with
// grpc.ForceServerCodecV2). It reads a Check request straight into a
// *checkInput with decodeCheckRequest and sends a *wireResponse's bytes
// as they are; every other message (health, reflection) goes through
// grpc's standard proto codec, whose name it keeps.
type wireCodec struct{ std encoding.CodecV2 }

// newWireCodec returns the codec, over grpc's standard proto codec.
func newWireCodec() (encoding.CodecV2, error) {
	std := encoding.GetCodecV2(grpcproto.Name)
	if std == nil {
		return nil, fmt.Errorf("extauthz: grpc's %q codec is not registered", grpcproto.Name)
	}
	return wireCodec{std: std}, nil
}

func (c wireCodec) Name() string { return grpcproto.Name }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*wireResponse); ok {
		if r == nil || len(r.b) == 0 {
			return nil, errEmptyResponse
		}
		var out mem.BufferSlice
		if r.pooled != nil {
			// grpc frees the buffer once written: back to its pool.
			out = mem.BufferSlice{mem.NewBuffer(r.pooled, mem.DefaultBufferPool())}
		} else {
			out = mem.BufferSlice{mem.SliceBuffer(r.b)}
		}
		*r = wireResponse{}
		wireResponses.Put(r)
		return out, nil
	}
	return c.std.Marshal(v)
}

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*checkInput)
	if !ok {
		return c.std.Unmarshal(data, v)
	}
	if len(data) == 1 {
		// The common case: the message in one buffer, read in place;
		// decodeCheckRequest copies what it keeps before grpc reuses it.
		return decodeCheckRequest(data[0].ReadOnlyData(), in)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return decodeCheckRequest(buf.ReadOnlyData(), in)
}

// checkFunc answers one Check read by wireCodec. It must not keep in, or
// its slices, once it returns (in is reused); the strings in it are its
// own to keep.
type checkFunc func(ctx context.Context, in *checkInput) (*wireResponse, error)

// checkInputs recycles the checkInputs of answered Checks: their slices
// are reused, so a Check's decode allocates only its strings.
var checkInputs = sync.Pool{New: func() any { return new(checkInput) }}

// checkServiceDesc is envoy.service.auth.v3.Authorization served by h over
// wireCodec, in place of authv3.RegisterAuthorizationServer:
//
//	gs := grpc.NewServer(grpc.ForceServerCodecV2(codec), …)
//	gs.RegisterService(checkServiceDesc(h), nil)
//
// Unary interceptors see the request as a *checkInput and the answer as a
// *wireResponse, and must not keep the request after they return.
func checkServiceDesc(h checkFunc) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Check",
			Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
				in := checkInputs.Get().(*checkInput)
				defer func() {
					in.reset()
					checkInputs.Put(in)
				}()
				if err := dec(in); err != nil {
					return nil, err
				}
				if interceptor == nil {
					return h(ctx, in)
				}
				info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
				return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					in, ok := req.(*checkInput)
					if !ok {
						return nil, fmt.Errorf("extauthz: Check request is a %T, want *checkInput", req)
					}
					return h(ctx, in)
				})
			},
		}},
		Streams:  []grpc.StreamDesc{},
		Metadata: authv3.Authorization_ServiceDesc.Metadata,
	}
}

// WireCodec is the server option Register needs: the codec that reads
// Check requests straight from the wire and sends answers as written, and
// hands every other message (health, reflection) to grpc's proto codec.
func WireCodec() (grpc.ServerOption, error) {
	c, err := newWireCodec()
	if err != nil {
		return nil, err
	}
	return grpc.ForceServerCodecV2(c), nil
}

// Register serves s as envoy.service.auth.v3.Authorization on gs, from the
// wire: gs must be made with WireCodec, or every Check fails (closed).
func (s *Server) Register(gs *grpc.Server) {
	gs.RegisterService(checkServiceDesc(s.checkWire), nil)
}
