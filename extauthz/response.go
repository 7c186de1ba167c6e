package extauthz

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/ratelimit"
)

// headerNames are the names of the identity headers for one prefix, and
// the parts of an allow that many keys share under it.
type headerNames struct {
	prefix                                                       string
	keyID, orgID, userID, scopes, keyType, environment, projects string
	// shared interns, by header name and value, the headers and metadata
	// values that few distinct values take across all keys: key type,
	// environment and scope set. A cached key then holds pointers to
	// them instead of its own copies (each header is two protobuf
	// messages, ≈ 160 bytes).
	shared sync.Map // sharedKey → *corev3.HeaderValueOption or *structpb.Value
}

type sharedKey struct {
	kind        byte // 'h' header, 'v' metadata value
	name, value string
}

// interned holds one headerNames per prefix: every record prepared with a
// prefix shares its names and interned parts. Read-only data, keyed by a
// validated flag value: a deployment has one or two prefixes.
var interned sync.Map // prefix → *headerNames

func newHeaderNames(prefix string) *headerNames {
	if n, ok := interned.Load(prefix); ok {
		return n.(*headerNames)
	}
	n, _ := interned.LoadOrStore(prefix, &headerNames{
		prefix:      prefix,
		keyID:       prefix + "key-id",
		orgID:       prefix + "org-id",
		userID:      prefix + "user-id",
		scopes:      prefix + "scopes",
		keyType:     prefix + "key-type",
		environment: prefix + "environment",
		projects:    prefix + "project-ids",
	})
	return n.(*headerNames)
}

// sharedHeader is the interned header name: value.
func (n *headerNames) sharedHeader(name, value string) *corev3.HeaderValueOption {
	k := sharedKey{'h', name, value}
	if h, ok := n.shared.Load(k); ok {
		return h.(*corev3.HeaderValueOption)
	}
	h, _ := n.shared.LoadOrStore(k, header(name, value))
	return h.(*corev3.HeaderValueOption)
}

// sharedValue is the interned metadata value for field: build() (called
// only the first time; value names it).
func (n *headerNames) sharedValue(field, value string, build func() *structpb.Value) *structpb.Value {
	k := sharedKey{'v', field, value}
	if v, ok := n.shared.Load(k); ok {
		return v.(*structpb.Value)
	}
	v, _ := n.shared.LoadOrStore(k, build())
	return v.(*structpb.Value)
}

// hasPrefix reports whether a header name starts with the identity prefix,
// in any case (Envoy lower-cases names; a client may not).
func (n *headerNames) hasPrefix(name string) bool {
	// The first byte, folded to lower case, rejects most names before the
	// case-insensitive comparison (the prefix is lower-case).
	return len(name) >= len(n.prefix) && name[0]|0x20 == n.prefix[0] && strings.EqualFold(name[:len(n.prefix)], n.prefix)
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

// prepared is what every allow for one key record carries, built once per
// record and shared read-only by all responses for it.
type prepared struct {
	names   *headerNames
	headers []*corev3.HeaderValueOption
	// sets reports which names the allow sets, so they are never also
	// listed for removal (Envoy applies removals after sets).
	setsProjects bool
	// ok holds, by the credential headers removed (the from bits), the
	// ok_response of an allow that removes nothing else and adds no
	// rate-limit headers: the common allow then builds no headers at all.
	// Each is built on first use.
	ok [4]atomic.Pointer[authv3.CheckResponse_OkResponse]
	// meta is the last dynamic metadata built for this record, with the
	// cache_age_ms it carries. Every allow within the same millisecond of
	// age shares it; the next millisecond builds a new one from it. Its
	// first value (age -1) has every field but cache_age_ms.
	meta atomic.Pointer[metaAt]
}

type metaAt struct {
	ageMS int64
	st    *structpb.Struct
}

const cacheAgeField = "cache_age_ms"

// metaFields is the number of dynamic metadata fields, cache_age_ms included.
const metaFields = 7

func prepare(rec *keygate.KeyRecord, n *headerNames) *prepared {
	k := &rec.Key
	p := &prepared{names: n}
	own := 3 // key id, org id, user id; the project ids too when set
	if len(k.ProjectIDs) > 0 {
		own++
		p.setsProjects = true
	}
	// Two allocations for the key's own headers rather than two per
	// header; the others are interned.
	hvs := make([]corev3.HeaderValue, own)
	hvos := make([]corev3.HeaderValueOption, own)
	p.headers = make([]*corev3.HeaderValueOption, 0, own+3)
	set := func(i int, name, value string) {
		hvs[i].Key, hvs[i].Value = name, value
		hvos[i].Header, hvos[i].Append = &hvs[i], overwrite()
		p.headers = append(p.headers, &hvos[i])
	}
	joined := strings.Join(k.Scopes, ",")
	set(0, n.keyID, k.ID)
	set(1, n.orgID, k.OrgID)
	set(2, n.userID, k.UserID)
	p.headers = append(p.headers,
		n.sharedHeader(n.scopes, joined),
		n.sharedHeader(n.keyType, string(k.Type)),
		n.sharedHeader(n.environment, string(k.Environment)))
	if p.setsProjects {
		set(3, n.projects, strings.Join(k.ProjectIDs, ","))
	}
	meta := make(map[string]*structpb.Value, metaFields)
	meta["key_id"] = structpb.NewStringValue(k.ID)
	meta["org_id"] = structpb.NewStringValue(k.OrgID)
	meta["user_id"] = structpb.NewStringValue(k.UserID)
	// Scopes never hold a comma (SPEC §2), so the joined set names it.
	meta["scopes"] = n.sharedValue("scopes", joined, func() *structpb.Value {
		scopes := make([]*structpb.Value, len(k.Scopes))
		for i, s := range k.Scopes {
			scopes[i] = structpb.NewStringValue(s)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: scopes})
	})
	meta["environment"] = n.sharedValue("environment", string(k.Environment), func() *structpb.Value {
		return structpb.NewStringValue(string(k.Environment))
	})
	meta["metadata"] = metadataValue(k.Metadata)
	p.meta.Store(&metaAt{ageMS: -1, st: &structpb.Struct{Fields: meta}})
	return p
}

// dynamicMetadata is the allow's dynamic_metadata at cache age ageMS.
func (p *prepared) dynamicMetadata(ageMS int64) *structpb.Struct {
	last := p.meta.Load()
	if last.ageMS == ageMS {
		return last.st
	}
	fields := make(map[string]*structpb.Value, metaFields)
	for k, v := range last.st.Fields {
		fields[k] = v
	}
	fields[cacheAgeField] = structpb.NewNumberValue(float64(ageMS))
	st := &structpb.Struct{Fields: fields}
	// Racing allows may each store theirs: every one is complete and
	// correct for its age, so the last one stays.
	p.meta.Store(&metaAt{ageMS: ageMS, st: st})
	return st
}

// okResponse is the ok_response that sets p's headers and removes remove,
// the credential headers named by from.
func (p *prepared) okResponse(from uint8, remove []string) *authv3.CheckResponse_OkResponse {
	slot := &p.ok[from&3]
	if ok := slot.Load(); ok != nil {
		return ok
	}
	ok := &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: p.headers, HeadersToRemove: remove}}
	slot.Store(ok)
	return ok
}

// metadataValue converts a key's metadata JSON object to a Struct value; an
// empty or unparsable object becomes {} (the store only holds objects).
func metadataValue(raw json.RawMessage) *structpb.Value {
	var m map[string]any
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &m)
	}
	st, err := structpb.NewStruct(m)
	if err != nil {
		st = &structpb.Struct{}
	}
	return structpb.NewStructValue(st)
}

// sets reports whether an allow for p sets header name (lower-case).
func (p *prepared) sets(name string) bool {
	n := p.names
	switch strings.ToLower(name) {
	case n.keyID, n.orgID, n.userID, n.scopes, n.keyType, n.environment:
		return true
	case n.projects:
		return p.setsProjects
	}
	return false
}

var okStatus = &rpcstatus.Status{Code: int32(codes.OK)}

// The credential headers to remove, shared by responses (full slice
// expressions: nobody may append into them).
var (
	removeAPIKey = []string{"x-api-key"}
	removeAuthz  = []string{"authorization"}
	removeBoth   = []string{"x-api-key", "authorization"}
)

func (s *Server) allow(rec *keygate.KeyRecord, r *request, from uint8, now time.Time) *authv3.CheckResponse {
	p, ok := rec.Prepared.(*prepared)
	if !ok || p.names.prefix != s.names.prefix {
		p = prepare(rec, s.names) // an uncached record: build it for this response
	}
	var remove []string
	if !s.cfg.StripCredentials {
		from = 0 // nothing removed, whichever header carried the token
	}
	if from != 0 {
		switch from {
		case fromAPIKey:
			remove = removeAPIKey[:1:1]
		case fromAuthorization:
			remove = removeAuthz[:1:1]
		case fromAPIKey | fromAuthorization:
			remove = removeBoth[:2:2]
		}
	}
	age := now.Sub(rec.LoadedAt).Milliseconds()
	if age < 0 {
		age = 0
	}
	resp := &authv3.CheckResponse{Status: okStatus, DynamicMetadata: p.dynamicMetadata(age)}
	if r.prefixed == 0 && r.limit.Limit == 0 {
		resp.HttpResponse = p.okResponse(from, remove)
		return resp
	}
	if r.prefixed > 0 {
		remove = s.removePrefixed(p, r, remove)
	}
	okr := &authv3.OkHttpResponse{Headers: p.headers, HeadersToRemove: remove}
	if r.limit.Limit > 0 {
		okr.ResponseHeadersToAdd = rateLimitHeaders(r.limit, nil)
	}
	resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: okr}
	return resp
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
func (s *Server) removePrefixed(p *prepared, r *request, remove []string) []string {
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
		if !p.sets(name) && !seen(name) {
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
