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
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/sources"
	keyusage "github.com/keygate/keygate/usage"
)

// Lookup is the one query the decision needs: the compact view of the key
// a token hash names (the cache; Direct for a store without one).
type Lookup interface {
	View(ctx context.Context, h keygate.Hash) (*keygate.KeyView, error)
}

// Direct is a Lookup straight from a store, with no cache: every Check
// queries the store and builds its view anew.
func Direct(st interface {
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
}) Lookup {
	return directLookup{st}
}

type directLookup struct {
	st interface {
		LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)
	}
}

func (d directLookup) View(ctx context.Context, h keygate.Hash) (*keygate.KeyView, error) {
	rec, err := d.st.LookupKey(ctx, h)
	if err != nil {
		return nil, err
	}
	return keygate.NewKeyView(rec, MetadataEncoding(rec.Key.Metadata)), nil
}

// UsageRecorder notes allowed uses of keys (lastused.Tracker).
type UsageRecorder interface {
	Record(keyID string, at time.Time)
}

// UseCounter counts, per key, the allowed Checks and the denials that
// name the key, for usage analytics (analytics.Counter). code is "" for
// an allow; the counter ignores the codes it does not count.
type UseCounter interface {
	Count(keyID, orgID string, code keygate.Code, at time.Time)
}

// UseSpender spends the uses of usage-limited keys (usage.Manager, SPEC
// §9): the decision asks it one question, may this key spend cost now.
type UseSpender interface {
	Spend(ctx context.Context, keyID string, epoch int64, refill keygate.RefillInterval, cost int64, now time.Time) keyusage.Result
}

// Config configures the decision.
type Config struct {
	Format           apikey.Format
	HeaderPrefix     string // --header-prefix, default "x-keygate-"
	StripCredentials bool   // --strip-credentials, default true
	DocsURL          string // base of docs_url in deny bodies: <DocsURL>#<code>
	// Policy returns the route policy in force (the --policy file, as last
	// reloaded). Nil means the default policy.
	Policy func() *policy.Policy
	// Limiter enforces per-key rate limits; nil means none.
	Limiter *ratelimit.Limiter
	// DefaultRateLimit (--rate-limit) applies to keys whose
	// rate_limit_per_minute is null; 0 means unlimited.
	DefaultRateLimit int
	// Throttle counts failed authentications per client address; nil
	// means off.
	Throttle *ratelimit.Throttle
	// ClientIPHeader (--client-ip-header) names the header holding the
	// client address when Envoy sits behind a load balancer.
	ClientIPHeader string
	// TrustedProxies (--trusted-proxies) are the proxies skipped in a
	// list-valued ClientIPHeader, and the only HTTP peers whose
	// ClientIPHeader is believed. Nil means loopback only.
	TrustedProxies []netip.Prefix
	// Usage records every allowed use, for last_used_at; nil means none.
	Usage UsageRecorder
	// Analytics counts every decision that names a key (SPEC §9); nil
	// means off.
	Analytics UseCounter
	// ForeignTokens (--foreign-tokens) looks up, by its SHA-256, a
	// credential without the native shape when it is 16 to 256 printable
	// ASCII characters with no space or comma: a key imported from
	// another system keeps its token (SPEC §9). Native-shaped tokens keep
	// the checksum rule either way (apikey.Format.ParseCredential).
	ForeignTokens bool
	// Uses spends the uses of usage-limited keys (SPEC §9). Nil: a
	// usage-limited key is denied service_unavailable (fail closed).
	Uses UseSpender
	// Now is the decision's clock for tests; nil is the real clock.
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultHeaderPrefix is the default of --header-prefix.
const DefaultHeaderPrefix = "x-keygate-"

// Validate checks the configuration, naming the flag at fault.
func (c *Config) Validate() error {
	if c.HeaderPrefix == "" || c.HeaderPrefix != strings.ToLower(c.HeaderPrefix) || !strings.HasSuffix(c.HeaderPrefix, "-") ||
		strings.ContainsAny(c.HeaderPrefix, " \t\r\n:") {
		return fmt.Errorf("--header-prefix %q must be lower-case, without spaces or colons, and end in '-'", c.HeaderPrefix)
	}
	if c.DefaultRateLimit < 0 {
		return fmt.Errorf("--rate-limit %d must be 0 (unlimited) or more", c.DefaultRateLimit)
	}
	if c.ClientIPHeader != "" && (c.ClientIPHeader != strings.ToLower(c.ClientIPHeader) || strings.ContainsAny(c.ClientIPHeader, " \t\r\n:")) {
		return fmt.Errorf("--client-ip-header %q must be a lower-case header name", c.ClientIPHeader)
	}
	return nil
}

// Server is the ext_authz Authorization service.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	lookup Lookup
	cfg    Config
	now    func() time.Time
	// wallClock is set when now is time.Now: Check then reads the clock
	// once, for both the decision and its latency metric.
	wallClock bool
	log       *slog.Logger
	names     *headerNames
	denies    map[keygate.Code]*denial
	m         *metrics
	defPol    *policy.Policy
	addrs     ratelimit.ClientAddrs
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
	// Without an injected clock, Check reads the real one once for both
	// the decision and its latency metric.
	wallClock := cfg.Now == nil
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = ratelimit.DefaultTrustedProxies()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		lookup:    lookup,
		cfg:       cfg,
		now:       cfg.Now,
		wallClock: wallClock,
		log:       cfg.Logger,
		names:     newHeaderNames(cfg.HeaderPrefix),
		m:         m,
		defPol:    policy.Default(),
		addrs:     ratelimit.ClientAddrs{Header: cfg.ClientIPHeader, Trusted: cfg.TrustedProxies},
	}
	s.denies = newDenials(cfg.DocsURL)
	return s, nil
}

// request is what the decision reads from a Check, and what its steps
// note for the answer.
type request struct {
	in        *checkInput
	requestID string
	creds     credentials
	clientIP  string // the --client-ip-header value
	// prefixed counts client-sent headers with the identity prefix, which
	// an allow removes (except those it sets).
	prefixed int
	// retryAfter and limit are set by the steps that deny with them.
	retryAfter time.Duration
	limit      ratelimit.Result
	// detail, when set, replaces the deny's default message: which scope
	// the route needs, which rule of normalization the path broke.
	detail string
	// report is set on a report-only route (SPEC §11): a deny becomes an
	// allow carrying x-keygate-would-deny. keyID is the key's id, once
	// known, for the would-deny's log line.
	report bool
	keyID  string
	// view is the key the credential resolved to, once known (also for a
	// deny that names it), for usage analytics.
	view *keygate.KeyView
	// spent is set when the usage step spent uses of a usage-limited key
	// for this request, with remaining the uses left after it (the
	// allow's x-keygate-remaining).
	spent     bool
	remaining int64
}

// Check implements envoy.service.auth.v3.Authorization/Check for callers
// in process and over the standard protobuf codec. It never returns a
// gRPC error where a decision can be given. `serve` answers Check from the
// wire instead (Register): the same decision, without building messages.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start, now := s.clock()
	in := inputFromProto(req)
	var (
		r   request
		buf allowBuf
	)
	resp := s.decideProto(ctx, &in, &r, &buf, now)
	s.m.observe(resp.code, time.Since(start))
	return resp.proto(), nil
}

// checkWire answers a Check read straight from the wire (Register).
func (s *Server) checkWire(ctx context.Context, in *checkInput) (*wireResponse, error) {
	start, now := s.clock()
	var (
		r   request
		buf allowBuf
	)
	resp := s.decideProto(ctx, in, &r, &buf, now)
	s.m.observe(resp.code, time.Since(start))
	return resp.encode(), nil
}

// clock reads the time once, for both the decision and its latency
// metric, unless a clock was injected.
func (s *Server) clock() (start, now time.Time) {
	start = time.Now()
	now = start
	if !s.wallClock {
		now = s.now()
	}
	return start, now
}

// answer is a decision in the form both encoders take: an allow or a deny.
type answer struct {
	code  keygate.Code // "" for an allow
	allow allowOut
	deny  *denyOut
	// wouldDeny is, for the allow of a report-only route, the code an
	// enforced route would have denied with.
	wouldDeny keygate.Code
}

func (a *answer) proto() *authv3.CheckResponse {
	if a.deny != nil {
		return denyProto(a.deny)
	}
	return allowProto(&a.allow)
}

func (a *answer) wire(b []byte) []byte {
	if a.deny != nil {
		return appendDeny(b, a.deny)
	}
	return appendAllow(b, &a.allow)
}

// decideProto decides in at now; r and buf are the caller's room for the
// request's notes and the allow.
func (s *Server) decideProto(ctx context.Context, in *checkInput, r *request, buf *allowBuf, now time.Time) answer {
	v, from, code := s.decide(ctx, in, r, now)
	if code != "" {
		if r.report && reportable(code) {
			// Denies before the path normalization step too: a path that
			// is not normalized is refused on every route.
			if err := policy.CheckPath(in.path); err != nil {
				r.detail = "The request path is not normalized: " + policy.PathReason(err) + "."
				code = keygate.CodeInvalidRequest
			} else {
				s.count(r, "", now) // a would-deny counts as allowed (SPEC §9)
				return s.reportDeny(ctx, buf, r, code)
			}
		}
		s.count(r, code, now)
		return answer{code: code, deny: s.deny(r, code)}
	}
	s.count(r, "", now)
	return answer{allow: s.allow(buf, v, r, from, now)}
}

// count notes the decision for usage analytics when it names a key.
func (s *Server) count(r *request, code keygate.Code, now time.Time) {
	if s.cfg.Analytics != nil && r.view != nil {
		s.cfg.Analytics.Count(r.view.ID(), r.view.OrgID(), code, now)
	}
}

// reportDeny is the answer on a report-only route to a request the
// decision denies with code: an allow telling the upstream so, counted
// and logged (with the key id when known; never the token).
func (s *Server) reportDeny(ctx context.Context, buf *allowBuf, r *request, code keygate.Code) answer {
	if c, ok := s.m.wouldDeny[code]; ok { // every code of denyCodes
		c.Inc()
	}
	if s.log.Enabled(ctx, slog.LevelInfo) {
		attrs := []any{"code", code, "method", r.in.method, "path", pathOnly(r.in.path), "request_id", r.requestID}
		if r.keyID != "" {
			attrs = append(attrs, "key_id", r.keyID)
		}
		s.log.Info("would deny (report-only route)", attrs...)
	}
	return answer{wouldDeny: code, allow: s.wouldDenyAllow(buf, r, code)}
}

// routeMode is the mode of in's route (SPEC §11), known before any step
// runs: on a report-only route every deny, those before the route policy
// step too, is reported instead. An invalid keygate.mode is enforce here;
// the route policy step then denies the request (forbidden).
func (s *Server) routeMode(in *checkInput) policy.Mode {
	pol := s.defPol
	if s.cfg.Policy != nil {
		if p := s.cfg.Policy(); p != nil {
			pol = p
		}
	}
	m, err := pol.ModeExt(in.method, in.path, (*extPairs)(&in.ext))
	if err != nil {
		return policy.Enforce
	}
	return m
}

// decide runs every step of SPEC §3 on in at now: one reading of the clock
// serves the key's state, the rate limit, last-used and cache_age_ms.
func (s *Server) decide(ctx context.Context, in *checkInput, r *request, now time.Time) (*keygate.KeyView, uint8, keygate.Code) {
	r.in = in
	for _, h := range in.headers {
		name, value := h.name, h.value
		r.creds.add(name, value)
		if s.names.hasPrefix(name) {
			r.prefixed++
		}
		switch {
		case r.requestID == "" && len(name) == len("x-request-id") && strings.EqualFold(name, "x-request-id"):
			r.requestID = value
		case s.addrs.Header != "" && len(name) == len(s.addrs.Header) && strings.EqualFold(name, s.addrs.Header):
			// A list header sent twice (header_map) is one list, as Envoy
			// joins it in the headers map: its right-most entry counts.
			if r.clientIP == "" {
				r.clientIP = value
			} else {
				r.clientIP += "," + value
			}
		}
	}
	if r.requestID == "" {
		r.requestID = in.id
	}
	r.report = s.routeMode(in) == policy.Report
	// The client address matters to the throttle and to a key bound to
	// sources: parse it only for them.
	var addr netip.Addr
	if s.cfg.Throttle != nil {
		addr = s.clientAddr(in, r)
	}

	v, from, code := s.authenticate(ctx, &r.creds, addr, now, &r.retryAfter)
	r.view = v
	if r.report && v != nil {
		r.keyID = v.ID() // for a would-deny's log line
	}
	if code != "" {
		return nil, 0, code
	}
	if list := v.AllowedSources(); list != "" {
		if s.cfg.Throttle == nil {
			addr = s.clientAddr(in, r)
		}
		if !s.AllowedFrom(list, addr, in.principal) {
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("denied", "code", keygate.CodeSourceNotAllowed, "key_id", v.ID())
			}
			return nil, 0, keygate.CodeSourceNotAllowed
		}
	}
	if code := s.authorize(ctx, v, r, (*extPairs)(&in.ext), now); code != "" {
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("denied", "code", code, "key_id", v.ID())
		}
		return nil, 0, code
	}
	if s.cfg.Usage != nil {
		s.cfg.Usage.Record(v.ID(), now)
	}
	return v, from, ""
}

// clientAddr is the client address of a Check (SPEC §3): the one a
// transport resolved itself, else --client-ip-header's or
// source.address.
func (s *Server) clientAddr(in *checkInput, r *request) netip.Addr {
	if in.clientAddr.IsValid() {
		return in.clientAddr
	}
	addr, _ := s.addrs.Envoy(in.sourceAddress, r.clientIP)
	return addr
}

// AllowedFrom reports whether a key whose allowed_sources are list
// (canonical, comma-joined; "" for anywhere) may be used from client
// address addr with mTLS principal principal ("" for none), SPEC §11. An
// address inside --trusted-proxies stands for a proxy, not the client (it
// is what a list header left when every entry was a proxy, or the peer
// that forwarded the request), so no CIDR matches it.
func (s *Server) AllowedFrom(list string, addr netip.Addr, principal string) bool {
	if list == "" {
		return true
	}
	return sources.Match(list, addr, s.trustedProxy(addr), principal)
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	u := a.Unmap()
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) || p.Contains(u) {
			return true
		}
	}
	return false
}

// extPairs are context_extensions as the wire reader took them, sorted by
// key (policy.Extensions).
type extPairs []wireHeader

func (e *extPairs) Len() int { return len(*e) }

func (e *extPairs) Get(name string) (string, bool) {
	for _, p := range *e {
		if p.name == name {
			return p.value, true
		}
	}
	return "", false
}

// authenticate runs the steps every transport shares, in SPEC order: the
// failed-authentication throttle of the client address, credential
// extraction, format and checksum, lookup by hash, key status and
// organization. It returns the key's record, or the code that denies the
// request (and, for a throttled address, how long until it may retry).
//
// A throttled address is still answered for a token this replica knows to
// be a live key (SPEC §3): one scanner behind a NAT or a gateway must not
// lock out every key that works there. Any other token, and a known one
// whose lookup then finds no live key, gets too_many_failed_attempts
// without a lookup of its own, so the blocked address cannot test guesses.
func (s *Server) authenticate(ctx context.Context, c *credentials, addr netip.Addr, now time.Time, retryAfter *time.Duration) (*keygate.KeyView, uint8, keygate.Code) {
	throttled := s.cfg.Throttle != nil && addr.IsValid()
	blocked := false
	if throttled {
		var d time.Duration
		if d, blocked = s.cfg.Throttle.Blocked(addr); blocked {
			*retryAfter = d
		}
	}
	tok, from, code := s.token(c)
	if blocked && (code != "" || !s.known(tok.Hash())) {
		return nil, 0, keygate.CodeTooManyFailedAttempts
	}
	var rec *keygate.KeyView
	if code == "" {
		rec, code = s.identify(ctx, tok, now)
	}
	switch code {
	case "":
		return rec, from, ""
	case keygate.CodeInvalidAPIKey, keygate.CodeInvalidAuthorizationFormat, keygate.CodeConflictingCredentials:
		if throttled {
			s.cfg.Throttle.Failed(addr)
		}
	}
	if blocked {
		return nil, 0, keygate.CodeTooManyFailedAttempts
	}
	return rec, 0, code
}

// Known is what a Lookup may also offer: whether a hash is a live key it
// holds now, without asking anything further (the cache).
type Known interface {
	Known(h keygate.Hash) bool
}

func (s *Server) known(h keygate.Hash) bool {
	k, ok := s.lookup.(Known)
	return ok && k.Known(h)
}

// token is credential extraction and the format and checksum step.
func (s *Server) token(c *credentials) (apikey.Token, uint8, keygate.Code) {
	raw, from, code := c.token()
	if code != "" {
		return apikey.Token{}, 0, code
	}
	tok, err := s.cfg.Format.ParseCredential(raw, s.cfg.ForeignTokens)
	if err != nil {
		// Malformed or a wrong checksum: denied before cache or store.
		return apikey.Token{}, 0, keygate.CodeInvalidAPIKey
	}
	return tok, from, ""
}

// identify looks tok up and runs the key-status and organization steps.
// The record is returned with api_key_inactive, api_key_expired and
// organization_disabled too.
func (s *Server) identify(ctx context.Context, tok apikey.Token, now time.Time) (*keygate.KeyView, keygate.Code) {
	rec, err := s.lookup.View(ctx, tok.Hash())
	switch {
	case errors.Is(err, keygate.ErrNotFound):
		return nil, keygate.CodeInvalidAPIKey
	case errors.Is(err, keygate.ErrUndecidable):
		return nil, keygate.CodeServiceUnavailable
	case err != nil:
		s.log.Warn("key lookup failed; denying", "key_prefix", tok.Prefix(), "err", err)
		return nil, keygate.CodeServiceUnavailable
	}
	return rec, keyState(rec, now)
}

// keyState is the key-status and organization steps.
func keyState(v *keygate.KeyView, now time.Time) keygate.Code {
	if v.TokenExpired(now) {
		return keygate.CodeInvalidAPIKey // a rolled-away token past its grace
	}
	if code := v.Status(now).DenyCode(); code != "" {
		return code
	}
	if v.OrgDisabled() {
		return keygate.CodeOrganizationDisabled
	}
	return ""
}

// authorize runs the steps after authentication, in SPEC order: path
// normalization, route policy (required scope, project, key type) and the
// key's rate limit with the named limit the route applies, then the
// route's cost of a usage-limited key's uses (SPEC §9). It returns "" to
// allow.
func (s *Server) authorize(ctx context.Context, v *keygate.KeyView, r *request, ext policy.Extensions, now time.Time) keygate.Code {
	if err := policy.CheckPath(r.in.path); err != nil {
		r.detail = "The request path is not normalized: " + policy.PathReason(err) + "."
		return keygate.CodeInvalidRequest
	}
	pol := s.defPol
	if s.cfg.Policy != nil {
		if p := s.cfg.Policy(); p != nil {
			pol = p
		}
	}
	route, err := pol.ResolveExt(r.in.method, r.in.path, ext)
	if err != nil {
		// The route's context_extensions are wrong: an operator error,
		// denied rather than guessed at.
		s.log.Error("route policy: invalid context_extensions; denying", "path", pathOnly(r.in.path), "err", err)
		return keygate.CodeForbidden
	}
	if !v.HasScope(route.Scope) {
		r.detail = "This route requires the scope " + strconv.Quote(route.Scope) + ", which the API key lacks."
		return keygate.CodeInsufficientPermissions
	}
	if route.HasProject && v.Restricted() && !v.HasProject(route.Project) {
		return keygate.CodeForbidden
	}
	if v.Type() == keygate.Publishable && !route.Publishable {
		return keygate.CodeForbidden
	}
	// The rate limits: the main one, and the named one the route applies,
	// a token of each or of neither.
	var limit int
	var named ratelimit.Named
	if s.cfg.Limiter != nil {
		var ok bool
		if limit, ok = v.RateLimit(); !ok {
			limit = s.cfg.DefaultRateLimit
		}
		if l, ok := v.NamedRateLimit(route.RateLimit); ok {
			named = ratelimit.Named{Name: l.Name, Limit: l.Limit, Per: time.Duration(l.DurationSeconds) * time.Second}
			if code := s.rateLimitNamed(v, r, limit, named); code != "" {
				return code
			}
		} else if limit > 0 {
			r.limit = s.cfg.Limiter.Allow(v.ID(), limit)
			if !r.limit.Allowed {
				r.retryAfter = r.limit.RetryAfter
				return keygate.CodeRateLimited
			}
		}
	}
	// Then the uses, last: a request denied here spends no bucket either
	// (SPEC §9), so the tokens just taken are given back.
	if code := s.spendUses(ctx, v, r, &route, now); code != "" {
		if s.cfg.Limiter != nil {
			s.cfg.Limiter.Return(v.ID(), limit, named)
		}
		return code
	}
	return ""
}

// rateLimitNamed is the rate-limit step on a route that applies the
// key's named limit (SPEC §9): the main limit (perMinute, 0 unlimited)
// and the named one both hold, a token of each or of neither. A deny
// carries the ratelimit-* and retry-after of the limit that denied (the
// main one when both do); an allow those of the limit with the fewest
// requests remaining.
func (s *Server) rateLimitNamed(v *keygate.KeyView, r *request, perMinute int, l ratelimit.Named) keygate.Code {
	main, named := s.cfg.Limiter.AllowNamed(v.ID(), perMinute, l)
	switch {
	case main.Allowed && named.Allowed:
		r.limit = ratelimit.Fewest(main, named)
		return ""
	case main.RetryAfter > 0:
		r.limit = main
	default:
		r.limit = named
	}
	r.retryAfter = r.limit.RetryAfter
	return keygate.CodeRateLimited
}

// spendUses is the usage step (SPEC §9): a usage-limited key spends the
// route's cost, or is denied usage_exceeded (retry-after until its next
// refill). It is the last step (SPEC §3: … rate limit → named rate limit
// → usage_exceeded), so a use is spent only by a request that is allowed.
// A key without remaining passes at the cost of one comparison.
func (s *Server) spendUses(ctx context.Context, v *keygate.KeyView, r *request, route *policy.Route, now time.Time) keygate.Code {
	limited, epoch, refill := v.UsageLimited()
	if !limited {
		return ""
	}
	if s.cfg.Uses == nil {
		s.log.Error("usage-limited key but no usage manager; denying", "key_id", v.ID())
		return keygate.CodeServiceUnavailable
	}
	cost := int64(route.Uses())
	res := s.cfg.Uses.Spend(ctx, v.ID(), epoch, refill, cost, now)
	if res.Code != "" {
		r.retryAfter = res.RetryAfter
		return res.Code
	}
	if res.Remaining >= 0 { // -1: unlimited since the view was loaded
		r.spent, r.remaining = true, res.Remaining
	}
	return ""
}

// pathOnly drops the query string, which may hold secrets, from a logged path.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// Authentication is the outcome of Authenticate.
type Authentication struct {
	// View is the caller's key when Code is empty. For api_key_inactive,
	// api_key_expired and organization_disabled it is set too.
	View *keygate.KeyView
	// Code is the code that denies the request, or empty.
	Code keygate.Code
	// RetryAfter is set with too_many_failed_attempts.
	RetryAfter time.Duration
}

// Authenticate authenticates a request of another transport (the
// management API) with exactly the steps of Check: the failed-auth
// throttle of addr, credential extraction from authorization and
// x-api-key, format and checksum, lookup, key status and organization. An
// invalid addr is not throttled.
func (s *Server) Authenticate(ctx context.Context, h http.Header, addr netip.Addr) Authentication {
	var c credentials
	for _, name := range []string{"X-Api-Key", "Authorization"} {
		for _, v := range h.Values(name) {
			c.add(name, v)
		}
	}
	var a Authentication
	a.View, _, a.Code = s.authenticate(ctx, &c, addr, s.now(), &a.RetryAfter)
	return a
}

// FailedAuthentication counts one failed authentication of addr in the
// failed-auth throttle (off without one; an invalid addr is not counted),
// as an unknown key does: an import refused for a token hash that exists
// already counts one, so that import is no unthrottled way to test
// guessed tokens (SPEC §9).
func (s *Server) FailedAuthentication(addr netip.Addr) {
	if s.cfg.Throttle != nil && addr.IsValid() {
		s.cfg.Throttle.Failed(addr)
	}
}

// Throttled reports whether the failed-auth throttle blocks addr now, and
// for how long (never without a throttle or with an invalid addr). A key
// this replica knows is still answered from a blocked address (SPEC §3);
// an operation that can test guessed tokens (import) asks this first.
func (s *Server) Throttled(addr netip.Addr) (time.Duration, bool) {
	if s.cfg.Throttle == nil || !addr.IsValid() {
		return 0, false
	}
	return s.cfg.Throttle.Blocked(addr)
}

// ClientAddr is the client address of an HTTP request (SPEC §3): the
// --client-ip-header only when the peer is inside --trusted-proxies (any
// direct caller can write that header), else the peer address. Repeated
// header lines are read as one list, as a proxy would join them.
func (s *Server) ClientAddr(r *http.Request) netip.Addr {
	var hv string
	if s.addrs.Header != "" {
		hv = strings.Join(r.Header.Values(s.addrs.Header), ",")
	}
	a, _ := s.addrs.Peer(r.RemoteAddr, hv)
	return a
}
