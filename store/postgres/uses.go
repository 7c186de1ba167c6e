package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// takeUses is the one statement that takes uses from a key's remaining
// (SPEC §9): $1 the key id, $2 how many, $3 and $4 the start of the
// current daily and monthly refill period. It applies a due refill first
// (remaining = amount, a new epoch, refilled_at = the period's start, so
// that of many replicas at the boundary exactly one refills) and takes
// LEAST($2, what is there); with exact it takes $2 or nothing. The row is
// locked by the inner SELECT, so the value it returns as o.avail is the
// one the UPDATE changes: two replicas can never both take the last use.
func takeUses(exact bool) string {
	cond := ``
	if exact {
		cond = ` AND o.avail >= $2`
	}
	return `UPDATE api_keys AS k SET
			remaining = o.avail - LEAST($2, o.avail),
			usage_epoch = k.usage_epoch + CASE WHEN o.due THEN 1 ELSE 0 END,
			refilled_at = CASE WHEN o.due THEN o.period ELSE k.refilled_at END
		FROM (
			SELECT id, period, due, CASE WHEN due THEN refill_amount ELSE remaining END AS avail
			FROM (
				SELECT id, remaining, refill_amount, period,
					period IS NOT NULL AND (refilled_at IS NULL OR refilled_at < period) AS due
				FROM (
					SELECT id, remaining, refill_amount, refilled_at,
						CASE refill_interval WHEN 'daily' THEN $3::timestamptz WHEN 'monthly' THEN $4::timestamptz END AS period
					FROM api_keys WHERE id = $1 AND revoked_at IS NULL AND remaining IS NOT NULL
					FOR NO KEY UPDATE
				) AS l
			) AS d
		) AS o
		WHERE k.id = o.id` + cond + `
		RETURNING LEAST($2, o.avail), k.usage_epoch, k.remaining, k.refill_interval, k.refill_amount`
}

var (
	claimSQL = takeUses(false)
	debitSQL = takeUses(true)
)

// periodStarts are $3 and $4 of takeUses at now.
func periodStarts(now time.Time) (daily, monthly time.Time) {
	return keygate.RefillDaily.PeriodStart(now), keygate.RefillMonthly.PeriodStart(now)
}

// ClaimUses takes up to want uses of key keyID for a lease, after any
// refill due at now, in one statement.
func (s *Store) ClaimUses(ctx context.Context, keyID string, want int64, now time.Time) (store.UsageClaim, error) {
	if want < 1 {
		want = 1
	}
	daily, monthly := periodStarts(now)
	var (
		c        store.UsageClaim
		interval *string
		amount   *int64
	)
	err := s.pool.QueryRow(ctx, claimSQL, keyID, want, daily, monthly).Scan(&c.Granted, &c.Epoch, &c.Remaining, &interval, &amount)
	if errors.Is(err, pgx.ErrNoRows) {
		// Unknown, revoked, or unlimited: one more read tells which.
		var limited bool
		err = s.pool.QueryRow(ctx, `SELECT remaining IS NOT NULL FROM api_keys WHERE id = $1 AND revoked_at IS NULL`, keyID).Scan(&limited)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return store.UsageClaim{}, fmt.Errorf("postgres: claim uses of %s: %w", keyID, keygate.ErrNotFound)
		case err == nil && limited:
			return store.UsageClaim{}, fmt.Errorf("postgres: claim uses of %s: the key changed meanwhile, retry", keyID)
		case err == nil:
			return store.UsageClaim{}, nil
		}
	}
	if err != nil {
		return store.UsageClaim{}, fmt.Errorf("postgres: claim uses of %s: %w", keyID, err)
	}
	c.Limited = true
	if interval != nil && amount != nil {
		c.Refill = &keygate.Refill{Interval: keygate.RefillInterval(*interval), Amount: *amount}
	}
	return c, nil
}

// ReturnUses gives n unspent uses back to key keyID while it is still in
// usage epoch epoch.
func (s *Store) ReturnUses(ctx context.Context, keyID string, epoch, n int64) (bool, error) {
	if n <= 0 {
		return false, nil
	}
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET remaining = remaining + $3
		WHERE id = $1 AND usage_epoch = $2 AND remaining IS NOT NULL AND revoked_at IS NULL`, keyID, epoch, n)
	if err != nil {
		return false, fmt.Errorf("postgres: return uses of %s: %w", keyID, err)
	}
	return tag.RowsAffected() == 1, nil
}

// debitUses pays d inside tx (store.Debit): exactly d.Uses from the
// paying key's remaining, after any refill due at now, or
// store.ErrInsufficientUses. Bulk creations sum their debits into one.
func debitUses(ctx context.Context, tx pgx.Tx, d store.Debit, now time.Time) error {
	if d.Uses < 0 {
		return store.ErrInsufficientUses
	}
	daily, monthly := periodStarts(now)
	var granted, epoch, remaining int64
	var interval *string
	var amount *int64
	err := tx.QueryRow(ctx, debitSQL, d.KeyID, d.Uses, daily, monthly).Scan(&granted, &epoch, &remaining, &interval, &amount)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrInsufficientUses
	}
	return err
}
