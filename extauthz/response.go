package extauthz

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/ratelimit"
)

// headerNames are the names of the identity headers for one prefix.
type headerNames struct {
	prefix                                                       string
	keyID, orgID, userID, scopes, keyType, environment, projects string
	wouldDeny                                                    string // a report-only route's (SPEC §11)
	remaining                                                    string // a usage-limited key's uses left (SPEC §9)
}

func newHeaderNames(prefix string) *headerNames {
	return &headerNames{
		prefix:      prefix,
		keyID:       prefix + "key-id",
		orgID:       prefix + "org-id",
		userID:      prefix + "user-id",
		scopes:      prefix + "scopes",
		keyType:     prefix + "key-type",
		environment: prefix + "environment",
		projects:    prefix + "project-ids",
		wouldDeny:   prefix + "would-deny",
		remaining:   prefix + "remaining",
	}
}

// hasPrefix reports whether a header name starts with the identity prefix,
// in any case (Envoy lower-cases names; a client may not).
func (n *headerNames) hasPrefix(name string) bool {
	// The first byte, folded to lower case, rejects most names before the
	// case-insensitive comparison (the prefix is lower-case).
	return len(name) >= len(n.prefix) && name[0]|0x20 == n.prefix[0] && strings.EqualFold(name[:len(n.prefix)], n.prefix)
}

// sets reports whether an allow for v sets header name (lower-case).
func (n *headerNames) sets(v *keygate.KeyView, name string) bool {
	switch strings.ToLower(name) {
	case n.keyID, n.orgID, n.userID, n.scopes, n.keyType, n.environment:
		return true
	case n.projects:
		return v.Restricted()
	case n.remaining:
		limited, _, _ := v.UsageLimited()
		return limited
	}
	return false
}

// MetadataEncoding prepares a key's metadata for its cached view
// (cache.Config.Metadata): the wire form of the google.protobuf.Struct an
// allow carries as dynamic_metadata.metadata, or "" for an empty object.
// Encoded once per load, so an allow copies bytes and parses no JSON.
func MetadataEncoding(raw json.RawMessage) string { return string(encodeMetadata(raw)) }

// The credential headers to remove, shared by allows (full slice
// expressions: nobody may append into them).
var (
	removeAPIKey = []string{"x-api-key"}
	removeAuthz  = []string{"authorization"}
	removeBoth   = []string{"x-api-key", "authorization"}
)

// maxScopes is how many scopes an allow lists without a heap allocation.
const maxScopes = 8

// allowBuf is the room an allow is built in: on the caller's stack, so a
// hit allocates nothing here.
type allowBuf struct {
	headers [8]wireHeader
	limits  [3]wireHeader
	scopes  [maxScopes]string
}

// allow builds into b the allow for the key v: the identity headers set
// over the client's, the credential and client-sent identity headers
// removed, the rate-limit headers and the dynamic metadata (SPEC §3).
//
// The allow is returned by value and points into b, never the other way
// round, so that both stay on the caller's stack.
func (s *Server) allow(b *allowBuf, v *keygate.KeyView, r *request, from uint8, now time.Time) (a allowOut) {
	n := s.names
	if !s.cfg.StripCredentials {
		from = 0 // nothing removed, whichever header carried the token
	}
	var remove []string
	switch from {
	case fromAPIKey:
		remove = removeAPIKey[:1:1]
	case fromAuthorization:
		remove = removeAuthz[:1:1]
	case fromAPIKey | fromAuthorization:
		remove = removeBoth[:2:2]
	}
	if r.prefixed > 0 {
		remove = s.removePrefixed(v, r, remove)
	}
	a.remove = remove
	id, org, user, scopes, env := v.ID(), v.OrgID(), v.UserID(), v.Scopes(), string(v.Environment())
	b.headers = [8]wireHeader{
		{n.keyID, id}, {n.orgID, org}, {n.userID, user}, {n.scopes, scopes},
		{n.keyType, string(v.Type())}, {n.environment, env}, {n.projects, v.ProjectIDs()},
	}
	a.headers = b.headers[:6]
	if v.Restricted() {
		a.headers = b.headers[:7]
	}
	if r.spent {
		// x-keygate-remaining: the uses left after this one (SPEC §9).
		k := len(a.headers)
		b.headers[k] = wireHeader{n.remaining, decimal(r.remaining)}
		a.headers = b.headers[: k+1 : k+1]
		a.meta.remaining, a.meta.hasRemaining = r.remaining, true
	}
	if r.limit.Limit > 0 {
		b.limits = [3]wireHeader{
			{"ratelimit-limit", decimal(int64(r.limit.Limit))},
			{"ratelimit-remaining", decimal(int64(r.limit.Remaining))},
			{"ratelimit-reset", decimal(r.limit.ResetSeconds())},
		}
		a.responseHeaders = b.limits[:]
	}
	age := v.Age(now).Milliseconds()
	if age < 0 {
		age = 0
	}
	meta := v.Metadata()
	a.meta = allowMeta{
		keyID: id, orgID: org, userID: user, environment: env,
		scopes:     splitScopes(&b.scopes, scopes),
		metadata:   unsafe.Slice(unsafe.StringData(meta), len(meta)), // read only
		cacheAgeMS: age,
		remaining:  a.meta.remaining, hasRemaining: a.meta.hasRemaining,
	}
	return a
}

// wouldDenyAllow builds into b the allow of a report-only route for a
// request the decision denies with code (SPEC §11): the only header set is
// x-keygate-would-deny (no identity: there is none to vouch for), the
// credential headers and every other client-sent prefixed header are
// removed as on any allow, no ratelimit-* headers are added, and the
// dynamic metadata is {would_deny: code}.
func (s *Server) wouldDenyAllow(b *allowBuf, r *request, code keygate.Code) (a allowOut) {
	n := s.names
	b.headers[0] = wireHeader{n.wouldDeny, string(code)}
	a.headers = b.headers[:1]
	var remove []string
	add := func(name string) {
		for _, have := range remove {
			if have == name {
				return
			}
		}
		remove = append(remove, name)
	}
	for _, h := range r.in.headers {
		switch name := strings.ToLower(h.name); {
		case n.hasPrefix(name):
			// A forged x-keygate-would-deny is overwritten by the set
			// (append: false); Envoy removes after it sets, so the name
			// set is never listed.
			if name != n.wouldDeny {
				add(name)
			}
		case !s.cfg.StripCredentials:
		case name == "x-api-key":
			add(name)
		case name == "authorization" && (bearerPart(h.value) || r.creds.apiKeyN == 0):
			// What keygate read as a credential: any Bearer, or any
			// authorization without an x-api-key. A non-Bearer one beside
			// an x-api-key belongs to the upstream (SPEC §3 rule 3).
			add(name)
		}
	}
	a.remove = remove
	a.meta = allowMeta{wouldDeny: string(code)}
	return a
}

// decimal is n in decimal. The numbers of the ratelimit-* headers are
// small (a per-minute limit, what is left of it, seconds to a full
// bucket): below 4096 they come from a table made once, so an allow
// formats no number.
func decimal(n int64) string {
	if n >= 0 && n < int64(len(decimals())) {
		return decimals()[n]
	}
	return strconv.FormatInt(n, 10)
}

var decimals = sync.OnceValue(func() []string {
	t := make([]string, 4096)
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
})

// splitScopes splits the comma-joined scopes into arr, or into a slice of
// its own when there are more than arr holds.
func splitScopes(arr *[maxScopes]string, joined string) []string {
	if joined == "" {
		return nil
	}
	if strings.Count(joined, ",") >= len(arr) {
		return strings.Split(joined, ",")
	}
	n := 0
	for sc := range strings.SplitSeq(joined, ",") { // joined is not empty here
		arr[n] = sc
		n++
	}
	return arr[:n]
}

// removePrefixed adds to remove every client-sent header with the identity
// prefix that the allow does not set itself, so no client can smuggle an
// identity header past keygate.
func (s *Server) removePrefixed(v *keygate.KeyView, r *request, remove []string) []string {
	out := make([]string, len(remove), len(remove)+r.prefixed)
	copy(out, remove)
	seen := func(name string) bool {
		for _, have := range out {
			if have == name {
				return true
			}
		}
		return false
	}
	for _, h := range r.in.headers {
		if !s.names.hasPrefix(h.name) {
			continue
		}
		name := strings.ToLower(h.name)
		// x-keygate-remaining is set only when uses were spent, not for
		// every usage-limited view: a key made unlimited since its view
		// was loaded gets none, so a client's own must go.
		set := s.names.sets(v, name) && (name != s.names.remaining || r.spent)
		if !set && !seen(name) {
			out = append(out, name)
		}
	}
	return out
}

// denial is the fixed part of the deny for one code.
type denial struct {
	grpc    int32
	http    int32
	headers []wireHeader
	// body is the JSON body up to the request id, which each deny appends.
	body string
}

// retryAfter is the Retry-After of a 503, in seconds.
const retryAfter = 1

func newDenials(docsURL string) map[keygate.Code]*denial {
	codesList := denyCodes()
	out := make(map[keygate.Code]*denial, len(codesList))
	for _, c := range codesList {
		status := c.HTTPStatus()
		d := &denial{
			grpc:    int32(grpcCode(status)),
			http:    int32(status),
			headers: []wireHeader{{"content-type", "application/json"}},
		}
		switch status {
		case 401:
			v := `Bearer realm="keygate", error="invalid_token"`
			if c == keygate.CodeMissingAPIKey {
				v = `Bearer realm="keygate"` // RFC 6750 §3.1: no error without a credential
			}
			d.headers = append(d.headers, wireHeader{"www-authenticate", v})
		case 503:
			d.headers = append(d.headers, wireHeader{"retry-after", strconv.Itoa(retryAfter)})
		}
		d.body = denyBodyPrefix(c, c.Message(), docsURL)
		out[c] = d
	}
	return out
}

// grpcCode is the gRPC status code of a deny with HTTP status h.
func grpcCode(h int) codes.Code {
	switch h {
	case 400:
		return codes.InvalidArgument
	case 401:
		return codes.Unauthenticated
	case 403:
		return codes.PermissionDenied
	case 429:
		return codes.ResourceExhausted
	case 503:
		return codes.Unavailable
	}
	return codes.Internal
}

// maxRequestIDLen bounds a client-sent x-request-id echoed in a deny body.
const maxRequestIDLen = 200

// deny is the one place a code becomes a deny.
func (s *Server) deny(r *request, code keygate.Code) *denyOut {
	d := s.denies[code]
	id := r.requestID
	if len(id) > maxRequestIDLen {
		id = id[:maxRequestIDLen]
	}
	if id == "" {
		id, _ = apikey.NewRequestID()
	}
	headers := d.headers
	switch code {
	case keygate.CodeRateLimited:
		headers = append(append([]wireHeader(nil), d.headers...), rateLimitHeaders(r.limit)...)
	case keygate.CodeTooManyFailedAttempts:
		headers = append(append([]wireHeader(nil), d.headers...),
			wireHeader{"retry-after", ratelimit.FormatRetryAfter(r.retryAfter)})
	case keygate.CodeUsageExceeded:
		// Seconds to the next refill; no retry-after without one.
		if r.retryAfter > 0 {
			headers = append(append([]wireHeader(nil), d.headers...),
				wireHeader{"retry-after", ratelimit.FormatRetryAfter(r.retryAfter)})
		}
	}
	body := d.body
	if r.detail != "" {
		body = denyBodyPrefix(code, r.detail, s.cfg.DocsURL)
	}
	return &denyOut{code: d.grpc, message: string(code), httpStatus: d.http, headers: headers,
		body: body + jsonString(id) + "}}"}
}

// rateLimitHeaders are the ratelimit-* headers of res, and retry-after
// when res denied.
func rateLimitHeaders(res ratelimit.Result) []wireHeader {
	limit, remaining, reset, retry := res.Headers()
	hs := []wireHeader{{"ratelimit-limit", limit}, {"ratelimit-remaining", remaining}, {"ratelimit-reset", reset}}
	if retry != "" {
		hs = append(hs, wireHeader{"retry-after", retry})
	}
	return hs
}

// denyBodyPrefix is a deny's JSON body up to the request id, which the
// caller appends.
func denyBodyPrefix(c keygate.Code, message, docsURL string) string {
	body, _ := json.Marshal(struct {
		Code    keygate.Code `json:"code"`
		Message string       `json:"message"`
		DocsURL string       `json:"docs_url"`
	}{c, message, docsURL + "#" + string(c)})
	return `{"error":` + string(body) + `,"meta":{"request_id":`
}

// jsonString is id as a JSON string, as encoding/json writes it. Request ids
// are nearly always plain ASCII, which needs no escaping and no encoder.
func jsonString(id string) string {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(id)
			return string(b)
		}
	}
	return `"` + id + `"`
}
