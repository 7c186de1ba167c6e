package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/keygate/keygate"
)

// The walks a replica makes at start (SPEC §10): every live token hash for
// its membership filter, and the most recently used keys for its cache.
// Both stream: pgx hands over each row as it arrives and the loop below
// passes it on, so neither a million hashes nor ten thousand records are
// ever held in one result. The pool connection stays busy until the walk
// ends; fn may use the store meanwhile (another connection of the pool).

// decidable is the condition on tokens t of keys k that a lookup could
// find as a key that is not revoked: the key not revoked, and the token
// current or still in its grace at $1.
const decidable = `k.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $1)`

// liveTokenHashesQuery reads every live token hash: a hash join of the two
// tables, about a second at a million keys.
const liveTokenHashesQuery = `SELECT t.hash FROM key_tokens t JOIN api_keys k ON k.id = t.key_id
	WHERE ` + decidable

// recentKeysQuery reads up to $2 decidable tokens with their records (the
// hash first). Its order is that of index api_keys_recent (migration
// 00003), so it reads only the keys it returns rather than sorting them
// all.
const recentKeysQuery = `SELECT t.hash, ` + recordColumns + ` ` + recordFrom + `
	WHERE ` + decidable + `
	ORDER BY k.last_used_at DESC NULLS LAST, k.created_at DESC, k.id DESC
	LIMIT $2`

// LiveTokenHashes calls fn with the hash of every token of a key that is
// not revoked, except rolled-away tokens past their grace at now.
func (s *Store) LiveTokenHashes(ctx context.Context, now time.Time, fn func(keygate.Hash) error) error {
	rows, err := s.pool.Query(ctx, liveTokenHashesQuery, trunc(now))
	if err != nil {
		return fmt.Errorf("postgres: live token hashes: %w", err)
	}
	defer rows.Close()
	var h hashDest
	dest := []any{&h} // reused: no allocation per row
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return fmt.Errorf("postgres: live token hashes: %w", err)
		}
		if err := fn(keygate.Hash(h)); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: live token hashes: %w", err)
	}
	return nil
}

// RecentKeys calls fn with up to n decidable tokens and their records,
// most recently used keys first.
func (s *Store) RecentKeys(ctx context.Context, n int, now time.Time, fn func(keygate.Hash, *keygate.KeyRecord) error) error {
	if n <= 0 {
		return nil
	}
	loaded := s.now() // the statement's snapshot is taken after this
	rows, err := s.pool.Query(ctx, recentKeysQuery, trunc(now), n)
	if err != nil {
		return fmt.Errorf("postgres: recent keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h hashDest
		rec, err := s.scanRecord(rows, &h)
		if err != nil {
			return fmt.Errorf("postgres: recent keys: %w", err)
		}
		rec.LoadedAt = loaded
		if err := fn(keygate.Hash(h), rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: recent keys: %w", err)
	}
	return nil
}

// hashDest scans a bytea token hash in place: pgx hands a pgtype
// BytesScanner the row's own bytes, so scanning one allocates nothing.
type hashDest keygate.Hash

func (h *hashDest) ScanBytes(v []byte) error {
	if len(v) != len(h) {
		return fmt.Errorf("token hash of %d bytes, want %d", len(v), len(h))
	}
	copy(h[:], v)
	return nil
}

var _ pgtype.BytesScanner = (*hashDest)(nil)
