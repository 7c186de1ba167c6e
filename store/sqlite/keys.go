package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// keyColumns lists the api_keys columns of keyRow.dest, each prefixed
// with p (a table alias and a dot, or nothing).
func keyColumns(p string) string {
	cols := []string{"id", "org_id", "user_id", "name", "type", "environment",
		"scopes", "project_ids", "rate_limit_per_minute", "metadata", "prefix", "last4",
		"created_at", "last_used_at", "expires_at", "disabled_at", "revoked_at", "allowed_sources", "rate_limits",
		"remaining", "refill_interval", "refill_amount", "usage_epoch", "refilled_at"}
	for i, c := range cols {
		cols[i] = p + c
	}
	return strings.Join(cols, ", ")
}

// keyRow is a scanned api_keys row before its JSON and times are decoded.
type keyRow struct {
	k                                  keygate.Key
	scopes, projects, metadata, srcs   string
	limits                             string
	rate                               sql.NullInt64
	created                            int64
	lastUsed, expires, disabled, revok sql.NullInt64
	remaining, amount, refilled        sql.NullInt64
	interval                           sql.NullString
}

func (r *keyRow) dest(extra ...any) []any {
	return append([]any{&r.k.ID, &r.k.OrgID, &r.k.UserID, &r.k.Name, &r.k.Type, &r.k.Environment,
		&r.scopes, &r.projects, &r.rate, &r.metadata, &r.k.Prefix, &r.k.Last4,
		&r.created, &r.lastUsed, &r.expires, &r.disabled, &r.revok, &r.srcs, &r.limits,
		&r.remaining, &r.interval, &r.amount, &r.k.UsageEpoch, &r.refilled}, extra...)
}

func (r *keyRow) key() (keygate.Key, error) {
	k := r.k
	if err := json.Unmarshal([]byte(r.scopes), &k.Scopes); err != nil {
		return keygate.Key{}, fmt.Errorf("key %s: scopes: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(r.projects), &k.ProjectIDs); err != nil {
		return keygate.Key{}, fmt.Errorf("key %s: project_ids: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(r.srcs), &k.AllowedSources); err != nil {
		return keygate.Key{}, fmt.Errorf("key %s: allowed_sources: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(r.limits), &k.RateLimits); err != nil {
		return keygate.Key{}, fmt.Errorf("key %s: rate_limits: %w", k.ID, err)
	}
	if k.RateLimits == nil {
		k.RateLimits = []keygate.RateLimit{}
	}
	if r.rate.Valid {
		n := int(r.rate.Int64)
		k.RateLimitPerMinute = &n
	}
	k.Metadata = json.RawMessage(r.metadata)
	k.CreatedAt = fromUS(r.created)
	k.LastUsedAt = fromNullUS(r.lastUsed)
	k.ExpiresAt = fromNullUS(r.expires)
	k.DisabledAt = fromNullUS(r.disabled)
	k.RevokedAt = fromNullUS(r.revok)
	if r.remaining.Valid {
		n := r.remaining.Int64
		k.Remaining = &n
	}
	if r.interval.Valid && r.amount.Valid {
		k.Refill = &keygate.Refill{Interval: keygate.RefillInterval(r.interval.String), Amount: r.amount.Int64}
	}
	k.RefilledAt = fromNullUS(r.refilled)
	return k, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanKey(row scanner, extra ...any) (keygate.Key, error) {
	var r keyRow
	if err := row.Scan(r.dest(extra...)...); err != nil {
		return keygate.Key{}, err
	}
	return r.key()
}

func jsonStrings(s []string) string {
	if s == nil {
		s = []string{}
	}
	b, _ := json.Marshal(s) // a []string always marshals
	return string(b)
}

// recordColumns are the columns of a keygate.KeyRecord, in the order of
// scanRecord, read through recordFrom.
var recordColumns = keyColumns("k.") + `, o.disabled_at IS NOT NULL, t.expires_at`

// recordFrom joins tokens t to their key k and its organization o.
const recordFrom = `FROM key_tokens t
	JOIN api_keys k ON k.id = t.key_id
	JOIN organizations o ON o.id = k.org_id`

// scanRecord scans recordColumns, followed by extra, into a record whose
// LoadedAt the caller sets.
func scanRecord(row scanner, extra ...any) (*keygate.KeyRecord, error) {
	rec := &keygate.KeyRecord{}
	var tokenExpires sql.NullInt64
	k, err := scanKey(row, append([]any{&rec.OrgDisabled, &tokenExpires}, extra...)...)
	if err != nil {
		return nil, err
	}
	rec.Key = k
	rec.TokenExpiresAt = fromNullUS(tokenExpires)
	return rec, nil
}

// LookupKey returns the record of the token with hash h in one query. A
// token whose grace period has passed is still returned, with
// TokenExpiresAt in the past, until a later roll of its key deletes it: the
// decision treats it as unknown either way.
func (s *Store) LookupKey(ctx context.Context, h keygate.Hash) (*keygate.KeyRecord, error) {
	rec, err := scanRecord(s.db.QueryRowContext(ctx, `SELECT `+recordColumns+` `+recordFrom+` WHERE t.hash = ?`, h[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite: lookup: %w", keygate.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: lookup: %w", err)
	}
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

// write runs fn in an immediate transaction and logs the change it returns
// (none when nil) in the same transaction.
func (s *Store) write(ctx context.Context, by keygate.Actor, fn func(tx *sql.Tx, now time.Time) (*change, error)) error {
	now := s.clock()
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock in the DSN)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	c, err := fn(tx, now)
	if err != nil {
		return err
	}
	var seq int64
	if c != nil {
		if seq, err = logChange(ctx, tx, now, c, by); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if seq != 0 {
		store.NoteEventSeq(ctx, seq)
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// logChange writes c's audit event and key event; it returns the key
// event's sequence (0 when c has none).
func logChange(ctx context.Context, tx *sql.Tx, now time.Time, c *change, by keygate.Actor) (int64, error) {
	id, err := apikey.NewAuditID()
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit_events (id, org_id, action, actor_key_id, key_id, request_id, created_at, url, source)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id, c.orgID, c.action, nullable(by.KeyID), nullable(c.keyID), nullable(by.RequestID), toUS(now),
		nullable(c.url), nullable(c.source)); err != nil {
		return 0, fmt.Errorf("audit event: %w", err)
	}
	if c.kind == "" {
		return 0, nil
	}
	hashes := make([]byte, 0, len(c.hashes)*len(keygate.Hash{}))
	for _, h := range c.hashes {
		hashes = append(hashes, h...)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO key_events (kind, org_id, key_id, hashes, created_at)
		VALUES (?, ?, ?, ?, ?)`, string(c.kind), c.orgID, nullable(c.keyID), hashes, toUS(now))
	if err != nil {
		return 0, fmt.Errorf("key event: %w", err)
	}
	seq, err := res.LastInsertId() // seq is the rowid
	if err != nil {
		return 0, fmt.Errorf("key event: %w", err)
	}
	return seq, nil
}

const orgColumns = `id, created_at, disabled_at`

func scanOrg(row scanner) (keygate.Organization, error) {
	var o keygate.Organization
	var created int64
	var disabled sql.NullInt64
	if err := row.Scan(&o.ID, &created, &disabled); err != nil {
		return keygate.Organization{}, err
	}
	o.CreatedAt = fromUS(created)
	o.DisabledAt = fromNullUS(disabled)
	return o, nil
}

// CreateOrganization creates organization id, or fails with
// keygate.ErrConflict when it exists.
func (s *Store) CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		_, err := tx.ExecContext(ctx, `INSERT INTO organizations (id, created_at) VALUES (?, ?)`, id, toUS(now))
		if isUnique(err) {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		org = keygate.Organization{ID: id, CreatedAt: now}
		return &change{action: keygate.AuditOrgCreated, orgID: id}, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("sqlite: create organization %q: %w", id, err)
	}
	return org, nil
}

// EnsureOrganization creates organization id when it is missing and
// returns it either way.
func (s *Store) EnsureOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		res, err := tx.ExecContext(ctx, `INSERT INTO organizations (id, created_at) VALUES (?, ?)
			ON CONFLICT (id) DO NOTHING`, id, toUS(now))
		if err != nil {
			return nil, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			org, err = scanOrg(tx.QueryRowContext(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = ?`, id))
			return nil, err
		}
		org = keygate.Organization{ID: id, CreatedAt: now}
		return &change{action: keygate.AuditOrgCreated, orgID: id}, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("sqlite: ensure organization %q: %w", id, err)
	}
	return org, nil
}

// GetOrganization returns organization id or keygate.ErrNotFound.
func (s *Store) GetOrganization(ctx context.Context, id string) (keygate.Organization, error) {
	org, err := scanOrg(s.db.QueryRowContext(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		err = keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("sqlite: get organization %q: %w", id, err)
	}
	return org, nil
}

// SetOrganizationDisabled disables or enables organization id. Setting the
// state it has already writes nothing.
func (s *Store) SetOrganizationDisabled(ctx context.Context, id string, disabled bool, by keygate.Actor) (keygate.Organization, error) {
	var org keygate.Organization
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		var err error
		org, err = scanOrg(tx.QueryRowContext(ctx, `SELECT `+orgColumns+` FROM organizations WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return nil, keygate.ErrNotFound
		}
		if err != nil || (org.DisabledAt != nil) == disabled {
			return nil, err
		}
		c := &change{kind: keygate.EventOrgEnabled, action: keygate.AuditOrgEnabled, orgID: id}
		org.DisabledAt = nil
		if disabled {
			org.DisabledAt = &now
			c.kind, c.action = keygate.EventOrgDisabled, keygate.AuditOrgDisabled
		}
		if _, err := tx.ExecContext(ctx, `UPDATE organizations SET disabled_at = ? WHERE id = ?`,
			toUSPtr(org.DisabledAt), id); err != nil {
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return keygate.Organization{}, fmt.Errorf("sqlite: set organization %q disabled=%t: %w", id, disabled, err)
	}
	return org, nil
}

// CreateKey stores a new key and its first token.
func (s *Store) CreateKey(ctx context.Context, nk store.NewKey, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, insertKey(ctx, nk, &k))
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: create key %s: %w", nk.ID, err)
	}
	return k, nil
}

// insertKey is the write that stores nk and its first token into *out:
// the one insert of CreateKey and ImportKeys, so that what a created key
// stores, an imported one stores too. A token hash or key id that exists
// is keygate.ErrConflict, a missing organization keygate.ErrNotFound.
func insertKey(ctx context.Context, nk store.NewKey, out *keygate.Key) func(tx *sql.Tx, now time.Time) (*change, error) {
	return func(tx *sql.Tx, now time.Time) (*change, error) {
		var k keygate.Key
		defer func() { *out = k }()
		metadata := nk.Metadata
		if metadata == nil {
			metadata = []byte("{}")
		}
		var rate *int64
		if nk.RateLimitPerMinute != nil {
			v := int64(*nk.RateLimitPerMinute)
			rate = &v
		}
		if nk.Debit != nil {
			if err := debitUses(ctx, tx, *nk.Debit, now); err != nil {
				return nil, err
			}
		}
		remaining, refilledAt := store.NewKeyUsage(nk, now)
		interval, amount := refillCols(nk.Refill)
		_, err := tx.ExecContext(ctx, `INSERT INTO api_keys (id, org_id, user_id, name, type, environment,
				scopes, project_ids, rate_limit_per_minute, metadata, prefix, last4, created_at, expires_at, allowed_sources, rate_limits,
				remaining, refill_interval, refill_amount, refilled_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, json(?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			nk.ID, nk.OrgID, nk.UserID, nk.Name, string(nk.Type), string(nk.Environment),
			jsonStrings(nk.Scopes), jsonStrings(nk.ProjectIDs), rate, string(metadata),
			nk.Token.Prefix, nk.Token.Last4, toUS(now), toUSPtr(truncPtr(nk.ExpiresAt)), jsonStrings(nk.AllowedSources),
			store.RateLimitsJSON(nk.RateLimits), remaining, interval, amount, toUSPtr(refilledAt))
		switch {
		case isUnique(err):
			return nil, keygate.ErrConflict
		case isForeignKey(err):
			return nil, keygate.ErrNotFound // the organization
		case err != nil:
			return nil, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO key_tokens (hash, key_id) VALUES (?, ?)`, nk.Token.Hash[:], nk.ID)
		if isUnique(err) {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		if k, err = getKey(ctx, tx, nk.ID); err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyCreated, action: keygate.AuditKeyCreated,
			orgID: nk.OrgID, keyID: nk.ID, hashes: [][]byte{nk.Token.Hash[:]}}, nil
	}
}

func truncPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := trunc(*t)
	return &u
}

// getKey reads a key by id inside tx, revoked or not.
func getKey(ctx context.Context, tx *sql.Tx, id string) (keygate.Key, error) {
	return scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns("")+` FROM api_keys WHERE id = ?`, id))
}

// GetKey returns a key of organization orgID that is not revoked.
func (s *Store) GetKey(ctx context.Context, orgID, id string) (keygate.Key, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns("")+` FROM api_keys
		WHERE id = ? AND org_id = ? AND revoked_at IS NULL`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		err = keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: get key %s: %w", id, err)
	}
	k.ApplyDueRefill(s.clock())
	return k, nil
}

// liveKey returns a key that is not revoked, with the hashes of all its
// tokens. The immediate transaction already holds the write lock.
func liveKey(ctx context.Context, tx *sql.Tx, orgID, id string) (keygate.Key, [][]byte, error) {
	k, err := scanKey(tx.QueryRowContext(ctx, `SELECT `+keyColumns("")+` FROM api_keys
		WHERE id = ? AND org_id = ? AND revoked_at IS NULL`, id, orgID))
	if errors.Is(err, sql.ErrNoRows) {
		return keygate.Key{}, nil, keygate.ErrNotFound
	}
	if err != nil {
		return keygate.Key{}, nil, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT hash FROM key_tokens WHERE key_id = ? ORDER BY hash`, id)
	if err != nil {
		return keygate.Key{}, nil, err
	}
	defer rows.Close()
	var hashes [][]byte
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return keygate.Key{}, nil, err
		}
		hashes = append(hashes, h)
	}
	return k, hashes, rows.Err()
}

// UpdateKey applies the set fields of u to a key that is not revoked.
func (s *Store) UpdateKey(ctx context.Context, orgID, id string, u store.KeyUpdate, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		old, hashes, err := liveKey(ctx, tx, orgID, id)
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
		var rate *int64
		if next.RateLimitPerMinute != nil {
			v := int64(*next.RateLimitPerMinute)
			rate = &v
		}
		interval, amount := refillCols(next.Refill)
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET name = ?, disabled_at = ?,
				rate_limit_per_minute = ?, expires_at = ?, metadata = json(?), allowed_sources = ?,
				rate_limits = ?, remaining = ?, refill_interval = ?, refill_amount = ?, usage_epoch = ?, refilled_at = ? WHERE id = ?`,
			next.Name, toUSPtr(next.DisabledAt), rate, toUSPtr(next.ExpiresAt), string(next.Metadata),
			jsonStrings(next.AllowedSources), store.RateLimitsJSON(next.RateLimits), next.Remaining, interval, amount, next.UsageEpoch, toUSPtr(next.RefilledAt), id); err != nil {
			return nil, err
		}
		if k, err = getKey(ctx, tx, id); err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyUpdated, action: keygate.AuditKeyUpdated,
			orgID: orgID, keyID: id, hashes: hashes}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: update key %s: %w", id, err)
	}
	return k, nil
}

// RevokeKey revokes a key that is not revoked yet. Its tokens stay, so a
// lookup still finds the key and sees RevokedAt.
func (s *Store) RevokeKey(ctx context.Context, orgID, id string, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		_, hashes, err := liveKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, toUS(now), id); err != nil {
			return nil, err
		}
		if k, err = getKey(ctx, tx, id); err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyRevoked, action: keygate.AuditKeyRevoked,
			orgID: orgID, keyID: id, hashes: hashes}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: revoke key %s: %w", id, err)
	}
	return k, nil
}

// ReportLeak records a leak report of a key and does its action, in one
// transaction with the audit event and key event of the action.
func (s *Store) ReportLeak(ctx context.Context, orgID, id string, l store.LeakReport, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		old, hashes, err := liveKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		c := &change{action: keygate.AuditKeyLeaked, orgID: orgID, keyID: id, url: l.URL, source: l.Source}
		switch l.Action {
		case store.LeakRevoke:
			c.kind, c.hashes = keygate.EventKeyRevoked, hashes
			_, err = tx.ExecContext(ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ?`, toUS(now), id)
		case store.LeakDeactivate:
			inactive := false
			next := store.KeyUpdate{Active: &inactive}.Apply(old, now)
			c.kind, c.hashes = keygate.EventKeyUpdated, hashes
			_, err = tx.ExecContext(ctx, `UPDATE api_keys SET disabled_at = ? WHERE id = ?`, toUSPtr(next.DisabledAt), id)
		case store.LeakNotify:
		default:
			return nil, fmt.Errorf("unknown leak action %q", l.Action)
		}
		if err != nil {
			return nil, err
		}
		if k, err = getKey(ctx, tx, id); err != nil {
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: report leaked key %s: %w", id, err)
	}
	return k, nil
}

// RollKey gives a key a new token. Its old tokens stop at now+grace (or at
// their earlier grace end); those already past it are deleted, and with no
// grace every old token is deleted at once.
func (s *Store) RollKey(ctx context.Context, orgID, id string, t store.NewToken, grace time.Duration, by keygate.Actor) (keygate.Key, error) {
	var k keygate.Key
	err := s.write(ctx, by, func(tx *sql.Tx, now time.Time) (*change, error) {
		cur, hashes, err := liveKey(ctx, tx, orgID, id)
		if err != nil {
			return nil, err
		}
		if t.Allowed != nil {
			if err := t.Allowed(cur); err != nil {
				return nil, err
			}
		}
		until := toUS(trunc(now.Add(grace)))
		if _, err := tx.ExecContext(ctx, `UPDATE key_tokens SET expires_at = min(coalesce(expires_at, ?1), ?1)
			WHERE key_id = ?2`, until, id); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM key_tokens WHERE key_id = ? AND expires_at <= ?`, id, toUS(now)); err != nil {
			return nil, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO key_tokens (hash, key_id) VALUES (?, ?)`, t.Hash[:], id)
		if isUnique(err) {
			return nil, keygate.ErrConflict
		}
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE api_keys SET prefix = ?, last4 = ? WHERE id = ?`, t.Prefix, t.Last4, id); err != nil {
			return nil, err
		}
		if k, err = getKey(ctx, tx, id); err != nil {
			return nil, err
		}
		return &change{kind: keygate.EventKeyRolled, action: keygate.AuditKeyRolled,
			orgID: orgID, keyID: id, hashes: append(hashes, t.Hash[:])}, nil
	})
	if err != nil {
		return keygate.Key{}, fmt.Errorf("sqlite: roll key %s: %w", id, err)
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
	query := `SELECT ` + keyColumns("") + ` FROM api_keys WHERE org_id = ? AND revoked_at IS NULL`
	args := []any{q.OrgID}
	if q.UserID != "" {
		query += ` AND user_id = ?`
		args = append(args, q.UserID)
	}
	switch q.Status {
	case "":
	case keygate.StatusActive:
		query += ` AND disabled_at IS NULL AND (expires_at IS NULL OR expires_at > ?)`
		args = append(args, toUS(now))
	case keygate.StatusInactive:
		query += ` AND disabled_at IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)`
		args = append(args, toUS(now))
	case keygate.StatusExpired:
		query += ` AND expires_at <= ?`
		args = append(args, toUS(now))
	default:
		return store.KeyPage{}, fmt.Errorf("sqlite: list keys: %w",
			keygate.ParamErrorf("status", "status must be active, inactive or expired"))
	}
	if q.After != nil {
		query += ` AND (created_at, id) < (?, ?)`
		args = append(args, toUS(trunc(q.After.CreatedAt)), q.After.ID)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit+1)

	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return store.KeyPage{}, fmt.Errorf("sqlite: list keys: %w", err)
	}
	defer rows.Close()
	var keys []keygate.Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return store.KeyPage{}, fmt.Errorf("sqlite: list keys: %w", err)
		}
		k.ApplyDueRefill(now)
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return store.KeyPage{}, fmt.Errorf("sqlite: list keys: %w", err)
	}
	return store.NewKeyPage(keys, limit), nil
}

// ListAuditEvents lists an organization's audit trail, newest first.
func (s *Store) ListAuditEvents(ctx context.Context, q store.ListAuditEvents) (store.AuditPage, error) {
	limit := store.PageLimit(q.Limit)
	query := `SELECT id, action, coalesce(actor_key_id, ''), coalesce(key_id, ''), org_id,
		coalesce(request_id, ''), created_at, coalesce(url, ''), coalesce(source, '') FROM audit_events WHERE org_id = ?`
	args := []any{q.OrgID}
	if q.After != nil {
		query += ` AND (created_at, id) < (?, ?)`
		args = append(args, toUS(trunc(q.After.CreatedAt)), q.After.ID)
	}
	query += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return store.AuditPage{}, fmt.Errorf("sqlite: list audit events: %w", err)
	}
	defer rows.Close()
	var events []keygate.AuditEvent
	for rows.Next() {
		var e keygate.AuditEvent
		var created int64
		if err := rows.Scan(&e.ID, &e.Action, &e.ActorKeyID, &e.KeyID, &e.OrgID, &e.RequestID, &created, &e.URL, &e.Source); err != nil {
			return store.AuditPage{}, fmt.Errorf("sqlite: list audit events: %w", err)
		}
		e.CreatedAt = fromUS(created)
		events = append(events, e)
	}
	if err := rows.Err(); err != nil {
		return store.AuditPage{}, fmt.Errorf("sqlite: list audit events: %w", err)
	}
	return store.NewAuditPage(events, limit), nil
}

// RecordLastUsed writes last_used_at for many keys in one statement, never
// moving it back. It logs no event.
func (s *Store) RecordLastUsed(ctx context.Context, uses []store.LastUse) error {
	if len(uses) == 0 {
		return nil
	}
	type use struct {
		ID string `json:"id"`
		At int64  `json:"at"`
	}
	batch := make([]use, len(uses))
	for i, u := range uses {
		batch[i] = use{u.KeyID, toUS(trunc(u.At))}
	}
	b, err := json.Marshal(batch)
	if err != nil {
		return fmt.Errorf("sqlite: record last used: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE api_keys SET last_used_at = u.at
		FROM (SELECT value ->> 'id' AS id, max(value ->> 'at') AS at FROM json_each(?) GROUP BY 1) AS u
		WHERE api_keys.id = u.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)`, string(b)); err != nil {
		return fmt.Errorf("sqlite: record last used: %w", err)
	}
	return nil
}
