// Package httpapi is keygate's HTTP side on --http-addr: health, readiness
// and metrics for the operator now, the management API later, and the JSON
// wire form of a key that both the API and the CLI's --json print.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/keygate/keygate"
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
	// ReadyTimeout bounds the store ping of one /readyz (default 2s): a
	// load balancer's probe must get an answer before its own timeout.
	ReadyTimeout time.Duration
	Logger       *slog.Logger
}

// Handler serves keygate's HTTP endpoints.
type Handler struct {
	cfg Config
	mux *http.ServeMux
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
	h := &Handler{cfg: cfg, mux: http.NewServeMux()}
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{cfg.Logger}}))
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, keygate.Errorf(keygate.CodeNotFound, "No such endpoint: %s %s.", r.Method, r.URL.Path))
	})
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

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
	Param   *string      `json:"param,omitempty"`
}

// ErrorMeta is the "meta" member of ErrorBody.
type ErrorMeta struct {
	RequestID string `json:"request_id,omitempty"`
}

// writeError is the one place where an error becomes an HTTP response.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := keygate.ErrorCode(err)
	d := ErrorDetail{Code: code, Message: keygate.ErrorMessage(err)}
	var e *keygate.Error
	if errors.As(err, &e) && e.Param != "" {
		d.Param = &e.Param
	}
	writeJSON(w, code.HTTPStatus(), ErrorBody{Error: d, Meta: ErrorMeta{RequestID: r.Header.Get("x-request-id")}})
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
