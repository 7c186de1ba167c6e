package extauthz

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/ratelimit"
)

// headerNames are the names of the identity headers for one prefix.
type headerNames struct {
	prefix                                                       string
	keyID, orgID, userID, scopes, keyType, environment, projects string
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
	}
	return false
}

// overwrite is the append setting of every header keygate sets: present and
// false, the deprecated BoolValue that every Envoy version honours (an unset
// append makes newer Envoy append, so a client's value would survive).
// One value serves every header: responses are read-only once built.
func overwrite() *wrapperspb.BoolValue { return appendFalse }

var appendFalse = wrapperspb.Bool(false)

func header(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: name, Value: value},
		Append: overwrite(),
	}
}

const cacheAgeField = "cache_age_ms"

// MetadataEncoding prepares a key's metadata for its cached view
// (cache.Config.Metadata): the protobuf encoding of the google.protobuf.Struct
// that an allow carries as dynamic_metadata.metadata, or "" for an empty
// object. Encoded once per load, so an allow copies bytes and parses no
// JSON. An object that does not parse (the store holds only objects) is
// empty.
func MetadataEncoding(raw json.RawMessage) string {
	var m map[string]any
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || len(m) == 0 {
		return ""
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		return ""
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	if err != nil {
		return ""
	}
	return string(b)
}

// metadataStruct decodes a view's prepared metadata.
func metadataStruct(enc string) *structpb.Struct {
	st := &structpb.Struct{}
	if enc != "" {
		_ = proto.Unmarshal([]byte(enc), st)
	}
	return st
}

var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

// The credential headers to remove, shared by responses (full slice
// expressions: nobody may append into them).
var (
	removeAPIKey = []string{"x-api-key"}
	removeAuthz  = []string{"authorization"}
	removeBoth   = []string{"x-api-key", "authorization"}
)

// allow builds the allow for the key v: the identity headers, the removal
// of the credential and client-sent identity headers, the rate-limit
// headers and the dynamic metadata.
func (s *Server) allow(v *keygate.KeyView, r *request, from uint8, now time.Time) *authv3.CheckResponse {
	n := s.names
	var remove []string
	if !s.cfg.StripCredentials {
		from = 0 // nothing removed, whichever header carried the token
	}
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
	id, org, user, scopes, env := v.ID(), v.OrgID(), v.UserID(), v.Scopes(), string(v.Environment())
	headers := []*corev3.HeaderValueOption{
		header(n.keyID, id), header(n.orgID, org), header(n.userID, user), header(n.scopes, scopes),
		header(n.keyType, string(v.Type())), header(n.environment, env),
	}
	if v.Restricted() {
		headers = append(headers, header(n.projects, v.ProjectIDs()))
	}
	okr := &authv3.OkHttpResponse{Headers: headers, HeadersToRemove: remove}
	if r.limit.Limit > 0 {
		okr.ResponseHeadersToAdd = rateLimitHeaders(r.limit, nil)
	}
	var scopeList []*structpb.Value
	for rest := scopes; rest != ""; {
		sc := rest
		if i := strings.IndexByte(rest, ','); i >= 0 {
			sc, rest = rest[:i], rest[i+1:]
		} else {
			rest = ""
		}
		scopeList = append(scopeList, structpb.NewStringValue(sc))
	}
	age := v.Age(now).Milliseconds()
	if age < 0 {
		age = 0
	}
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{
		"key_id":      structpb.NewStringValue(id),
		"org_id":      structpb.NewStringValue(org),
		"user_id":     structpb.NewStringValue(user),
		"scopes":      structpb.NewListValue(&structpb.ListValue{Values: scopeList}),
		"environment": structpb.NewStringValue(env),
		"metadata":    structpb.NewStructValue(metadataStruct(v.Metadata())),
		cacheAgeField: structpb.NewNumberValue(float64(age)),
	}}
	return &authv3.CheckResponse{Status: okStatus, DynamicMetadata: meta,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: okr}}
}

// rateLimitHeaders appends the ratelimit-* headers of res to hs, and
// retry-after when res denied.
func rateLimitHeaders(res ratelimit.Result, hs []*corev3.HeaderValueOption) []*corev3.HeaderValueOption {
	limit, remaining, reset, retry := res.Headers()
	hs = append(hs,
		header("ratelimit-limit", limit),
		header("ratelimit-remaining", remaining),
		header("ratelimit-reset", reset))
	if retry != "" {
		hs = append(hs, header("retry-after", retry))
	}
	return hs
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
	visitHeaders(r.http, func(name, _ string) {
		if !s.names.hasPrefix(name) {
			return
		}
		name = strings.ToLower(name)
		if !s.names.sets(v, name) && !seen(name) {
			out = append(out, name)
		}
	})
	return out
}

// denial is the fixed part of the deny for one code.
type denial struct {
	status  *rpcstatus.Status
	http    *typev3.HttpStatus
	headers []*corev3.HeaderValueOption
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
			status:  &rpcstatus.Status{Code: int32(grpcCode(status)), Message: string(c)},
			http:    &typev3.HttpStatus{Code: typev3.StatusCode(status)},
			headers: []*corev3.HeaderValueOption{header("content-type", "application/json")},
		}
		switch status {
		case 401:
			v := `Bearer realm="keygate", error="invalid_token"`
			if c == keygate.CodeMissingAPIKey {
				v = `Bearer realm="keygate"` // RFC 6750 §3.1: no error without a credential
			}
			d.headers = append(d.headers, header("www-authenticate", v))
		case 503:
			d.headers = append(d.headers, header("retry-after", strconv.Itoa(retryAfter)))
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

// deny is the one place a code becomes a CheckResponse.
func (s *Server) deny(r *request, code keygate.Code) *authv3.CheckResponse {
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
		headers = rateLimitHeaders(r.limit, append([]*corev3.HeaderValueOption(nil), d.headers...))
	case keygate.CodeTooManyFailedAttempts:
		headers = append(append([]*corev3.HeaderValueOption(nil), d.headers...),
			header("retry-after", ratelimit.FormatRetryAfter(r.retryAfter)))
	}
	body := d.body
	if r.detail != "" {
		body = denyBodyPrefix(code, r.detail, s.cfg.DocsURL)
	}
	return &authv3.CheckResponse{
		Status: d.status,
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  d.http,
			Headers: headers,
			Body:    body + jsonString(id) + "}}",
		}},
	}
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
