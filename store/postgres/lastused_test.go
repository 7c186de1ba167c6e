package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/store"
)

// TestRecordLastUsed_NeverWaitsForALockedKey holds one key's row as a
// revoke in progress (or another replica's flush) does: a flush naming it
// and another key returns at once, writes the other, and writes the held
// one on a later flush. Twenty replicas flushing the same hot keys used
// to queue on each other's row locks (and deadlock, as each locked in its
// own order), holding up revokes and a pooler's server connections.
func TestRecordLastUsed_NeverWaitsForALockedKey(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	s := open(t, dbURL, nil)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	held, _ := createKey(t, s)
	free, _ := createKey(t, s)

	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE", held.ID); err != nil {
		t.Fatal(err)
	}

	at := time.Now().UTC().Truncate(time.Microsecond)
	uses := []store.LastUse{{KeyID: held.ID, At: at}, {KeyID: free.ID, At: at}}
	// The row stays held until the flush returns: a flush that waited for
	// it would wait for ever, and end with this deadline.
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.RecordLastUsed(fctx, uses); err != nil {
		t.Fatalf("flush with a key's row held: %v (after %v)", err, time.Since(start))
	}
	lastUsed := func(id string) *time.Time {
		k, err := s.GetKey(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		return k.LastUsedAt
	}
	if got := lastUsed(free.ID); got == nil || !got.Equal(at) {
		t.Errorf("free key's last_used_at = %v, want %v", got, at)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordLastUsed(ctx, uses); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(held.ID); got == nil || !got.Equal(at) {
		t.Errorf("held key's last_used_at after the next flush = %v, want %v", got, at)
	}
}
