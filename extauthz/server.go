// Package extauthz decides: it implements Envoy's ext_authz v3
// Authorization service over a key lookup (the cache in front of the store).
//
// A decision is a pipeline of steps in SPEC §3 order, and the first failure
// decides; a deny is a CheckResponse with a nil error, never a gRPC error,
// because a gRPC error makes Envoy answer with its own bare status and no
// JSON. Codes are translated into a CheckResponse in one place (response.go).
package extauthz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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
	DocsURL          string // base of docs_url in deny bodies: <DocsURL>#<code>
	Now              func() time.Time
	Logger           *slog.Logger
	Registerer       prometheus.Registerer
}

// DefaultHeaderPrefix is the default of --header-prefix.
const DefaultHeaderPrefix = "x-keygate-"

// Validate checks the configuration, naming the flag at fault.
func (c *Config) Validate() error {
	if c.HeaderPrefix == "" || c.HeaderPrefix != strings.ToLower(c.HeaderPrefix) || !strings.HasSuffix(c.HeaderPrefix, "-") ||
		strings.ContainsAny(c.HeaderPrefix, " \t\r\n:") {
		return fmt.Errorf("--header-prefix %q must be lower-case, without spaces or colons, and end in '-'", c.HeaderPrefix)
	}
	return nil
}

// Server is the ext_authz Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	lookup Lookup
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
	names  headerNames
	denies map[keygate.Code]*denial
	m      *metrics
}

// New returns a Server deciding from lookup.
func New(lookup Lookup, cfg Config) (*Server, error) {
	if cfg.HeaderPrefix == "" {
		cfg.HeaderPrefix = DefaultHeaderPrefix
	}
	if cfg.Format == (apikey.Format{}) {
		cfg.Format = apikey.DefaultFormat()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		lookup: lookup,
		cfg:    cfg,
		now:    cfg.Now,
		log:    cfg.Logger,
		names:  newHeaderNames(cfg.HeaderPrefix),
		m:      m,
	}
	s.denies = newDenials(cfg.DocsURL)
	return s, nil
}

// Prepare precomputes what an allow for rec carries. The cache calls it once
// per loaded record (cache.Config.Prepare), so a hit builds no headers.
func (c Config) Prepare(rec *keygate.KeyRecord) {
	prefix := c.HeaderPrefix
	if prefix == "" {
		prefix = DefaultHeaderPrefix
	}
	rec.Prepared = prepare(rec, newHeaderNames(prefix))
}

// request is what the decision reads from a CheckRequest.
type request struct {
	method    string
	path      string
	requestID string
	creds     credentials
	// prefixed counts client-sent headers with the identity prefix, which
	// an allow removes (except those it sets).
	prefixed  int
	firstPref string
	http      *authv3.AttributeContext_HttpRequest
}

// Check implements envoy.service.auth.v3.Authorization/Check. It never
// returns a gRPC error where a decision can be given.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	resp, code := s.check(ctx, req)
	s.m.observe(code, time.Since(start))
	return resp, nil
}

func (s *Server) check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, keygate.Code) {
	http := req.GetAttributes().GetRequest().GetHttp()
	r := request{http: http, method: http.GetMethod(), path: http.GetPath()}
	visitHeaders(http, func(name, value string) {
		r.creds.add(name, value)
		if s.names.hasPrefix(name) {
			r.prefixed++
			if r.firstPref == "" {
				r.firstPref = name
			}
		}
		if r.requestID == "" && strings.EqualFold(name, "x-request-id") {
			r.requestID = value
		}
	})
	if r.requestID == "" {
		r.requestID = http.GetId()
	}

	raw, from, code := r.creds.token()
	if code != "" {
		return s.deny(&r, code), code
	}
	tok, err := s.cfg.Format.Parse(raw)
	if err != nil {
		// Malformed or a wrong checksum: denied before cache or store.
		return s.deny(&r, keygate.CodeInvalidAPIKey), keygate.CodeInvalidAPIKey
	}
	rec, err := s.lookup.LookupKey(ctx, tok.Hash())
	switch {
	case errors.Is(err, keygate.ErrNotFound):
		return s.deny(&r, keygate.CodeInvalidAPIKey), keygate.CodeInvalidAPIKey
	case err != nil:
		s.log.Warn("key lookup failed; denying", "key_prefix", tok.Prefix(), "err", err)
		return s.deny(&r, keygate.CodeServiceUnavailable), keygate.CodeServiceUnavailable
	}
	now := s.now()
	if code := decide(rec, &r, now); code != "" {
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("denied", "code", code, "key_id", rec.Key.ID, "key_prefix", tok.Prefix())
		}
		return s.deny(&r, code), code
	}
	return s.allow(rec, &r, from, now), ""
}

// decide runs the steps after the lookup, in SPEC order: key status,
// organization, route policy. It returns "" to allow.
func decide(rec *keygate.KeyRecord, r *request, now time.Time) keygate.Code {
	k := &rec.Key
	if rec.TokenExpiresAt != nil && !now.Before(*rec.TokenExpiresAt) {
		return keygate.CodeInvalidAPIKey // a rolled-away token past its grace
	}
	switch k.Status(now) {
	case keygate.StatusRevoked:
		return keygate.CodeInvalidAPIKey
	case keygate.StatusExpired:
		return keygate.CodeAPIKeyExpired
	case keygate.StatusInactive:
		return keygate.CodeAPIKeyInactive
	}
	if rec.OrgDisabled {
		return keygate.CodeOrganizationDisabled
	}
	if !k.HasScope(requiredScope(r.method)) {
		return keygate.CodeInsufficientPermissions
	}
	// Until route policy can mark routes publishable and map paths to
	// projects, such keys are denied everywhere: fail closed.
	if k.Type == keygate.Publishable || len(k.ProjectIDs) > 0 {
		return keygate.CodeForbidden
	}
	return ""
}

// requiredScope is the default route policy: reads need read, everything
// else write.
func requiredScope(method string) string {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return "read"
	}
	return "write"
}
