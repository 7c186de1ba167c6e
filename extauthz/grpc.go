package extauthz

import (
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// ServerOptions are the gRPC server settings keygate serves Check with
// (cmd/keygate serve, and the null server of the load harness, so that its
// floor is measured with the same transport). BENCHMARKS.md shows what
// each is worth.
//
//   - NumStreamWorkers: a fixed pool of goroutines, one per CPU, runs the
//     handlers, instead of a new goroutine per RPC whose stack grows anew
//     for every Check.
//   - SharedWriteBuffer: a connection's write buffer is released between
//     writes; Envoy keeps few, busy connections, but a mesh of sidecars
//     keeps many idle ones.
//   - KeepaliveEnforcementPolicy: gRPC's default answers a client that
//     pings more often than every 5 minutes with GOAWAY
//     (too_many_pings), and Envoy's HTTP/2 connection_keepalive is
//     commonly set to tens of seconds: every Check in flight on that
//     connection would fail. Pings every 10 s or more are allowed, also
//     without a stream in flight (Envoy pings idle connections).
//   - KeepaliveParams: a connection with no traffic for 5 minutes is
//     pinged, so a dead Envoy's half-open connection is closed.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.SharedWriteBuffer(true),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 5 * time.Minute, Timeout: 20 * time.Second}),
	}
}
