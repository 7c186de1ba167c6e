package main

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
)

// seedUsedKeys copies n keys of organization acme into a migrated
// database, each used a millisecond before the previous one, and returns
// their tokens, most recently used first.
func seedUsedKeys(t *testing.T, dbURL string, n int) []string {
	t.Helper()
	newKeyring(t, dbURL) // migrates
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	now := time.Now().UTC().Truncate(time.Microsecond)
	if _, err := conn.Exec(ctx, `INSERT INTO organizations (id, created_at) VALUES ('acme', $1) ON CONFLICT DO NOTHING`, now); err != nil {
		t.Fatal(err)
	}
	format := apikey.DefaultFormat()
	toks := make([]string, n)
	keys := make([][]any, n)
	hashes := make([][]any, n)
	for i := range toks {
		tok, err := format.Generate(keygate.Secret, keygate.Live)
		if err != nil {
			t.Fatal(err)
		}
		id, err := apikey.NewKeyID()
		if err != nil {
			t.Fatal(err)
		}
		toks[i] = tok.String()
		h := tok.Hash()
		keys[i] = []any{id, "acme", "alice", "seeded", "secret", "live", []string{"read", "write"}, []string{}, `{}`,
			tok.Prefix(), tok.Last4(), now.Add(-time.Hour), now.Add(-time.Duration(i) * time.Millisecond)}
		hashes[i] = []any{h[:], id}
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"api_keys"},
		[]string{"id", "org_id", "user_id", "name", "type", "environment", "scopes", "project_ids", "metadata", "prefix", "last4", "created_at", "last_used_at"},
		pgx.CopyFromRows(keys)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"key_tokens"}, []string{"hash", "key_id"}, pgx.CopyFromRows(hashes)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}
	return toks
}

// A replica restarted under load starts warm (SPEC §10): with
// --preload-keys its store lookups right after it is ready are a small
// fraction of its Checks; without, every first Check of a key is one.
func TestWarmStart_PreloadedReplicaSendsFewMissesToPostgres(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	const n = 10_000
	toks := seedUsedKeys(t, dbURL, n)
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	fraction := func(args ...string) float64 {
		r := startReplica(t, e, append([]string{"--rate-limit", "0"}, args...)...)
		defer r.stop()
		before := r.metric(t, "keygate_store_lookup_seconds_count")
		for _, tok := range toks {
			if got := r.decide(t, tok); got != 200 {
				t.Fatalf("seeded key: %d, want 200", got)
			}
		}
		return (r.metric(t, "keygate_store_lookup_seconds_count") - before) / n
	}
	warm := fraction("--preload-keys", "10000")
	cold := fraction("--preload-keys", "0")
	t.Logf("store lookups per Check over the first %d Checks after ready: %.4f with --preload-keys 10000, %.4f without", n, warm, cold)
	if warm > 0.05 {
		t.Errorf("a preloaded replica sent %.1f %% of its first Checks to the store; want a small fraction", 100*warm)
	}
	if cold < 0.9 {
		t.Errorf("a replica without preload sent only %.1f %% of its first Checks to the store; the test does not measure a cold start", 100*cold)
	}
}
