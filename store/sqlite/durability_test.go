package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"
)

// TestOpen_EveryConnectionCommitsDurably pins the durability of an
// acknowledged write: with WAL and synchronous=NORMAL a commit is not
// fsynced, so a power cut after `keys revoke` returned could bring the key
// back. Every connection of the pool, including those it opens later, must
// run with synchronous=FULL (2) in WAL mode.
func TestOpen_EveryConnectionCommitsDurably(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "keygate.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	check := func(round string, n int) {
		t.Helper()
		// Holding n connections at once makes the pool open n distinct ones.
		conns := make([]*sql.Conn, n)
		for i := range conns {
			c, err := s.db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = c
		}
		for i, c := range conns {
			var sync int
			var mode string
			if err := c.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil {
				t.Fatal(err)
			}
			if err := c.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
				t.Fatal(err)
			}
			if sync != 2 || mode != "wal" {
				t.Errorf("%s, connection %d: synchronous=%d journal_mode=%s, want 2 (FULL) and wal", round, i, sync, mode)
			}
		}
		for _, c := range conns {
			c.Close()
		}
	}
	check("first connections", 4)
	// Drop every idle connection: the next round runs on connections
	// opened after the store was in use.
	s.db.SetMaxIdleConns(0)
	s.db.SetMaxIdleConns(2)
	check("connections opened later", 6)
}
