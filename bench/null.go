package main

import (
	"context"
	"flag"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/keygate/keygate/extauthz"
)

// nullServer is an ext_authz server that allows everything without looking:
// the floor that gRPC, the loopback and the load generator set.
type nullServer struct {
	authv3.UnimplementedAuthorizationServer
}

var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{}}

func (nullServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// runNull is `bench null`: serve the null server until SIGTERM, with
// keygate's gRPC server options (or gRPC's defaults, -grpc-defaults).
func runNull(args []string) error {
	fs := flag.NewFlagSet("null", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	defaults := fs.Bool("grpc-defaults", false, "use gRPC's default server options instead of extauthz.ServerOptions")
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
	authv3.RegisterAuthorizationServer(gs, nullServer{})
	reflection.Register(gs) // ghz finds the method by reflection, as with keygate
	go func() { <-ctx.Done(); gs.Stop() }()
	return gs.Serve(ln)
}
