package extauthz

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// checkInput is what the decision reads from a CheckRequest, from either
// decoder: decodeCheckRequest on the wire path, inputFromProto on the
// in-process one. Both give equal values for the same request.
type checkInput struct {
	method, path, id string // attributes.request.http.{method,path,id}
	// headers are the request headers. When header_map has entries
	// (Envoy's encode_raw_headers) they are its entries in wire order,
	// repeats kept, each value its raw_value when that is not empty, else
	// its value (as visitHeaders reads them). Otherwise they are the
	// headers map: one entry per name, sorted by name (bytewise).
	headers       []wireHeader
	sourceAddress string // attributes.source.address.socket_address.address
	principal     string // attributes.source.principal
	// clientAddr, when valid, is the client address a transport resolved
	// itself (DecideHTTP): the throttle counts it, and neither
	// sourceAddress nor the --client-ip-header. Check never sets it.
	clientAddr netip.Addr
	// ext is attributes.context_extensions, one entry per key, sorted by key.
	ext []wireHeader
}

// wireHeader is one header, or one context extension.
type wireHeader struct{ name, value string }

// reset empties in for the next request, keeping the capacity of its
// slices and dropping every string it held.
func (in *checkInput) reset() {
	clear(in.headers[:cap(in.headers)])
	clear(in.ext[:cap(in.ext)])
	*in = checkInput{headers: in.headers[:0], ext: in.ext[:0]}
}

// Errors of decodeCheckRequest: the three ways proto.Unmarshal fails on a
// CheckRequest.
var (
	errWireMalformed = errors.New("extauthz: CheckRequest is not valid protobuf wire format")
	errWireUTF8      = errors.New("extauthz: CheckRequest has a string field that is not valid UTF-8")
	errWireDepth     = errors.New("extauthz: CheckRequest exceeds protobuf's recursion limit")
)

// Field numbers read by decodeCheckRequest (go-control-plane v1.40.0;
// TestWire_FieldNumbersMatchGoControlPlane checks them against the
// generated descriptors).
const (
	fnCheckRequestAttributes = 1 // CheckRequest.attributes

	fnAttributesSource            = 1  // AttributeContext.source
	fnAttributesRequest           = 4  // AttributeContext.request
	fnAttributesContextExtensions = 10 // AttributeContext.context_extensions

	fnPeerAddress   = 1 // AttributeContext.Peer.address
	fnPeerPrincipal = 4 // AttributeContext.Peer.principal

	fnAddressSocketAddress = 1 // config.core.v3.Address.socket_address (oneof address)
	fnSocketAddressAddress = 2 // config.core.v3.SocketAddress.address

	fnRequestHTTP = 2 // AttributeContext.Request.http

	fnHTTPID        = 1  // HttpRequest.id
	fnHTTPMethod    = 2  // HttpRequest.method
	fnHTTPHeaders   = 3  // HttpRequest.headers
	fnHTTPPath      = 4  // HttpRequest.path
	fnHTTPHeaderMap = 13 // HttpRequest.header_map

	fnHeaderMapHeaders = 1 // config.core.v3.HeaderMap.headers

	fnHeaderValueKey      = 1 // config.core.v3.HeaderValue.key
	fnHeaderValueValue    = 2 // config.core.v3.HeaderValue.value
	fnHeaderValueRawValue = 3 // config.core.v3.HeaderValue.raw_value

	fnMapKey   = 1 // a map entry's key
	fnMapValue = 2 // a map entry's value
)

// decodeCheckRequest reads an envoy.service.auth.v3.CheckRequest from its
// wire form b into in, taking only what the decision reads and building no
// message. It accepts exactly the inputs proto.Unmarshal accepts (and then
// fills in exactly what inputFromProto reads from the message
// proto.Unmarshal builds): the fields it skips are still checked as
// proto.Unmarshal checks them, against the schema compiled into
// go-control-plane, so a request protobuf would refuse is refused here
// too. FuzzDecodeCheckRequest holds it to that.
//
// protobuf's merge rules hold: the last value of a scalar wins, an
// embedded message sent twice is merged, a map entry replaces an earlier
// one with the same key, a map entry without a key or value has "" for it,
// a known field with a wire type other than its own is an unknown field,
// and a oneof member replaces its siblings (an address's pipe after its
// socket_address clears the source address).
//
// Every string in in is a copy: b may be reused as soon as this returns
// (grpc-go recycles its receive buffers). The copies share one allocation.
// in's slices are reused when they have capacity, so a pooled checkInput
// costs that one allocation per request. On error in is left empty.
func decodeCheckRequest(b []byte, in *checkInput) error {
	in.reset()
	r := wireReader{in: in, s: wireSchema()}
	if cap(in.headers) == 0 && cap(in.ext) == 0 {
		// One allocation for both lists, sized for a typical request.
		buf := make([]wireHeader, 0, 24)
		in.headers, in.ext = buf[0:0:20], buf[20:20:24]
	}
	if err := r.checkRequest(b, protowire.DefaultRecursionLimit); err != nil {
		in.reset()
		return err
	}
	r.finish()
	return nil
}

// wireReader holds the state of one decodeCheckRequest. Until finish, the
// strings in in are views of the input.
type wireReader struct {
	in *checkInput
	s  *wireSchemas
	// raw is set by the first header_map entry: the headers map is then
	// no longer kept, only checked.
	raw bool
}

// The message readers below take the depth left to their parent, as
// protobuf's decoder does: every message, and every map entry, takes one
// from it, and a message below zero is an error.

func (r *wireReader) checkRequest(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if num == fnCheckRequestAttributes && typ == protowire.BytesType {
			var v []byte
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.attributes(v, d)
			}
		} else {
			rest, err = r.s.checkRequest.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) attributes(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		var v []byte
		switch {
		case num == fnAttributesSource && typ == protowire.BytesType:
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.peer(v, d)
			}
		case num == fnAttributesRequest && typ == protowire.BytesType:
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.request(v, d)
			}
		case num == fnAttributesContextExtensions && typ == protowire.BytesType:
			var k, val string
			if k, val, rest, err = wireStringEntry(rest, d); err == nil {
				r.in.ext = append(r.in.ext, wireHeader{k, val})
			}
		default:
			rest, err = r.s.attributes.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

// peer reads the source peer.
func (r *wireReader) peer(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		var v []byte
		switch {
		case num == fnPeerAddress && typ == protowire.BytesType:
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.address(v, d)
			}
		case num == fnPeerPrincipal && typ == protowire.BytesType:
			if v, rest, err = wireString(rest); err == nil {
				r.in.principal = wireView(v)
			}
		default:
			rest, err = r.s.peer.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

// address reads the source address, whose socket_address is one member of
// a oneof: a sibling member replaces it, and a socket_address after that
// starts afresh.
func (r *wireReader) address(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if num == fnAddressSocketAddress && typ == protowire.BytesType {
			var v []byte
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.socketAddress(v, d)
			}
		} else {
			if f := r.s.address.rule(num); f != nil && f.clearsAddress && typ == f.typ {
				r.in.sourceAddress = ""
			}
			rest, err = r.s.address.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) socketAddress(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if num == fnSocketAddressAddress && typ == protowire.BytesType {
			var v []byte
			if v, rest, err = wireString(rest); err == nil {
				r.in.sourceAddress = wireView(v)
			}
		} else {
			rest, err = r.s.socketAddress.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) request(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if num == fnRequestHTTP && typ == protowire.BytesType {
			var v []byte
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.http(v, d)
			}
		} else {
			rest, err = r.s.request.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) http(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if typ != protowire.BytesType {
			// Every field read here is length-delimited: any other
			// wire type makes it an unknown field.
			rest, err = r.s.http.skip(num, typ, rest, d)
			if err != nil {
				return err
			}
			b = rest
			continue
		}
		var v []byte
		switch num {
		case fnHTTPID:
			if v, rest, err = wireString(rest); err == nil {
				r.in.id = wireView(v)
			}
		case fnHTTPMethod:
			if v, rest, err = wireString(rest); err == nil {
				r.in.method = wireView(v)
			}
		case fnHTTPPath:
			if v, rest, err = wireString(rest); err == nil {
				r.in.path = wireView(v)
			}
		case fnHTTPHeaders:
			var k, val string
			if k, val, rest, err = wireStringEntry(rest, d); err == nil && !r.raw {
				r.in.headers = append(r.in.headers, wireHeader{k, val})
			}
		case fnHTTPHeaderMap:
			if v, rest, err = wireBytes(rest); err == nil {
				err = r.headerMap(v, d)
			}
		default:
			rest, err = r.s.http.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) headerMap(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if num == fnHeaderMapHeaders && typ == protowire.BytesType {
			var v []byte
			if v, rest, err = wireBytes(rest); err == nil {
				var h wireHeader
				if h, err = r.headerValue(v, d); err == nil {
					if !r.raw {
						// header_map has an entry: it replaces the headers map.
						r.raw = true
						clear(r.in.headers)
						r.in.headers = r.in.headers[:0]
					}
					r.in.headers = append(r.in.headers, h)
				}
			}
		} else {
			rest, err = r.s.headerMap.skip(num, typ, rest, d)
		}
		if err != nil {
			return err
		}
		b = rest
	}
	return nil
}

func (r *wireReader) headerValue(b []byte, d int) (wireHeader, error) {
	if d--; d < 0 {
		return wireHeader{}, errWireDepth
	}
	var key, value, raw []byte
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return wireHeader{}, err
		}
		switch {
		case num == fnHeaderValueKey && typ == protowire.BytesType:
			key, rest, err = wireString(rest)
		case num == fnHeaderValueValue && typ == protowire.BytesType:
			value, rest, err = wireString(rest)
		case num == fnHeaderValueRawValue && typ == protowire.BytesType:
			raw, rest, err = wireBytes(rest) // bytes: no UTF-8 check
		default:
			rest, err = r.s.headerValue.skip(num, typ, rest, d)
		}
		if err != nil {
			return wireHeader{}, err
		}
		b = rest
	}
	if len(raw) > 0 {
		value = raw
	}
	return wireHeader{wireView(key), wireView(value)}, nil
}

// finish puts the maps in their canonical order and copies every string
// into one allocation owned by in.
func (r *wireReader) finish() {
	in := r.in
	if !r.raw {
		in.headers = sortWireEntries(in.headers)
	}
	in.ext = sortWireEntries(in.ext)

	size := len(in.method) + len(in.path) + len(in.id) + len(in.sourceAddress) + len(in.principal)
	for _, h := range in.headers {
		size += len(h.name) + len(h.value)
	}
	for _, h := range in.ext {
		size += len(h.name) + len(h.value)
	}
	a := wireArena{b: make([]byte, 0, size)}
	in.method, in.path, in.id = a.copy(in.method), a.copy(in.path), a.copy(in.id)
	in.sourceAddress, in.principal = a.copy(in.sourceAddress), a.copy(in.principal)
	for i := range in.headers {
		h := &in.headers[i]
		h.name, h.value = a.copy(h.name), a.copy(h.value)
	}
	for i := range in.ext {
		h := &in.ext[i]
		h.name, h.value = a.copy(h.name), a.copy(h.value)
	}
}

// wireArena hands out strings from one buffer allocated for them. The buffer
// is never written again once a string covers it, and never reused, so
// the strings are as immutable as any other.
type wireArena struct{ b []byte }

func (a *wireArena) copy(s string) string {
	if s == "" {
		return ""
	}
	off := len(a.b)
	a.b = append(a.b, s...) // within capacity: a.b never moves
	return unsafe.String(&a.b[off], len(s))
}

// sortWireEntries puts map entries in key order, keeping for each key the last
// entry on the wire (protobuf's rule for a key sent twice).
func sortWireEntries(hs []wireHeader) []wireHeader {
	if len(hs) < 2 {
		return hs
	}
	slices.SortStableFunc(hs, func(a, b wireHeader) int { return strings.Compare(a.name, b.name) })
	out := hs[:0]
	for i := range hs {
		if i+1 < len(hs) && hs[i+1].name == hs[i].name {
			continue // a later entry has the same key
		}
		out = append(out, hs[i])
	}
	clear(hs[len(out):])
	return out
}

// view is b as a string without a copy. Only the reader uses it, and
// finish replaces every view before decodeCheckRequest returns.
func wireView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// wireTag reads a field's tag as protobuf's decoder does: a field number
// outside 1 to 2^29-1 and an end-group tag outside a group are errors.
func wireTag(b []byte) (protowire.Number, protowire.Type, []byte, error) {
	var v uint64
	var n int
	if len(b) > 0 && b[0] < 0x80 {
		v, n = uint64(b[0]), 1 // field numbers below 16: every tag read here
	} else if v, n = protowire.ConsumeVarint(b); n < 0 {
		return 0, 0, nil, errWireMalformed
	}
	num, typ := v>>3, protowire.Type(v&7)
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) || typ == protowire.EndGroupType {
		return 0, 0, nil, errWireMalformed
	}
	return protowire.Number(num), typ, b[n:], nil
}

// wireBytes reads a length-delimited value.
func wireBytes(b []byte) (v, rest []byte, err error) {
	if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
		n := 1 + int(b[0]) // shorter than 128 bytes: most values
		return b[1:n:n], b[n:], nil
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, nil, errWireMalformed
	}
	return v, b[n:], nil
}

// wireString reads a proto3 string: length-delimited and valid UTF-8.
func wireString(b []byte) (v, rest []byte, err error) {
	v, rest, err = wireBytes(b)
	if err == nil && !utf8.Valid(v) {
		return nil, nil, errWireUTF8
	}
	return v, rest, err
}

// wireStringEntry reads an entry of a map<string, string> field in a
// message with depth d left. The entry takes one from the depth before
// anything else, as protobuf's decoder does.
func wireStringEntry(b []byte, d int) (key, value string, rest []byte, err error) {
	if d-1 < 0 {
		return "", "", nil, errWireDepth
	}
	e, rest, err := wireBytes(b)
	if err != nil {
		return "", "", nil, err
	}
	var k, v []byte
	for len(e) > 0 {
		num, typ, erest, err := wireTag(e)
		if err != nil {
			return "", "", nil, err
		}
		switch {
		case num == fnMapKey && typ == protowire.BytesType:
			k, erest, err = wireString(erest)
		case num == fnMapValue && typ == protowire.BytesType:
			v, erest, err = wireString(erest)
		default:
			erest, err = wireSkipUnknown(num, typ, erest)
		}
		if err != nil {
			return "", "", nil, err
		}
		e = erest
	}
	return wireView(k), wireView(v), rest, nil
}

// wireSkipUnknown skips an unknown field's value, checking its structure.
func wireSkipUnknown(num protowire.Number, typ protowire.Type, b []byte) ([]byte, error) {
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return nil, errWireMalformed
	}
	return b[n:], nil
}

// inputFromProto is what the decision reads from a decoded CheckRequest:
// the in-process path's equivalent of decodeCheckRequest.
func inputFromProto(req *authv3.CheckRequest) checkInput {
	attrs := req.GetAttributes()
	http := attrs.GetRequest().GetHttp()
	in := checkInput{
		method:        http.GetMethod(),
		path:          http.GetPath(),
		id:            http.GetId(),
		sourceAddress: attrs.GetSource().GetAddress().GetSocketAddress().GetAddress(),
		principal:     attrs.GetSource().GetPrincipal(),
	}
	if hm := http.GetHeaderMap().GetHeaders(); len(hm) > 0 {
		in.headers = make([]wireHeader, len(hm))
		for i, hv := range hm {
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			in.headers[i] = wireHeader{hv.GetKey(), v}
		}
	} else {
		in.headers = sortedWireEntries(http.GetHeaders())
	}
	in.ext = sortedWireEntries(attrs.GetContextExtensions())
	return in
}

// sortedWireEntries is m in key order.
func sortedWireEntries(m map[string]string) []wireHeader {
	if len(m) == 0 {
		return nil
	}
	hs := make([]wireHeader, 0, len(m))
	for k, v := range m {
		hs = append(hs, wireHeader{k, v})
	}
	slices.SortFunc(hs, func(a, b wireHeader) int { return strings.Compare(a.name, b.name) })
	return hs
}

// The checks of the fields decodeCheckRequest skips come from the
// descriptors compiled into go-control-plane and protobuf: every message
// type a CheckRequest can hold, with the wire type of each field, which
// strings must be UTF-8 (proto3's), and which fields are messages or maps
// to check in turn. The schema follows the go-control-plane in go.mod with
// no list kept by hand.

// wireSchemas are the compiled schemas of the messages the reader walks.
type wireSchemas struct {
	checkRequest, attributes, peer, address, socketAddress,
	request, http, headerMap, headerValue *wireMsg
}

// wireMsg is one message type's fields, by number.
type wireMsg struct {
	dense  []wireRule // numbers below len(dense); the zero rule is an unknown field
	sparse map[protowire.Number]*wireRule
}

// wireRule is what protobuf's decoder checks of one known field.
type wireRule struct {
	known bool
	typ   protowire.Type // the wire type of one value
	// packed: a repeated number, which is also accepted packed.
	packed bool
	utf8   bool     // a string checked for UTF-8
	isMap  bool     // a map: msg is its entry type
	msg    *wireMsg // the message (or map entry) to check inside
	// clearsAddress marks the siblings of socket_address in Address's
	// oneof: setting one clears the source address.
	clearsAddress bool
}

// wireSchema compiles the schemas once.
var wireSchema = sync.OnceValue(func() *wireSchemas {
	memo := map[protoreflect.FullName]*wireMsg{}
	msg := func(m proto.Message) *wireMsg { return compileWireMsg(m.ProtoReflect().Descriptor(), memo) }
	s := &wireSchemas{
		checkRequest:  msg((*authv3.CheckRequest)(nil)),
		attributes:    msg((*authv3.AttributeContext)(nil)),
		peer:          msg((*authv3.AttributeContext_Peer)(nil)),
		address:       msg((*corev3.Address)(nil)),
		socketAddress: msg((*corev3.SocketAddress)(nil)),
		request:       msg((*authv3.AttributeContext_Request)(nil)),
		http:          msg((*authv3.AttributeContext_HttpRequest)(nil)),
		headerMap:     msg((*corev3.HeaderMap)(nil)),
		headerValue:   msg((*corev3.HeaderValue)(nil)),
	}
	addr := (*corev3.Address)(nil).ProtoReflect().Descriptor()
	oneof := addr.Fields().ByNumber(fnAddressSocketAddress).ContainingOneof().Fields()
	for i := range oneof.Len() {
		if fd := oneof.Get(i); fd.Number() != fnAddressSocketAddress {
			s.address.rule(fd.Number()).clearsAddress = true
		}
	}
	return s
})

// denseFields bounds the field numbers looked up by index.
const denseFields = 64

func compileWireMsg(md protoreflect.MessageDescriptor, memo map[protoreflect.FullName]*wireMsg) *wireMsg {
	if m, ok := memo[md.FullName()]; ok {
		return m
	}
	m := &wireMsg{}
	memo[md.FullName()] = m // before the fields: types may be recursive
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if n := int(fd.Number()); n < denseFields && n >= len(m.dense) {
			m.dense = slices.Grow(m.dense, n+1-len(m.dense))[:n+1]
		}
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		r := wireRule{known: true, typ: wireTypeOf(fd.Kind())}
		switch {
		case fd.IsMap():
			r.isMap, r.msg = true, compileWireMsg(fd.Message(), memo)
		case fd.Kind() == protoreflect.MessageKind:
			r.msg = compileWireMsg(fd.Message(), memo)
		case fd.Kind() == protoreflect.GroupKind:
			// proto2 only, and none in a CheckRequest
			// (TestWire_SchemaIsProto3Only): treated as unknown.
			continue
		}
		r.packed = fd.IsList() && r.typ != protowire.BytesType
		r.utf8 = fd.Kind() == protoreflect.StringKind && enforceUTF8(fd)
		if n := fd.Number(); int(n) < len(m.dense) {
			m.dense[n] = r
		} else {
			if m.sparse == nil {
				m.sparse = map[protowire.Number]*wireRule{}
			}
			m.sparse[n] = &r
		}
	}
	return m
}

// enforceUTF8 is protobuf's rule (internal/strs.EnforceUTF8): proto3
// strings are checked, proto2 ones are not, editions say per field.
func enforceUTF8(fd protoreflect.FieldDescriptor) bool {
	if fd.Syntax() == protoreflect.Editions {
		if e, ok := fd.(interface{ EnforceUTF8() bool }); ok {
			return e.EnforceUTF8()
		}
	}
	return fd.Syntax() == protoreflect.Proto3
}

func wireTypeOf(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.BoolKind, protoreflect.EnumKind,
		protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
		return protowire.VarintType
	case protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	}
	return protowire.BytesType // string, bytes, message
}

// rule is field num's rule, or nil for an unknown field.
func (m *wireMsg) rule(num protowire.Number) *wireRule {
	if int(num) < len(m.dense) {
		if r := &m.dense[num]; r.known {
			return r
		}
		return nil
	}
	return m.sparse[num]
}

// skip checks and skips field num of wire type typ in a message with
// depth d left, as protobuf's decoder reads it, returning what follows.
func (m *wireMsg) skip(num protowire.Number, typ protowire.Type, b []byte, d int) ([]byte, error) {
	r := m.rule(num)
	if r == nil {
		return wireSkipUnknown(num, typ, b)
	}
	if r.isMap && d-1 < 0 {
		return nil, errWireDepth // checked before the wire type, as protobuf does
	}
	if typ != r.typ {
		if r.packed && typ == protowire.BytesType {
			return wireSkipPacked(r.typ, b)
		}
		return wireSkipUnknown(num, typ, b) // a wire type not its own: unknown
	}
	var n int
	switch typ {
	case protowire.VarintType:
		_, n = protowire.ConsumeVarint(b)
	case protowire.Fixed32Type:
		_, n = protowire.ConsumeFixed32(b)
	case protowire.Fixed64Type:
		_, n = protowire.ConsumeFixed64(b)
	case protowire.BytesType:
		v, rest, err := wireBytes(b)
		switch {
		case err != nil:
			return nil, err
		case r.utf8 && !utf8.Valid(v):
			return nil, errWireUTF8
		case r.isMap:
			err = r.msg.check(v, d-1) // the entry shares the map's depth
		case r.msg != nil:
			err = r.msg.checkMessage(v, d)
		}
		return rest, err
	default:
		return wireSkipUnknown(num, typ, b)
	}
	if n < 0 {
		return nil, errWireMalformed
	}
	return b[n:], nil
}

// checkMessage checks a message in a parent with depth d left.
func (m *wireMsg) checkMessage(b []byte, d int) error {
	if d--; d < 0 {
		return errWireDepth
	}
	return m.check(b, d)
}

// check checks the fields of a message (or map entry) with depth d left.
func (m *wireMsg) check(b []byte, d int) error {
	for len(b) > 0 {
		num, typ, rest, err := wireTag(b)
		if err != nil {
			return err
		}
		if b, err = m.skip(num, typ, rest, d); err != nil {
			return err
		}
	}
	return nil
}

// wireSkipPacked checks and skips a packed run of numbers of wire type typ.
func wireSkipPacked(typ protowire.Type, b []byte) ([]byte, error) {
	v, rest, err := wireBytes(b)
	if err != nil {
		return nil, err
	}
	for len(v) > 0 {
		var n int
		switch typ {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(v)
		case protowire.Fixed32Type:
			_, n = protowire.ConsumeFixed32(v)
		case protowire.Fixed64Type:
			_, n = protowire.ConsumeFixed64(v)
		}
		if n < 0 {
			return nil, errWireMalformed
		}
		v = v[n:]
	}
	return rest, nil
}
