package manage

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/sources"
	"github.com/keygate/keygate/store"
)

// Scopes that the management operations require (SPEC §5): reads need
// read, writes write, the audit trail admin. Admin also widens what a
// caller sees, from its own user's keys to the whole organization.
const (
	ScopeRead  = "read"
	ScopeWrite = "write"
	ScopeAdmin = "admin"
)

// Page sizes of a listing.
const (
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// MaxGrace is the longest grace period of a roll: 7 days.
const MaxGrace = 7 * 24 * time.Hour

// MaxExpiresIn bounds expires_in, so that now+expires_in cannot overflow.
const MaxExpiresIn = 100 * 365 * 24 * time.Hour

// Caller is the key that an API call authenticated with, and the call's
// request id for the audit trail. Every operation *As acts in the caller's
// organization only and never gives a key more than the caller has.
type Caller struct {
	Key       keygate.Key
	RequestID string
}

func (c *Caller) actor() keygate.Actor {
	return keygate.Actor{KeyID: c.Key.ID, RequestID: c.RequestID}
}

func (c *Caller) admin() bool { return c.Key.HasScope(ScopeAdmin) }

func (c *Caller) require(scope string) error {
	if !c.Key.HasScope(scope) {
		return keygate.Errorf(keygate.CodeInsufficientPermissions, "This call needs the %q scope.", scope)
	}
	return nil
}

// Nullable is a request field that can be absent, JSON null or a value, so
// that "leave it as it is" and "set it to null" differ.
type Nullable[T any] struct {
	Set   bool // the field was in the request
	Null  bool // ... as null
	Value T
}

func (n Nullable[T]) ptr() *T {
	if n.Null {
		return nil
	}
	v := n.Value
	return &v
}

// CreateRequest is the body of a key creation. A nil or unset field takes
// the caller's value (SPEC §5, "Defaults of a created key").
type CreateRequest struct {
	Name       string
	UserID     *string // admins only
	Scopes     *[]string
	ProjectIDs *[]string
	Type       *keygate.KeyType // nil: secret
	// Environment nil: the caller's.
	Environment *keygate.Environment
	// ExpiresAt null: never; ExpiresIn is the other way to say it, not
	// both.
	ExpiresAt          Nullable[time.Time]
	ExpiresIn          *time.Duration
	RateLimitPerMinute Nullable[int] // null: the server default
	Metadata           json.RawMessage
	// AllowedSources nil: the caller's; empty: anywhere.
	AllowedSources *[]string
	// RateLimits nil: the caller's named rate limits; empty: none (SPEC
	// §9). Either way the key must carry each of the caller's, no looser.
	RateLimits *[]keygate.RateLimit
	// Remaining null or unset: unlimited (a usage-limited caller must
	// give one). Refill null or unset: none.
	Remaining Nullable[int64]
	Refill    Nullable[keygate.Refill]
}

// CreateKeyAs creates a key as the caller. The body is validated first
// (400), then the caller's permissions (403): scopes and projects within
// the caller's, its environment, no later expiry and no higher rate limit,
// and user_id only from an admin.
func (s *Service) CreateKeyAs(ctx context.Context, c Caller, r CreateRequest) (CreatedKey, error) {
	return s.createKeyAs(ctx, c, r, s.create)
}

// createKeyAs is every rule of a key created as the caller, shared by
// create and import (SPEC §9: import applies all of create's bounds to
// every item): it validates r, holds it to the caller, and hands the key,
// normalized, to keep (create stores it with a new token; import gathers
// it to store with the others).
func (s *Service) createKeyAs(ctx context.Context, c Caller, r CreateRequest,
	keep func(context.Context, store.NewKey, keygate.Actor) (CreatedKey, error)) (CreatedKey, error) {
	now := s.now()
	ck := &c.Key
	nk := NewKey{
		OrgID: ck.OrgID, UserID: ck.UserID, Name: r.Name, Scopes: ck.Scopes, ProjectIDs: ck.ProjectIDs,
		Type: keygate.Secret, Environment: ck.Environment,
		RateLimitPerMinute: ck.RateLimitPerMinute, Metadata: r.Metadata, AllowedSources: ck.AllowedSources,
		RateLimits: ck.RateLimits,
	}
	if ck.ExpiresAt != nil {
		// Down, not up, to a whole second: a caller stored before expiry
		// was kept to whole seconds may have a fraction, and its key must
		// not outlive it.
		t := ck.ExpiresAt.Truncate(time.Second)
		nk.ExpiresAt = &t
	}
	if r.UserID != nil {
		nk.UserID = *r.UserID
	}
	if r.Scopes != nil {
		nk.Scopes = *r.Scopes
	}
	if r.ProjectIDs != nil {
		nk.ProjectIDs = *r.ProjectIDs
	}
	if r.Type != nil {
		if !r.Type.Valid() {
			return CreatedKey{}, keygate.ParamErrorf("type", "type must be %q or %q.", keygate.Secret, keygate.Publishable)
		}
		nk.Type = *r.Type
	}
	if r.Environment != nil {
		if !r.Environment.Valid() {
			return CreatedKey{}, keygate.ParamErrorf("environment", "environment must be %q or %q.", keygate.Live, keygate.Test)
		}
		nk.Environment = *r.Environment
	}
	expiryParam := "expires_at"
	switch {
	case r.ExpiresAt.Set && r.ExpiresIn != nil:
		return CreatedKey{}, keygate.ParamErrorf("expires_in", "Give expires_at or expires_in, not both.")
	case r.ExpiresIn != nil:
		if *r.ExpiresIn <= 0 || *r.ExpiresIn > MaxExpiresIn {
			return CreatedKey{}, keygate.ParamErrorf("expires_in", "expires_in must be 1 to %d seconds.", int64(MaxExpiresIn/time.Second))
		}
		t := now.Add(*r.ExpiresIn)
		nk.ExpiresAt, expiryParam = &t, "expires_in"
	case r.ExpiresAt.Set:
		nk.ExpiresAt = r.ExpiresAt.ptr()
	}
	if r.RateLimitPerMinute.Set {
		nk.RateLimitPerMinute = r.RateLimitPerMinute.ptr()
	}
	if r.AllowedSources != nil {
		nk.AllowedSources = *r.AllowedSources
	}
	if r.RateLimits != nil {
		nk.RateLimits = *r.RateLimits
	}
	nk.Remaining, nk.Refill = r.Remaining.ptr(), r.Refill.ptr()
	if !r.Remaining.Set {
		nk.Remaining = nil
	}
	if !r.Refill.Set {
		nk.Refill = nil
	}
	k, err := normalize(nk, now)
	if err != nil {
		return CreatedKey{}, err
	}

	if err := c.require(ScopeWrite); err != nil {
		return CreatedKey{}, err
	}
	if r.UserID != nil && !c.admin() {
		return CreatedKey{}, escalation("user_id", "Creating a key for another user_id needs the %q scope.", ScopeAdmin)
	}
	if err := s.within(&c, grant{k.Scopes, k.ProjectIDs, k.Environment, k.ExpiresAt, k.RateLimitPerMinute, k.AllowedSources, k.RateLimits}, expiryParam, whyCreate); err != nil {
		return CreatedKey{}, err
	}
	remaining, _ := store.NewKeyUsage(k, now)
	if err := usageWithin(&c, remaining, k.Refill, whyCreate); err != nil {
		return CreatedKey{}, err
	}
	k.Debit = debitFor(&c, &k)
	return keep(ctx, k, c.actor())
}

// grant is what a key allows its holder: what a caller may not hand out
// beyond itself.
type grant struct {
	scopes    []string
	projects  []string
	env       keygate.Environment
	expiresAt *time.Time
	rate      *int
	sources   []string            // allowed_sources, canonical; empty: anywhere
	limits    []keygate.RateLimit // named rate limits (SPEC §9)
}

func escalation(param, format string, args ...any) error {
	e := keygate.Errorf(keygate.CodeInsufficientPermissions, format, args...)
	e.Param = param
	return e
}

// Why a key's rights are held to the caller's, the start of the message
// of an insufficient_permissions that within reports.
const (
	whyCreate = "A key cannot get more than the key that creates it"
	whyRoll   = "Rolling a key needs at least its rights"
	whyPatch  = "This change widens the key, which needs at least its rights"
)

// within reports an insufficient_permissions error when g gives more than
// the caller's key has: param names the bound and the message says why
// the bound applies (whyCreate, …), what g has and what the caller has.
func (s *Service) within(c *Caller, g grant, expiryParam, why string) error {
	ck := &c.Key
	deny := func(param, format string, args ...any) error {
		return escalation(param, "%s: %s.", why, fmt.Sprintf(format, args...))
	}
	for _, sc := range g.scopes {
		if !ck.HasScope(sc) {
			return deny("scopes", "the scope %q is beyond the calling key's scopes (%s)", sc, listText(ck.Scopes))
		}
	}
	if len(ck.ProjectIDs) > 0 {
		if len(g.projects) == 0 {
			return deny("project_ids", "every project is beyond the calling key's projects (%s)", listText(ck.ProjectIDs))
		}
		for _, p := range g.projects {
			if !slices.Contains(ck.ProjectIDs, p) {
				return deny("project_ids", "the project %q is beyond the calling key's projects (%s)", p, listText(ck.ProjectIDs))
			}
		}
	}
	if g.env != ck.Environment {
		return deny("environment", "the environment %q is not the calling key's (%q)", g.env, ck.Environment)
	}
	if have := ck.ExpiresAt; have != nil {
		switch {
		case g.expiresAt == nil:
			return deny(expiryParam, "never expiring is beyond the calling key's expiry (%s)", timeText(*have))
		case g.expiresAt.After(*have):
			return deny(expiryParam, "the expiry %s is beyond the calling key's (%s)", timeText(*g.expiresAt), timeText(*have))
		}
	}
	if have := s.effectiveRate(ck.RateLimitPerMinute); exceeds(s.effectiveRate(g.rate), have) {
		return deny("rate_limit_per_minute", "the rate limit (%s) is beyond the calling key's (%s)", s.rateText(g.rate), s.rateText(ck.RateLimitPerMinute))
	}
	if bad, ok := sources.ListWithin(g.sources, ck.AllowedSources); !ok {
		if len(g.sources) == 0 {
			return deny("allowed_sources", "use from anywhere is beyond the calling key's allowed sources (%s)", listText(ck.AllowedSources))
		}
		return deny("allowed_sources", "the source %q is beyond the calling key's allowed sources (%s)", bad, listText(ck.AllowedSources))
	}
	for _, have := range ck.RateLimits {
		l, ok := findLimit(g.limits, have.Name)
		switch {
		case !ok:
			return deny("rate_limits", "going without the calling key's named rate limit %s is beyond it", limitText(have))
		case l.Looser(have):
			return deny("rate_limits", "the named rate limit %s is looser than the calling key's (%s)", limitText(l), limitText(have))
		}
	}
	return nil
}

// findLimit returns the named rate limit called name in list.
func findLimit(list []keygate.RateLimit, name string) (keygate.RateLimit, bool) {
	for _, l := range list {
		if l.Name == name {
			return l, true
		}
	}
	return keygate.RateLimit{}, false
}

// limitText says what a named rate limit allows: search (10 per 60 s).
func limitText(l keygate.RateLimit) string {
	return fmt.Sprintf("%q (%d per %d s)", l.Name, l.Limit, l.DurationSeconds)
}

// limitsWithin reports whether every named limit of have is in list, no
// looser: a change to list that keeps this narrows, or keeps, the key.
func limitsWithin(list, have []keygate.RateLimit) bool {
	for _, h := range have {
		if l, ok := findLimit(list, h.Name); !ok || l.Looser(h) {
			return false
		}
	}
	return true
}

func listText(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func timeText(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// rateText says what a rate_limit_per_minute allows.
func (s *Service) rateText(r *int) string {
	perMinute := func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return fmt.Sprintf("%d requests per minute", n)
	}
	if r == nil {
		return "the server default, " + perMinute(s.defaultRate)
	}
	return perMinute(*r)
}

// effectiveRate is the limit a key is held to: its own, or --rate-limit.
func (s *Service) effectiveRate(r *int) int {
	if r == nil {
		return s.defaultRate
	}
	return *r
}

// visibleKey returns key id as the caller may see it: in its organization,
// and its own user's unless it is an admin. Anything else is not_found,
// never forbidden, so that no caller learns another tenant's ids exist.
func (s *Service) visibleKey(ctx context.Context, c *Caller, id string) (keygate.Key, error) {
	if id == "" || len(id) > maxIDLen {
		return keygate.Key{}, keygate.ErrNotFound
	}
	k, err := s.store.GetKey(ctx, c.Key.OrgID, id)
	if err != nil {
		return keygate.Key{}, err
	}
	if !c.admin() && k.UserID != c.Key.UserID {
		return keygate.Key{}, keygate.ErrNotFound
	}
	return k, nil
}

// GetKeyAs returns key id.
func (s *Service) GetKeyAs(ctx context.Context, c Caller, id string) (keygate.Key, error) {
	if err := c.require(ScopeRead); err != nil {
		return keygate.Key{}, err
	}
	return s.visibleKey(ctx, &c, id)
}

// CallerKey returns the key an authenticated request acts with, as the
// store has it now: the decision keeps only a compact view of it, and the
// rules here read the whole key. A key revoked since is not_found.
func (s *Service) CallerKey(ctx context.Context, orgID, id string) (keygate.Key, error) {
	return s.store.GetKey(ctx, orgID, id)
}

// Whoami returns the caller's own key as stored now. It needs no scope.
func (s *Service) Whoami(ctx context.Context, c Caller) (keygate.Key, error) {
	return s.store.GetKey(ctx, c.Key.OrgID, c.Key.ID)
}

// KeyQuery selects a page of keys.
type KeyQuery struct {
	Status keygate.Status // empty: every status but revoked
	After  *store.Cursor
	Limit  int // 0: DefaultPageSize
}

func pageSize(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultPageSize, nil
	case limit < 1 || limit > MaxPageSize:
		return 0, keygate.ParamErrorf("limit", "limit must be 1 to %d.", MaxPageSize)
	}
	return limit, nil
}

// ListKeysAs lists keys newest first: the organization's for an admin,
// the caller's user's otherwise. Revoked keys are never listed.
func (s *Service) ListKeysAs(ctx context.Context, c Caller, q KeyQuery) (store.KeyPage, error) {
	switch q.Status {
	case "", keygate.StatusActive, keygate.StatusInactive, keygate.StatusExpired:
	default:
		return store.KeyPage{}, keygate.ParamErrorf("status", "status must be active, inactive or expired.")
	}
	limit, err := pageSize(q.Limit)
	if err != nil {
		return store.KeyPage{}, err
	}
	if err := c.require(ScopeRead); err != nil {
		return store.KeyPage{}, err
	}
	lq := store.ListKeys{OrgID: c.Key.OrgID, Status: q.Status, Now: s.now(), After: q.After, Limit: limit}
	if !c.admin() {
		lq.UserID = c.Key.UserID
	}
	return s.store.ListKeys(ctx, lq)
}

// KeyChanges is the body of a key update; nil or unset fields stay as
// they are.
type KeyChanges struct {
	Name               *string
	Active             *bool
	RateLimitPerMinute Nullable[int]       // null: back to the server default
	ExpiresAt          Nullable[time.Time] // null: never expires
	Metadata           json.RawMessage     // replaces the whole object; null: {}
	AllowedSources     *[]string           // replaces the whole list; empty: anywhere
	// RateLimits replaces the key's named rate limits; empty: none.
	RateLimits *[]keygate.RateLimit
	// Remaining null: unlimited (drops the refill too); Refill null: none.
	// Either starts a new usage epoch (SPEC §9).
	Remaining Nullable[int64]
	Refill    Nullable[keygate.Refill]
}

// UpdateKeyAs changes key id. A change that widens what the key can do
// (see widening) needs the caller to hold at least the key's rights as
// they would be afterwards, by the bounds of create and roll; a change
// that only narrows it needs only access to the key. A change with no
// field is invalid_request: it would write an audit event that records
// nothing.
func (s *Service) UpdateKeyAs(ctx context.Context, c Caller, id string, ch KeyChanges) (keygate.Key, error) {
	now := s.now()
	var u store.KeyUpdate
	if ch.Name == nil && ch.Active == nil && !ch.RateLimitPerMinute.Set && !ch.ExpiresAt.Set && ch.Metadata == nil && ch.AllowedSources == nil &&
		ch.RateLimits == nil && !ch.Remaining.Set && !ch.Refill.Set {
		return keygate.Key{}, keygate.Errorf(keygate.CodeInvalidRequest,
			"Nothing to change: give name, active, rate_limit_per_minute, expires_at, metadata, allowed_sources, rate_limits, remaining or refill.")
	}
	if err := usageUpdate(&u, ch); err != nil {
		return keygate.Key{}, err
	}
	if ch.Name != nil {
		if err := ValidateName(*ch.Name); err != nil {
			return keygate.Key{}, err
		}
		u.Name = ch.Name
	}
	u.Active = ch.Active
	if ch.RateLimitPerMinute.Set {
		u.RateLimitPerMinute = ch.RateLimitPerMinute.ptr()
		u.ClearRateLimit = ch.RateLimitPerMinute.Null
		if err := validateRate(u.RateLimitPerMinute); err != nil {
			return keygate.Key{}, err
		}
	}
	if ch.ExpiresAt.Set {
		u.ClearExpiresAt = ch.ExpiresAt.Null
		if !ch.ExpiresAt.Null {
			if !ch.ExpiresAt.Value.After(now) {
				return keygate.Key{}, keygate.ParamErrorf("expires_at", "expires_at must be in the future.")
			}
			ch.ExpiresAt.Value = expirySecond(ch.ExpiresAt.Value)
			u.ExpiresAt = &ch.ExpiresAt.Value
		}
	}
	if ch.Metadata != nil {
		var err error
		if u.Metadata, err = Metadata(ch.Metadata); err != nil {
			return keygate.Key{}, err
		}
	}
	if ch.AllowedSources != nil {
		list, err := AllowedSources(*ch.AllowedSources)
		if err != nil {
			return keygate.Key{}, err
		}
		u.AllowedSources = &list
		ch.AllowedSources = &list
	}
	if ch.RateLimits != nil {
		list, err := RateLimits(*ch.RateLimits)
		if err != nil {
			return keygate.Key{}, err
		}
		u.RateLimits = &list
		ch.RateLimits = &list
	}

	if err := c.require(ScopeWrite); err != nil {
		return keygate.Key{}, err
	}
	if _, err := s.visibleKey(ctx, &c, id); err != nil {
		return keygate.Key{}, err
	}
	// The bounds are judged on the key as the update locks it, not on the
	// read above: an admin who deactivates the key meanwhile must not have
	// a weaker caller's active: true judged against the active key it read.
	u.Allowed = func(k keygate.Key) error {
		if err := patchUsageWithin(&c, k, ch); err != nil {
			return err
		}
		if !s.widening(k, ch) && !usageWidens(k, ch) {
			return nil
		}
		after := grant{k.Scopes, k.ProjectIDs, k.Environment, k.ExpiresAt, k.RateLimitPerMinute, k.AllowedSources, k.RateLimits}
		if ch.ExpiresAt.Set {
			after.expiresAt = u.ExpiresAt
		}
		if ch.RateLimitPerMinute.Set {
			after.rate = u.RateLimitPerMinute
		}
		if ch.AllowedSources != nil {
			after.sources = *ch.AllowedSources
		}
		if ch.RateLimits != nil {
			after.limits = *ch.RateLimits
		}
		return s.within(&c, after, "expires_at", whyPatch)
	}
	return s.store.UpdateKey(ctx, c.Key.OrgID, id, u, c.actor())
}

// widening reports whether ch would let key k do more than it can now
// (SPEC §5): turn an inactive key back on, a later expiry or none, a
// higher effective rate limit, or null, the server default, in place of
// a limit of its own (--rate-limit may be raised later), allowed_sources
// emptied or given an entry outside the current list (SPEC §11), a named
// rate limit removed or loosened (SPEC §9). Renaming,
// metadata, deactivating and every lowering are narrowing.
//
// k is the key as read before the write; the store's update has no
// precondition, so a concurrent narrowing of the same key can be
// overwritten by a change judged against the older state.
func (s *Service) widening(k keygate.Key, ch KeyChanges) bool {
	if ch.Active != nil && *ch.Active && k.DisabledAt != nil {
		return true
	}
	if e := ch.ExpiresAt; e.Set && k.ExpiresAt != nil && (e.Null || e.Value.After(*k.ExpiresAt)) {
		return true
	}
	if ch.AllowedSources != nil {
		if _, ok := sources.ListWithin(*ch.AllowedSources, k.AllowedSources); !ok {
			return true
		}
	}
	if ch.RateLimits != nil && !limitsWithin(*ch.RateLimits, k.RateLimits) {
		return true // a named limit removed or loosened (SPEC §5, §9)
	}
	if r := ch.RateLimitPerMinute; r.Set {
		if r.Null {
			return k.RateLimitPerMinute != nil
		}
		return exceeds(r.Value, s.effectiveRate(k.RateLimitPerMinute))
	}
	return false
}

// exceeds reports whether rate limit a allows more than limit b, where 0
// is unlimited.
func exceeds(a, b int) bool { return b != 0 && (a == 0 || a > b) }

// RevokeKeyAs revokes key id. Revoking takes privileges away, so any
// caller with write may revoke any key it can see, itself included.
func (s *Service) RevokeKeyAs(ctx context.Context, c Caller, id string) (keygate.Key, error) {
	if err := c.require(ScopeWrite); err != nil {
		return keygate.Key{}, err
	}
	if _, err := s.visibleKey(ctx, &c, id); err != nil {
		return keygate.Key{}, err
	}
	return s.store.RevokeKey(ctx, c.Key.OrgID, id, c.actor())
}

// RollKeyAs gives key id a new token; the old one keeps working for grace
// (0 to MaxGrace). A roll mints a credential, so the key may have nothing
// beyond the caller: the same bounds as a created key.
func (s *Service) RollKeyAs(ctx context.Context, c Caller, id string, grace time.Duration) (CreatedKey, error) {
	if grace < 0 || grace > MaxGrace {
		return CreatedKey{}, keygate.ParamErrorf("grace_seconds", "grace_seconds must be 0 to %d.", int64(MaxGrace/time.Second))
	}
	if err := c.require(ScopeWrite); err != nil {
		return CreatedKey{}, err
	}
	k, err := s.visibleKey(ctx, &c, id)
	if err != nil {
		return CreatedKey{}, err
	}
	if err := s.within(&c, grant{k.Scopes, k.ProjectIDs, k.Environment, k.ExpiresAt, k.RateLimitPerMinute, k.AllowedSources, k.RateLimits}, "expires_at", whyRoll); err != nil {
		return CreatedKey{}, err
	}
	if err := usageWithin(&c, k.Remaining, k.Refill, whyRoll); err != nil {
		return CreatedKey{}, err
	}
	tok, err := s.format.Generate(k.Type, k.Environment)
	if err != nil {
		return CreatedKey{}, err
	}
	nt := store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4(),
		// Judged again on the key as the roll locks it: an admin who
		// widens the key meanwhile must not have this caller's roll
		// judged against the narrower key it read.
		Allowed: func(k keygate.Key) error {
			if err := usageWithin(&c, k.Remaining, k.Refill, whyRoll); err != nil {
				return err
			}
			return s.within(&c, grant{k.Scopes, k.ProjectIDs, k.Environment, k.ExpiresAt, k.RateLimitPerMinute, k.AllowedSources, k.RateLimits}, "expires_at", whyRoll)
		}}
	k, err = s.store.RollKey(ctx, c.Key.OrgID, id, nt, grace, c.actor())
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{Key: k, Token: tok}, nil
}

// AuditQuery selects a page of the audit trail.
type AuditQuery struct {
	After *store.Cursor
	Limit int // 0: DefaultPageSize
}

// ListAuditEventsAs lists the caller's organization's audit trail, newest
// first. It needs admin.
func (s *Service) ListAuditEventsAs(ctx context.Context, c Caller, q AuditQuery) (store.AuditPage, error) {
	limit, err := pageSize(q.Limit)
	if err != nil {
		return store.AuditPage{}, err
	}
	if err := c.require(ScopeAdmin); err != nil {
		return store.AuditPage{}, err
	}
	return s.store.ListAuditEvents(ctx, store.ListAuditEvents{OrgID: c.Key.OrgID, After: q.After, Limit: limit})
}
