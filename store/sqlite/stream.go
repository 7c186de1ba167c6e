package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keygate/keygate"
)

// The walks a replica makes at start (SPEC §10): every live token hash for
// its membership filter, and the most recently used keys for its cache.
// Both stream: rows.Next steps the statement one row at a time, so no
// result is ever held whole. The read transaction stays open until the
// walk ends, which in WAL mode blocks no writer; fn may use the store
// meanwhile (another connection).

// decidable is the condition on tokens t of keys k that a lookup could
// find as a key that is not revoked: the key not revoked, and the token
// current or still in its grace at the first parameter.
const decidable = `k.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > ?1)`

// liveTokenHashesQuery reads every live token hash.
const liveTokenHashesQuery = `SELECT t.hash FROM key_tokens t JOIN api_keys k ON k.id = t.key_id
	WHERE ` + decidable

// recentKeysQuery reads up to ?2 decidable tokens with their records (the
// hash last). Its order is that of index api_keys_recent (migration
// 00003), so it reads only the keys it returns. (NULLS LAST is SQLite's
// default for DESC, so the index, which cannot say it, matches.)
var recentKeysQuery = `SELECT ` + recordColumns + `, t.hash ` + recordFrom + `
	WHERE ` + decidable + `
	ORDER BY k.last_used_at DESC NULLS LAST, k.created_at DESC, k.id DESC
	LIMIT ?2`

// LiveTokenHashes calls fn with the hash of every token of a key that is
// not revoked, except rolled-away tokens past their grace at now.
func (s *Store) LiveTokenHashes(ctx context.Context, now time.Time, fn func(keygate.Hash) error) error {
	rows, err := s.db.QueryContext(ctx, liveTokenHashesQuery, toUS(trunc(now)))
	if err != nil {
		return fmt.Errorf("sqlite: live token hashes: %w", err)
	}
	defer rows.Close()
	var h hashDest
	for rows.Next() {
		if err := rows.Scan(&h); err != nil {
			return fmt.Errorf("sqlite: live token hashes: %w", err)
		}
		if err := fn(keygate.Hash(h)); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: live token hashes: %w", err)
	}
	return nil
}

// RecentKeys calls fn with up to n decidable tokens and their records,
// most recently used keys first.
func (s *Store) RecentKeys(ctx context.Context, n int, now time.Time, fn func(keygate.Hash, *keygate.KeyRecord) error) error {
	if n <= 0 {
		return nil
	}
	loaded := s.now() // the read transaction starts after this
	rows, err := s.db.QueryContext(ctx, recentKeysQuery, toUS(trunc(now)), n)
	if err != nil {
		return fmt.Errorf("sqlite: recent keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h hashDest
		rec, err := scanRecord(rows, &h)
		if err != nil {
			return fmt.Errorf("sqlite: recent keys: %w", err)
		}
		rec.LoadedAt = loaded
		if err := fn(keygate.Hash(h), rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: recent keys: %w", err)
	}
	return nil
}

// hashDest scans a BLOB token hash into a keygate.Hash.
type hashDest keygate.Hash

func (h *hashDest) Scan(src any) error {
	b, ok := src.([]byte)
	if !ok || len(b) != len(h) {
		return fmt.Errorf("token hash %T of %d bytes, want %d bytes", src, len(b), len(h))
	}
	copy(h[:], b)
	return nil
}

var _ sql.Scanner = (*hashDest)(nil)
