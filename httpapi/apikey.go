package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/fleet"
)

// APIKey is the JSON wire form of a key (SPEC §5), the one shape that the
// management API and `keygate keys … --json` print, so a script sees the
// same object from either.
type APIKey struct {
	ID                 string          `json:"id"`
	Object             string          `json:"object"`
	Name               string          `json:"name"`
	Prefix             string          `json:"prefix"`
	Last4              string          `json:"last4"`
	Type               string          `json:"type"`
	Environment        string          `json:"environment"`
	OrgID              string          `json:"org_id"`
	UserID             string          `json:"user_id"`
	Scopes             []string        `json:"scopes"`
	ProjectIDs         []string        `json:"project_ids"`
	RateLimitPerMinute *int            `json:"rate_limit_per_minute"`
	Metadata           json.RawMessage `json:"metadata"`
	AllowedSources     []string        `json:"allowed_sources"`
	// RateLimits are the key's named rate limits (SPEC §9), [] for none.
	RateLimits []keygate.RateLimit `json:"rate_limits"`
	Status     string              `json:"status"`
	CreatedAt  Time                `json:"created_at"`
	LastUsedAt *Time               `json:"last_used_at"`
	ExpiresAt  *Time               `json:"expires_at"`
	// Remaining (null: unlimited) and Refill (null: none) are the key's
	// usage limit (SPEC §9); remaining as of the store, after any due
	// refill, without the uses replicas hold in leases.
	Remaining *int64  `json:"remaining"`
	Refill    *Refill `json:"refill"`
	// Propagation is set on a change made with ?wait=true (SPEC §12): how
	// far it has reached the fleet. Absent otherwise.
	Propagation *fleet.Propagation `json:"propagation,omitempty"`
}

// CreatedAPIKey is a key as answered on create and roll: the only time the
// token itself is shown, as "key".
type CreatedAPIKey struct {
	APIKey
	Key string `json:"key"`
}

// Data is the envelope of a single object: {"data": {...}}.
type Data[T any] struct {
	Data T `json:"data"`
}

// List is the envelope of a listing: {"data": [...], "next_cursor": …}.
// NextCursor is null on the last page.
type List[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"next_cursor"`
}

// ObjectAPIKey is the "object" of every key.
const ObjectAPIKey = "api_key"

// NewAPIKey converts a stored key to its wire form, with its status at now.
// Empty lists become [] and absent metadata {}, never null: clients index
// into them without a nil check.
func NewAPIKey(k keygate.Key, now time.Time) APIKey {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	projects := k.ProjectIDs
	if projects == nil {
		projects = []string{}
	}
	srcs := k.AllowedSources
	if srcs == nil {
		srcs = []string{}
	}
	limits := k.RateLimits
	if limits == nil {
		limits = []keygate.RateLimit{}
	}
	meta := k.Metadata
	if len(bytes.TrimSpace(meta)) == 0 || bytes.Equal(bytes.TrimSpace(meta), []byte("null")) {
		meta = json.RawMessage("{}")
	}
	return APIKey{
		ID:                 k.ID,
		Object:             ObjectAPIKey,
		Name:               k.Name,
		Prefix:             k.Prefix,
		Last4:              k.Last4,
		Type:               string(k.Type),
		Environment:        string(k.Environment),
		OrgID:              k.OrgID,
		UserID:             k.UserID,
		Scopes:             scopes,
		ProjectIDs:         projects,
		RateLimitPerMinute: k.RateLimitPerMinute,
		Metadata:           meta,
		AllowedSources:     srcs,
		RateLimits:         limits,
		Remaining:          k.Remaining,
		Refill:             newRefill(k.Refill),
		Status:             string(k.Status(now)),
		CreatedAt:          Time(k.CreatedAt),
		LastUsedAt:         timePtr(k.LastUsedAt),
		ExpiresAt:          timePtr(k.ExpiresAt),
	}
}

// Refill is the JSON wire form of a key's refill.
type Refill struct {
	Interval string `json:"interval"`
	Amount   int64  `json:"amount"`
}

func newRefill(r *keygate.Refill) *Refill {
	if r == nil {
		return nil
	}
	return &Refill{Interval: string(r.Interval), Amount: r.Amount}
}

func timePtr(t *time.Time) *Time {
	if t == nil {
		return nil
	}
	v := Time(*t)
	return &v
}

// Time is a timestamp on the wire: RFC 3339 in UTC with whole seconds, as
// in the SPEC's examples ("2026-11-22T10:00:00Z"), whatever precision and
// zone the store keeps. expires_at loses nothing here: package manage
// stores it in whole seconds, so the instant shown is the one enforced.
type Time time.Time

// MarshalJSON writes t as an RFC 3339 UTC string.
func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(time.RFC3339) + `"`), nil
}

// UnmarshalJSON reads any RFC 3339 string.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	*t = Time(v)
	return nil
}

// AuditEvent is the JSON wire form of an audit event. It never holds a
// secret or a hash; actor_key_id and request_id are null for changes made
// from the CLI, key_id for organization events.
type AuditEvent struct {
	ID         string  `json:"id"`
	Object     string  `json:"object"`
	Action     string  `json:"action"`
	ActorKeyID *string `json:"actor_key_id"`
	KeyID      *string `json:"key_id"`
	OrgID      string  `json:"org_id"`
	RequestID  *string `json:"request_id"`
	CreatedAt  Time    `json:"created_at"`
	// URL and Source say where a leaked key was found: only on
	// api_key.leaked, absent from every other action's events.
	URL    *string `json:"url,omitempty"`
	Source *string `json:"source,omitempty"`
}

// ObjectAuditEvent is the "object" of every audit event.
const ObjectAuditEvent = "audit_event"

// NewAuditEvent converts a stored audit event to its wire form.
func NewAuditEvent(e keygate.AuditEvent) AuditEvent {
	return AuditEvent{
		ID: e.ID, Object: ObjectAuditEvent, Action: e.Action, ActorKeyID: nonEmpty(e.ActorKeyID),
		KeyID: nonEmpty(e.KeyID), OrgID: e.OrgID, RequestID: nonEmpty(e.RequestID), CreatedAt: Time(e.CreatedAt),
		URL: nonEmpty(e.URL), Source: nonEmpty(e.Source),
	}
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
