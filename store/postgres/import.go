package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// ImportKeys stores imported keys in one transaction: each with insertKey,
// the insert of CreateKey, then their audit and key events in one
// statement each (and one NOTIFY), since a thousand keys would otherwise
// cost a thousand more round trips under the events lock.
func (s *Store) ImportKeys(ctx context.Context, ks []store.NewKey, by keygate.Actor) ([]keygate.Key, error) {
	keys := make([]keygate.Key, len(ks))
	if len(ks) == 0 {
		return keys, nil
	}
	now := s.clock()
	var seq int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if i, err := firstKnownHash(ctx, tx, ks); err != nil || i >= 0 {
			if err == nil {
				err = &store.ImportItemError{Index: i, Err: keygate.ErrConflict}
			}
			return err
		}
		if err := s.ensureOrgIn(ctx, tx, ks, now, by); err != nil {
			return err
		}
		changes := make([]*change, len(ks))
		for i := range ks {
			c, err := insertKey(ctx, ks[i], &keys[i])(tx, now)
			switch {
			case errors.Is(err, keygate.ErrConflict):
				// A hash inserted by a concurrent write, or twice in ks.
				return &store.ImportItemError{Index: i, Err: keygate.ErrConflict}
			case errors.Is(err, store.ErrInsufficientUses):
				return &store.ImportItemError{Index: i, Err: err}
			case err != nil:
				return fmt.Errorf("key %s: %w", ks[i].ID, err)
			}
			c.action = keygate.AuditKeyImported
			changes[i] = c
		}
		var err error
		seq, err = s.logImport(ctx, tx, now, changes, by)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: import %d keys: %w", len(ks), err)
	}
	store.NoteEventSeq(ctx, seq)
	return keys, nil
}

// ensureOrgIn creates the organization of ks in tx when a key asks for
// it (store.NewKey.CreateOrganization) and it is missing, with its audit
// event, as EnsureOrganization does in a transaction of its own.
func (s *Store) ensureOrgIn(ctx context.Context, tx pgx.Tx, ks []store.NewKey, now time.Time, by keygate.Actor) error {
	seen := map[string]bool{}
	for _, k := range ks {
		if !k.CreateOrganization || seen[k.OrgID] {
			continue
		}
		seen[k.OrgID] = true
		tag, err := tx.Exec(ctx, `INSERT INTO organizations (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, k.OrgID, now)
		if err != nil {
			return fmt.Errorf("organization %q: %w", k.OrgID, err)
		}
		if tag.RowsAffected() == 1 {
			if _, err := s.logChange(ctx, tx, now, &change{action: keygate.AuditOrgCreated, orgID: k.OrgID}, by); err != nil {
				return err
			}
		}
	}
	return nil
}

// firstKnownHash returns the index of the first key of ks whose token hash
// is stored already, or -1.
func firstKnownHash(ctx context.Context, tx pgx.Tx, ks []store.NewKey) (int, error) {
	hashes := make([][]byte, len(ks))
	for i := range ks {
		hashes[i] = ks[i].Token.Hash[:]
	}
	rows, _ := tx.Query(ctx, `SELECT hash FROM key_tokens WHERE hash = ANY($1::bytea[])`, hashes)
	found, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return 0, err
	}
	known := make(map[keygate.Hash]bool, len(found))
	for _, h := range found {
		known[keygate.Hash(h)] = true
	}
	for i := range ks {
		if known[ks[i].Token.Hash] {
			return i, nil
		}
	}
	return -1, nil
}

// logImport logs the changes of an import as logChange would one by one:
// an audit event each, then, under the events lock, a key event each, in
// the order of changes, and one NOTIFY with the last sequence (a NOTIFY
// only wakes followers, who read every event after the last they applied).
func (s *Store) logImport(ctx context.Context, tx pgx.Tx, now time.Time, changes []*change, by keygate.Actor) (int64, error) {
	n := len(changes)
	ids, orgs, keyIDs, kinds := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	hashes := make([][]byte, n)
	for i, c := range changes {
		id, err := apikey.NewAuditID()
		if err != nil {
			return 0, err
		}
		if len(c.hashes) != 1 {
			return 0, fmt.Errorf("import of key %s: %d token hashes, want 1", c.keyID, len(c.hashes))
		}
		ids[i], orgs[i], keyIDs[i], kinds[i], hashes[i] = id, c.orgID, c.keyID, string(c.kind), c.hashes[0]
	}
	if _, err := tx.Exec(ctx, `INSERT INTO audit_events (id, org_id, action, actor_key_id, key_id, request_id, created_at)
		SELECT u.id, u.org_id, $4, NULLIF($5, ''), u.key_id, NULLIF($6, ''), $7
		FROM unnest($1::text[], $2::text[], $3::text[]) AS u (id, org_id, key_id)`,
		ids, orgs, keyIDs, changes[0].action, by.KeyID, by.RequestID, now); err != nil {
		return 0, fmt.Errorf("audit events: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, eventsLockKey); err != nil {
		return 0, fmt.Errorf("events lock: %w", err)
	}
	var seq int64
	if err := tx.QueryRow(ctx, `WITH e AS (
			INSERT INTO key_events (kind, org_id, key_id, hashes, created_at)
			SELECT u.kind, u.org_id, u.key_id, ARRAY[u.hash], $5
			FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) WITH ORDINALITY AS u (kind, org_id, key_id, hash, n)
			ORDER BY u.n
			RETURNING seq),
		last AS (SELECT max(seq) AS seq FROM e)
		SELECT seq, pg_notify('`+NotifyChannel+`', seq::text) FROM last`,
		kinds, orgs, keyIDs, hashes, now).Scan(&seq, nil); err != nil {
		return 0, fmt.Errorf("key events: %w", err)
	}
	if s.beforeCommit != nil {
		s.beforeCommit(ctx, seq)
	}
	return seq, nil
}
