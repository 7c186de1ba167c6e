// Package extauthz decides: it implements Envoy's ext_authz v3
// Authorization service over a key lookup.
package extauthz

import (
	"context"
	"log/slog"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
)

// Lookup is the one query the decision needs (the cache, or the store).
type Lookup interface {
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
}

// Config configures the decision.
type Config struct {
	Format           apikey.Format
	HeaderPrefix     string // --header-prefix, default "x-keygate-"
	StripCredentials bool   // --strip-credentials, default true
	DocsURL          string // base of docs_url in deny bodies
	Now              func() time.Time
	Logger           *slog.Logger
	Registerer       prometheus.Registerer
}

// Server is the ext_authz Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer
}

// New returns a Server deciding from lookup.
func New(lookup Lookup, cfg Config) (*Server, error) { panic("todo") }

// Check implements envoy.service.auth.v3.Authorization/Check. It never
// returns a gRPC error where a decision can be given.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	panic("todo")
}
