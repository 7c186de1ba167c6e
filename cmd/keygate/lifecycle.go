package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
)

// lifecycle is the HTTP handler of --http-addr through serve's whole life.
// While serve starts it answers /healthz (200: the process is alive) and
// /readyz (503, saying what serve waits for) itself, and everything else
// with 503, so a database that does not answer never leaves serve silent.
// Once the store is ready it hands every request to the API's handler; from
// the first SIGTERM it answers /readyz 503 "shutting_down" while the API,
// the console and gRPC keep serving for --shutdown-delay.
type lifecycle struct {
	state atomic.Pointer[phase]
}

// phase is one state of a lifecycle; it is replaced, never changed.
type phase struct {
	waitingFor string       // starting: what serve waits for
	api        http.Handler // serving and shutting down
	draining   bool
}

// Readiness bodies of the phases the API's own /readyz does not cover.
type (
	startingBody struct {
		Status     string `json:"status"` // "starting"
		WaitingFor string `json:"waiting_for"`
	}
	shuttingDownBody struct {
		Status  string `json:"status"` // "shutting_down"
		Message string `json:"message"`
	}
)

func newLifecycle(waitingFor string) *lifecycle {
	l := &lifecycle{}
	l.waitFor(waitingFor)
	return l
}

// waitFor says what serve is waiting for while it starts.
func (l *lifecycle) waitFor(what string) { l.state.Store(&phase{waitingFor: what}) }

// waiting is what serve is waiting for ("" once it serves).
func (l *lifecycle) waiting() string { return l.state.Load().waitingFor }

// serve hands every request to api: serve is ready.
func (l *lifecycle) serve(api http.Handler) { l.state.Store(&phase{api: api}) }

// drain makes /readyz answer 503 shutting_down; the rest is still served.
func (l *lifecycle) drain() {
	p := *l.state.Load()
	p.draining = true
	l.state.Store(&p)
}

func (l *lifecycle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := l.state.Load()
	probe := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case p.draining && probe && r.URL.Path == "/readyz":
		writeHTTPJSON(w, http.StatusServiceUnavailable, shuttingDownBody{Status: "shutting_down",
			Message: "keygate is shutting down: it still answers until --shutdown-delay has passed, then stops accepting"})
	case p.api != nil:
		p.api.ServeHTTP(w, r)
	case probe && r.URL.Path == "/healthz":
		writeHTTPJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case probe && r.URL.Path == "/readyz":
		writeHTTPJSON(w, http.StatusServiceUnavailable, startingBody{Status: "starting", WaitingFor: p.waitingFor})
	default:
		w.Header().Set("retry-after", "1")
		writeHTTPJSON(w, keygate.CodeServiceUnavailable.HTTPStatus(), httpapi.ErrorBody{Error: httpapi.ErrorDetail{
			Code:    keygate.CodeServiceUnavailable,
			Message: fmt.Sprintf("keygate is starting: waiting for %s.", p.waitingFor),
		}})
	}
}

func writeHTTPJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("content-type", "application/json")
	w.Header().Set("cache-control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
