package keygate

import (
	"math"
	"strconv"
	"strings"
	"time"
	"unique"
	"unsafe"
)

// KeyView is the compact, read-only form of a KeyRecord that the decision
// reads and the cache keeps, one per cached token: the fields a decision
// needs and nothing else. The values that many keys share (organization,
// user, scope set, project set) are interned with unique.Handle, so a
// million keys of a few organizations hold each name once, and the GC
// reclaims a value as soon as no key holds it. Times are unix nanoseconds.
//
// A KeyView is built once (NewKeyView) and never changed afterwards, so it
// is shared by every request without locks.
type KeyView struct {
	// id holds a key id of up to 24 bytes ("key_" + 20 base62) inline;
	// a longer one (none that keygate makes) is interned in rare.
	id    [24]byte
	idLen uint8
	// rare holds what most keys lack, interned as one value so that a key
	// without any of it pays no more than a nil handle: an id too long to
	// sit inline, allowed_sources (SPEC §11) and named rate limits (§9). Lists of sources repeat
	// across keys, so each distinct list is held once.
	rare unique.Handle[rareFields]

	publishable bool
	test        bool // environment test, else live
	orgDisabled bool
	disabled    bool // deactivated (disabled_at set)
	revoked     bool
	// rateLimit is rate_limit_per_minute, or -1 for null (the server
	// default).
	rateLimit int32

	org, user        unique.Handle[string]
	scopes, projects unique.Handle[string] // sorted and comma-joined; scopes and project ids never hold a comma
	// metadata is the key's metadata as the consumer that built the view
	// prepared it (extauthz: its dynamic-metadata encoding), interned:
	// plans and tiers repeat across keys.
	metadata unique.Handle[string]

	expiresAt, tokenExpiresAt int64 // 0: none
	loadedAt                  int64
}

// NewKeyView returns the compact view of rec, with metadata as its
// prepared Metadata ("" for none).
func NewKeyView(rec *KeyRecord, metadata string) *KeyView {
	v := &KeyView{}
	v.Fill(rec, metadata)
	return v
}

// Fill sets v to the view of rec (for a view that lives inside another
// structure, such as a cache entry).
func (v *KeyView) Fill(rec *KeyRecord, metadata string) {
	k := &rec.Key
	*v = KeyView{
		org:         unique.Make(k.OrgID),
		user:        unique.Make(k.UserID),
		scopes:      unique.Make(strings.Join(k.Scopes, ",")),
		projects:    unique.Make(strings.Join(k.ProjectIDs, ",")),
		publishable: k.Type == Publishable,
		test:        k.Environment == Test,
		orgDisabled: rec.OrgDisabled,
		rateLimit:   -1,
		loadedAt:    rec.LoadedAt.UnixNano(),
		metadata:    unique.Make(metadata),
	}
	var rare rareFields
	if len(k.ID) <= len(v.id) {
		v.idLen = uint8(copy(v.id[:], k.ID))
	} else {
		rare.longID = k.ID
	}
	if len(k.AllowedSources) > 0 {
		rare.sources = strings.Join(k.AllowedSources, ",")
	}
	if len(k.RateLimits) > 0 {
		rare.limits = encodeRateLimits(k.RateLimits)
	}
	if k.Remaining != nil {
		rare.usageLimited, rare.usageEpoch = true, k.UsageEpoch
		if k.Refill != nil {
			rare.refill = k.Refill.Interval
		}
	}
	if rare != (rareFields{}) {
		v.rare = unique.Make(rare)
	}
	if k.RateLimitPerMinute != nil {
		v.rateLimit = int32(min(max(*k.RateLimitPerMinute, 0), 1<<31-1))
	}
	v.expiresAt = nanos(k.ExpiresAt)
	v.disabled = k.DisabledAt != nil
	v.revoked = k.RevokedAt != nil
	v.tokenExpiresAt = nanos(rec.TokenExpiresAt)
}

// rareFields are the fields of a KeyView that most keys do not have.
type rareFields struct {
	longID  string // an id longer than KeyView.id holds
	sources string // allowed_sources, canonical and comma-joined
	// limits are the named rate limits (SPEC §9), "name:limit:seconds"
	// comma-joined in name order: comparable, so a list that many keys
	// share (a plan's limits) is held once.
	limits string
	// A usage-limited key (SPEC §9): its usage epoch when loaded and its
	// refill interval ("" for none). The uses themselves are leased by
	// package usage, not cached here.
	usageLimited bool
	usageEpoch   int64
	refill       RefillInterval
}

func encodeRateLimits(list []RateLimit) string {
	var b strings.Builder
	for i, l := range list {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(l.Name)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(l.Limit))
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(l.DurationSeconds))
	}
	return b.String()
}

func (v *KeyView) rareFields() rareFields {
	if v.rare == (unique.Handle[rareFields]{}) {
		return rareFields{}
	}
	return v.rare.Value()
}

// Times past what UnixNano can hold (years before 1678 or after 2262) are
// kept at its ends, which compare the same against any clock reading.
var (
	minNanos = time.Unix(0, math.MinInt64+1)
	maxNanos = time.Unix(0, math.MaxInt64)
)

func nanos(t *time.Time) int64 {
	switch {
	case t == nil:
		return 0
	case t.Before(minNanos):
		return math.MinInt64 + 1
	case t.After(maxNanos):
		return math.MaxInt64
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1 // the epoch itself still counts as set
}

// ID is the key's id.
func (v *KeyView) ID() string {
	if v.idLen == 0 {
		return v.rareFields().longID
	}
	// The view never changes after Fill, so a string over its own bytes is
	// immutable, and it keeps the view alive while anyone holds it.
	return unsafe.String(&v.id[0], int(v.idLen))
}

// OrgID is the key's organization.
func (v *KeyView) OrgID() string { return v.org.Value() }

// UserID is the user the key acts for.
func (v *KeyView) UserID() string { return v.user.Value() }

// Type is the key's type.
func (v *KeyView) Type() KeyType {
	if v.publishable {
		return Publishable
	}
	return Secret
}

// Environment is the key's environment.
func (v *KeyView) Environment() Environment {
	if v.test {
		return Test
	}
	return Live
}

// Scopes is the key's scope set, sorted and comma-joined.
func (v *KeyView) Scopes() string { return v.scopes.Value() }

// ProjectIDs is the key's project list, sorted and comma-joined; "" when
// the key may use every project.
func (v *KeyView) ProjectIDs() string { return v.projects.Value() }

// AllowedSources is the key's allowed_sources, canonical and
// comma-joined (package sources matches it as is); "" for anywhere.
func (v *KeyView) AllowedSources() string { return v.rareFields().sources }

// NamedRateLimit returns the key's rate limit called name; ok is false when the
// key has none of that name (the route's named limit then does not apply).
// It does not allocate.
func (v *KeyView) NamedRateLimit(name string) (l RateLimit, ok bool) {
	if v.rare == (unique.Handle[rareFields]{}) || name == "" {
		return RateLimit{}, false
	}
	list := v.rare.Value().limits
	for list != "" {
		item := list
		if i := strings.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			list = ""
		}
		n, rest, _ := strings.Cut(item, ":")
		if n != name {
			continue
		}
		lim, dur, _ := strings.Cut(rest, ":")
		l.Name = n
		l.Limit, _ = strconv.Atoi(lim)
		l.DurationSeconds, _ = strconv.Atoi(dur)
		return l, l.Limit > 0 && l.DurationSeconds > 0
	}
	return RateLimit{}, false
}

// RateLimits returns the key's named rate limits, in name order (nil for
// none); for tests and tools, not the hot path.
func (v *KeyView) RateLimits() []RateLimit {
	var out []RateLimit
	for item := range strings.SplitSeq(v.rareFields().limits, ",") {
		if n, _, ok := strings.Cut(item, ":"); ok {
			if l, ok := v.NamedRateLimit(n); ok {
				out = append(out, l)
			}
		}
	}
	return out
}

// HasScope reports whether the key carries scope s.
func (v *KeyView) HasScope(s string) bool { return inList(v.scopes.Value(), s) }

// HasProject reports whether a project-restricted key may use project p.
func (v *KeyView) HasProject(p string) bool { return inList(v.projects.Value(), p) }

// Restricted reports whether the key is restricted to some projects.
func (v *KeyView) Restricted() bool { return v.projects.Value() != "" }

// RateLimit is the key's rate_limit_per_minute; ok is false when it is
// null (the server default applies).
func (v *KeyView) RateLimit() (limit int, ok bool) {
	if v.rateLimit < 0 {
		return 0, false
	}
	return int(v.rateLimit), true
}

// UsageLimited reports whether the key has a remaining (SPEC §9), and
// if so the usage epoch the record was loaded in and its refill interval
// ("" for none).
func (v *KeyView) UsageLimited() (limited bool, epoch int64, refill RefillInterval) {
	if v.rare == (unique.Handle[rareFields]{}) {
		return false, 0, ""
	}
	r := v.rare.Value()
	return r.usageLimited, r.usageEpoch, r.refill
}

// OrgDisabled reports whether the key's organization was disabled when the
// record was loaded.
func (v *KeyView) OrgDisabled() bool { return v.orgDisabled }

// LoadedAt is when the store answered for this record.
func (v *KeyView) LoadedAt() time.Time { return time.Unix(0, v.loadedAt) }

// Age is how old the record is at now.
func (v *KeyView) Age(now time.Time) time.Duration { return time.Duration(now.UnixNano() - v.loadedAt) }

// Status is the key's status at now, in SPEC precedence, as Key.Status.
func (v *KeyView) Status(now time.Time) Status {
	n := now.UnixNano()
	switch {
	case v.revoked:
		return StatusRevoked
	case v.expiresAt != 0 && n >= v.expiresAt:
		return StatusExpired
	case v.disabled:
		return StatusInactive
	}
	return StatusActive
}

// TokenExpired reports whether this token was rolled away and its grace
// period has passed at now: it is then unknown, whatever the key's state.
func (v *KeyView) TokenExpired(now time.Time) bool {
	return v.tokenExpiresAt != 0 && now.UnixNano() >= v.tokenExpiresAt
}

// Metadata is the key's metadata as prepared by whoever built the view,
// "" when the key has none.
func (v *KeyView) Metadata() string { return v.metadata.Value() }

// Size is the bytes the view may hold beyond its own struct: an id that
// does not fit inline, and the values that are likely its own rather than
// shared with other keys (user and metadata; organizations, scope sets and
// project sets repeat across keys). A list of allowed sources is counted
// too: it may be one key's own (a /32), and it is bounded (32 entries).
func (v *KeyView) Size() int {
	n := len(v.user.Value()) + len(v.metadata.Value())
	if v.rare != (unique.Handle[rareFields]{}) {
		r := v.rare.Value()
		n += len(r.longID) + len(r.sources) + len(r.limits)
	}
	return n
}

// inList reports whether the comma-joined list holds s.
func inList(list, s string) bool {
	if list == "" {
		return false // SplitSeq would yield one empty item
	}
	for item := range strings.SplitSeq(list, ",") {
		if item == s {
			return true
		}
	}
	return false
}
