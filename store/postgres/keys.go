package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// keyColumns are the api_keys columns that make a keygate.Key, in the
// order of keyScan.dest, for a table aliased k.
const keyColumns = `k.id, k.org_id, k.user_id, k.name, k.type, k.environment,
	k.scopes, k.project_ids, k.rate_limit_per_minute, k.metadata, k.prefix, k.last4,
	k.created_at, k.last_used_at, k.expires_at, k.disabled_at, k.revoked_at, k.allowed_sources, k.rate_limits,
	k.remaining, k.refill_interval, k.refill_amount, k.usage_epoch, k.refilled_at`

// keyScan is a key being scanned: the refill's two columns become one
// field.
type keyScan struct {
	k        keygate.Key
	interval *string
	amount   *int64
}

// dest returns the scan destinations of keyColumns, followed by extra.
func (s *keyScan) dest(extra ...any) []any {
	k := &s.k
	return append([]any{&k.ID, &k.OrgID, &k.UserID, &k.Name, &k.Type, &k.Environment,
		&k.Scopes, &k.ProjectIDs, &k.RateLimitPerMinute, &k.Metadata, &k.Prefix, &k.Last4,
		&k.CreatedAt, &k.LastUsedAt, &k.ExpiresAt, &k.DisabledAt, &k.RevokedAt, &k.AllowedSources, &k.RateLimits,
		&k.Remaining, &s.interval, &s.amount, &k.UsageEpoch, &k.RefilledAt}, extra...)
}

// key is the scanned key with its times in UTC (pgx scans them in the
// local zone), so both stores return values that compare equal with
// ==-minded tools.
func (s *keyScan) key() keygate.Key {
	k := s.k
	k.CreatedAt = k.CreatedAt.UTC()
	for _, p := range []**time.Time{&k.LastUsedAt, &k.ExpiresAt, &k.DisabledAt, &k.RevokedAt, &k.RefilledAt} {
		*p = utcPtr(*p)
	}
	if k.RateLimits == nil {
		k.RateLimits = []keygate.RateLimit{}
	}
	if s.interval != nil && s.amount != nil {
		k.Refill = &keygate.Refill{Interval: keygate.RefillInterval(*s.interval), Amount: *s.amount}
	}
	return k
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

func scanKey(row pgx.Row, extra ...any) (keygate.Key, error) {
	var ks keyScan
	if err := row.Scan(ks.dest(extra...)...); err != nil {
		return keygate.Key{}, err
	}
	return ks.key(), nil
}

// refillCols are a refill as its two nullable columns.
func refillCols(r *keygate.Refill) (interval *string, amount *int64) {
	if r == nil {
		return nil, nil
	}
	i, a := string(r.Interval), r.Amount
	return &i, &a
}

// recordColumns are the columns of a keygate.KeyRecord, in the order
// scanRecord reads them: keyColumns, then the organization's state and the
// token's end. recordFrom joins tokens t to their key k and its
// organization o.
const (
	recordColumns = keyColumns + `, o.disabled_at IS NOT NULL AS org_disabled, t.expires_at AS token_expires_at`
	recordFrom    = `FROM key_tokens t
		JOIN api_keys k ON k.id = t.key_id
		JOIN organizations o ON o.id = k.org_id`
)

// lookupSelect finds the record of the token with hash $1: at most one row.
const lookupSelect = `SELECT ` + recordColumns + ` ` + recordFrom + ` WHERE t.hash = $1`

// LookupKey returns the record of the token with hash h in one query. A
// token whose grace period has passed is still returned, with
// TokenExpiresAt in the past, until a later roll of its key deletes it: the
// decision treats it as unknown either way.
//
// With a hot standby (Config.ReadURL, UseStandby) the lookup is asked of
// the standby first, and its answer is used only when the standby has
// replayed every event this replica has applied (see lookupStandby).
func (s *Store) LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	if rec, err, answered := s.lookupStandby(ctx, h); answered {
		return rec, err
	}
	row := s.pool.QueryRow(ctx, lookupSelect, h[:])
	rec, err := s.scanRecord(row)
	if err != nil {
		return nil, fmt.Errorf("postgres: lookup: %w", err)
	}
	return rec, nil
}

// scanRecord scans one row of lookupSelect (after extra destinations);
// no row is keygate.ErrNotFound.
func (s *Store) scanRecord(row pgx.Row, extra ...any) (*keygate.KeyRecord, error) {
	rec := &keygate.KeyRecord{}
	var orgDisabled bool
	var tokenExpires *time.Time
	var ks keyScan
	err := row.Scan(append(extra, ks.dest(&orgDisabled, &tokenExpires)...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, keygate.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	rec.Key = ks.key()
	rec.OrgDisabled = orgDisabled
	rec.TokenExpiresAt = utcPtr(tokenExpires)
	rec.LoadedAt = s.now()
	return rec, nil
}

// change is what a write logs besides itself: a key event (when kind is
// set) and an audit event.
type change struct {
	kind   keygate.EventKind // empty: no key event (organization.created)
	action string
	orgID  string
	keyID  string
	hashes [][]byte
	// url and source are a leak report's (api_key.leaked only).
	url, source string
}

// write runs fn in a transaction and logs the change it returns (none when
// nil) in the same transaction.
func (s *Store) write(ctx context.Context, by keygate.Actor, fn func(tx pgx.Tx, now time.Time) (*change, error)) error {
	now := s.clock()
	var seq int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		c, err := fn(tx, now)
		if err != nil || c == nil {
			return err
		}
		seq, err = s.logChange(ctx, tx, now, c, by)
		return err
	})
	if err == nil && seq != 0 {
		store.NoteEventSeq(ctx, seq)
	}
	return err
}

// logChange inserts the audit event, then, under the events lock that
// makes sequence numbers visible in commit order, the key event and its
// NOTIFY. The lock is taken last so it is held for as short as possible.
// It returns the key event's sequence (0 when c has none).
func (s *Store) logChange(ctx context.Context, tx pgx.Tx, now time.Time, c *change, by keygate.Actor) (int64, error) {
	id, err := apikey.NewAuditID()
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (id, org_id, action, actor_key_id, key_id, request_id, created_at, url, source)
		VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), NULLIF($6, ''), $7, NULLIF($8, ''), NULLIF($9, ''))`,
		id, c.orgID, c.action, by.KeyID, c.keyID, by.RequestID, now, c.url, c.source); err != nil {
		return 0, fmt.Errorf("audit event: %w", err)
	}
	if c.kind == "" {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, eventsLockKey); err != nil {
		return 0, fmt.Errorf("events lock: %w", err)
	}
	hashes := c.hashes
	if hashes == nil {
		hashes = [][]byte{}
	}
	var seq int64
	if err := tx.QueryRow(ctx, `WITH e AS (
			INSERT INTO key_events (kind, org_id, key_id, hashes, created_at)
			VALUES ($1, $2, NULLIF($3, ''), $4, $5) RETURNING seq)
		SELECT seq, pg_notify('`+NotifyChannel+`', seq::text) FROM e`,
		string(c.kind), c.orgID, c.keyID, hashes, now).Scan(&seq, nil); err != nil {
		return 0, fmt.Errorf("key event: %w", err)
	}
	if s.beforeCommit != nil {
		s.beforeCommit(ctx, seq)
	}
	return seq, nil
}

const orgColumns = `id, created_at, disabled_at`

func scanOrg(row pgx.Row) (keygate.Organization, error) {
	var o keygate.Organization
	if err := row.Scan(&o.ID, &o.CreatedAt, &o.DisabledAt); err != nil {
		return keygate.Organization{}, err
	}
	o.CreatedAt = o.CreatedAt.UTC()
	o.DisabledAt = utcPtr(o.DisabledAt)
	return o, nil
}

// CreateOrganization creates organization id, or fails with
// keygate.ErrConflict when it exists.
func (s *Store) CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		var err error
		org, err = scanOrg(tx.QueryRow(ctx, `INSERT INTO organizations (id, created_at) VALUES ($1, $2)
			RETURNING `+orgColumns, id, now))
		if pgCode(err) == uniqueViolation {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		return &change{action: keygate.AuditOrgCreated, orgID: id}, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("postgres: create organization %q: %w", id, err)
	}
	return org, nil
}

// EnsureOrganization creates organization id when it is missing and
// returns it either way.
func (s *Store) EnsureOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		var err error
		org, err = scanOrg(tx.QueryRow(ctx, `INSERT INTO organizations (id, created_at) VALUES ($1, $2)
			ON CONFLICT (id) DO NOTHING RETURNING `+orgColumns, id, now))
		if errors.Is(err, pgx.ErrNoRows) {
			org, err = scanOrg(tx.QueryRow(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = $1`, id))
			return nil, err
		}
		if err != nil {
			return nil, err
		}
		return &change{action: keygate.AuditOrgCreated, orgID: id}, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("postgres: ensure organization %q: %w", id, err)
	}
	return org, nil
}

// GetOrganization returns organization id or keygate.ErrNotFound.
func (s *Store) GetOrganization(ctx context.Context, id string) (keygate.Organization, error) {
	org, err := scanOrg(s.pool.QueryRow(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("postgres: get organization %q: %w", id, err)
	}
	return org, nil
}

// SetOrganizationDisabled disables or enables organization id. Setting the
// state it has already writes nothing.
func (s *Store) SetOrganizationDisabled(ctx context.Context, id string, disabled bool, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		var err error
		org, err = scanOrg(tx.QueryRow(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, keygate.ErrNotFound
		}
		if err != nil || (org.DisabledAt != nil) == disabled {
			return nil, err
		}
		var at *time.Time
		c := &change{kind: keygate.EventOrgEnabled, action: keygate.AuditOrgEnabled, orgID: id}
		if disabled {
			at = &now
			c.kind, c.action = keygate.EventOrgDisabled, keygate.AuditOrgDisabled
		}
		org, err = scanOrg(tx.QueryRow(ctx, `UPDATE organizations SET disabled_at = $2 WHERE id = $1
			RETURNING `+orgColumns, id, at))
		if err != nil {
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("postgres: set organization %q disabled=%t: %w", id, disabled, err)
	}
	return org, nil
}

// CreateKey stores a new key and its first token.
func (s *Store) CreateKey(ctx context.Context, nk store.NewKey, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, insertKey(ctx, nk, &k))
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: create key %s: %w", nk.ID, err)
	}
	return k, nil
}

// insertKey is the write that stores nk and its first token into *out:
// the one insert of CreateKey and ImportKeys, so that what a created key
// stores, an imported one stores too. A token hash or key id that exists
// is keygate.ErrConflict, a missing organization keygate.ErrNotFound.
func insertKey(ctx context.Context, nk store.NewKey, out *keygate.Key) func(tx pgx.Tx, now time.Time) (*change, error) {
	return func(tx pgx.Tx, now time.Time) (*change, error) {
		var k keygate.Key
		defer func() { *out = k }()
		metadata := nk.Metadata
		if metadata == nil {
			metadata = []byte("{}")
		}
		if nk.Debit != nil {
			if err := debitUses(ctx, tx, *nk.Debit, now); err != nil {
				return nil, err
			}
		}
		remaining, refilledAt := store.NewKeyUsage(nk, now)
		interval, amount := refillCols(nk.Refill)
		var err error
		k, err = scanKey(tx.QueryRow(ctx, `INSERT INTO api_keys AS k (id, org_id, user_id, name, type, environment,
				scopes, project_ids, rate_limit_per_minute, metadata, prefix, last4, created_at, expires_at, allowed_sources, rate_limits,
				remaining, refill_interval, refill_amount, refilled_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15, $16::jsonb, $17, $18, $19, $20)
			RETURNING `+keyColumns,
			nk.ID, nk.OrgID, nk.UserID, nk.Name, string(nk.Type), string(nk.Environment),
			nonNil(nk.Scopes), nonNil(nk.ProjectIDs), nk.RateLimitPerMinute, string(metadata),
			nk.Token.Prefix, nk.Token.Last4, now, truncPtr(nk.ExpiresAt), nonNil(nk.AllowedSources),
			store.RateLimitsJSON(nk.RateLimits), remaining, interval, amount, refilledAt))
		switch pgCode(err) {
		case uniqueViolation:
			return nil, keygate.ErrConflict
		case foreignKeyViolation:
			return nil, keygate.ErrNotFound // the organization
		}
		if err != nil {
			return nil, err
		}
		_, err = tx.Exec(ctx, `INSERT INTO key_tokens (hash, key_id) VALUES ($1, $2)`, nk.Token.Hash[:], nk.ID)
		if pgCode(err) == uniqueViolation {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyCreated, action: keygate.AuditKeyCreated,
			orgID: nk.OrgID, keyID: nk.ID, hashes: [][]byte{nk.Token.Hash[:]}}, nil
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// GetKey returns a key of organization orgID that is not revoked.
func (s *Store) GetKey(ctx context.Context, orgID, id string) (keygate.Key, error) {
	k, err := scanKey(s.pool.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.id = $1 AND k.org_id = $2 AND k.revoked_at IS NULL`, id, orgID))
	if errors.Is(err, pgx.ErrNoRows) {
		err = keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: get key %s: %w", id, err)
	}
	k.ApplyDueRefill(s.clock())
	return k, nil
}

// lockKey locks a key that is not revoked for the rest of tx and returns
// it with the hashes of all its tokens.
func lockKey(ctx context.Context, tx pgx.Tx, orgID, id string) (keygate.Key, [][]byte, error) {
	k, err := scanKey(tx.QueryRow(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.id = $1 AND k.org_id = $2 AND k.revoked_at IS NULL FOR UPDATE`, id, orgID))
	if errors.Is(err, pgx.ErrNoRows) {
		return keygate.Key{}, nil, keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Key{}, nil, err
	}
	rows, _ := tx.Query(ctx, `SELECT hash FROM key_tokens WHERE key_id = $1 ORDER BY hash`, id)
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return keygate.Key{}, nil, err
	}
	return k, hashes, nil
}

// UpdateKey applies the set fields of u to a key that is not revoked.
func (s *Store) UpdateKey(ctx context.Context, orgID, id string, u store.KeyUpdate, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		old, hashes, err := lockKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		old.ApplyDueRefill(now) // judged and written as it stands now
		if u.Allowed != nil {
			if err := u.Allowed(old); err != nil {
				return nil, err
			}
		}
		next := u.Apply(old, now)
		interval, amount := refillCols(next.Refill)
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys AS k SET name = $2, disabled_at = $3,
				rate_limit_per_minute = $4, expires_at = $5, metadata = $6::jsonb, allowed_sources = $7,
				rate_limits = $8::jsonb,
				remaining = $9, refill_interval = $10, refill_amount = $11, usage_epoch = $12, refilled_at = $13
			WHERE k.id = $1 RETURNING `+keyColumns,
			id, next.Name, next.DisabledAt, next.RateLimitPerMinute, next.ExpiresAt, string(next.Metadata), nonNil(next.AllowedSources),
			store.RateLimitsJSON(next.RateLimits), next.Remaining, interval, amount, next.UsageEpoch, next.RefilledAt))
		if err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyUpdated, action: keygate.AuditKeyUpdated,
			orgID: orgID, keyID: id, hashes: hashes}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: update key %s: %w", id, err)
	}
	return k, nil
}

// RevokeKey revokes a key that is not revoked yet. Its tokens stay, so a
// lookup still finds the key and sees RevokedAt.
func (s *Store) RevokeKey(ctx context.Context, orgID, id string, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		_, hashes, err := lockKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys AS k SET revoked_at = $2
			WHERE k.id = $1 RETURNING `+keyColumns, id, now))
		if err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyRevoked, action: keygate.AuditKeyRevoked,
			orgID: orgID, keyID: id, hashes: hashes}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: revoke key %s: %w", id, err)
	}
	return k, nil
}

// ReportLeak records a leak report of a key and does its action, in one
// transaction with the audit event, key event and NOTIFY of the action.
func (s *Store) ReportLeak(ctx context.Context, orgID, id string, l store.LeakReport, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		old, hashes, err := lockKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		c := &change{action: keygate.AuditKeyLeaked, orgID: orgID, keyID: id, url: l.URL, source: l.Source}
		k = old
		switch l.Action {
		case store.LeakRevoke:
			c.kind, c.hashes = keygate.EventKeyRevoked, hashes
			k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys AS k SET revoked_at = $2
				WHERE k.id = $1 RETURNING `+keyColumns, id, now))
		case store.LeakDeactivate:
			inactive := false
			next := store.KeyUpdate{Active: &inactive}.Apply(old, now)
			c.kind, c.hashes = keygate.EventKeyUpdated, hashes
			k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys AS k SET disabled_at = $2
				WHERE k.id = $1 RETURNING `+keyColumns, id, next.DisabledAt))
		case store.LeakNotify:
		default:
			return nil, fmt.Errorf("unknown leak action %q", l.Action)
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: report leaked key %s: %w", id, err)
	}
	return k, nil
}

// RollKey gives a key a new token. Its old tokens stop at now+grace (or at
// their earlier grace end); those already past it are deleted, and with no
// grace every old token is deleted at once.
func (s *Store) RollKey(ctx context.Context, orgID, id string, t store.NewToken, grace time.Duration, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx pgx.Tx, now time.Time) (*change, error) {
		cur, hashes, err := lockKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		if t.Allowed != nil {
			if err := t.Allowed(cur); err != nil {
				return nil, err
			}
		}
		until := trunc(now.Add(grace))
		if _, err := tx.Exec(ctx, `UPDATE key_tokens SET expires_at = LEAST(COALESCE(expires_at, $2), $2)
			WHERE key_id = $1`, id, until); err != nil {
			return nil, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM key_tokens WHERE key_id = $1 AND expires_at <= $2`, id, now); err != nil {
			return nil, err
		}
		_, err = tx.Exec(ctx, `INSERT INTO key_tokens (hash, key_id) VALUES ($1, $2)`, t.Hash[:], id)
		if pgCode(err) == uniqueViolation {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		k, err = scanKey(tx.QueryRow(ctx, `UPDATE api_keys AS k SET prefix = $2, last4 = $3
			WHERE k.id = $1 RETURNING `+keyColumns, id, t.Prefix, t.Last4))
		if err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyRolled, action: keygate.AuditKeyRolled,
			orgID: orgID, keyID: id, hashes: append(hashes, t.Hash[:])}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("postgres: roll key %s: %w", id, err)
	}
	return k, nil
}

// ListKeys lists an organization's keys that are not revoked, newest first.
func (s *Store) ListKeys(ctx context.Context, q store.ListKeys) (store.KeyPage, error) {
	limit := store.PageLimit(q.Limit)
	now := trunc(q.Now)
	if q.Now.IsZero() {
		now = s.clock()
	}
	var sb strings.Builder
	args := []any{q.OrgID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	sb.WriteString(`SELECT ` + keyColumns + ` FROM api_keys k WHERE k.org_id = $1 AND k.revoked_at IS NULL`)
	if q.UserID != "" {
		sb.WriteString(` AND k.user_id = ` + arg(q.UserID))
	}
	switch q.Status {
	case "":
	case keygate.StatusActive:
		p := arg(now)
		sb.WriteString(` AND k.disabled_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ` + p + `)`)
	case keygate.StatusInactive:
		p := arg(now)
		sb.WriteString(` AND k.disabled_at IS NOT NULL AND (k.expires_at IS NULL OR k.expires_at > ` + p + `)`)
	case keygate.StatusExpired:
		sb.WriteString(` AND k.expires_at <= ` + arg(now))
	default:
		return store.KeyPage{}, fmt.Errorf("postgres: list keys: %w",
			keygate.ParamErrorf("status", "status must be active, inactive or expired"))
	}
	if q.After != nil {
		sb.WriteString(` AND (k.created_at, k.id) < (` + arg(trunc(q.After.CreatedAt)) + `, ` + arg(q.After.ID) + `)`)
	}
	sb.WriteString(` ORDER BY k.created_at DESC, k.id DESC LIMIT ` + arg(limit+1))

	rows, err := s.pool.Query(ctx, sb.String(), args...)
	if err != nil {
		return store.KeyPage{}, fmt.Errorf("postgres: list keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keygate.Key, error) { return scanKey(row) })
	if err != nil {
		return store.KeyPage{}, fmt.Errorf("postgres: list keys: %w", err)
	}
	for i := range keys {
		keys[i].ApplyDueRefill(now)
	}
	return store.NewKeyPage(keys, limit), nil
}

// ListAuditEvents lists an organization's audit trail, newest first.
func (s *Store) ListAuditEvents(ctx context.Context, q store.ListAuditEvents) (store.AuditPage, error) {
	limit := store.PageLimit(q.Limit)
	query := `SELECT id, action, COALESCE(actor_key_id, ''), COALESCE(key_id, ''), org_id,
		COALESCE(request_id, ''), created_at, COALESCE(url, ''), COALESCE(source, '') FROM audit_events WHERE org_id = $1`
	args := []any{q.OrgID, limit + 1}
	if q.After != nil {
		query += ` AND (created_at, id) < ($3, $4)`
		args = append(args, trunc(q.After.CreatedAt), q.After.ID)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT $2`
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return store.AuditPage{}, fmt.Errorf("postgres: list audit events: %w", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keygate.AuditEvent, error) {
		var e keygate.AuditEvent
		err := row.Scan(&e.ID, &e.Action, &e.ActorKeyID, &e.KeyID, &e.OrgID, &e.RequestID, &e.CreatedAt, &e.URL, &e.Source)
		e.CreatedAt = e.CreatedAt.UTC()
		return e, err
	})
	if err != nil {
		return store.AuditPage{}, fmt.Errorf("postgres: list audit events: %w", err)
	}
	return store.NewAuditPage(events, limit), nil
}

// RecordLastUsed writes last_used_at for many keys in one statement, never
// moving it back. It logs no event.
//
// Every replica flushes the keys it saw, so many flush the same hot rows
// at once: the rows are locked in id order (no deadlock between flushes),
// and a row another transaction holds (a revoke, another replica's flush)
// is skipped rather than waited for. A flush must never hold up a revoke,
// nor a pooler's server connection while it waits; a skipped key's time is
// at most one flush interval older than it could be, and written by its
// next flush if it is still in use.
func (s *Store) RecordLastUsed(ctx context.Context, uses []store.LastUse) error {
	if len(uses) == 0 {
		return nil
	}
	ids := make([]string, len(uses))
	ats := make([]time.Time, len(uses))
	for i, u := range uses {
		ids[i], ats[i] = u.KeyID, trunc(u.At)
	}
	if _, err := s.pool.Exec(ctx, `WITH u AS (
			SELECT id, max(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS u (id, at) GROUP BY id),
		locked AS (
			SELECT k.id, u.at FROM api_keys AS k JOIN u ON u.id = k.id
			WHERE k.last_used_at IS NULL OR k.last_used_at < u.at
			ORDER BY k.id FOR NO KEY UPDATE OF k SKIP LOCKED)
		UPDATE api_keys AS k SET last_used_at = locked.at FROM locked
		WHERE k.id = locked.id AND (k.last_used_at IS NULL OR k.last_used_at < locked.at)`, ids, ats); err != nil {
		return fmt.Errorf("postgres: record last used: %w", err)
	}
	return nil
}
