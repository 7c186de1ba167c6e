package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"syscall"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keygate/keygate/extauthz"
)

// nullServer is an ext_authz server that allows everything without looking:
// the floor that gRPC, the loopback and the load generator set.
type nullServer struct {
	authv3.UnimplementedAuthorizationServer
	resp *authv3.CheckResponse // nil: a bare OK
}

var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{}}

func (n nullServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if n.resp != nil {
		return n.resp, nil
	}
	return okResponse, nil
}

// shapedResponse is an allow of the shape keygate answers with (identity
// headers set to overwrite, the credential removed, dynamic metadata with
// the same fields), built once: a null server answering it measures what
// gRPC costs for keygate's payload, without keygate's decision.
func shapedResponse() *authv3.CheckResponse {
	hdr := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapperspb.Bool(false)}
	}
	meta, err := structpb.NewStruct(map[string]any{
		"key_id": "key_01234567890123456789", "org_id": "org_bench_001", "user_id": "bench-user",
		"scopes": []any{"read", "write"}, "environment": "live", "metadata": map[string]any{"plan": "bench"},
		"cache_age_ms": 1234.0,
	})
	if err != nil {
		panic(err) // a constant
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				hdr("x-keygate-key-id", "key_01234567890123456789"), hdr("x-keygate-org-id", "org_bench_001"),
				hdr("x-keygate-user-id", "bench-user"), hdr("x-keygate-scopes", "read,write"),
				hdr("x-keygate-key-type", "secret"), hdr("x-keygate-environment", "live"),
			},
			HeadersToRemove: []string{"x-api-key"},
		}},
		DynamicMetadata: meta,
	}
}

// runNull is `bench null`: serve the null server until SIGTERM, with
// keygate's gRPC server options (or gRPC's defaults, -grpc-defaults).
func runNull(args []string) error {
	fs := flag.NewFlagSet("null", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	defaults := fs.Bool("grpc-defaults", false, "use gRPC's default server options instead of extauthz.ServerOptions")
	shaped := fs.Bool("shaped", false, "answer with an allow of keygate's shape instead of a bare OK")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopback(*addr); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var opts []grpc.ServerOption
	if !*defaults {
		opts = extauthz.ServerOptions()
	}
	gs := grpc.NewServer(opts...)
	ns := nullServer{}
	if *shaped {
		ns.resp = shapedResponse()
	}
	authv3.RegisterAuthorizationServer(gs, ns)
	reflection.Register(gs) // ghz finds the method by reflection, as with keygate
	go func() { <-ctx.Done(); gs.Stop() }()
	return gs.Serve(ln)
}
