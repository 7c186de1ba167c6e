package extauthz

import (
	"crypto/subtle"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate"
)

// Which credential headers carried the token, so an allow can remove them.
const (
	fromAPIKey uint8 = 1 << iota
	fromAuthorization
)

// headerVisitor is called for every request header; a header sent twice
// (raw header_map) is visited twice.
type headerVisitor func(name, value string)

// visitHeaders walks the request headers in whichever form Envoy sent them:
// the headers map or, with encode_raw_headers, header_map with raw values.
func visitHeaders(h *authv3.AttributeContext_HttpRequest, visit headerVisitor) {
	if hm := h.GetHeaderMap(); hm != nil && len(hm.GetHeaders()) > 0 {
		for _, hv := range hm.GetHeaders() {
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			visit(hv.GetKey(), v)
		}
		return
	}
	for k, v := range h.GetHeaders() {
		visit(k, v)
	}
}

// credentials accumulates what the request's headers say about its API key,
// following SPEC §3: x-api-key and/or authorization: Bearer, and what makes
// them conflict or malformed.
type credentials struct {
	apiKey  string
	apiKeyN int // non-empty x-api-key values
	bearer  string
	bearerN int
	// authN and keyN count the header entries by name, whatever they
	// hold: a credential header sent twice is several values, whatever
	// their schemes (header_map sends each line as an entry).
	authN, keyN int
	otherAuth   bool // an authorization that is not Bearer <token>
	// several is set by a value that holds several credentials: an
	// x-api-key with a comma, or an authorization with a comma where some
	// comma-separated part starts with Bearer (Envoy joins a repeated
	// header with commas, and a token never holds one).
	several bool
}

func (c *credentials) add(name, value string) {
	switch {
	// The length test first: most headers are neither, and it is cheaper
	// than a case-insensitive comparison.
	case len(name) == len("x-api-key") && strings.EqualFold(name, "x-api-key"):
		c.keyN++
		v := strings.TrimSpace(value)
		if strings.IndexByte(v, ',') >= 0 {
			c.several = true
		}
		if v == "" {
			return // an empty x-api-key carries no credential
		}
		c.apiKeyN++
		c.apiKey = v
	case len(name) == len("authorization") && strings.EqualFold(name, "authorization"):
		c.authN++
		if strings.IndexByte(value, ',') >= 0 && bearerPart(value) {
			c.several = true
		}
		v := strings.TrimSpace(value)
		scheme, rest := v, ""
		if i := strings.IndexAny(v, " \t"); i >= 0 {
			scheme, rest = v[:i], strings.TrimSpace(v[i:])
		}
		if !strings.EqualFold(scheme, "bearer") || rest == "" {
			c.otherAuth = true
			return
		}
		c.bearerN++
		c.bearer = rest
	}
}

// bearerPart reports whether some comma-separated part of an authorization
// value starts with "Bearer", in any case. A single "Digest …, realm=…" is
// one value; "Basic …, Bearer …" is two credentials.
func bearerPart(v string) bool {
	for part := range strings.SplitSeq(v, ",") {
		part = strings.TrimLeft(part, " \t")
		if len(part) >= len("bearer") && strings.EqualFold(part[:len("bearer")], "bearer") {
			return true
		}
	}
	return false
}

// token decides which token the request presents, or the code that denies
// it. from says which headers carried the token.
func (c *credentials) token() (tok string, from uint8, code keygate.Code) {
	if c.several || c.keyN > 1 || c.authN > 1 || c.bearerN > 1 {
		return "", 0, keygate.CodeConflictingCredentials
	}
	switch {
	case c.apiKeyN == 1 && c.bearerN == 1:
		if subtle.ConstantTimeCompare([]byte(c.apiKey), []byte(c.bearer)) != 1 {
			return "", 0, keygate.CodeConflictingCredentials
		}
		return c.apiKey, fromAPIKey | fromAuthorization, ""
	case c.apiKeyN == 1:
		// A non-Bearer authorization beside an x-api-key belongs to the
		// upstream: it is ignored and left in place.
		return c.apiKey, fromAPIKey, ""
	case c.bearerN == 1:
		return c.bearer, fromAuthorization, ""
	case c.otherAuth:
		return "", 0, keygate.CodeInvalidAuthorizationFormat
	}
	return "", 0, keygate.CodeMissingAPIKey
}
