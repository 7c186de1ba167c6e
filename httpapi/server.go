// Package httpapi is keygate's HTTP side on --http-addr: health, readiness
// and metrics for the operator, the management API (SPEC §5), and the JSON
// wire form of a key that both the API and the CLI's --json print.
//
// The management API only parses, authenticates and translates: the rules
// live in package manage, authentication is extauthz's own, so that Check
// and the API can never disagree about a key.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/leak"
	"github.com/keygate/keygate/manage"
)

// Pinger is the part of the store that readiness needs.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Config configures the HTTP handler.
type Config struct {
	// Store is pinged by /readyz.
	Store Pinger
	// Sync, if set, reports how current the cache is: /readyz stays ready
	// while the store is unreachable as long as the cache is within
	// --max-staleness, so a database blip does not pull every replica out
	// of the load balancer at once.
	Sync func() SyncState
	// Gatherer is what /metrics exposes: the registry serve built, so
	// tests and several servers in one process never share globals.
	Gatherer prometheus.Gatherer
	// Registerer, if set, gets this handler's request metrics:
	// keygate_http_requests_total and keygate_http_request_duration_seconds
	// by method, route (the ServeMux pattern) and code.
	Registerer prometheus.Registerer
	// ReadyTimeout bounds the store ping of one /readyz (default 2s): a
	// load balancer's probe must get an answer before its own timeout.
	ReadyTimeout time.Duration
	Logger       *slog.Logger

	// The management API is served when Auth and Manage are set.

	// Auth authenticates API calls with the steps of Check, the failed-auth
	// throttle included (extauthz.Server).
	Auth Authenticator
	// Manage performs the operations and holds their rules; it knows the
	// server's --rate-limit (manage.WithDefaultRateLimit).
	Manage *manage.Service
	// Syncer, if set, is called after every write and before the answer,
	// so that once a revoke has returned this replica's cache no longer
	// allows the key (SPEC §4). Other replicas follow the events log.
	Syncer Syncer
	// Propagator, if set, is what ?wait=true waits with (fleet.Waiter);
	// without it (the embedded store) the propagation is this replica
	// alone, synced before the answer (fleet.Local).
	Propagator Propagator
	// Usage records each authenticated call, for last_used_at.
	Usage UsageRecorder
	// Analytics, if set, serves usage analytics (SPEC §9):
	// GET /v1/api-keys/{id}/usage and GET /v1/usage.
	Analytics UsageReader
	// DocsURL is the base of docs_url in error bodies, as in Check's
	// denies (--docs-url); empty leaves docs_url out.
	DocsURL string
	// Now is the clock of key statuses; time.Now if nil.
	Now func() time.Time

	// Leaks, if set, serves POST /v1/leaked-keys (SPEC §13): reports of
	// leaked tokens, without authentication. The client address for its
	// throttle comes from Auth when set.
	Leaks LeakReporter
}

// Handler serves keygate's HTTP endpoints.
type Handler struct {
	cfg Config
	mux *http.ServeMux
	// served is mux with its request metrics.
	served http.Handler
}

// NewHandler returns the handler of --http-addr.
func NewHandler(cfg Config) *Handler {
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.route("/healthz", map[string]http.HandlerFunc{"GET": h.healthz})
	h.route("/readyz", map[string]http.HandlerFunc{"GET": h.readyz})
	h.route("/metrics", map[string]http.HandlerFunc{
		"GET": promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{cfg.Logger}}).ServeHTTP,
	})
	if cfg.Auth != nil && cfg.Manage != nil {
		h.routeAPI()
	}
	if cfg.Leaks != nil {
		h.route("/v1/leaked-keys", map[string]http.HandlerFunc{http.MethodPost: h.reportLeaks})
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, keygate.Errorf(keygate.CodeNotFound, "No such endpoint: %s %s.", r.Method, r.URL.Path))
	})
	h.served = instrument(h.mux, cfg.Registerer, cfg.Logger)
	return h
}

// instrument counts and times the requests next serves, by method, route
// and status code. The route is the pattern ServeMux matched, which it
// writes into the request it is given: never the raw path, so a key id is
// never a label and the series stay few.
func instrument(next http.Handler, reg prometheus.Registerer, logger *slog.Logger) http.Handler {
	labels := []string{"method", "route", "code"}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_http_requests_total",
		Help: "Requests to the management API, health and metrics on --http-addr, by method, route (the matched pattern, / for no endpoint) and status code.",
	}, labels)
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keygate_http_request_duration_seconds",
		Help:    "Latency of requests on --http-addr, by method, route and status code.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, labels)
	if reg != nil {
		requests = registered(reg, requests, logger)
		duration = registered(reg, duration, logger)
	}
	route := promhttp.WithLabelFromRequest("route", func(r *http.Request) string {
		p := r.Pattern
		if p == "" {
			return "none" // answered before any pattern matched (OPTIONS *)
		}
		_, path, ok := strings.Cut(p, " ") // the method is its own label
		if !ok {
			path = p
		}
		return path
	})
	return promhttp.InstrumentHandlerDuration(duration, promhttp.InstrumentHandlerCounter(requests, next, route), route)
}

// registered registers c on reg and returns it, or the same collector that
// is registered there already: a second handler on one registry shares
// the first one's series rather than failing. Metrics are not worth
// refusing to serve for, so any other error is logged.
func registered[C prometheus.Collector](reg prometheus.Registerer, c C, logger *slog.Logger) C {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	logger.Error("HTTP request metrics are not registered", "err", err)
	return c
}

// route serves path with one handler per method, and every other method
// with 405 method_not_allowed and an allow header: ServeMux's own 405 would
// have a plain-text body, not the error envelope.
func (h *Handler) route(path string, methods map[string]http.HandlerFunc) {
	allow := make([]string, 0, len(methods)+1)
	for m, fn := range methods {
		h.mux.HandleFunc(m+" "+path, fn)
		allow = append(allow, m)
		if m == http.MethodGet {
			allow = append(allow, http.MethodHead) // ServeMux serves HEAD with GET
		}
	}
	slices.Sort(allow)
	allowed := strings.Join(allow, ", ")
	h.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("allow", allowed)
		h.writeError(w, r, keygate.Errorf(keygate.CodeMethodNotAllowed, "%s is not allowed on %s; allowed: %s.", r.Method, r.URL.Path, allowed))
	})
}

// maxRequestIDLen bounds a client-sent x-request-id, as Check does.
const maxRequestIDLen = 200

type requestIDKey struct{}

// ServeHTTP implements http.Handler. Every answer carries x-request-id: the
// client's, or one generated here, which error bodies and the audit trail
// repeat so that one id follows a call everywhere.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get("x-request-id")
	if len(id) > maxRequestIDLen {
		id = id[:maxRequestIDLen]
	}
	if id == "" {
		id, _ = apikey.NewRequestID() // crypto/rand does not fail
	}
	w.Header().Set("x-request-id", id)
	h.served.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
}

// requestID is the id ServeHTTP gave r.
func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

// healthz says the process is alive; it checks nothing else, so that a
// database outage never gets a replica restarted.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Readiness is the body of /readyz.
type Readiness struct {
	Status string     `json:"status"` // "ready" or "unavailable"
	Store  StoreState `json:"store"`
	Sync   *SyncState `json:"sync,omitempty"`
}

// SyncState is how current the cache is with the key-events log.
type SyncState struct {
	// Notifications is "listen" (PostgreSQL LISTEN/NOTIFY, with polling as
	// a backstop) or "poll" (the embedded store).
	Notifications string `json:"notifications"`
	// Connected is whether the LISTEN connection is up (always false when
	// polling).
	Connected bool `json:"connected"`
	// SecondsSinceSync is how long ago the events log was last read to
	// its end.
	SecondsSinceSync    float64 `json:"seconds_since_sync"`
	MaxStalenessSeconds float64 `json:"max_staleness_seconds"`
	// Stale is true past --max-staleness: the cache is not used.
	Stale bool `json:"stale"`
}

// StoreState is the store part of Readiness.
type StoreState struct {
	Reachable bool `json:"reachable"`
	// LatencyMS is how long the ping took.
	LatencyMS int64 `json:"latency_ms"`
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.ReadyTimeout)
	defer cancel()
	start := time.Now()
	err := h.cfg.Store.Ping(ctx)
	body := Readiness{Status: "ready", Store: StoreState{Reachable: err == nil, LatencyMS: time.Since(start).Milliseconds()}}
	if h.cfg.Sync != nil {
		s := h.cfg.Sync()
		body.Sync = &s
	}
	status := http.StatusOK
	if err != nil {
		// The cause goes to the log, not the body: it may name hosts.
		h.cfg.Logger.Warn("readiness: store ping failed", "err", err)
		if body.Sync == nil || body.Sync.Stale {
			body.Status = "unavailable"
			status = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, status, body)
}

// ErrorBody is the error envelope of every keygate HTTP error, the same as
// the body of a Check deny.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
	Meta  ErrorMeta   `json:"meta"`
}

// ErrorDetail is the "error" member of ErrorBody.
type ErrorDetail struct {
	Code    keygate.Code `json:"code"`
	Message string       `json:"message"`
	Param   ErrorParam   `json:"param,omitzero"`
	DocsURL string       `json:"docs_url,omitempty"`
}

// ErrorParam is error.param: absent (the zero value) for errors that are
// not about a body field, the field's name for a bad field, and null for a
// body that does not parse, where no one field is to blame (SPEC §5).
type ErrorParam struct {
	Name string
	Null bool
}

// IsZero reports whether p is absent.
func (p ErrorParam) IsZero() bool { return p.Name == "" && !p.Null }

// MarshalJSON writes p as its name or null.
func (p ErrorParam) MarshalJSON() ([]byte, error) {
	if p.Name == "" {
		return []byte("null"), nil
	}
	return json.Marshal(p.Name)
}

// UnmarshalJSON reads a name or null.
func (p *ErrorParam) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*p = ErrorParam{Null: true}
		return nil
	}
	*p = ErrorParam{}
	return json.Unmarshal(b, &p.Name)
}

// ErrorMeta is the "meta" member of ErrorBody.
type ErrorMeta struct {
	RequestID string `json:"request_id,omitempty"`
}

// writeError is the one place where an error becomes an HTTP response,
// with the headers of a Check deny of the same code: www-authenticate on
// 401 (RFC 6750; no error= without a credential) and retry-after on 503
// (too_many_failed_attempts sets its own before).
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keygate.ErrorCode(err)
	if code == keygate.CodeInternal {
		h.cfg.Logger.Error("management API: internal error", "method", r.Method, "path", r.URL.Path,
			"request_id", requestID(r), "err", err)
	}
	d := ErrorDetail{Code: code, Message: keygate.ErrorMessage(err)}
	var e *keygate.Error
	switch {
	case errors.Is(err, errBodyNotJSON), errors.Is(err, leak.ErrNotJSON):
		d.Param = ErrorParam{Null: true}
	case errors.As(err, &e) && e.Param != "":
		d.Param = ErrorParam{Name: e.Param}
	}
	if h.cfg.DocsURL != "" {
		d.DocsURL = h.cfg.DocsURL + "#" + string(code)
	}
	switch status := code.HTTPStatus(); {
	case code == keygate.CodeInvalidSignature:
		// A report's signature is not a bearer credential: no challenge.
	case status == http.StatusUnauthorized && code == keygate.CodeMissingAPIKey:
		w.Header().Set("www-authenticate", `Bearer realm="keygate"`)
	case status == http.StatusUnauthorized:
		w.Header().Set("www-authenticate", `Bearer realm="keygate", error="invalid_token"`)
	case status == http.StatusServiceUnavailable && w.Header().Get("retry-after") == "":
		w.Header().Set("retry-after", "1")
	}
	writeJSON(w, code.HTTPStatus(), ErrorBody{Error: d, Meta: ErrorMeta{RequestID: requestID(r)}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("content-type", "application/json")
	w.Header().Set("cache-control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client has gone if this fails
}

// slogErrorLog adapts a slog.Logger to promhttp's Println logger.
type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) { s.l.Error("metrics", "err", v) }
