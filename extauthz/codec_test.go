package extauthz

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/ratelimit"
)

// TestAllow_FieldNumbersMatchGoControlPlane checks every tag the encoders
// write against the generated descriptors.
func TestAllow_FieldNumbersMatchGoControlPlane(t *testing.T) {
	checkFieldTags(t, []fieldTag{
		{(*authv3.CheckResponse)(nil), "status", tagCheckResponseStatus},
		{(*authv3.CheckResponse)(nil), "denied_response", tagCheckResponseDenied},
		{(*authv3.CheckResponse)(nil), "ok_response", tagCheckResponseOK},
		{(*authv3.CheckResponse)(nil), "dynamic_metadata", tagCheckResponseDynamicMetadata},
		{(*authv3.OkHttpResponse)(nil), "headers", tagOKHeaders},
		{(*authv3.OkHttpResponse)(nil), "headers_to_remove", tagOKHeadersToRemove},
		{(*authv3.OkHttpResponse)(nil), "response_headers_to_add", tagOKResponseHeadersToAdd},
		{(*authv3.DeniedHttpResponse)(nil), "status", tagDeniedStatus},
		{(*authv3.DeniedHttpResponse)(nil), "headers", tagDeniedHeaders},
		{(*authv3.DeniedHttpResponse)(nil), "body", tagDeniedBody},
		{(*typev3.HttpStatus)(nil), "code", tagHTTPStatusCode},
		{(*rpcstatus.Status)(nil), "code", tagRPCStatusCode},
		{(*rpcstatus.Status)(nil), "message", tagRPCStatusMessage},
		{(*corev3.HeaderValueOption)(nil), "header", tagHeaderOptionHeader},
		{(*corev3.HeaderValueOption)(nil), "append", tagHeaderOptionAppend},
		{(*corev3.HeaderValue)(nil), "key", tagHeaderKey},
		{(*corev3.HeaderValue)(nil), "value", tagHeaderValue},
		{(*structpb.Struct)(nil), "fields", tagStructFields},
		{(*structpb.Value)(nil), "number_value", tagValueNumber},
		{(*structpb.Value)(nil), "string_value", tagValueString},
		{(*structpb.Value)(nil), "struct_value", tagValueStruct},
		{(*structpb.Value)(nil), "list_value", tagValueList},
		{(*structpb.ListValue)(nil), "values", tagListValues},
	})
}

// wireTypicalAllow is the allow of a secret key with metadata, the token
// taken from x-api-key.
func wireTypicalAllow() *allowOut {
	return &allowOut{
		headers: []wireHeader{
			{"x-keygate-key-id", "key_0123456789abcdefghij"}, {"x-keygate-org-id", "org_2f9c1b7e"},
			{"x-keygate-user-id", "user_8d1e44a0"}, {"x-keygate-scopes", "read,write"},
			{"x-keygate-key-type", "secret"}, {"x-keygate-environment", "live"},
		},
		remove: []string{"x-api-key"},
		meta: allowMeta{
			keyID: "key_0123456789abcdefghij", orgID: "org_2f9c1b7e", userID: "user_8d1e44a0",
			scopes: []string{"read", "write"}, environment: "live",
			metadata:   encodeMetadata(json.RawMessage(`{"plan":"pro","team":"payments"}`)),
			cacheAgeMS: 1500,
		},
	}
}

// wireRateLimitedAllow is wireTypicalAllow with ratelimit-* headers and a
// smuggled identity header removed.
func wireRateLimitedAllow() *allowOut {
	a := wireTypicalAllow()
	a.remove = []string{"x-api-key", "authorization", "x-keygate-forged"}
	a.responseHeaders = []wireHeader{{"ratelimit-limit", "600"}, {"ratelimit-remaining", "599"}, {"ratelimit-reset", "1"}}
	return a
}

// TestAppendAllow_DecodesToAllowProto: what appendAllow writes is the
// message allowProto builds, of the size protobuf gives it.
func TestAppendAllow_DecodesToAllowProto(t *testing.T) {
	tests := []struct {
		name string
		a    *allowOut
	}{
		{"typical", wireTypicalAllow()},
		{"rate limited, removing", wireRateLimitedAllow()},
		{"empty", &allowOut{}},
		{"empty strings kept where protobuf keeps them", &allowOut{
			headers: []wireHeader{{"", ""}, {"x-empty", ""}}, remove: []string{""}, responseHeaders: []wireHeader{{"", "v"}},
			meta: allowMeta{scopes: []string{"", "read"}},
		}},
		{"nested metadata, negative age", &allowOut{meta: allowMeta{
			metadata:   encodeMetadata(json.RawMessage(`{"a":{"b":[1,"x",null,true,{"c":[]}]},"d":-0.5}`)),
			cacheAgeMS: -3,
		}}},
		{"long values", &allowOut{headers: []wireHeader{{"x-long", strings.Repeat("v", 300)}}, meta: allowMeta{keyID: strings.Repeat("k", 200)}}},
		{"usage-limited", func() *allowOut {
			a := wireTypicalAllow()
			a.headers = append(a.headers, wireHeader{"x-keygate-remaining", "41"})
			a.meta.remaining, a.meta.hasRemaining = 41, true
			return a
		}()},
		{"usage-limited, none left", &allowOut{meta: allowMeta{hasRemaining: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendAllow([]byte("keep"), tt.a)
			if !bytes.HasPrefix(b, []byte("keep")) {
				t.Fatalf("appendAllow overwrote b")
			}
			b = b[len("keep"):]
			var got authv3.CheckResponse
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			want := allowProto(tt.a)
			if d := cmp.Diff(want, &got, protocmp.Transform()); d != "" {
				t.Errorf("appendAllow (-allowProto +wire):\n%s", d)
			}
			if n := proto.Size(want); n != len(b) {
				t.Errorf("appendAllow wrote %d bytes, proto.Marshal %d", len(b), n)
			}
		})
	}
}

// TestWireAllowFragments_WriteAppendAllowsBytes: the measured alternative
// (per-key fragments) writes exactly what appendAllow writes.
func TestWireAllowFragments_WriteAppendAllowsBytes(t *testing.T) {
	for _, a := range []*allowOut{wireTypicalAllow(), wireRateLimitedAllow(), {}} {
		got := newWireAllowFragments(a).appendAllow(nil, a.remove, a.responseHeaders, a.meta.cacheAgeMS)
		if want := appendAllow(nil, a); !bytes.Equal(got, want) {
			t.Errorf("fragments wrote\n%x\nappendAllow\n%x", got, want)
		}
	}
}

// wireShapeLookup holds one key record.
type wireShapeLookup struct {
	hash keygate.Hash
	rec  *keygate.KeyRecord
}

func (l *wireShapeLookup) LookupKey(_ context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	if h != l.hash {
		return nil, keygate.ErrNotFound
	}
	return l.rec, nil
}

// allowOutOf reads an allow back into the allowOut that describes it.
func allowOutOf(t *testing.T, resp *authv3.CheckResponse) *allowOut {
	t.Helper()
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("not an allow: %v", resp)
	}
	hs := func(opts []*corev3.HeaderValueOption) []wireHeader {
		var out []wireHeader
		for _, o := range opts {
			out = append(out, wireHeader{o.GetHeader().GetKey(), o.GetHeader().GetValue()})
		}
		return out
	}
	f := resp.GetDynamicMetadata().GetFields()
	var scopes []string
	for _, v := range f[metaScopes].GetListValue().GetValues() {
		scopes = append(scopes, v.GetStringValue())
	}
	md, err := proto.Marshal(f[metaMetadata].GetStructValue())
	if err != nil {
		t.Fatal(err)
	}
	return &allowOut{
		headers: hs(ok.GetHeaders()), remove: ok.GetHeadersToRemove(), responseHeaders: hs(ok.GetResponseHeadersToAdd()),
		meta: allowMeta{
			keyID: f[metaKeyID].GetStringValue(), orgID: f[metaOrgID].GetStringValue(), userID: f[metaUserID].GetStringValue(),
			scopes: scopes, environment: f[metaEnvironment].GetStringValue(), metadata: md,
			cacheAgeMS: int64(f[metaCacheAge].GetNumberValue()),
		},
	}
}

// TestAllowProto_IsTheShapeCheckAnswers: the allow Server.Check gives
// today (status OK, every header with append: false, the seven metadata
// fields) is exactly allowProto of the allowOut read back from it, and
// appendAllow writes that message.
func TestAllowProto_IsTheShapeCheckAnswers(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	format := apikey.DefaultFormat()
	tok, err := format.Generate(keygate.Secret, keygate.Live)
	if err != nil {
		t.Fatal(err)
	}
	lookup := &wireShapeLookup{hash: tok.Hash(), rec: &keygate.KeyRecord{
		Key: keygate.Key{
			ID: "key_0123456789abcdefghij", OrgID: "acme", UserID: "alice", Name: "ci",
			Type: keygate.Secret, Environment: keygate.Live, Scopes: []string{"read", "write"},
			ProjectIDs: []string{"p1", "p2"}, Metadata: json.RawMessage(`{"plan":"pro","n":[1,2]}`),
		},
		LoadedAt: now.Add(-1500 * time.Millisecond),
	}}
	limiter, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Direct(lookup), Config{Format: format, StripCredentials: true, Now: func() time.Time { return now }, Limiter: limiter, DefaultRateLimit: 100})
	if err != nil {
		t.Fatal(err)
	}
	for _, headers := range []map[string]string{
		{"x-api-key": tok.String()},
		{"authorization": "Bearer " + tok.String(), "x-keygate-org-id": "forged", "x-keygate-extra": "smuggled"},
	} {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/things", Headers: headers},
		}}}
		resp, err := srv.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		a := allowOutOf(t, resp)
		if d := cmp.Diff(resp, allowProto(a), protocmp.Transform()); d != "" {
			t.Errorf("allowProto differs from Check's allow (-Check +allowProto):\n%s", d)
		}
		var wire authv3.CheckResponse
		if err := proto.Unmarshal(appendAllow(nil, a), &wire); err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(resp, &wire, protocmp.Transform()); d != "" {
			t.Errorf("appendAllow differs from Check's allow (-Check +wire):\n%s", d)
		}
		if got := resp.GetOkResponse().GetHeaders()[0].GetAppend(); !proto.Equal(got, wrapperspb.Bool(false)) {
			t.Errorf("append = %v, want BoolValue(false)", got)
		}
	}
}

// TestAppendDeny_DecodesToDenyProto: the denies keygate sends, written by
// appendDeny, are denyProto's messages.
func TestAppendDeny_DecodesToDenyProto(t *testing.T) {
	for _, d := range []*denyOut{
		{code: int32(codes.Unauthenticated), message: "invalid_api_key", httpStatus: 401,
			headers: []wireHeader{{"content-type", "application/json"}, {"www-authenticate", `Bearer realm="keygate", error="invalid_token"`}},
			body:    `{"error":{"code":"invalid_api_key"},"meta":{"request_id":"r1"}}`},
		{code: int32(codes.ResourceExhausted), message: "rate_limited", httpStatus: 429,
			headers: []wireHeader{{"content-type", "application/json"}, {"ratelimit-limit", "10"}, {"retry-after", "6"}}},
		{},
		{code: -1, httpStatus: -7},
	} {
		b := appendDeny(nil, d)
		var got authv3.CheckResponse
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := denyProto(d)
		if diff := cmp.Diff(want, &got, protocmp.Transform()); diff != "" {
			t.Errorf("appendDeny (-denyProto +wire):\n%s", diff)
		}
		if n := proto.Size(want); n != len(b) {
			t.Errorf("appendDeny wrote %d bytes, proto.Marshal %d", len(b), n)
		}
	}
}

// TestEncodeMetadata: a key's metadata becomes the Struct the allow
// carries; an empty, null or unparsable object is nil, carried as {}.
func TestEncodeMetadata(t *testing.T) {
	for _, raw := range []string{"", "{}", "null", "not json", "[1,2]"} {
		if b := encodeMetadata(json.RawMessage(raw)); b != nil {
			t.Errorf("encodeMetadata(%q) = %x, want nil", raw, b)
		}
	}
	raw := `{"plan":"pro","limits":{"rps":10,"tags":["a",true,null]}}`
	var st structpb.Struct
	if err := proto.Unmarshal(encodeMetadata(json.RawMessage(raw)), &st); err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, st.AsMap()); d != "" {
		t.Errorf("metadata (-want +got):\n%s", d)
	}
	if !bytes.Equal(encodeMetadata(json.RawMessage(raw)), encodeMetadata(json.RawMessage(raw))) {
		t.Errorf("encodeMetadata is not deterministic")
	}
}

// TestAllowOut_ValidUTF8 says exactly when proto.Marshal would refuse the
// allow.
func TestAllowOut_ValidUTF8(t *testing.T) {
	bad := "\xff"
	for _, mod := range []func(a *allowOut){
		func(a *allowOut) { a.headers[0].value = bad },
		func(a *allowOut) { a.remove = []string{bad} },
		func(a *allowOut) { a.responseHeaders = []wireHeader{{bad, "1"}} },
		func(a *allowOut) { a.meta.userID = bad },
		func(a *allowOut) { a.meta.scopes = []string{"read", bad} },
		func(a *allowOut) { a.meta.environment = bad },
	} {
		a := wireTypicalAllow()
		mod(a)
		if a.validUTF8() {
			t.Errorf("validUTF8 true for %+v", a)
		}
		if _, err := proto.Marshal(allowProto(a)); err == nil {
			t.Errorf("proto.Marshal accepts %+v", a)
		}
	}
	if !wireTypicalAllow().validUTF8() {
		t.Errorf("validUTF8 false for the typical allow")
	}
}

// startWireServer serves Check by h over wireCodec on 127.0.0.1, with
// health and reflection as serve registers them, and returns a client.
func startWireServer(t *testing.T, h checkFunc, opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	codec, err := newWireCodec()
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(codec), grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))), grpc.SharedWriteBuffer(true),
	}, opts...)...)
	gs.RegisterService(checkServiceDesc(h), nil)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

// cloneInput is a copy of in that outlives the handler (in is pooled).
func cloneInput(in *checkInput) checkInput {
	c := *in
	c.headers, c.ext = slices.Clone(in.headers), slices.Clone(in.ext)
	return c
}

// echoAllow is an allow telling what the handler read: method, path,
// source, and every header, as x-echo-h-<name>.
func echoAllow(in *checkInput) *allowOut {
	a := &allowOut{headers: []wireHeader{{"x-echo-method", in.method}, {"x-echo-path", in.path}, {"x-echo-source", in.sourceAddress}}}
	for _, h := range in.headers {
		a.headers = append(a.headers, wireHeader{"x-echo-h-" + strings.TrimPrefix(h.name, ":"), h.value})
	}
	a.meta.keyID = in.id
	return a
}

// TestWireCodec_ServesCheckToAProtobufClient: a standard client sends
// CheckRequests built with protobuf; the handler reads the inputs
// inputFromProto gives, and the client reads the allow allowProto builds.
func TestWireCodec_ServesCheckToAProtobufClient(t *testing.T) {
	var mu sync.Mutex
	var got []checkInput
	conn := startWireServer(t, func(_ context.Context, in *checkInput) (*wireResponse, error) {
		mu.Lock()
		got = append(got, cloneInput(in))
		mu.Unlock()
		return &wireResponse{b: appendAllow(nil, echoAllow(in))}, nil
	})
	client := authv3.NewAuthorizationClient(conn)
	for i, req := range []*authv3.CheckRequest{wireEnvoyRequest("tok-map"), wireRawRequest("tok-raw"), {}} {
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		want := inputFromProto(req)
		if d := inputDiff(want, got[i]); d != "" {
			t.Errorf("request %d: handler read (-want +got):\n%s", i, d)
		}
		if d := cmp.Diff(allowProto(echoAllow(&want)), resp, protocmp.Transform()); d != "" {
			t.Errorf("request %d: response (-want +got):\n%s", i, d)
		}
	}
}

// TestWireCodec_HealthAndReflectionStillWork: every message but Check's
// goes through grpc's proto codec.
func TestWireCodec_HealthAndReflectionStillWork(t *testing.T) {
	conn := startWireServer(t, func(context.Context, *checkInput) (*wireResponse, error) {
		return nil, errors.New("not called")
	})
	ctx := context.Background()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v", hr.GetStatus())
	}

	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	list := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	var names []string
	for _, s := range list.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{authv3.Authorization_ServiceDesc.ServiceName, "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	file := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: authv3.Authorization_ServiceDesc.ServiceName,
	}})
	if len(file.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection has no file for %s: %v", authv3.Authorization_ServiceDesc.ServiceName, file)
	}
}

// TestWireCodec_DistinctTokensNeverMixUnderLoad: many clients at once,
// each token distinct and of its own length; every answer must echo its
// own request. A reader keeping views of grpc's recycled buffers fails
// this (run it with -race).
func TestWireCodec_DistinctTokensNeverMixUnderLoad(t *testing.T) {
	conns := make([]*grpc.ClientConn, 4)
	h := func(_ context.Context, in *checkInput) (*wireResponse, error) {
		runtime.Gosched() // let other requests land in between
		return &wireResponse{b: appendAllow(nil, echoAllow(in))}, nil
	}
	conns[0] = startWireServer(t, h)
	target := conns[0].Target()
	for i := 1; i < len(conns); i++ {
		c, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	const workers, each = 32, 40
	var g errgroup.Group
	for w := range workers {
		client := authv3.NewAuthorizationClient(conns[w%len(conns)])
		g.Go(func() error {
			for i := range each {
				tok := fmt.Sprintf("kg_%02d_%03d_%s", w, i, strings.Repeat("z", (w*7+i)%61))
				// Padding past grpc's pooling threshold (1 KiB): only
				// larger messages arrive in recycled buffers.
				pad := strings.Repeat("p", 1100+(w*13+i)%900)
				req := wireEnvoyRequest(tok)
				req.Attributes.Request.Http.Headers["x-api-key"] = tok
				req.Attributes.Request.Http.Headers["x-pad"] = pad
				if i%2 == 1 {
					req = wireRawRequest(tok)
					req.Attributes.Request.Http.HeaderMap.Headers = append(req.Attributes.Request.Http.HeaderMap.Headers,
						&corev3.HeaderValue{Key: "x-api-key", RawValue: []byte(tok)}, &corev3.HeaderValue{Key: "x-pad", Value: pad})
				}
				req.Attributes.Request.Http.Path = "/v1/" + tok
				resp, err := client.Check(context.Background(), req)
				if err != nil {
					return err
				}
				got := map[string]string{}
				for _, o := range resp.GetOkResponse().GetHeaders() {
					got[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
				}
				if got["x-echo-h-x-api-key"] != tok || got["x-echo-h-authorization"] != "Bearer "+tok || got["x-echo-path"] != "/v1/"+tok {
					return fmt.Errorf("request with token %s answered with x-api-key %q, authorization %q, path %q",
						tok, got["x-echo-h-x-api-key"], got["x-echo-h-authorization"], got["x-echo-path"])
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// rawCodec is a client codec sending and receiving bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// TestWireCodec_FailsClosed: a request protobuf would refuse, and an
// empty or missing answer (which Envoy would read as status OK, an
// allow), are gRPC errors.
func TestWireCodec_FailsClosed(t *testing.T) {
	var calls int
	var mu sync.Mutex
	answer := &wireResponse{}
	conn := startWireServer(t, func(context.Context, *checkInput) (*wireResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return answer, nil
	})
	ctx := context.Background()
	raw := func(req []byte) error {
		var resp []byte
		return conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, &req, &resp, grpc.ForceCodecV2(rawCodec{}))
	}
	if err := raw(pbHTTP(pbString(fnHTTPMethod, "GET\xff"))); status.Code(err) != codes.Internal {
		t.Errorf("invalid UTF-8: %v, want Internal", err)
	}
	if err := raw([]byte{0x0a, 0x05, 0x01}); status.Code(err) != codes.Internal {
		t.Errorf("truncated: %v, want Internal", err)
	}
	if calls != 0 {
		t.Errorf("the handler ran %d times on malformed requests", calls)
	}
	client := authv3.NewAuthorizationClient(conn)
	if resp, err := client.Check(ctx, &authv3.CheckRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("empty answer: %v, %v; want Internal", resp, err)
	}
	mu.Lock()
	answer = nil
	mu.Unlock()
	if resp, err := client.Check(ctx, &authv3.CheckRequest{}); status.Code(err) != codes.Internal {
		t.Errorf("nil answer: %v, %v; want Internal", resp, err)
	}
}

// TestWireCodec_InterceptorSeesTheCall: unary interceptors (metrics) run
// around Check with its method name and the decoded input.
func TestWireCodec_InterceptorSeesTheCall(t *testing.T) {
	var method string
	var req any
	conn := startWireServer(t, func(_ context.Context, in *checkInput) (*wireResponse, error) {
		return &wireResponse{b: appendAllow(nil, echoAllow(in))}, nil
	}, grpc.UnaryInterceptor(func(ctx context.Context, r any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		method, req = info.FullMethod, r
		return h(ctx, r)
	}))
	resp, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), wireEnvoyRequest("t"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil {
		t.Errorf("not an allow: %v", resp)
	}
	if _, ok := req.(*checkInput); !ok || method != authv3.Authorization_Check_FullMethodName {
		t.Errorf("interceptor saw %s with %T", method, req)
	}
}

// TestWireCodec_ReadsSplitBuffers: a request spread over several buffers
// reads as one.
func TestWireCodec_ReadsSplitBuffers(t *testing.T) {
	codec, err := newWireCodec()
	if err != nil {
		t.Fatal(err)
	}
	req := wireEnvoyRequest("tok")
	b := mustMarshal(t, req)
	var in checkInput
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:7]), mem.SliceBuffer(b[7:100]), mem.SliceBuffer(b[100:])}, &in); err != nil {
		t.Fatal(err)
	}
	if d := inputDiff(inputFromProto(req), in); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	// Other messages: grpc's proto codec.
	out, err := codec.Marshal(&healthpb.HealthCheckRequest{Service: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var hr healthpb.HealthCheckRequest
	if err := codec.Unmarshal(out, &hr); err != nil || hr.GetService() != "s" {
		t.Errorf("health request round trip: %v, %v", &hr, err)
	}
	if codec.Name() != "proto" {
		t.Errorf("Name = %q", codec.Name())
	}
}
