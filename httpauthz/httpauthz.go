// Package httpauthz serves keygate's decision over plain HTTP, for proxies
// that ask an HTTP authorizer (SPEC §16): Envoy's ext_authz http_service
// at /authz/<original path>, and forward-auth (nginx auth_request, Caddy
// forward_auth, Traefik ForwardAuth) at /forward-auth.
//
// The decision is Check's own (extauthz.Server.DecideHTTP); this package
// only reads the original request out of the proxy's and writes the
// answer back. The handler is a plain http.Handler and reads the raw
// request target (RequestURI): http.ServeMux would clean and decode the
// path before SPEC §3's normalization rules could judge it.
package httpauthz

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/ratelimit"
)

// Decider is the decision (extauthz.Server).
type Decider interface {
	DecideHTTP(ctx context.Context, req extauthz.HTTPRequest) extauthz.HTTPAnswer
}

// Config configures the handler.
type Config struct {
	// TrustedProxies (--trusted-proxies) are the only peers whose
	// x-forwarded-for and original method and URI headers are believed.
	// Nil means loopback only.
	TrustedProxies []netip.Prefix
}

// The endpoints.
const (
	// EnvoyPrefix is Envoy http_service's path_prefix: the original path
	// follows it.
	EnvoyPrefix = "/authz"
	// ForwardAuthPath is the forward-auth endpoint.
	ForwardAuthPath = "/forward-auth"
)

// Handler answers both endpoints.
type Handler struct {
	d     Decider
	addrs ratelimit.ClientAddrs
}

// New returns the handler of --authz-http-addr deciding with d.
func New(d Decider, cfg Config) *Handler {
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = ratelimit.DefaultTrustedProxies()
	}
	return &Handler{d: d, addrs: ratelimit.ClientAddrs{Header: "x-forwarded-for", Trusted: cfg.TrustedProxies}}
}

// Server limits: those of the management server, less the long waits it
// allows (an authorization has no body and answers at once).
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 15 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10 // Envoy's default request-header limit, with room
)

// NewServer returns the HTTP server of --authz-http-addr serving h, with
// its limits set.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// ServeHTTP routes on the raw request target.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.RequestURI
	path := target
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	switch {
	case path == ForwardAuthPath:
		h.forwardAuth(w, r)
	case strings.HasPrefix(target, EnvoyPrefix) &&
		(len(target) == len(EnvoyPrefix) || target[len(EnvoyPrefix)] == '/' || target[len(EnvoyPrefix)] == '?'):
		req := h.request(r)
		req.Method, req.Path = r.Method, target[len(EnvoyPrefix):]
		write(w, h.d.DecideHTTP(r.Context(), req))
	default:
		http.Error(w, "not found: keygate answers /authz/<path> (Envoy http_service) and /forward-auth", http.StatusNotFound)
	}
}

// forwardAuth answers nginx auth_request, Caddy forward_auth and Traefik
// ForwardAuth: the original method and URI come from headers, believed
// only from a trusted proxy. A request without them is invalid_request:
// there is nothing to judge.
func (h *Handler) forwardAuth(w http.ResponseWriter, r *http.Request) {
	req := h.request(r)
	if !h.addrs.TrustedPeer(r.RemoteAddr) {
		req.Reject = "The forward-auth request did not come from a trusted proxy (--trusted-proxies), so its original method and URI headers are not believed."
	} else {
		var reason string
		req.Method, reason = original(r.Header, "X-Forwarded-Method", "X-Original-Method", "method")
		if reason == "" {
			req.Path, reason = original(r.Header, "X-Forwarded-Uri", "X-Original-Uri", "URI")
		}
		req.Reject = reason
	}
	write(w, h.d.DecideHTTP(r.Context(), req))
}

// original reads the original method or URI from header a or b: one value,
// and the same in both when both are sent. The values are never echoed
// (a URI's query may hold secrets).
func original(hd http.Header, a, b, what string) (string, string) {
	va, vb := hd.Values(a), hd.Values(b)
	for _, vs := range [][]string{va, vb} {
		if len(vs) > 1 && slices.ContainsFunc(vs[1:], func(v string) bool { return v != vs[0] }) {
			return "", "The original " + what + " was sent more than once, with different values."
		}
	}
	switch {
	case len(va) > 0 && len(vb) > 0 && va[0] != vb[0]:
		return "", "The headers " + strings.ToLower(a) + " and " + strings.ToLower(b) + " disagree on the original " + what + "."
	case len(va) > 0:
		return va[0], ""
	case len(vb) > 0:
		return vb[0], ""
	}
	return "", "The forward-auth request lacks the original " + what + " (" + strings.ToLower(a) + " or " + strings.ToLower(b) + ")."
}

// request is what both endpoints pass on: the headers, lower-cased and in
// name order (Go keeps no order across names), and the client address of
// SPEC §16.
func (h *Handler) request(r *http.Request) extauthz.HTTPRequest {
	names := make([]string, 0, len(r.Header))
	n := 0
	for name, vs := range r.Header {
		names = append(names, name)
		n += len(vs)
	}
	slices.Sort(names)
	headers := make([]extauthz.HTTPHeader, 0, n)
	for _, name := range names {
		lower := strings.ToLower(name)
		for _, v := range r.Header[name] {
			headers = append(headers, extauthz.HTTPHeader{Name: lower, Value: v})
		}
	}
	addr, _ := h.addrs.Peer(r.RemoteAddr, strings.Join(r.Header.Values("X-Forwarded-For"), ","))
	return extauthz.HTTPRequest{Headers: headers, ClientAddr: addr}
}

// write sends an answer: a deny's status, headers and JSON body, or an
// allow's 200 and headers.
func write(w http.ResponseWriter, a extauthz.HTTPAnswer) {
	hd := w.Header()
	for _, x := range a.Headers {
		hd.Add(x.Name, x.Value)
	}
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(len(a.Body)))
	w.WriteHeader(a.Status)
	if a.Body != "" {
		_, _ = w.Write([]byte(a.Body))
	}
}
