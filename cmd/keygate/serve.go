package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/analytics"
	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/console"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/httpauthz"
	"github.com/keygate/keygate/lastused"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/policy"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/tlsfiles"
	keyusage "github.com/keygate/keygate/usage"
)

// serveCmd is `keygate serve`. Every flag also reads its KEYGATE_*
// variable, so a container is configured from its environment.
type serveCmd struct {
	Conn             connFlags     `embed:""`
	GRPCAddr         string        `name:"grpc-addr" env:"KEYGATE_GRPC_ADDR" default:":9001" placeholder:"ADDR" help:"Address of the ext_authz gRPC listener."`
	HTTPAddr         string        `name:"http-addr" env:"KEYGATE_HTTP_ADDR" default:":8001" placeholder:"ADDR" help:"Address of the HTTP listener (health, readiness, metrics)."`
	AuthzHTTPAddr    string        `name:"authz-http-addr" env:"KEYGATE_AUTHZ_HTTP_ADDR" placeholder:"ADDR" help:"Address of the HTTP authorization listener (Envoy http_service at /authz, nginx, Caddy and Traefik at /forward-auth); empty: off."`
	Console          bool          `name:"console" env:"KEYGATE_CONSOLE" default:"true" negatable:"" help:"Serve the web console at /console."`
	HeaderPrefix     string        `name:"header-prefix" env:"KEYGATE_HEADER_PREFIX" default:"x-keygate-" help:"Prefix of the identity headers an allow sets; lower-case, ending in '-'."`
	StripCredentials bool          `name:"strip-credentials" env:"KEYGATE_STRIP_CREDENTIALS" default:"true" negatable:"" help:"Remove the credential headers before the request goes upstream."`
	ForeignTokens    bool          `name:"foreign-tokens" env:"KEYGATE_FOREIGN_TOKENS" help:"Look up by its SHA-256 a credential without keygate's token shape (16-256 printable ASCII characters, no space or comma): keys imported from another system keep their tokens. Native-shaped tokens keep the checksum rule."`
	CacheMaxBytes    byteSize      `name:"cache-max-bytes" env:"KEYGATE_CACHE_MAX_BYTES" default:"64MiB" placeholder:"SIZE" help:"Bound of the key cache (bytes, or 64MiB, 1GB…)."`
	CacheTTL         time.Duration `name:"cache-ttl" env:"KEYGATE_CACHE_TTL" default:"5m" help:"Reload a cached key after this long, as a backstop to invalidation."`
	NegativeCacheTTL time.Duration `name:"negative-cache-ttl" env:"KEYGATE_NEGATIVE_CACHE_TTL" default:"10s" help:"How long an unknown token stays unknown in the cache."`
	PollInterval     time.Duration `name:"poll-interval" env:"KEYGATE_POLL_INTERVAL" default:"500ms" help:"How often the key-events log is read."`

	UnknownLookupRate float64       `name:"unknown-lookup-rate" env:"KEYGATE_UNKNOWN_LOOKUP_RATE" default:"50" placeholder:"PER-SECOND" help:"Store lookups per second per replica for tokens the membership filter does not hold (forged or mistyped); past it they are invalid_api_key without a query. 0: no limit."`
	PreloadKeys       int           `name:"preload-keys" env:"KEYGATE_PRELOAD_KEYS" default:"10000" placeholder:"N" help:"Before reporting ready, load the N most recently used keys into the cache; 0: off."`
	DocsURL           string        `name:"docs-url" env:"KEYGATE_DOCS_URL" default:"https://github.com/keygate/keygate/blob/main/README.md" placeholder:"URL" help:"Base of docs_url in deny bodies (<docs-url>#<code>)."`
	ShutdownDelay     time.Duration `name:"shutdown-delay" env:"KEYGATE_SHUTDOWN_DELAY" default:"5s" help:"After SIGTERM or SIGINT, report not ready (gRPC health NOT_SERVING, /readyz 503) but keep serving this long, so Envoy and Kubernetes stop sending first; 0: stop at once. A second signal skips it."`
	ShutdownTimeout   time.Duration `name:"shutdown-timeout" env:"KEYGATE_SHUTDOWN_TIMEOUT" default:"10s" help:"How long in-flight requests may finish after --shutdown-delay before connections are cut."`

	HeartbeatInterval time.Duration `name:"heartbeat-interval" env:"KEYGATE_HEARTBEAT_INTERVAL" default:"5s" help:"How often the PostgreSQL listener NOTIFYs itself and the replica reports to the registry; two missed heartbeats reconnect it."`
	MaxStaleness      time.Duration `name:"max-staleness" env:"KEYGATE_MAX_STALENESS" default:"30s" help:"Serve cached keys for at most this long since the events log was last read; then ask the store, or deny with 503."`
	LastUsedFlush     time.Duration `name:"last-used-flush" env:"KEYGATE_LAST_USED_FLUSH" default:"10s" help:"Write last_used_at behind, at most once per key per interval."`
	EventsRetention   time.Duration `name:"events-retention" env:"KEYGATE_EVENTS_RETENTION" default:"168h" help:"Prune key events older than this (a replica further behind drops its cache)."`
	PruneInterval     time.Duration `name:"prune-interval" env:"KEYGATE_PRUNE_INTERVAL" default:"1h" help:"How often old key events are pruned."`
	UsageRetention    time.Duration `name:"usage-retention" env:"KEYGATE_USAGE_RETENTION" default:"2160h" help:"Prune hourly usage analytics older than this (daily rows are kept 400 days)."`

	Policy          string   `name:"policy" env:"KEYGATE_POLICY" placeholder:"FILE" help:"Route policy file (YAML); reloaded on SIGHUP and when it changes."`
	RateLimit       number   `name:"rate-limit" env:"KEYGATE_RATE_LIMIT" default:"100" help:"Requests per minute per key whose rate_limit_per_minute is null; 0: unlimited. Per replica."`
	FailedAuthLimit number   `name:"failed-auth-limit" env:"KEYGATE_FAILED_AUTH_LIMIT" default:"60" help:"Failed authentications per minute from one client address before it gets 429; 0: off."`
	ClientIPHeader  string   `name:"client-ip-header" env:"KEYGATE_CLIENT_IP_HEADER" placeholder:"HEADER" help:"Header holding the client address when Envoy is behind a load balancer (e.g. x-envoy-external-address)."`
	TrustedProxies  []string `name:"trusted-proxies" env:"KEYGATE_TRUSTED_PROXIES" default:"127.0.0.0/8,::1/128" sep:"," placeholder:"CIDR,..." help:"Proxies skipped in a list-valued --client-ip-header, and the only HTTP peers whose --client-ip-header is believed."`

	trustedProxies []netip.Prefix

	Leak leakFlags `embed:""`

	GRPCTLSCert       string        `name:"grpc-tls-cert" env:"KEYGATE_GRPC_TLS_CERT" placeholder:"FILE" help:"Serve gRPC over TLS with this certificate (PEM); reloaded when it changes."`
	GRPCTLSKey        string        `name:"grpc-tls-key" env:"KEYGATE_GRPC_TLS_KEY" placeholder:"FILE" help:"Private key (PEM) of --grpc-tls-cert."`
	GRPCTLSClientCA   string        `name:"grpc-tls-client-ca" env:"KEYGATE_GRPC_TLS_CLIENT_CA" placeholder:"FILE" help:"Require gRPC clients (Envoy) to present a certificate signed by this CA (mTLS)."`
	HTTPTLSCert       string        `name:"http-tls-cert" env:"KEYGATE_HTTP_TLS_CERT" placeholder:"FILE" help:"Serve HTTP (API, console, health) over TLS with this certificate (PEM)."`
	HTTPTLSKey        string        `name:"http-tls-key" env:"KEYGATE_HTTP_TLS_KEY" placeholder:"FILE" help:"Private key (PEM) of --http-tls-cert."`
	TLSReloadInterval time.Duration `name:"tls-reload-interval" env:"KEYGATE_TLS_RELOAD_INTERVAL" default:"10s" help:"How often certificate files are checked for changes."`
}

func (s *serveCmd) grpcTLS() tlsfiles.Files {
	return tlsfiles.Files{Cert: s.GRPCTLSCert, Key: s.GRPCTLSKey, ClientCA: s.GRPCTLSClientCA,
		CertFlag: "--grpc-tls-cert", KeyFlag: "--grpc-tls-key", ClientCAFlag: "--grpc-tls-client-ca"}
}

func (s *serveCmd) httpTLS() tlsfiles.Files {
	return tlsfiles.Files{Cert: s.HTTPTLSCert, Key: s.HTTPTLSKey, CertFlag: "--http-tls-cert", KeyFlag: "--http-tls-key"}
}

// Validate checks the serve flags, naming the flag at fault.
func (s *serveCmd) Validate() error {
	for _, a := range []struct{ flag, addr string }{{"--grpc-addr", s.GRPCAddr}, {"--http-addr", s.HTTPAddr}} {
		if err := validateAddr(a.addr); err != nil {
			return fmt.Errorf("%s %q: %v", a.flag, a.addr, err)
		}
	}
	if s.AuthzHTTPAddr != "" {
		if err := validateAddr(s.AuthzHTTPAddr); err != nil {
			return fmt.Errorf("--authz-http-addr %q: %v", s.AuthzHTTPAddr, err)
		}
	}
	if s.UnknownLookupRate < 0 || math.IsNaN(s.UnknownLookupRate) || math.IsInf(s.UnknownLookupRate, 0) {
		return fmt.Errorf("--unknown-lookup-rate must be a number ≥ 0 (0: no limit), got %v", s.UnknownLookupRate)
	}
	if s.PreloadKeys < 0 {
		return fmt.Errorf("--preload-keys must be ≥ 0 (0: off), got %d", s.PreloadKeys)
	}
	if s.RateLimit < 0 {
		return fmt.Errorf("--rate-limit must be ≥ 0 (0: unlimited), got %d", s.RateLimit)
	}
	az := s.extauthzConfig()
	if err := az.Validate(); err != nil {
		return err // it names --header-prefix
	}
	if s.CacheMaxBytes <= 0 {
		return fmt.Errorf("--cache-max-bytes must be positive")
	}
	for _, d := range []struct {
		flag string
		d    time.Duration
	}{
		{"--cache-ttl", s.CacheTTL}, {"--negative-cache-ttl", s.NegativeCacheTTL},
		{"--poll-interval", s.PollInterval}, {"--shutdown-timeout", s.ShutdownTimeout},
		{"--heartbeat-interval", s.HeartbeatInterval}, {"--max-staleness", s.MaxStaleness},
		{"--last-used-flush", s.LastUsedFlush}, {"--events-retention", s.EventsRetention},
		{"--prune-interval", s.PruneInterval}, {"--usage-retention", s.UsageRetention},
	} {
		if d.d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", d.flag, d.d)
		}
	}
	if s.ShutdownDelay < 0 {
		return fmt.Errorf("--shutdown-delay must be 0 (no delay) or more, got %s", s.ShutdownDelay)
	}
	if s.TLSReloadInterval <= 0 {
		return fmt.Errorf("--tls-reload-interval must be positive, got %s", s.TLSReloadInterval)
	}
	// Load the certificates now, so a missing or mismatched file is a
	// one-line start-up error naming its flag.
	for _, f := range []tlsfiles.Files{s.grpcTLS(), s.httpTLS()} {
		if f.Enabled() {
			if _, err := tlsfiles.NewServer(f, "check", nil, nil); err != nil {
				return err
			}
		}
	}
	proxies, err := ratelimit.ParseTrustedProxies(s.TrustedProxies)
	if err != nil {
		return err // it names --trusted-proxies
	}
	s.trustedProxies = proxies
	if s.FailedAuthLimit < 0 {
		return fmt.Errorf("--failed-auth-limit must be ≥ 0 (0: off), got %d", s.FailedAuthLimit)
	}
	if s.Policy != "" {
		if _, err := policy.Load(s.Policy); err != nil {
			return fmt.Errorf("--policy: %v", err)
		}
	}
	if u, err := url.Parse(s.DocsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("--docs-url %q must be an absolute http(s) URL without a fragment", s.DocsURL)
	}
	return nil
}

// validateAddr accepts host:port with a numeric port; port 0 picks a free
// one (the bound address is logged).
func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return errors.New("port must be a number from 0 to 65535")
	}
	return nil
}

func (s *serveCmd) extauthzConfig() extauthz.Config {
	return extauthz.Config{
		Format:           s.Conn.format,
		HeaderPrefix:     s.HeaderPrefix,
		StripCredentials: s.StripCredentials,
		DocsURL:          s.DocsURL,
		DefaultRateLimit: int(s.RateLimit),
		ClientIPHeader:   s.ClientIPHeader,
		TrustedProxies:   s.trustedProxies,
		ForeignTokens:    s.ForeignTokens,
	}
}

// Run serves until d.ctx ends (SIGTERM or SIGINT), then drains (see
// drain). /healthz and /readyz answer from the start, while the store is
// opened and migrated (retried with backoff when PostgreSQL does not
// answer); ext_authz and the management API are served once it is ready.
func (s *serveCmd) Run(d *deps) (err error) {
	ctx := d.ctx
	logger := s.Conn.logger(d.stderr)
	defer func() {
		// A signal before serve was ready is a normal stop, exit 0.
		if err != nil && errors.Is(err, context.Canceled) && ctx.Err() != nil {
			logger.Info("stopped before serving")
			err = nil
		}
	}()
	if s.Conn.DatabaseURL == "" {
		// Before anything is bound or logged: a wrong --data-dir is one line.
		if err := s.Conn.checkDataDir(); err != nil {
			return err
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBuildInfo())
	grpcMetrics := newGRPCMetrics()
	reg.MustRegister(grpcMetrics)

	// Both listeners are bound first, so a taken port fails the start at
	// once; gRPC is served once the store is ready.
	grpcLis, err := net.Listen("tcp", s.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	defer grpcLis.Close()
	httpLis, err := net.Listen("tcp", s.HTTPAddr)
	if err != nil {
		return fmt.Errorf("--http-addr: %w", err)
	}
	defer httpLis.Close()
	var authzLis net.Listener
	if s.AuthzHTTPAddr != "" {
		if authzLis, err = net.Listen("tcp", s.AuthzHTTPAddr); err != nil {
			return fmt.Errorf("--authz-http-addr: %w", err)
		}
		defer authzLis.Close()
	}
	var grpcOpts []grpc.ServerOption
	var tlsServers []*tlsfiles.Server
	if f := s.grpcTLS(); f.Enabled() {
		ts, err := tlsfiles.NewServer(f, "grpc", logger, reg)
		if err != nil {
			return err
		}
		tlsServers = append(tlsServers, ts)
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(ts.Config())))
	}
	life := newLifecycle(s.storeName())
	web := newWebServer(logger)
	web.Handler = life
	if f := s.httpTLS(); f.Enabled() {
		ts, err := tlsfiles.NewServer(f, "http", logger, reg)
		if err != nil {
			return err
		}
		tlsServers = append(tlsServers, ts)
		web.TLSConfig = ts.Config()
		httpLis = tls.NewListener(httpLis, web.TLSConfig)
	}

	// Everything below runs until stopRun, which comes after the servers
	// have drained, so that the listener, the throttle and the certificate
	// reloaders keep working through --shutdown-delay.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	defer func() {
		// On a failed start: stop what did start. After a drain: no-ops.
		stopRun()
		web.Close()
		_ = g.Wait()
	}()
	for _, ts := range tlsServers {
		g.Go(func() error { return ts.Run(gctx, s.TLSReloadInterval) })
	}
	g.Go(func() error {
		if err := web.Serve(httpLis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	logger.Info("starting: health on --http-addr now, ext_authz and the API once the store is ready",
		"http", httpLis.Addr().String(), "grpc", grpcLis.Addr().String())

	// startCtx ends at the first signal or when the HTTP server fails.
	startCtx, cancelStart := context.WithCancel(gctx)
	defer cancelStart()
	defer context.AfterFunc(ctx, cancelStart)()
	st, embedded, err := s.openStore(startCtx, logger, life)
	if err != nil {
		if ctx.Err() == nil && gctx.Err() != nil {
			return g.Wait() // the HTTP server failed: its error, not the cancellation
		}
		return err
	}
	defer st.Close()
	if embedded {
		if err := s.bootstrap(startCtx, d, st, logger); err != nil {
			return err
		}
	} else {
		s.announceFirstKey(startCtx, st, logger)
	}

	azCfg := s.extauthzConfig()
	azCfg.Logger, azCfg.Registerer = logger, reg
	var (
		listener *postgres.Listener
		follower *cache.Follower
		member   *fleetMember // the replica registry, on PostgreSQL
	)
	keys, err := cache.New(st, cache.Config{
		MaxBytes: int64(s.CacheMaxBytes), TTL: s.CacheTTL, NegativeTTL: s.NegativeCacheTTL,
		MaxStaleness: s.MaxStaleness,
		Metadata:     extauthz.MetadataEncoding, Now: time.Now, Registerer: reg, Logger: logger,
		Live: st, UnknownLookupRate: s.UnknownLookupRate,
		// Both are set before anything is served.
		Healthy: func() bool { return s.notificationsHealthy(listener, follower) },
	})
	if err != nil {
		return fmt.Errorf("creating the key cache: %w", err)
	}
	defer keys.Close()
	follower, err = cache.NewFollower(st, keys, s.PollInterval, logger, reg)
	if err != nil {
		return fmt.Errorf("--poll-interval: %w", err)
	}
	// Find the log's end before the first lookup, so no event between a
	// load and the follower's start can be missed.
	if err := follower.Start(startCtx); err != nil {
		return fmt.Errorf("reading the key-events log: %w", err)
	}
	// Warm start, before anything is served or the follower applies an
	// event: the membership filter of live tokens, then the most recently
	// used keys (SPEC §10).
	life.waitFor("membership filter and preload")
	if err := s.warm(startCtx, st, keys, logger); err != nil {
		return err
	}
	if pg, ok := st.(*postgres.Store); ok {
		reconnect := false
		listener, err = postgres.NewListener(postgres.ListenerConfig{
			Connect:   pg.ListenConn,
			Heartbeat: s.HeartbeatInterval,
			OnConnect: func() {
				// LISTEN is up: read what was committed before it, and
				// after a reconnect everything missed while down.
				if reconnect {
					follower.Replay()
				} else {
					follower.Wake()
				}
				reconnect = true
			},
			OnNotify: func(string) { follower.Wake() },
			// A heartbeat that came back proves the connection delivers;
			// reading the log then confirms the cache is in sync even
			// when nothing changes (and --poll-interval is long).
			OnHeartbeat: func(time.Time) { follower.Wake() },
			Logger:      logger,
			Registerer:  reg,
		})
		if err != nil {
			return err
		}
		if err := useStandby(pg, follower, listener, s.HeartbeatInterval, reg); err != nil {
			return err
		}
		if member, err = s.joinFleet(pg, follower, logger, reg); err != nil {
			return err
		}
	}
	usage, err := lastused.New(st, lastused.Config{Interval: s.LastUsedFlush, Logger: logger, Registerer: reg})
	if err != nil {
		return fmt.Errorf("--last-used-flush: %w", err)
	}
	azCfg.Usage = usage
	counts, err := analytics.New(st, analytics.Config{Interval: s.LastUsedFlush, Logger: logger, Registerer: reg})
	if err != nil {
		return fmt.Errorf("--last-used-flush: %w", err)
	}
	azCfg.Analytics = counts
	// Usage-limited keys (SPEC §9): leases of uses, given back on a
	// graceful stop (below).
	uses := keyusage.New(keyusage.Config{Store: st, Logger: logger})
	if err := uses.Register(reg); err != nil {
		return err
	}
	azCfg.Uses = uses
	limiter, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{Registerer: reg})
	if err != nil {
		return err
	}
	azCfg.Limiter = limiter
	var throttle *ratelimit.Throttle
	if s.FailedAuthLimit > 0 {
		if throttle, err = ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: int(s.FailedAuthLimit), Registerer: reg}); err != nil {
			return err
		}
		azCfg.Throttle = throttle
	}
	var watcher *policy.Watcher
	if s.Policy != "" {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		watcher, err = policy.NewWatcher(s.Policy, policy.WatcherConfig{Logger: logger, Registerer: reg, Signals: hup})
		if err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		azCfg.Policy = watcher.Policy
	}
	authz, err := extauthz.New(keys, azCfg)
	if err != nil {
		return err
	}

	grpcOpts = append(grpcOpts,
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor()))
	// Check is read straight from the wire and answered as written
	// (extauthz.WireCodec); health and reflection use protobuf as usual.
	codec, err := extauthz.WireCodec()
	if err != nil {
		return err
	}
	gs := grpc.NewServer(append(append(extauthz.ServerOptions(), codec), grpcOpts...)...)
	authz.Register(gs)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	grpcMetrics.InitializeMetrics(gs) // every method's series exist from the start, at 0
	leaks, err := s.Leak.service(st, s.Conn.format, throttle, logger)
	if err != nil {
		return err
	}
	api := httpapi.NewHandler(httpapi.Config{Store: st, Gatherer: reg, Registerer: reg, Logger: logger, Leaks: leaks,
		Auth: authz, Manage: manage.New(st, s.Conn.format, time.Now, manage.WithDefaultRateLimit(int(s.RateLimit))),
		Syncer: follower, Propagator: member.propagator(), Usage: usage, Analytics: st, DocsURL: s.DocsURL, Sync: func() httpapi.SyncState {
			state := httpapi.SyncState{Notifications: "poll", SecondsSinceSync: keys.SinceSync().Seconds(),
				MaxStalenessSeconds: s.MaxStaleness.Seconds(), Stale: keys.Stale()}
			if listener != nil {
				state.Notifications, state.Connected = "listen", listener.Connected()
			}
			return state
		}})

	// The follower and the last-used writer outlive the servers, so that
	// checks still in flight during the drain see revocations and their
	// use is flushed once more after the last one.
	followCtx, stopFollowing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFollowing()
	g.Go(func() error { return follower.Run(followCtx) })
	g.Go(func() error { return usage.Run(followCtx) })
	g.Go(func() error { return counts.Run(followCtx) })
	member.run(followCtx, gctx, g.Go)
	if listener != nil {
		g.Go(func() error { return listener.Run(gctx) })
	}
	if watcher != nil {
		g.Go(func() error { return watcher.Run(gctx) })
	}
	g.Go(func() error { return limiter.Run(gctx) })
	g.Go(func() error { return uses.Run(gctx) })
	if throttle != nil {
		g.Go(func() error { return throttle.Run(gctx) })
	}
	g.Go(func() error { return s.prune(gctx, st, logger) })
	g.Go(func() error { return keys.Run(gctx) })
	g.Go(func() error {
		// A signal right after the start can stop gs before Serve runs.
		if err := gs.Serve(grpcLis); !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	var authzWeb *http.Server
	if authzLis != nil {
		// SPEC §16: the same decision over plain HTTP, on a listener of
		// its own with a plain handler (no ServeMux: the raw path counts).
		authzWeb = httpauthz.NewServer(httpauthz.New(authz, httpauthz.Config{TrustedProxies: s.trustedProxies}))
		authzWeb.ErrorLog = slogErrorLog(logger)
		defer authzWeb.Close()
		g.Go(func() error {
			if err := authzWeb.Serve(authzLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		logger.Info("serving HTTP authorization", "authz_http", authzLis.Addr().String())
	}
	life.serve(s.withConsole(api))
	logger.Info("listening", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(),
		"grpc_tls", s.grpcTLS().Enabled(), "http_tls", s.httpTLS().Enabled())

	s.drain(ctx, d.hurry, gctx, logger, hs, life, gs, web)
	if authzWeb != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.ShutdownTimeout)
		if err := authzWeb.Shutdown(sctx); err != nil {
			authzWeb.Close()
		}
		cancel()
	}
	// No check runs any more: give the unspent leases back, each to
	// the usage epoch it was taken in. A crash loses them instead.
	rctx, cancelReturn := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if err := uses.Close(rctx, time.Now()); err != nil {
		logger.Warn("returning unspent usage leases failed; those uses are lost", "err", err)
	}
	cancelReturn()
	stopRun()
	stopFollowing()
	if err := g.Wait(); err != nil {
		return err
	}
	logger.Info("stopped")
	return nil
}

// drain waits for the first signal (ctx) or a failed component (failed),
// then shuts the servers down in the order SPEC §6 gives: not ready first
// (gRPC health NOT_SERVING for every service, /readyz 503) while still
// serving for --shutdown-delay, so that Envoy's health checks and
// Kubernetes endpoints stop sending here; then stop accepting and let the
// requests in flight finish, for at most --shutdown-timeout. A second
// signal (hurry) skips the rest of the delay; a failure skips all of it.
func (s *serveCmd) drain(ctx context.Context, hurry <-chan struct{}, failed context.Context, logger *slog.Logger,
	hs *health.Server, life *lifecycle, gs *grpc.Server, web *http.Server) {
	select {
	case <-ctx.Done():
	case <-failed.Done():
	}
	hs.Shutdown()
	life.drain()
	if ctx.Err() != nil && failed.Err() == nil && s.ShutdownDelay > 0 {
		logger.Info("shutting down: not ready, still serving until the delay has passed; a second signal skips it",
			"delay", s.ShutdownDelay)
		t := time.NewTimer(s.ShutdownDelay)
		select {
		case <-t.C:
		case <-hurry:
			logger.Info("second signal: skipping the rest of the delay")
		case <-failed.Done():
		}
		t.Stop()
	}
	logger.Info("stopping: no new connections, finishing requests in flight", "timeout", s.ShutdownTimeout)
	deadline := time.Now().Add(s.ShutdownTimeout)
	force := time.AfterFunc(s.ShutdownTimeout, gs.Stop)
	gs.GracefulStop()
	force.Stop()
	sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	if err := web.Shutdown(sctx); err != nil {
		web.Close()
	}
}

// storeName is what serve waits for while it opens the store, for /readyz
// and the log: the database's host:port, never its URL.
func (s *serveCmd) storeName() string {
	if s.Conn.DatabaseURL == "" {
		return "embedded store " + s.Conn.embeddedPath()
	}
	return "database " + databaseAddr(s.Conn.DatabaseURL)
}

// Backoff of serve's attempts to reach PostgreSQL at start.
const (
	storeRetryFirst = 250 * time.Millisecond
	storeRetryMax   = 15 * time.Second
)

// openStore opens and migrates the store. PostgreSQL is retried with
// jittered exponential backoff until it answers or ctx ends, and life says
// meanwhile what serve waits for; the embedded store gets one attempt.
func (s *serveCmd) openStore(ctx context.Context, logger *slog.Logger, life *lifecycle) (store.Store, bool, error) {
	if s.Conn.DatabaseURL == "" {
		return s.Conn.openMigrated(ctx, logger, createStore)
	}
	listenURL := s.Conn.ListenDatabaseURL
	if listenURL == "" {
		listenURL = s.Conn.DatabaseURL
	}
	delay := storeRetryFirst
	for attempt := 1; ; attempt++ {
		life.waitFor(s.storeName())
		st, _, err := s.Conn.open(ctx, logger, createStore)
		if err == nil {
			life.waitFor("database " + databaseAddr(listenURL) + " (migrations)")
			if err = st.Migrate(ctx); err == nil {
				return st, false, nil
			}
			st.Close()
			err = fmt.Errorf("migrating the store: %w", err)
		}
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		wait := delay/2 + rand.N(delay/2+1)
		logger.Warn("the database is not ready; retrying", "waiting_for", life.waiting(), "attempt", attempt,
			"retry_in", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, storeRetryMax)
	}
}

// announceFirstKey logs, on a PostgreSQL store where no key was ever
// created, the command that makes the first owner key. serve prints no key
// on PostgreSQL: several replicas start at once, and a token belongs on a
// terminal, not in a container log.
func (s *serveCmd) announceFirstKey(ctx context.Context, st store.Store, logger *slog.Logger) {
	seq, err := st.LatestEventSeq(ctx)
	if err != nil || seq != 0 {
		return
	}
	logger.Info("the store has no keys yet; make the first owner key with the command below (with the same --database-url)",
		"command", "keygate keys create --org ORG --user USER --name NAME --role owner")
}

// newGRPCMetrics returns the gRPC server metrics (grpc_server_started_total,
// _handled_total by code, _msg_received_total, _msg_sent_total and the
// grpc_server_handling_seconds histogram) of every service on --grpc-addr,
// for serve's registry. Its buckets start at 50 µs: a cached Check takes
// tens of microseconds, and Envoy's ext_authz timeout is usually 200 ms
// to 1 s.
func newGRPCMetrics() *grpcprom.ServerMetrics {
	return grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1}),
	))
}

// newBuildInfo is keygate_build_info{version,revision,goversion} 1, so a
// dashboard can tell which build each replica runs.
func newBuildInfo() prometheus.Collector {
	version, revision, goVersion := buildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "keygate_build_info",
		Help:        "Always 1; its labels say which keygate build this is.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": goVersion},
	})
	g.Set(1)
	return g
}

// Limits of the HTTP server (API, console, health). The write timeout
// bounds a whole response, so it must outlast the longest wait a request
// may ask for (SPEC §12: ?wait=true&timeout= up to 30 s) by at least 5 s.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second // headers and a body of at most 64 KiB
	httpWriteTimeout      = 40 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	// httpMaxHeaderBytes is Envoy's default request-header limit (60 KiB)
	// with room to spare; a larger request line and headers get 431.
	httpMaxHeaderBytes = 64 << 10
)

// newWebServer returns the HTTP server of --http-addr with its limits set,
// so that a slow or oversized client cannot hold a connection or memory.
func newWebServer(logger *slog.Logger) *http.Server {
	return &http.Server{
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slogErrorLog(logger),
	}
}

// warm builds the membership filter and preloads the most recently used
// keys, logging how many and how long each took.
func (s *serveCmd) warm(ctx context.Context, st store.Store, keys *cache.Cache, logger *slog.Logger) error {
	start := time.Now()
	n, err := keys.BuildFilter(ctx)
	if err != nil {
		return fmt.Errorf("building the membership filter: %w", err)
	}
	logger.Info("built the membership filter of live tokens", "live_tokens", n,
		"took", time.Since(start).Round(time.Millisecond), "unknown_lookup_rate", s.UnknownLookupRate)
	if s.PreloadKeys == 0 {
		return nil
	}
	start = time.Now()
	loaded, err := keys.Preload(ctx, st, s.PreloadKeys)
	if err != nil {
		return fmt.Errorf("preloading keys (--preload-keys): %w", err)
	}
	logger.Info("preloaded the most recently used keys", "keys", loaded, "of_at_most", s.PreloadKeys,
		"took", time.Since(start).Round(time.Millisecond))
	return nil
}

// notificationsHealthy reports whether key events reach this replica
// promptly: the LISTEN connection is up on PostgreSQL; on the embedded
// store, the events log was read within two polls.
func (s *serveCmd) notificationsHealthy(listener *postgres.Listener, follower *cache.Follower) bool {
	if listener != nil {
		return listener.Connected()
	}
	return follower != nil && follower.SinceSync() <= 2*s.PollInterval+time.Second
}

// prune deletes key events older than --events-retention every
// --prune-interval. A replica whose position falls before the pruned part
// drops its whole cache and carries on (cache.Follower).
func (s *serveCmd) prune(ctx context.Context, st store.Store, logger *slog.Logger) error {
	t := time.NewTicker(s.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := st.PruneEvents(ctx, time.Now().Add(-s.EventsRetention))
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Warn("pruning key events failed", "err", err)
		case n > 0:
			logger.Info("pruned key events", "deleted", n, "older_than", s.EventsRetention)
		}
		s.pruneUsage(ctx, st, logger)
	}
}

// Usage analytics' retention (SPEC §9): hourly rows --usage-retention,
// daily rows 400 days. Each prune deletes at most pruneUsageBatches
// batches of pruneUsageBatch rows per table, so a long backlog is worked
// off over several intervals rather than by one long delete.
const (
	usageDailyRetention = 400 * 24 * time.Hour
	pruneUsageBatch     = 10_000
	pruneUsageBatches   = 10
)

func (s *serveCmd) pruneUsage(ctx context.Context, st store.Store, logger *slog.Logger) {
	var total int64
	for range pruneUsageBatches {
		now := time.Now()
		n, err := st.PruneUsage(ctx, now.Add(-s.UsageRetention), now.Add(-usageDailyRetention), pruneUsageBatch)
		if err != nil {
			if ctx.Err() == nil {
				logger.Warn("pruning usage analytics failed", "err", err)
			}
			return
		}
		total += n
		if n < pruneUsageBatch {
			break
		}
	}
	if total > 0 {
		logger.Info("pruned usage analytics", "deleted", total, "hourly_older_than", s.UsageRetention)
	}
}

// bootstrap gives a fresh embedded store an owner key, so that a first
// `keygate serve` is usable at once. The token goes to stdout, once, and
// never into a log line.
func (s *serveCmd) bootstrap(ctx context.Context, d *deps, st store.Store, logger *slog.Logger) error {
	const org, user = "default", "admin"
	_, err := st.GetOrganization(ctx, org)
	switch keygate.ErrorCode(err) {
	case "":
		return nil // already bootstrapped, or set up by hand
	case keygate.CodeNotFound:
	default:
		return fmt.Errorf("reading organization %s: %w", org, err)
	}
	seq, err := st.LatestEventSeq(ctx)
	if err != nil {
		return fmt.Errorf("reading the key-events log: %w", err)
	}
	if seq != 0 {
		return nil // used before: an operator removed "default" on purpose
	}
	created, err := manage.New(st, s.Conn.format, time.Now).CreateKey(ctx, manage.NewKey{
		OrgID: org, UserID: user, Name: "bootstrap owner key", Role: "owner", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		return fmt.Errorf("creating the bootstrap owner key: %w", err)
	}
	logger.Info("created the bootstrap owner key; its token is on stdout, once", "org_id", org, "user_id", user, "key_id", created.Key.ID)
	fmt.Fprintf(d.stdout, "keygate: created owner key for organization %s (shown once):\n%s\n", org, created.Token.String())
	return nil
}

// withConsole puts the web console in front of the HTTP API at /console
// and /console/..., and sends a browser opened at the HTTP port (GET or
// HEAD of "/" exactly) there; with --console=false those paths are the
// API's 404. The redirect is 302, temporary: it lasts only while the
// console is on, so no browser or proxy may keep it (301 and 308 are
// cached); for GET and HEAD, the only methods redirected, 302, 303 and 307
// behave alike, and 302 is the one every client knows.
func (s *serveCmd) withConsole(api http.Handler) http.Handler {
	if !s.Console {
		return api
	}
	c := console.Handler()
	mux := http.NewServeMux()
	mux.Handle(console.Prefix, c)
	mux.Handle(console.Prefix+"/", c)
	mux.Handle("GET /{$}", http.RedirectHandler(console.Prefix, http.StatusFound))
	mux.Handle("/", api)
	return mux
}
