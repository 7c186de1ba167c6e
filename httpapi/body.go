package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// MaxBodyBytes bounds a request body: 64 KiB (SPEC §5).
const MaxBodyBytes = 64 << 10

// errBodyNotJSON is the cause of the invalid_request for a body that does
// not parse as one JSON object: writeError answers it with "param": null.
var errBodyNotJSON = errors.New("the request body is not one JSON object")

// object is a JSON request body: its members by name, values unparsed, so
// that each field is parsed on its own and a wrong type names its field.
type object map[string]json.RawMessage

// readObject reads r's body as one JSON object whose members are all among
// known. An empty body is the empty object (a roll needs no body). The
// errors are the API's: 415 for a content type other than JSON, 413 past
// MaxBodyBytes, 400 with a null param for JSON that does not parse, 400
// naming the member for an unknown or repeated one.
func readObject(w http.ResponseWriter, r *http.Request, known ...string) (object, error) {
	return readObjectLimit(w, r, MaxBodyBytes, known...)
}

// readObjectLimit is readObject with a body limit of limit bytes (the
// import's is larger).
func readObjectLimit(w http.ResponseWriter, r *http.Request, limit int64, known ...string) (object, error) {
	if err := checkContentType(r); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		e := &keygate.Error{Code: keygate.CodeRequestTooLarge}
		if limit != MaxBodyBytes {
			e.Message = "The request body is larger than " + byteSize(limit) + "."
		}
		return nil, e
	case err != nil:
		return nil, keygate.Errorf(keygate.CodeInvalidRequest, "The request body could not be read.")
	}
	return parseObject(b, known...)
}

// byteSize writes a body limit as people read it: 1 MiB, 64 KiB.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// parseObject parses b as one JSON object whose members are all among
// known, as readObject does a body.
func parseObject(b []byte, known ...string) (object, error) {
	o := object{}
	if len(bytes.TrimSpace(b)) == 0 {
		return o, nil
	}
	notJSON := &keygate.Error{Code: keygate.CodeInvalidRequest, Message: "The request body must be one JSON object.",
		Err: errBodyNotJSON}
	// Walked token by token rather than decoded into a struct: a member
	// given twice is an error here (decoders keep one silently, and two
	// parsers picking different ones is how checks get bypassed), and an
	// unknown member's name is known without reading an error's text.
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notJSON
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, notJSON
		}
		name := tok.(string) // inside an object, a token before a value is its name
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, notJSON
		}
		if _, dup := o[name]; dup {
			return nil, keygate.ParamErrorf(name, "The field %q is given twice.", name)
		}
		o[name] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, notJSON
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, notJSON // anything after the object
	}
	names := make([]string, 0, len(o))
	for name := range o {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !slices.Contains(known, name) {
			return nil, keygate.ParamErrorf(name, "Unknown field %q; known fields: %s.", name, strings.Join(known, ", "))
		}
	}
	return o, nil
}

// checkContentType accepts application/json, with at most a UTF-8
// charset, and no content type on an empty body.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("content-type")
	if ct == "" && r.ContentLength == 0 {
		return nil
	}
	unsupported := keygate.Errorf(keygate.CodeUnsupportedMediaType,
		"The request body must be JSON: Content-Type: application/json, not %q.", ct)
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/json" {
		return unsupported
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return unsupported
		}
	}
	return nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// fields parses the members of an object, keeping the first error: fields
// are parsed in a fixed order, so one bad body always names one field.
type fields struct {
	o   object
	err error
}

// decode parses member name into v, which null never satisfies.
func (f *fields) decode(name, want string, v any) bool {
	raw, ok := f.o[name]
	if !ok || f.err != nil {
		return false
	}
	if isNull(raw) || json.Unmarshal(raw, v) != nil {
		f.err = keygate.ParamErrorf(name, "%s must be %s.", name, want)
		return false
	}
	return true
}

func (f *fields) null(name string) bool {
	raw, ok := f.o[name]
	return ok && f.err == nil && isNull(raw)
}

func (f *fields) string(name string) *string {
	var s string
	if !f.decode(name, "a string", &s) {
		return nil
	}
	return &s
}

func (f *fields) strings(name string) *[]string {
	var s []string
	if !f.decode(name, "an array of strings", &s) {
		return nil
	}
	if s == nil {
		s = []string{}
	}
	return &s
}

func (f *fields) bool(name string) *bool {
	var b bool
	if !f.decode(name, "true or false", &b) {
		return nil
	}
	return &b
}

// int parses an integer member from min to max.
func (f *fields) int(name string, min, max int64) *int64 {
	var n int64
	want := "an integer from " + strconv.FormatInt(min, 10) + " to " + strconv.FormatInt(max, 10)
	if !f.decode(name, want, &n) {
		return nil
	}
	if n < min || n > max {
		f.err = keygate.ParamErrorf(name, "%s must be %s.", name, want)
		return nil
	}
	return &n
}

func (f *fields) nullableInt(name string, min, max int64) manage.Nullable[int] {
	if f.null(name) {
		return manage.Nullable[int]{Set: true, Null: true}
	}
	if n := f.int(name, min, max); n != nil {
		return manage.Nullable[int]{Set: true, Value: int(*n)}
	}
	return manage.Nullable[int]{}
}

func (f *fields) nullableInt64(name string, min, max int64) manage.Nullable[int64] {
	if f.null(name) {
		return manage.Nullable[int64]{Set: true, Null: true}
	}
	if n := f.int(name, min, max); n != nil {
		return manage.Nullable[int64]{Set: true, Value: *n}
	}
	return manage.Nullable[int64]{}
}

// nullableRefill parses a refill, {"interval": "daily"|"monthly",
// "amount": N}, or null; a bad member is named (refill.interval, …).
func (f *fields) nullableRefill(name string) manage.Nullable[keygate.Refill] {
	if f.null(name) {
		return manage.Nullable[keygate.Refill]{Set: true, Null: true}
	}
	var o map[string]json.RawMessage
	if !f.decode(name, `an object {"interval": "daily" or "monthly", "amount": N}, or null`, &o) {
		return manage.Nullable[keygate.Refill]{}
	}
	sub := fields{o: o}
	for member := range o {
		if member != "interval" && member != "amount" {
			f.err = keygate.ParamErrorf(name+"."+member, "Unknown field %q of refill; known fields: interval, amount.", member)
			return manage.Nullable[keygate.Refill]{}
		}
	}
	var r keygate.Refill
	if s := sub.string("interval"); s != nil {
		r.Interval = keygate.RefillInterval(*s)
	}
	if n := sub.int("amount", 0, manage.MaxRemaining); n != nil {
		r.Amount = *n
	}
	switch {
	case sub.err != nil:
		e := sub.err.(*keygate.Error)
		e.Param, e.Message = name+"."+e.Param, name+"."+e.Message
		f.err = e
	case !r.Interval.Valid():
		f.err = keygate.ParamErrorf(name+".interval", "refill.interval must be %q or %q.", keygate.RefillDaily, keygate.RefillMonthly)
	case o["amount"] == nil:
		f.err = keygate.ParamErrorf(name+".amount", "refill.amount is required.")
	default:
		return manage.Nullable[keygate.Refill]{Set: true, Value: r}
	}
	return manage.Nullable[keygate.Refill]{}
}

func (f *fields) nullableTime(name string) manage.Nullable[time.Time] {
	if f.null(name) {
		return manage.Nullable[time.Time]{Set: true, Null: true}
	}
	s := f.string(name)
	if s == nil {
		return manage.Nullable[time.Time]{}
	}
	t, err := time.Parse(time.RFC3339, *s)
	if err != nil {
		f.err = keygate.ParamErrorf(name, "%s must be an RFC 3339 timestamp such as 2026-11-22T10:00:00Z.", name)
		return manage.Nullable[time.Time]{}
	}
	return manage.Nullable[time.Time]{Set: true, Value: t}
}

// raw returns a member as given (metadata, which manage validates).
func (f *fields) raw(name string) json.RawMessage { return f.o[name] }

// createMembers are the members of a create body (SPEC §5); an import
// item has them too, and createRequest parses them for both.
var createMembers = []string{"name", "scopes", "project_ids", "type", "environment", "expires_at", "expires_in",
	"rate_limit_per_minute", "metadata", "user_id", "allowed_sources", "rate_limits", "remaining", "refill"}

func parseCreate(w http.ResponseWriter, r *http.Request) (manage.CreateRequest, error) {
	o, err := readObject(w, r, createMembers...)
	if err != nil {
		return manage.CreateRequest{}, err
	}
	return createRequest(o)
}

// createRequest parses the members of a create body, o, whatever carried
// it: a create call or an item of an import.
func createRequest(o object) (manage.CreateRequest, error) {
	f := fields{o: o}
	var req manage.CreateRequest
	if name := f.string("name"); name != nil {
		req.Name = *name
	} else if f.err == nil {
		f.err = keygate.ParamErrorf("name", "name is required.")
	}
	req.Scopes = f.strings("scopes")
	req.ProjectIDs = f.strings("project_ids")
	if typ := f.string("type"); typ != nil {
		t := keygate.KeyType(*typ)
		req.Type = &t
	}
	if env := f.string("environment"); env != nil {
		e := keygate.Environment(*env)
		req.Environment = &e
	}
	req.ExpiresAt = f.nullableTime("expires_at")
	if in := f.int("expires_in", 1, int64(manage.MaxExpiresIn/time.Second)); in != nil {
		d := time.Duration(*in) * time.Second
		req.ExpiresIn = &d
	}
	req.RateLimitPerMinute = f.nullableInt("rate_limit_per_minute", 0, manage.MaxRateLimit)
	req.Metadata = f.raw("metadata")
	req.UserID = f.string("user_id")
	req.AllowedSources = f.strings("allowed_sources")
	req.RateLimits = f.rateLimits("rate_limits")
	req.Remaining = f.nullableInt64("remaining", 0, manage.MaxRemaining)
	req.Refill = f.nullableRefill("refill")
	return req, f.err
}

// rateLimits parses named rate limits (SPEC §9): null or [] for none, else
// an array of {"name", "limit", "duration_seconds"} objects, each member
// required, of its type, and no other. A wrong item names itself or its
// member (rate_limits[1].limit); manage checks the values.
func (f *fields) rateLimits(name string) *[]keygate.RateLimit {
	raw, ok := f.o[name]
	if !ok || f.err != nil {
		return nil
	}
	out := []keygate.RateLimit{}
	if isNull(raw) {
		return &out
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		f.err = keygate.ParamErrorf(name, "%s must be an array of {\"name\", \"limit\", \"duration_seconds\"} objects, or null.", name)
		return nil
	}
	for i, item := range items {
		where := name + "[" + strconv.Itoa(i) + "]"
		var o map[string]json.RawMessage
		if isNull(item) || json.Unmarshal(item, &o) != nil {
			f.err = keygate.ParamErrorf(where, "%s must be an object {\"name\", \"limit\", \"duration_seconds\"}.", where)
			return nil
		}
		for member := range o {
			if member != "name" && member != "limit" && member != "duration_seconds" {
				f.err = keygate.ParamErrorf(where+"."+member, "Unknown field %s.%s; known fields: name, limit, duration_seconds.", where, member)
				return nil
			}
		}
		fi := fields{o: o}
		var l keygate.RateLimit
		if s := fi.string("name"); s != nil {
			l.Name = *s
		}
		if n := fi.int("limit", 1, manage.MaxRateLimit); n != nil {
			l.Limit = int(*n)
		}
		if n := fi.int("duration_seconds", 1, keygate.MaxRateLimitDuration); n != nil {
			l.DurationSeconds = int(*n)
		}
		for _, member := range []string{"name", "limit", "duration_seconds"} {
			if _, ok := o[member]; !ok && fi.err == nil {
				fi.err = keygate.ParamErrorf(member, "%s is required.", member)
			}
		}
		if fi.err != nil {
			// Name the member in full: rate_limits[1].limit.
			f.err = fi.err
			if e, ok := fi.err.(*keygate.Error); ok {
				f.err = keygate.ParamErrorf(where+"."+e.Param, "%s.%s", where, e.Message)
			}
			return nil
		}
		out = append(out, l)
	}
	return &out
}

func parseUpdate(w http.ResponseWriter, r *http.Request) (manage.KeyChanges, error) {
	o, err := readObject(w, r, "name", "active", "rate_limit_per_minute", "expires_at", "metadata", "allowed_sources", "rate_limits",
		"remaining", "refill")
	if err != nil {
		return manage.KeyChanges{}, err
	}
	f := fields{o: o}
	ch := manage.KeyChanges{
		Name:               f.string("name"),
		Active:             f.bool("active"),
		RateLimitPerMinute: f.nullableInt("rate_limit_per_minute", 0, manage.MaxRateLimit),
		ExpiresAt:          f.nullableTime("expires_at"),
		Metadata:           f.raw("metadata"),
		AllowedSources:     f.strings("allowed_sources"),
		RateLimits:         f.rateLimits("rate_limits"),
		Remaining:          f.nullableInt64("remaining", 0, manage.MaxRemaining),
		Refill:             f.nullableRefill("refill"),
	}
	return ch, f.err
}

func parseRoll(w http.ResponseWriter, r *http.Request) (time.Duration, error) {
	o, err := readObject(w, r, "grace_seconds")
	if err != nil {
		return 0, err
	}
	f := fields{o: o}
	var grace time.Duration
	if n := f.int("grace_seconds", 0, int64(manage.MaxGrace/time.Second)); n != nil {
		grace = time.Duration(*n) * time.Second
	}
	return grace, f.err
}

// A cursor is the base64url of "<created_at in Unix microseconds>.<id>",
// the position of the last item of a page (the stores keep microseconds).
// It needs no server secret, so any replica continues a listing: a forged
// cursor only moves a caller within the listing it may see anyway.
var cursorID = regexp.MustCompile(`^[A-Za-z0-9_]{1,128}$`)

func encodeCursor(c *store.Cursor) *string {
	if c == nil {
		return nil
	}
	s := base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + "." + c.ID))
	return &s
}

func decodeCursor(s string) (store.Cursor, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return store.Cursor{}, err
	}
	ts, id, ok := strings.Cut(string(b), ".")
	us, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || us < 0 || !cursorID.MatchString(id) {
		return store.Cursor{}, errors.New("malformed cursor")
	}
	return store.Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id}, nil
}
