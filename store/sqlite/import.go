package sqlite

import (
	"context"
	"errors"
	"fmt"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// ImportKeys stores imported keys in one immediate transaction, each with
// insertKey, the insert of CreateKey, and logged as logChange logs a
// create, with the action api_key.imported. The store is in process, so a
// statement per key costs no round trip.
func (s *Store) ImportKeys(ctx context.Context, ks []store.NewKey, by keygate.Actor) ([]keygate.Key, error) {
	keys := make([]keygate.Key, len(ks))
	if len(ks) == 0 {
		return keys, nil
	}
	now := s.clock()
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock in the DSN)
	if err != nil {
		return nil, fmt.Errorf("sqlite: import %d keys: %w", len(ks), err)
	}
	defer tx.Rollback()
	seen := map[string]bool{}
	for _, k := range ks {
		if !k.CreateOrganization || seen[k.OrgID] {
			continue
		}
		seen[k.OrgID] = true
		// The organization, when missing, in this transaction: a refused
		// import leaves none behind.
		res, err := tx.ExecContext(ctx, `INSERT INTO organizations (id, created_at) VALUES (?, ?)
			ON CONFLICT (id) DO NOTHING`, k.OrgID, toUS(now))
		if err != nil {
			return nil, fmt.Errorf("sqlite: import %d keys: organization %q: %w", len(ks), k.OrgID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if _, err := logChange(ctx, tx, now, &change{action: keygate.AuditOrgCreated, orgID: k.OrgID}, by); err != nil {
				return nil, fmt.Errorf("sqlite: import %d keys: %w", len(ks), err)
			}
		}
	}
	var seq int64
	for i := range ks {
		c, err := insertKey(ctx, ks[i], &keys[i])(tx, now)
		switch {
		case errors.Is(err, keygate.ErrConflict):
			return nil, fmt.Errorf("sqlite: import %d keys: %w", len(ks), &store.ImportItemError{Index: i, Err: keygate.ErrConflict})
		case errors.Is(err, store.ErrInsufficientUses):
			return nil, fmt.Errorf("sqlite: import %d keys: %w", len(ks), &store.ImportItemError{Index: i, Err: err})
		case err != nil:
			return nil, fmt.Errorf("sqlite: import key %s: %w", ks[i].ID, err)
		}
		c.action = keygate.AuditKeyImported
		if seq, err = logChange(ctx, tx, now, c, by); err != nil {
			return nil, fmt.Errorf("sqlite: import key %s: %w", ks[i].ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlite: import %d keys: %w", len(ks), err)
	}
	store.NoteEventSeq(ctx, seq)
	return keys, nil
}
