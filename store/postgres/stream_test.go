package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/store/postgres"
)

// migrated opens a store on a fresh migrated database and returns it with
// the database's URL.
func migrated(t testing.TB) (*postgres.Store, string) {
	t.Helper()
	url := pgtest.NewDatabase(t)
	s := open(t, url, nil)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s, url
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// seedKeys fills a migrated database, in SQL, with n active keys of one
// organization, one token each, 3 in 10 of them used in the last 30 days.
func seedKeys(tb testing.TB, url string, n int) {
	tb.Helper()
	conn := connect(tb, url)
	if _, err := conn.Exec(tb.Context(), fmt.Sprintf(`
		INSERT INTO organizations (id, created_at) VALUES ('acme', now());
		INSERT INTO api_keys (id, org_id, user_id, name, type, environment, scopes, metadata, prefix, last4, created_at, last_used_at)
		SELECT 'key_' || lpad(i::text, 20, '0'), 'acme', 'u', 'bench', 'secret', 'live', '{read,write}', '{"plan":"bench"}',
			'sk_live_abcd', 'wxyz', now() - interval '1 year' + i * interval '1 second',
			CASE WHEN i %% 10 < 3 THEN now() - random() * interval '30 days' END
		FROM generate_series(1, %[1]d) i;
		INSERT INTO key_tokens (hash, key_id) SELECT sha256(i::text::bytea), 'key_' || lpad(i::text, 20, '0')
		FROM generate_series(1, %[1]d) i;
		ANALYZE`, n)); err != nil {
		tb.Fatal(err)
	}
}

// TestLiveTokenHashes_StreamsRows pins that the walk hands rows to fn as
// they arrive rather than after reading the whole result: while fn holds
// the first row, the server is still busy with the query, blocked on
// writing rows the client has not read yet (wait event ClientWrite). A
// client that collected the result first would leave the query finished.
func TestLiveTokenHashes_StreamsRows(t *testing.T) {
	s, url := migrated(t)
	conn := connect(t, url)
	ctx := t.Context()
	// More hashes than the socket buffers hold: one key with many tokens
	// in their grace is the quickest way to make them.
	const tokens = 200_000
	if _, err := conn.Exec(ctx, fmt.Sprintf(`
		INSERT INTO organizations (id, created_at) VALUES ('acme', now());
		INSERT INTO api_keys (id, org_id, user_id, name, type, environment, prefix, last4, created_at)
		VALUES ('key_stream', 'acme', 'u', 'n', 'secret', 'live', 'sk_live_abcd', 'wxyz', now());
		INSERT INTO key_tokens (hash, key_id, expires_at)
		SELECT sha256(i::text::bytea), 'key_stream', now() + interval '1 day' FROM generate_series(1, %d) i`, tokens)); err != nil {
		t.Fatal(err)
	}

	stop := errors.New("stop")
	var waits []string
	streaming := false
	err := s.LiveTokenHashes(ctx, time.Now(), func(keygate.Hash) error {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			var state, wait string
			err := conn.QueryRow(ctx, `SELECT state, COALESCE(wait_event, '') FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'SELECT t.hash%'`).Scan(&state, &wait)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			waits = append(waits, state+"/"+wait)
			if state == "active" && wait == "ClientWrite" {
				streaming = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		return stop // one row is enough either way
	})
	if !errors.Is(err, stop) {
		t.Fatalf("LiveTokenHashes = %v, want fn's error", err)
	}
	if !streaming {
		t.Errorf("while fn held the first row the server's query was %s, want active/ClientWrite (rows streamed)",
			strings.Join(waits[max(0, len(waits)-3):], ", "))
	}
}

// TestRecentKeys_ReadsInIndexOrder pins that warm start reads keys in the
// order of index api_keys_recent, so it stops after the n it needs: with
// sorting priced out, the plan still has no sort, which it would need if
// no index matched the ORDER BY. (At a million keys, 10 000 of them take
// under a second this way; a sort of the table took 13.)
func TestRecentKeys_ReadsInIndexOrder(t *testing.T) {
	_, url := migrated(t)
	conn := connect(t, url)
	if _, err := conn.Exec(t.Context(), `SET enable_sort = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(t.Context(), `EXPLAIN `+postgres.RecentKeysQuery, time.Now(), 10_000)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	plan := strings.Join(lines, "\n")
	if !strings.Contains(plan, "api_keys_recent") || strings.Contains(plan, "Sort") {
		t.Errorf("RecentKeys plan:\n%s\nwant a scan of api_keys_recent and no sort", plan)
	}
}

// BenchmarkLiveTokenHashes walks 100 000 keys, as a replica builds its
// membership filter at start; ns/key and allocs/key are the walk's cost
// per key on this side of the wire.
func BenchmarkLiveTokenHashes(b *testing.B) {
	const keys = 100_000
	s, url := migrated(b)
	seedKeys(b, url, keys)
	now := time.Now()
	walk := func() {
		n := 0
		if err := s.LiveTokenHashes(b.Context(), now, func(keygate.Hash) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if n != keys {
			b.Fatalf("walked %d hashes, want %d", n, keys)
		}
	}
	walk() // warm the server's cache and the pool
	perKey(b, keys, walk)
}

// BenchmarkRecentKeys loads the 10 000 most recently used of 100 000 keys,
// as --preload-keys does by default.
func BenchmarkRecentKeys(b *testing.B) {
	const keys, preload = 100_000, 10_000
	s, url := migrated(b)
	seedKeys(b, url, keys)
	now := time.Now()
	walk := func() {
		n := 0
		err := s.RecentKeys(b.Context(), preload, now, func(keygate.Hash, *keygate.KeyRecord) error { n++; return nil })
		if err != nil {
			b.Fatal(err)
		}
		if n != preload {
			b.Fatalf("loaded %d keys, want %d", n, preload)
		}
	}
	walk()
	perKey(b, preload, walk)
}

// perKey runs walk b.N times and reports its time, allocations and bytes
// per key walked.
func perKey(b *testing.B, keys int, walk func()) {
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		walk()
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	total := float64(b.N * keys)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/key")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/total, "allocs/key")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/total, "B/key")
}
