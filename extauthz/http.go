package extauthz

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/keygate/keygate"
)

// HTTPHeader is one header of an HTTPRequest or an HTTPAnswer.
type HTTPHeader struct{ Name, Value string }

// HTTPRequest is what an HTTP authorization transport (package httpauthz,
// SPEC §16) asks about a request.
type HTTPRequest struct {
	// Method and Path are the original request's method and raw request
	// target, as received: Path is judged by SPEC §3's normalization
	// rules, never cleaned or decoded.
	Method, Path string
	// Headers are the request headers as forwarded, in order, repeats kept.
	Headers []HTTPHeader
	// ClientAddr is the client address the transport resolved (SPEC §16):
	// the address the failed-authentication throttle counts. The
	// --client-ip-header is not read from Headers.
	ClientAddr netip.Addr
	// Reject, when not empty, denies the request invalid_request with this
	// message and decides nothing: the transport found the proxy's request
	// itself malformed (a missing or ambiguous original method or URI).
	Reject string
}

// HTTPAnswer is a decision in HTTP form.
type HTTPAnswer struct {
	// Code is the deny's code, "" for an allow.
	Code keygate.Code
	// WouldDeny is, for an allow on a report-only route (SPEC §11), the
	// code an enforced route would have denied with; Identity then holds
	// only the x-keygate-would-deny header.
	WouldDeny keygate.Code
	// Status is 200 for an allow, else the deny's HTTP status.
	Status int
	// Headers are every header of the response: for a deny its headers
	// (content-type, www-authenticate, retry-after, ratelimit-*); for an
	// allow Identity, RateLimit and, when Remove is not empty,
	// x-envoy-auth-headers-to-remove naming them.
	Headers []HTTPHeader
	// Body is a deny's JSON body, byte for byte the body Check denies with.
	Body string
	// Identity are an allow's identity headers (x-keygate-*), for the
	// upstream request.
	Identity []HTTPHeader
	// RateLimit are an allow's ratelimit-* headers, for the client.
	RateLimit []HTTPHeader
	// Remove names the request headers to strip before the upstream: the
	// credential headers and client-sent identity headers keygate does not
	// set.
	Remove []string
}

// HeadersToRemove is the response header naming, comma-separated, the
// request headers the proxy strips (Envoy's http_service honours it).
const HeadersToRemove = "x-envoy-auth-headers-to-remove"

// DecideHTTP decides req with exactly the steps of Check (decideProto) and
// answers in HTTP form. Route policy comes from the policy file and the
// defaults: an HTTP request has no context_extensions.
func (s *Server) DecideHTTP(ctx context.Context, req HTTPRequest) HTTPAnswer {
	start, now := s.clock()
	in := checkInput{method: req.Method, path: req.Path, clientAddr: req.ClientAddr}
	in.headers = make([]wireHeader, len(req.Headers))
	for i, h := range req.Headers {
		in.headers[i] = wireHeader{h.Name, h.Value}
	}
	var (
		r   request
		buf allowBuf
		a   answer
	)
	if req.Reject != "" {
		r.in = &in
		for _, h := range in.headers {
			if r.requestID == "" && strings.EqualFold(h.name, "x-request-id") {
				r.requestID = h.value
			}
		}
		r.detail = req.Reject
		a = answer{code: keygate.CodeInvalidRequest, deny: s.deny(&r, keygate.CodeInvalidRequest)}
	} else {
		a = s.decideProto(ctx, &in, &r, &buf, now)
	}
	s.m.observe(a.code, time.Since(start))
	return a.http()
}

// http is a in HTTP form.
func (a *answer) http() HTTPAnswer {
	if d := a.deny; d != nil {
		out := HTTPAnswer{Code: a.code, Status: int(d.httpStatus), Body: d.body, Headers: make([]HTTPHeader, len(d.headers))}
		for i, h := range d.headers {
			out.Headers[i] = HTTPHeader{h.name, h.value}
		}
		return out
	}
	al := &a.allow
	out := HTTPAnswer{Status: 200, WouldDeny: a.wouldDeny, Remove: append([]string(nil), al.remove...)}
	out.Headers = make([]HTTPHeader, 0, len(al.headers)+len(al.responseHeaders)+1)
	for _, h := range al.headers {
		out.Headers = append(out.Headers, HTTPHeader{h.name, h.value})
	}
	out.Identity = out.Headers[:len(al.headers):len(al.headers)]
	for _, h := range al.responseHeaders {
		out.Headers = append(out.Headers, HTTPHeader{h.name, h.value})
	}
	out.RateLimit = out.Headers[len(al.headers):len(out.Headers):len(out.Headers)]
	if len(al.remove) > 0 {
		out.Headers = append(out.Headers, HTTPHeader{HeadersToRemove, strings.Join(al.remove, ",")})
	}
	return out
}
