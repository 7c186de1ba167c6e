// Package manage holds the key-management operations that the CLI, the
// management API and the console share, so that every path that creates,
// revokes or disables enforces the same rules and writes the same audit
// trail. Transports translate its *keygate.Error values.
package manage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/sources"
	"github.com/keygate/keygate/store"
)

// Store is the part of the key store that management writes through.
type Store interface {
	CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error)
	EnsureOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error)
	SetOrganizationDisabled(ctx context.Context, id string, disabled bool, by keygate.Actor) (keygate.Organization, error)
	GetOrganization(ctx context.Context, id string) (keygate.Organization, error)
	CreateKey(ctx context.Context, k store.NewKey, by keygate.Actor) (keygate.Key, error)
	ImportKeys(ctx context.Context, ks []store.NewKey, by keygate.Actor) ([]keygate.Key, error)
	GetKey(ctx context.Context, orgID, id string) (keygate.Key, error)
	UpdateKey(ctx context.Context, orgID, id string, u store.KeyUpdate, by keygate.Actor) (keygate.Key, error)
	RevokeKey(ctx context.Context, orgID, id string, by keygate.Actor) (keygate.Key, error)
	RollKey(ctx context.Context, orgID, id string, t store.NewToken, grace time.Duration, by keygate.Actor) (keygate.Key, error)
	ListKeys(ctx context.Context, q store.ListKeys) (store.KeyPage, error)
	ListAuditEvents(ctx context.Context, q store.ListAuditEvents) (store.AuditPage, error)
}

// Limits of a key's fields. Lists are bounded so a request cannot make
// every allow carry an unbounded header.
const (
	MaxNameLen     = 200
	MaxMetadataLen = 4096
	MaxScopes      = 100
	MaxProjects    = 100
	// MaxRateLimit is the largest rate_limit_per_minute the stores keep
	// (a 32-bit integer column).
	MaxRateLimit = 1<<31 - 1
	maxIDLen     = 128
	listPageSize = 200
)

var (
	scopePattern = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,63}$`)
	// Organization, user and project ids travel in x-keygate-* headers,
	// comma-joined for projects: no spaces, commas or control characters.
	idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$`)
)

// Service performs management operations on a store.
type Service struct {
	store  Store
	format apikey.Format
	now    func() time.Time
	// defaultRate is --rate-limit: the effective limit of a key whose
	// rate_limit_per_minute is null, which bounds what it may create.
	defaultRate int
}

// Option configures a Service.
type Option func(*Service)

// WithDefaultRateLimit tells the Service the server's --rate-limit (0:
// unlimited), the effective limit of keys whose rate_limit_per_minute is
// null. Without it the default is 100, the flag's default.
func WithDefaultRateLimit(perMinute int) Option {
	return func(s *Service) { s.defaultRate = perMinute }
}

// DefaultRateLimit is the default of --rate-limit.
const DefaultRateLimit = 100

// New returns a Service that writes to st and makes tokens of format f.
// now is the clock that expiry is checked against (time.Now if nil).
func New(st Store, f apikey.Format, now func() time.Time, opts ...Option) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{store: st, format: f, now: now, defaultRate: DefaultRateLimit}
	for _, o := range opts {
		o(s)
	}
	return s
}

// NewKey is a key to create, as a transport received it.
type NewKey struct {
	OrgID  string
	UserID string
	Name   string
	// Role, if set, gives the scopes (keygate.RoleScopes); it excludes
	// Scopes. With neither, the key has no scopes.
	Role               string
	Scopes             []string
	ProjectIDs         []string            // empty: every project
	Type               keygate.KeyType     // empty: secret
	Environment        keygate.Environment // empty: live
	ExpiresAt          *time.Time
	RateLimitPerMinute *int            // nil: server default; 0: unlimited
	Metadata           json.RawMessage // nil: {}
	// AllowedSources bind the key to CIDRs, addresses and SPIFFE IDs
	// (SPEC §11); empty: anywhere.
	AllowedSources []string
	// RateLimits are the key's named rate limits (SPEC §9); empty: none.
	RateLimits []keygate.RateLimit
	// Remaining (nil: unlimited) and Refill (nil: none) limit the key's
	// uses (SPEC §9).
	Remaining *int64
	Refill    *keygate.Refill
	// CreateOrganization creates the organization when it is missing, as
	// `keygate keys create` does; the API never does.
	CreateOrganization bool
}

// CreatedKey is a new key and its token. The token exists only here: the
// store keeps its hash, and it must be shown once and then forgotten.
type CreatedKey struct {
	Key   keygate.Key
	Token apikey.Token
}

// CreateKey validates nk, generates an id and a token, and stores the key
// with only the token's hash, prefix and last four characters.
func (s *Service) CreateKey(ctx context.Context, nk NewKey, by keygate.Actor) (CreatedKey, error) {
	k, err := normalize(nk, s.now())
	if err != nil {
		return CreatedKey{}, err
	}
	if nk.CreateOrganization {
		if _, err := s.store.EnsureOrganization(ctx, k.OrgID, by); err != nil {
			return CreatedKey{}, err
		}
	}
	return s.create(ctx, k, by)
}

// create stores a normalized key with a new id and token.
func (s *Service) create(ctx context.Context, k store.NewKey, by keygate.Actor) (CreatedKey, error) {
	var err error
	if k.ID, err = apikey.NewKeyID(); err != nil {
		return CreatedKey{}, err
	}
	tok, err := s.format.Generate(k.Type, k.Environment)
	if err != nil {
		return CreatedKey{}, err
	}
	k.Token = store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()}
	key, err := s.store.CreateKey(ctx, k, by)
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{Key: key, Token: tok}, nil
}

// ValidateNewKey checks nk as CreateKey will, without a store: a transport
// can reject a bad request before it opens or touches anything.
func ValidateNewKey(nk NewKey, now time.Time) error {
	_, err := normalize(nk, now)
	return err
}

// normalize checks every field of nk and returns it normalized: scopes and
// project ids sorted without duplicates, defaults filled in, metadata
// compacted. The first bad field decides, as *keygate.Error with Param.
func normalize(nk NewKey, now time.Time) (store.NewKey, error) {
	k := store.NewKey{
		OrgID:              nk.OrgID,
		UserID:             nk.UserID,
		Name:               nk.Name,
		Type:               nk.Type,
		Environment:        nk.Environment,
		ExpiresAt:          nk.ExpiresAt,
		RateLimitPerMinute: nk.RateLimitPerMinute,
		Remaining:          nk.Remaining,
		Refill:             nk.Refill,
	}
	if err := ValidateID("org_id", nk.OrgID); err != nil {
		return k, err
	}
	if err := ValidateID("user_id", nk.UserID); err != nil {
		return k, err
	}
	if err := ValidateName(nk.Name); err != nil {
		return k, err
	}
	var err error
	if k.Scopes, err = scopes(nk.Role, nk.Scopes); err != nil {
		return k, err
	}
	if len(nk.ProjectIDs) > MaxProjects {
		return k, keygate.ParamErrorf("project_ids", "At most %d project ids are allowed.", MaxProjects)
	}
	for _, p := range nk.ProjectIDs {
		if err := ValidateID("project_ids", p); err != nil {
			return k, err
		}
	}
	k.ProjectIDs = sortedSet(nk.ProjectIDs)
	if k.Type == "" {
		k.Type = keygate.Secret
	}
	if !k.Type.Valid() {
		return k, keygate.ParamErrorf("type", "type must be %q or %q.", keygate.Secret, keygate.Publishable)
	}
	if k.Environment == "" {
		k.Environment = keygate.Live
	}
	if !k.Environment.Valid() {
		return k, keygate.ParamErrorf("environment", "environment must be %q or %q.", keygate.Live, keygate.Test)
	}
	if k.ExpiresAt != nil {
		if !k.ExpiresAt.After(now) {
			return k, keygate.ParamErrorf("expires_at", "expires_at must be in the future.")
		}
		t := expirySecond(*k.ExpiresAt)
		k.ExpiresAt = &t
	}
	if err := validateRate(k.RateLimitPerMinute); err != nil {
		return k, err
	}
	if k.Metadata, err = Metadata(nk.Metadata); err != nil {
		return k, err
	}
	list, err := AllowedSources(nk.AllowedSources)
	if err != nil {
		return k, err
	}
	if len(list) > 0 {
		k.AllowedSources = list
	}
	limits, err := RateLimits(nk.RateLimits)
	if err != nil {
		return k, err
	}
	if len(limits) > 0 {
		k.RateLimits = limits
	}
	if err := ValidateRemaining(k.Remaining); err != nil {
		return k, err
	}
	if err := ValidateRefill(k.Refill); err != nil {
		return k, err
	}
	return k, nil
}

// RateLimits validates a key's named rate limits (SPEC §9) and returns
// them sorted by name, never nil: at most keygate.MaxRateLimits, each
// named by ^[a-z][a-z0-9_-]{0,31}$ (unique), a limit of 1 or more and a
// duration of 1 to 86400 seconds. A bad item names its index and field,
// e.g. rate_limits[2].name.
func RateLimits(list []keygate.RateLimit) ([]keygate.RateLimit, error) {
	if len(list) > keygate.MaxRateLimits {
		return nil, keygate.ParamErrorf("rate_limits", "rate_limits holds at most %d limits.", keygate.MaxRateLimits)
	}
	out := make([]keygate.RateLimit, 0, len(list))
	for i, l := range list {
		item := fmt.Sprintf("rate_limits[%d]", i)
		if !keygate.ValidRateLimitName(l.Name) {
			return nil, keygate.ParamErrorf(item+".name", "%s.name %q must match %s.", item, l.Name, keygate.RateLimitNamePattern)
		}
		for j, prev := range list[:i] {
			if prev.Name == l.Name {
				return nil, keygate.ParamErrorf(item+".name", "%s.name %q is also rate_limits[%d].name: names must be unique.", item, l.Name, j)
			}
		}
		if l.Limit < 1 || l.Limit > MaxRateLimit {
			return nil, keygate.ParamErrorf(item+".limit", "%s.limit must be 1 to %d.", item, MaxRateLimit)
		}
		if l.DurationSeconds < 1 || l.DurationSeconds > keygate.MaxRateLimitDuration {
			return nil, keygate.ParamErrorf(item+".duration_seconds", "%s.duration_seconds must be 1 to %d.", item, keygate.MaxRateLimitDuration)
		}
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b keygate.RateLimit) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// AllowedSources validates a key's allowed_sources and returns them in
// canonical form (package sources): at most sources.MaxEntries, each a
// CIDR, an IP address or a SPIFFE ID; a bad entry names its index.
func AllowedSources(list []string) ([]string, error) {
	out, err := sources.Canonical(list)
	var ee *sources.EntryError
	switch {
	case errors.As(err, &ee):
		return nil, keygate.ParamErrorf(fmt.Sprintf("allowed_sources[%d]", ee.Index),
			"allowed_sources[%d]: %v.", ee.Index, ee.Err)
	case err != nil:
		return nil, keygate.ParamErrorf("allowed_sources", "allowed_sources holds at most %d entries.", sources.MaxEntries)
	}
	return out, nil
}

// expirySecond rounds an expiry up to the next whole second. Expiry is
// kept to whole seconds (SPEC §2) so that the instant every transport
// shows, in whole seconds, is the instant the key stops working; rounding
// up never ends a key before the time it was given.
func expirySecond(t time.Time) time.Time {
	s := t.Truncate(time.Second)
	if s.Before(t) {
		s = s.Add(time.Second)
	}
	return s
}

func scopes(role string, given []string) ([]string, error) {
	if role != "" {
		if len(given) > 0 {
			return nil, keygate.ParamErrorf("role", "Give a role or scopes, not both.")
		}
		s, ok := keygate.RoleScopes(role)
		if !ok {
			return nil, keygate.ParamErrorf("role", "Unknown role %q: want owner, admin, member or viewer.", role)
		}
		return s, nil
	}
	if len(given) > MaxScopes {
		return nil, keygate.ParamErrorf("scopes", "At most %d scopes are allowed.", MaxScopes)
	}
	for _, sc := range given {
		if !scopePattern.MatchString(sc) {
			return nil, keygate.ParamErrorf("scopes", "Scope %q must match ^[a-z][a-z0-9_.:-]{0,63}$.", sc)
		}
	}
	return sortedSet(given), nil
}

func validateRate(r *int) error {
	if r != nil && (*r < 0 || *r > MaxRateLimit) {
		return keygate.ParamErrorf("rate_limit_per_minute", "rate_limit_per_minute must be 0 (unlimited) to %d.", MaxRateLimit)
	}
	return nil
}

// DefaultRole is the role of a key created without role or scopes by the
// CLI (SPEC §6: --role defaults to member).
const DefaultRole = "member"

// ValidateName checks a key name: 1–200 characters, valid UTF-8, no
// control characters (they would break logs and terminals).
func ValidateName(name string) error {
	n := utf8.RuneCountInString(name)
	if n == 0 || n > MaxNameLen {
		return keygate.ParamErrorf("name", "name must be 1 to %d characters.", MaxNameLen)
	}
	if !utf8.ValidString(name) {
		return keygate.ParamErrorf("name", "name must be valid UTF-8.")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return keygate.ParamErrorf("name", "name must not contain control characters.")
		}
	}
	return nil
}

// ValidateID checks an organization, user or project id, reported as
// field param: 1–128 characters of letters, digits and _.@:+-, starting
// with a letter or digit, so that it is safe in a header value.
func ValidateID(param, id string) error {
	if !idPattern.MatchString(id) {
		if id == "" {
			return keygate.ParamErrorf(param, "%s is required.", param)
		}
		return keygate.ParamErrorf(param, "%s %q must be 1 to %d letters, digits or _.@:+- and start with a letter or digit.", param, id, maxIDLen)
	}
	return nil
}

// Metadata validates a key's metadata, a JSON object of at most 4096 bytes
// once compacted, and returns it compacted. Absent or null metadata is {}.
func Metadata(raw json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, keygate.ParamErrorf("metadata", "metadata must be a JSON object.")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, trimmed); err != nil {
		return nil, keygate.ParamErrorf("metadata", "metadata must be a JSON object.")
	}
	if buf.Len() > MaxMetadataLen {
		return nil, keygate.ParamErrorf("metadata", "metadata must be at most %d bytes of JSON.", MaxMetadataLen)
	}
	return json.RawMessage(buf.Bytes()), nil
}

// sortedSet returns a sorted copy of s without duplicates, never nil.
func sortedSet(s []string) []string {
	out := slices.Clone(s)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// RevokeKey revokes key id of organization orgID. An unknown id, or one
// revoked already, is not_found with a message to show as it is: "no key
// key_… in organization acme", or "organization nosuchorg does not exist".
func (s *Service) RevokeKey(ctx context.Context, orgID, id string, by keygate.Actor) (keygate.Key, error) {
	if err := ValidateID("org_id", orgID); err != nil {
		return keygate.Key{}, err
	}
	if id == "" {
		return keygate.Key{}, keygate.ParamErrorf("id", "A key id is required.")
	}
	k, err := s.store.RevokeKey(ctx, orgID, id, by)
	if keygate.ErrorCode(err) == keygate.CodeNotFound {
		if err := s.organizationExists(ctx, orgID); err != nil {
			return keygate.Key{}, err
		}
		return keygate.Key{}, keygate.Errorf(keygate.CodeNotFound, "no key %s in organization %s", id, orgID)
	}
	return k, err
}

// organizationExists returns nil when organization id exists, and else
// not_found "organization … does not exist", a message to show as it is.
func (s *Service) organizationExists(ctx context.Context, id string) error {
	_, err := s.store.GetOrganization(ctx, id)
	if keygate.ErrorCode(err) == keygate.CodeNotFound {
		return keygate.Errorf(keygate.CodeNotFound, "organization %s does not exist", id)
	}
	return err
}

// ListKeys returns every key of an organization that is not revoked,
// newest first, reading the store page by page. An organization that does
// not exist is not_found (organizationExists), not an empty list.
func (s *Service) ListKeys(ctx context.Context, orgID string) ([]keygate.Key, error) {
	if err := ValidateID("org_id", orgID); err != nil {
		return nil, err
	}
	if err := s.organizationExists(ctx, orgID); err != nil {
		return nil, err
	}
	keys := []keygate.Key{}
	q := store.ListKeys{OrgID: orgID, Limit: listPageSize}
	for {
		page, err := s.store.ListKeys(ctx, q)
		if err != nil {
			return nil, err
		}
		keys = append(keys, page.Keys...)
		if page.Next == nil {
			return keys, nil
		}
		q.After = page.Next
	}
}

// CreateOrganization creates organization id (keygate.ErrConflict if it
// exists).
func (s *Service) CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	if err := ValidateID("org_id", id); err != nil {
		return keygate.Organization{}, err
	}
	return s.store.CreateOrganization(ctx, id, by)
}

// EnsureOrganization creates organization id unless it exists.
func (s *Service) EnsureOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	if err := ValidateID("org_id", id); err != nil {
		return keygate.Organization{}, err
	}
	return s.store.EnsureOrganization(ctx, id, by)
}

// DisableOrganization disables organization id: every key of it is denied
// with organization_disabled until it is enabled again.
func (s *Service) DisableOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	return s.setDisabled(ctx, id, true, by)
}

// EnableOrganization enables organization id again.
func (s *Service) EnableOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	return s.setDisabled(ctx, id, false, by)
}

func (s *Service) setDisabled(ctx context.Context, id string, disabled bool, by keygate.Actor) (keygate.Organization, error) {
	if err := ValidateID("org_id", id); err != nil {
		return keygate.Organization{}, err
	}
	org, err := s.store.SetOrganizationDisabled(ctx, id, disabled, by)
	if keygate.ErrorCode(err) == keygate.CodeNotFound {
		return keygate.Organization{}, keygate.Errorf(keygate.CodeNotFound, "organization %s does not exist", id)
	}
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("organization %s: %w", id, err)
	}
	return org, nil
}
