// Package store defines the key store that keygate persists to, with two
// implementations: store/postgres (PostgreSQL through pgx v5) and
// store/sqlite (the embedded default, a single file). store/storetest is the
// conformance suite both pass.
//
// Every write that can change a decision or what an allow carries writes, in
// the same transaction, one key event (see keygate.Event) and one audit
// event. Event sequence numbers become visible in commit order, so that a
// replica replaying the log with Seq > last seen never skips a late commit.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate"
)

// ErrEventsPruned is returned by Events when the log no longer reaches back
// to the sequence asked for: the caller must drop everything it cached.
var ErrEventsPruned = errors.New("store: events log pruned past the requested sequence")

// Store is the whole key store. Consumers declare the smaller interfaces
// they need (extauthz needs only LookupKey).
type Store interface {
	// Migrate applies the schema migrations; PostgreSQL does it under an
	// advisory lock, so replicas starting together do not race.
	Migrate(ctx context.Context) error
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store's connections.
	Close()

	// LookupKey returns what the decision needs about the token with hash h,
	// in one query: keygate.ErrNotFound when no token has that hash. A
	// revoked key is still returned (its RevokedAt set); the decision
	// decides. So is a token rolled away whose grace has passed, with
	// TokenExpiresAt in the past (until a later roll deletes it): the
	// decision treats it as unknown. LoadedAt is the store's clock.
	LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error)

	// CreateOrganization creates organization id: keygate.ErrConflict if it
	// exists.
	CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error)
	// EnsureOrganization creates organization id when missing (with its
	// audit event) and returns it either way.
	EnsureOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error)
	// GetOrganization returns organization id or keygate.ErrNotFound.
	GetOrganization(ctx context.Context, id string) (keygate.Organization, error)
	// SetOrganizationDisabled disables or enables an organization, with an
	// organization event and an audit event. Setting the state it already
	// has is a no-op that writes nothing.
	SetOrganizationDisabled(ctx context.Context, id string, disabled bool, by keygate.Actor) (keygate.Organization, error)

	// CreateKey stores a new key and its first token. The organization must
	// exist (keygate.ErrNotFound otherwise).
	CreateKey(ctx context.Context, k NewKey, by keygate.Actor) (keygate.Key, error)
	// ImportKeys stores keys moved in from another system, each with the
	// token hash it was given (SPEC §9): all or nothing, in one
	// transaction, every key inserted as CreateKey inserts it, with one
	// api_key.imported audit event and one key.created key event (and, on
	// PostgreSQL, a NOTIFY) per key. A hash that exists already, or twice
	// in ks, is an *ImportItemError naming the item, with Err
	// keygate.ErrConflict; nothing is written then.
	ImportKeys(ctx context.Context, ks []NewKey, by keygate.Actor) ([]keygate.Key, error)
	// GetKey returns a key of organization orgID that is not revoked, or
	// keygate.ErrNotFound (also for another organization's id).
	GetKey(ctx context.Context, orgID, id string) (keygate.Key, error)
	// ListKeys lists the keys of an organization that are not revoked,
	// newest first.
	ListKeys(ctx context.Context, q ListKeys) (KeyPage, error)
	// UpdateKey applies the set fields of u to a key that is not revoked.
	UpdateKey(ctx context.Context, orgID, id string, u KeyUpdate, by keygate.Actor) (keygate.Key, error)
	// RevokeKey revokes a key that is not revoked yet; it stays in the store
	// for the audit trail but is gone from GetKey and ListKeys.
	RevokeKey(ctx context.Context, orgID, id string, by keygate.Actor) (keygate.Key, error)
	// RollKey gives a key a new token. The old token keeps working until
	// now+grace (not at all for grace 0), then is unknown.
	RollKey(ctx context.Context, orgID, id string, t NewToken, grace time.Duration, by keygate.Actor) (keygate.Key, error)

	// ReportLeak records a leak report of a key that is not revoked, in one
	// transaction: one api_key.leaked audit event carrying l.URL and
	// l.Source, and l.Action done to the key (LeakRevoke as RevokeKey,
	// LeakDeactivate as UpdateKey with Active false, each with its key
	// event and, on PostgreSQL, its NOTIFY; LeakNotify changes nothing).
	// keygate.ErrNotFound when the key is revoked or unknown.
	ReportLeak(ctx context.Context, orgID, id string, l LeakReport, by keygate.Actor) (keygate.Key, error)

	// ListAuditEvents lists an organization's audit trail, newest first.
	ListAuditEvents(ctx context.Context, q ListAuditEvents) (AuditPage, error)

	// LatestEventSeq is the highest sequence in the events log (0 when it is
	// empty): where a replica with an empty cache starts following it.
	LatestEventSeq(ctx context.Context) (int64, error)
	// Events returns up to limit events with Seq > after, in Seq order, or
	// ErrEventsPruned when events after `after` have been pruned.
	Events(ctx context.Context, after int64, limit int) ([]keygate.Event, error)
	// PruneEvents deletes events created before t and remembers how far the
	// log was pruned. It returns the number of events deleted.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)

	// RecordLastUsed writes last_used_at for many keys in one statement. It
	// writes no key event: last use cannot change a decision. A time older
	// than the stored one never moves last_used_at back.
	RecordLastUsed(ctx context.Context, uses []LastUse) error

	// UsageStore keeps usage analytics (SPEC §9).
	UsageStore

	// LiveTokenHashes calls fn with the hash of every token a lookup could
	// find as a key that is not revoked: the current token of every key not
	// revoked, and rolled-away tokens whose grace (token expires_at) is
	// after now. Keys that are inactive or expired, and keys of a disabled
	// organization, are included (a PATCH or an enable can make them usable
	// again); so are every organization's. Rows are streamed (never one
	// result held whole in memory), in no particular order; an error from
	// fn stops the walk and is returned. It is what a replica builds its
	// membership filter from (SPEC §10).
	LiveTokenHashes(ctx context.Context, now time.Time, fn func(keygate.Hash) error) error

	// RecentKeys calls fn, for up to n tokens (none for n <= 0), with each
	// token's hash and its record exactly as LookupKey(hash) would return
	// it (organization disabled state and token expiry included, LoadedAt
	// the store's clock when the read began, the same for every record),
	// most recently used keys first: last_used_at descending; keys never
	// used after them, newest created first; ties in key id order,
	// descending. Only decidable tokens: key not revoked, token not past
	// its grace at now. Streamed like LiveTokenHashes; an error from fn
	// stops the walk and is returned. It is what a replica warms its cache
	// with (--preload-keys).
	RecentKeys(ctx context.Context, n int, now time.Time, fn func(keygate.Hash, *keygate.KeyRecord) error) error

	// ClaimUses takes up to want uses (at least 1) from the remaining of
	// key keyID (SPEC §9) for a replica's lease, in one atomic step that
	// first applies a refill due at now (remaining = amount, a new usage
	// epoch, at most once per period however many replicas ask). It takes
	// min(want, remaining), never more: the uses of an epoch never exceed
	// the remaining that started it. A key without remaining answers
	// Limited false; a revoked or unknown key keygate.ErrNotFound.
	ClaimUses(ctx context.Context, keyID string, want int64, now time.Time) (UsageClaim, error)
	// ReturnUses gives n unspent uses of a lease back to key keyID, only
	// while the key is still in usage epoch epoch (a lease of an older
	// epoch is void). It reports whether they were taken back.
	ReturnUses(ctx context.Context, keyID string, epoch, n int64) (bool, error)
}

// UsageClaim is the answer to ClaimUses.
type UsageClaim struct {
	// Limited is false when the key has no remaining (unlimited uses).
	Limited bool
	// Granted uses now belong to the caller's lease, of usage epoch Epoch.
	Granted int64
	Epoch   int64
	// Remaining is what the store has left after the claim.
	Remaining int64
	// Refill is the key's refill, nil for none.
	Refill *keygate.Refill
}

// Debit takes Uses from the remaining of key KeyID in the transaction that
// creates a key (SPEC §9: a usage-limited caller pays for the uses of the
// keys it creates). A due refill of that key is applied first; a key
// with fewer remaining uses (or none: unlimited keys are never debited)
// refuses the creation with insufficient_permissions, param remaining.
type Debit struct {
	KeyID string
	Uses  int64
}

// ErrInsufficientUses refuses a Debit the paying key cannot cover.
var ErrInsufficientUses = &keygate.Error{Code: keygate.CodeInsufficientPermissions, Param: "remaining",
	Message: "A key cannot get more than the key that creates it: the remaining uses are beyond the calling key's remaining."}

// LeakAction is what a leak report of a live key does to it
// (--leak-action).
type LeakAction string

// Leak actions.
const (
	LeakRevoke     LeakAction = "revoke"
	LeakDeactivate LeakAction = "deactivate"
	LeakNotify     LeakAction = "notify" // only the audit event
)

// LeakReport is one reported leak of a key: what to do and where the
// token was found, as the report says (never the token).
type LeakReport struct {
	Action LeakAction
	URL    string
	Source string
}

// NewToken is the stored form of a token: its hash and the parts shown to
// identify it. The token itself is never stored.
type NewToken struct {
	Hash   keygate.Hash
	Prefix string
	Last4  string
	// Allowed, if set, is called by RollKey with the key as the roll has
	// locked it, before anything is written; its error refuses the roll
	// and is returned as is. The bounds a roll is judged by (the key may
	// have nothing beyond the caller) are judged again here, so a
	// concurrent change to the key cannot slip between the check and the
	// new token (as KeyUpdate.Allowed for PATCH).
	Allowed func(current keygate.Key) error
}

// NewKey is a key to create. Its fields are validated by the caller; the
// store only stores them.
type NewKey struct {
	ID                 string
	OrgID              string
	UserID             string
	Name               string
	Type               keygate.KeyType
	Environment        keygate.Environment
	Scopes             []string
	ProjectIDs         []string
	RateLimitPerMinute *int
	Metadata           json.RawMessage // nil: {}
	ExpiresAt          *time.Time
	// AllowedSources, canonical (package sources); empty: anywhere.
	AllowedSources []string
	// RateLimits, sorted by name (SPEC §9); empty: none.
	RateLimits []keygate.RateLimit
	// Remaining (nil: unlimited) and Refill (nil: none) are the key's
	// usage limit (SPEC §9).
	Remaining *int64
	Refill    *keygate.Refill
	// Debit, when set, is paid in the same transaction as the insert.
	Debit *Debit
	// CreateOrganization, for ImportKeys: OrgID is created when missing
	// (with its organization.created audit event) in the import's
	// transaction, so a refused import leaves no organization behind.
	CreateOrganization bool
	Token              NewToken
}

// ImportItemError is ImportKeys refusing keys because of item Index: Err
// is keygate.ErrConflict for a token hash that exists already (in any
// organization) or that an earlier item names, and what CreateKey would
// refuse the item with otherwise (a Debit its creator cannot cover:
// ErrInsufficientUses), so the caller can name the item.
type ImportItemError struct {
	Index int
	Err   error
}

func (e *ImportItemError) Error() string {
	return fmt.Sprintf("store: import item %d: %v", e.Index, e.Err)
}

func (e *ImportItemError) Unwrap() error { return e.Err }

// KeyUpdate holds the fields of a key to change; nil fields stay as they
// are. Clear* fields set the matching nullable column to null.
type KeyUpdate struct {
	Name               *string
	Active             *bool
	RateLimitPerMinute *int
	ClearRateLimit     bool
	ExpiresAt          *time.Time
	ClearExpiresAt     bool
	Metadata           json.RawMessage
	// AllowedSources, if not nil, replaces the key's list (canonical;
	// empty: anywhere).
	AllowedSources *[]string
	// RateLimits, if not nil, replaces the key's named rate limits
	// (sorted by name; empty: none).
	RateLimits *[]keygate.RateLimit
	// Remaining and Refill set the usage limit; ClearRemaining makes the
	// key unlimited (and drops its refill), ClearRefill drops the refill.
	// Any of them starts a new usage epoch, voiding every replica's lease.
	Remaining      *int64
	ClearRemaining bool
	Refill         *keygate.Refill
	ClearRefill    bool
	// Allowed, if set, is called with the key as the update has locked it,
	// before anything is written; its error refuses the update and is
	// returned as is. A rule judged on an earlier read (a widening PATCH
	// needs the caller to hold the key's rights) is judged again here, so
	// a concurrent change cannot slip between the check and the write.
	Allowed func(current keygate.Key) error
}

// Apply returns k with the set fields of u applied at now: what an update
// writes, the same for every store. Deactivating an inactive key keeps its
// original disabled_at.
func (u KeyUpdate) Apply(k keygate.Key, now time.Time) keygate.Key {
	if u.Name != nil {
		k.Name = *u.Name
	}
	if u.Active != nil {
		switch {
		case *u.Active:
			k.DisabledAt = nil
		case k.DisabledAt == nil:
			k.DisabledAt = &now
		}
	}
	if u.RateLimitPerMinute != nil {
		k.RateLimitPerMinute = u.RateLimitPerMinute
	}
	if u.ClearRateLimit {
		k.RateLimitPerMinute = nil
	}
	if u.ExpiresAt != nil {
		t := u.ExpiresAt.UTC().Truncate(time.Microsecond)
		k.ExpiresAt = &t
	}
	if u.ClearExpiresAt {
		k.ExpiresAt = nil
	}
	if u.Metadata != nil {
		k.Metadata = u.Metadata
	}
	if u.AllowedSources != nil {
		k.AllowedSources = append([]string{}, *u.AllowedSources...)
	}
	if u.RateLimits != nil {
		k.RateLimits = append([]keygate.RateLimit{}, *u.RateLimits...)
	}
	k.ApplyDueRefill(now)
	if u.UsageChanged() {
		if u.Remaining != nil {
			n := *u.Remaining
			k.Remaining = &n
		}
		if u.Refill != nil {
			r := *u.Refill
			k.Refill = &r
			if k.Remaining == nil {
				n := r.Amount
				k.Remaining = &n
			}
			start := r.Interval.PeriodStart(now)
			k.RefilledAt = &start
		}
		if u.ClearRefill {
			k.Refill, k.RefilledAt = nil, nil
		}
		if u.ClearRemaining {
			k.Remaining, k.Refill, k.RefilledAt = nil, nil, nil
		}
		k.UsageEpoch++
	}
	return k
}

// RateLimitsJSON is a key's named rate limits as both stores keep them: a
// JSON array, [] for none.
func RateLimitsJSON(list []keygate.RateLimit) string {
	if list == nil {
		list = []keygate.RateLimit{}
	}
	b, _ := json.Marshal(list) // ints and strings always marshal
	return string(b)
}

// UsageChanged reports whether u changes the usage limit, which starts a
// new usage epoch.
func (u KeyUpdate) UsageChanged() bool {
	return u.Remaining != nil || u.ClearRemaining || u.Refill != nil || u.ClearRefill
}

// NewKeyUsage is the usage state a new key is stored with at now: a
// refill without remaining starts full, and the current period counts as
// refilled (the first refill is at the next boundary).
func NewKeyUsage(nk NewKey, now time.Time) (remaining *int64, refilledAt *time.Time) {
	remaining = nk.Remaining
	if nk.Refill != nil {
		if remaining == nil {
			n := nk.Refill.Amount
			remaining = &n
		}
		start := nk.Refill.Interval.PeriodStart(now)
		refilledAt = &start
	}
	return remaining, refilledAt
}

// Cursor is a position in a newest-first listing: the (created_at, id) of
// the last item returned. The management API encodes it opaquely.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// DefaultLimit is the page size of a listing that asks for none.
const DefaultLimit = 50

// PageLimit is the page size a listing with limit asks for.
func PageLimit(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return limit
}

// Trim cuts the limit+1 items a store read for a page of limit (newest
// first) to the page, and returns the cursor of the next page: the
// position of the page's last item, or nil when nothing came after it.
func Trim[T any](items []T, limit int, pos func(T) Cursor) ([]T, *Cursor) {
	if len(items) <= limit {
		return items, nil
	}
	items = items[:limit]
	next := pos(items[limit-1])
	return items, &next
}

func keyPos(k keygate.Key) Cursor          { return Cursor{CreatedAt: k.CreatedAt, ID: k.ID} }
func auditPos(e keygate.AuditEvent) Cursor { return Cursor{CreatedAt: e.CreatedAt, ID: e.ID} }

// NewKeyPage is the page of a key listing that read keys for limit.
func NewKeyPage(keys []keygate.Key, limit int) KeyPage {
	var p KeyPage
	p.Keys, p.Next = Trim(keys, limit, keyPos)
	return p
}

// NewAuditPage is the page of an audit listing that read events for limit.
func NewAuditPage(events []keygate.AuditEvent, limit int) AuditPage {
	var p AuditPage
	p.Events, p.Next = Trim(events, limit, auditPos)
	return p
}

// ListKeys selects keys to list.
type ListKeys struct {
	OrgID  string
	UserID string         // empty: every user of the organization
	Status keygate.Status // empty: every status but revoked
	Now    time.Time      // for Status; zero: the store's clock
	After  *Cursor
	Limit  int
}

// KeyPage is one page of a key listing. Next is nil on the last page.
type KeyPage struct {
	Keys []keygate.Key
	Next *Cursor
}

// ListAuditEvents selects audit events to list.
type ListAuditEvents struct {
	OrgID string
	After *Cursor
	Limit int
}

// AuditPage is one page of an audit listing. Next is nil on the last page.
type AuditPage struct {
	Events []keygate.AuditEvent
	Next   *Cursor
}

// LastUse is one key's most recent use.
type LastUse struct {
	KeyID string
	At    time.Time
}

// eventSeqKey is the context key of an EventSeq.
type eventSeqKey struct{}

// EventSeq receives the sequence of the key event that a write made with
// its context committed (see WithEventSeq).
type EventSeq struct{ seq atomic.Int64 }

// Seq is the sequence of the last key event committed by a write made with
// the context: 0 when none was (an error, or a write that logs no event).
func (e *EventSeq) Seq() int64 { return e.seq.Load() }

// WithEventSeq returns a context whose writes record, after they commit,
// the sequence of the key event they wrote: what a caller waits for when
// it waits until every replica has applied its change (SPEC §12). It is a
// context value rather than a result so the write methods keep their
// signatures. Reading the log's end after the write instead would be
// wrong: another write may commit in between.
func WithEventSeq(ctx context.Context) (context.Context, *EventSeq) {
	e := &EventSeq{}
	return context.WithValue(ctx, eventSeqKey{}, e), e
}

// NoteEventSeq is called by a store after a write committed key event seq.
func NoteEventSeq(ctx context.Context, seq int64) {
	if e, ok := ctx.Value(eventSeqKey{}).(*EventSeq); ok {
		e.seq.Store(seq)
	}
}
