// Package keygate holds the domain of the keygate authorizer: API keys,
// organizations, the events that change them and the error codes every
// transport (ext_authz, the management API, the CLI) translates.
//
// The packages beside it are the architecture: apikey formats tokens, store
// persists, cache remembers, extauthz decides, cmd/keygate wires.
package keygate

import (
	"encoding/json"
	"time"
)

// KeyType says whether a key is secret or publishable.
type KeyType string

// Key types.
const (
	Secret      KeyType = "secret"
	Publishable KeyType = "publishable"
)

// Valid reports whether t is a known key type.
func (t KeyType) Valid() bool { return t == Secret || t == Publishable }

// Environment is the environment a key belongs to.
type Environment string

// Environments.
const (
	Live Environment = "live"
	Test Environment = "test"
)

// Valid reports whether e is a known environment.
func (e Environment) Valid() bool { return e == Live || e == Test }

// Status is the derived state of a key.
type Status string

// Key statuses, in order of precedence.
const (
	StatusRevoked  Status = "revoked"
	StatusExpired  Status = "expired"
	StatusInactive Status = "inactive"
	StatusActive   Status = "active"
)

// Key is an API key as stored, without its secret: only the SHA-256 hash of
// a token is ever kept, and that hash lives in the store, not here.
type Key struct {
	ID          string
	OrgID       string
	UserID      string
	Name        string
	Type        KeyType
	Environment Environment
	// Scopes and ProjectIDs are sorted and free of duplicates. An empty
	// ProjectIDs means every project.
	Scopes     []string
	ProjectIDs []string
	// RateLimitPerMinute is nil for the server default and 0 for unlimited.
	RateLimitPerMinute *int
	// AllowedSources are the sources the key may be used from (SPEC §11),
	// in the canonical form of package sources: CIDRs, addresses and
	// SPIFFE IDs, sorted, without duplicates. Empty means anywhere.
	AllowedSources []string
	// RateLimits are the key's named rate limits (SPEC §9), sorted by
	// name, names unique, at most MaxRateLimits; never nil once stored.
	// A route applies the one it names (keygate.ratelimit).
	RateLimits []RateLimit
	// Remaining is the uses the key has left (SPEC §9), nil for
	// unlimited. In the store it is the uses not yet leased to a replica.
	Remaining *int64
	// Refill, when set, sets Remaining to its amount every interval.
	Refill *Refill
	// UsageEpoch counts the refills and changes of Remaining: a lease of
	// uses taken in an older epoch is void.
	UsageEpoch int64
	// RefilledAt is the start of the refill period last applied (nil:
	// none yet).
	RefilledAt *time.Time
	// Metadata is a JSON object; never nil once stored.
	Metadata   json.RawMessage
	Prefix     string
	Last4      string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	ExpiresAt  *time.Time
	DisabledAt *time.Time
	RevokedAt  *time.Time
}

// Status returns the key's status at now, in SPEC precedence: revoked,
// expired, inactive, active.
func (k *Key) Status(now time.Time) Status {
	switch {
	case k.RevokedAt != nil:
		return StatusRevoked
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return StatusExpired
	case k.DisabledAt != nil:
		return StatusInactive
	default:
		return StatusActive
	}
}

// DenyCode is the code that denies a request made with a key of status s
// (SPEC §3): a revoked key is invalid_api_key, as if unknown; "" for an
// active key.
func (s Status) DenyCode() Code {
	switch s {
	case StatusRevoked:
		return CodeInvalidAPIKey
	case StatusExpired:
		return CodeAPIKeyExpired
	case StatusInactive:
		return CodeAPIKeyInactive
	}
	return ""
}

// HasScope reports whether the key carries scope s.
func (k *Key) HasScope(s string) bool {
	for _, have := range k.Scopes {
		if have == s {
			return true
		}
	}
	return false
}

// RateLimit is one named rate limit of a key (SPEC §9): a token bucket of
// Limit requests that refills over DurationSeconds.
type RateLimit struct {
	Name            string `json:"name"`
	Limit           int    `json:"limit"`
	DurationSeconds int    `json:"duration_seconds"`
}

// Bounds of named rate limits (SPEC §9).
const (
	MaxRateLimits        = 8
	MaxRateLimitDuration = 86400 // seconds
	MaxRateLimitNameLen  = 32
	RateLimitNamePattern = "^[a-z][a-z0-9_-]{0,31}$"
)

// ValidRateLimitName reports whether s matches RateLimitNamePattern,
// without a regexp: the policy loader and the decision share it.
func ValidRateLimitName(s string) bool {
	if len(s) == 0 || len(s) > MaxRateLimitNameLen || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Looser reports whether r allows more than o in some window: a token
// bucket holds Limit requests and refills at Limit/DurationSeconds, so r
// is looser with a larger burst (Limit) or a higher rate (compared
// exactly, cross-multiplied). 20 per 120 s is looser than 10 per 60 s:
// the same rate, twice the burst.
func (r RateLimit) Looser(o RateLimit) bool {
	return r.Limit > o.Limit || int64(r.Limit)*int64(o.DurationSeconds) > int64(o.Limit)*int64(r.DurationSeconds)
}

// Organization is a tenant. Every key belongs to exactly one.
type Organization struct {
	ID         string
	CreatedAt  time.Time
	DisabledAt *time.Time
}

// KeyRecord is everything the store knows about one token, as returned by
// a lookup of the token's hash: the key, the state of its organization,
// and, for a token that a roll has replaced, when it stops working. The
// decision and the cache read its compact KeyView.
type KeyRecord struct {
	Key         Key
	OrgDisabled bool
	// TokenExpiresAt is set for a token that was rolled away with a grace
	// period: past it the token is unknown, whatever the key's state.
	TokenExpiresAt *time.Time
	// LoadedAt is when the store answered: how old a cached decision is.
	LoadedAt time.Time
}

// Hash is the SHA-256 of a whole token: the only form in which a token is
// stored or used as a cache key.
type Hash [32]byte

// EventKind names what a key event changed.
type EventKind string

// Event kinds. A key event names the token hashes whose cached records it
// makes stale; an organization event names the organization.
const (
	EventKeyCreated  EventKind = "key.created"
	EventKeyUpdated  EventKind = "key.updated"
	EventKeyRevoked  EventKind = "key.revoked"
	EventKeyRolled   EventKind = "key.rolled"
	EventOrgDisabled EventKind = "organization.disabled"
	EventOrgEnabled  EventKind = "organization.enabled"
)

// Event is one entry of the key-events log. Sequence numbers become visible
// in commit order, so a reader that has seen every Seq up to n can ask for
// Seq > n and never miss an event.
type Event struct {
	Seq       int64
	Kind      EventKind
	OrgID     string
	KeyID     string // empty for organization events
	Hashes    []Hash // the tokens whose cached records are stale
	CreatedAt time.Time
}

// Actor is who made a change, for the audit trail: a key through the API,
// or nobody (the CLI), with the request id of the call.
type Actor struct {
	KeyID     string // empty from the CLI
	RequestID string // empty from the CLI
}

// Audit actions.
const (
	AuditKeyCreated = "api_key.created"
	AuditKeyUpdated = "api_key.updated"
	AuditKeyRolled  = "api_key.rolled"
	AuditKeyRevoked = "api_key.revoked"
	// AuditKeyImported records a key moved in from another system with
	// its token's hash (SPEC §9), one event per imported key.
	AuditKeyImported = "api_key.imported"
	// AuditKeyLeaked records a leak report of a live key (SPEC §13), with
	// the report's url and source, whatever was done about it.
	AuditKeyLeaked   = "api_key.leaked"
	AuditOrgCreated  = "organization.created"
	AuditOrgDisabled = "organization.disabled"
	AuditOrgEnabled  = "organization.enabled"
)

// AuditEvent is one entry of an organization's audit trail. It never holds
// a secret or a hash.
type AuditEvent struct {
	ID         string
	Action     string
	ActorKeyID string // empty: null
	KeyID      string // empty: null
	OrgID      string
	RequestID  string // empty: null
	CreatedAt  time.Time
	// URL and Source are where a leaked key was found (api_key.leaked
	// only; empty: null).
	URL    string
	Source string
}

// RoleScopes returns the scopes a role grants at creation: owner and admin
// get read, write and admin; member read and write; viewer read.
func RoleScopes(role string) ([]string, bool) {
	switch role {
	case "owner", "admin":
		return []string{"admin", "read", "write"}, true
	case "member":
		return []string{"read", "write"}, true
	case "viewer":
		return []string{"read"}, true
	}
	return nil, false
}
