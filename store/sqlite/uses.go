package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// refillCols are a refill as its two nullable columns.
func refillCols(r *keygate.Refill) (interval, amount any) {
	if r == nil {
		return nil, nil
	}
	return string(r.Interval), r.Amount
}

// takeUses takes uses from key id inside tx, which holds the write lock:
// up to want (exactly want with exact) after any refill due at now, which
// it writes back with its new epoch. found is false for an unknown or
// revoked key; a key without remaining takes nothing (Limited false).
func takeUses(ctx context.Context, tx *sql.Tx, id string, want int64, exact bool, now time.Time) (c store.UsageClaim, found bool, err error) {
	k, err := getKey(ctx, tx, id)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && k.RevokedAt != nil) {
		return c, false, nil
	}
	if err != nil || k.Remaining == nil {
		return c, err == nil, err
	}
	k.ApplyDueRefill(now)
	c = store.UsageClaim{Limited: true, Epoch: k.UsageEpoch, Refill: k.Refill}
	c.Granted = min(want, *k.Remaining)
	if exact && c.Granted < want {
		return store.UsageClaim{}, true, store.ErrInsufficientUses
	}
	c.Remaining = *k.Remaining - c.Granted
	_, err = tx.ExecContext(ctx, `UPDATE api_keys SET remaining = ?, usage_epoch = ?, refilled_at = ? WHERE id = ?`,
		c.Remaining, k.UsageEpoch, toUSPtr(k.RefilledAt), id)
	return c, true, err
}

// ClaimUses takes up to want uses of key keyID for a lease, after any
// refill due at now. The embedded store serves one process, but keeps the
// same semantics as PostgreSQL: each claim is one write transaction.
func (s *Store) ClaimUses(ctx context.Context, keyID string, want int64, now time.Time) (store.UsageClaim, error) {
	if want < 1 {
		want = 1
	}
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE
	if err != nil {
		return store.UsageClaim{}, fmt.Errorf("sqlite: claim uses of %s: %w", keyID, err)
	}
	defer tx.Rollback()
	c, found, err := takeUses(ctx, tx, keyID, want, false, now)
	if err == nil && !found {
		err = keygate.ErrNotFound
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		return store.UsageClaim{}, fmt.Errorf("sqlite: claim uses of %s: %w", keyID, err)
	}
	return c, nil
}

// ReturnUses gives n unspent uses back to key keyID while it is still in
// usage epoch epoch.
func (s *Store) ReturnUses(ctx context.Context, keyID string, epoch, n int64) (bool, error) {
	if n <= 0 {
		return false, nil
	}
	res, err := s.db.ExecContext(ctx, `UPDATE api_keys SET remaining = remaining + ?
		WHERE id = ? AND usage_epoch = ? AND remaining IS NOT NULL AND revoked_at IS NULL`, n, keyID, epoch)
	if err != nil {
		return false, fmt.Errorf("sqlite: return uses of %s: %w", keyID, err)
	}
	rows, err := res.RowsAffected()
	return rows == 1, err
}

// debitUses pays d inside tx (store.Debit): exactly d.Uses, or
// store.ErrInsufficientUses.
func debitUses(ctx context.Context, tx *sql.Tx, d store.Debit, now time.Time) error {
	if d.Uses < 0 {
		return store.ErrInsufficientUses
	}
	c, found, err := takeUses(ctx, tx, d.KeyID, d.Uses, true, now)
	if err != nil {
		return err
	}
	if !found || !c.Limited {
		return store.ErrInsufficientUses
	}
	return nil
}
