package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgtest"
)

// TestQueries_CheapEnoughNeverToBeJITCompiled plans the queries every
// replica runs after every event, or on every cache miss, on a fresh
// database with thousands of events and no statistics yet (autovacuum off,
// as before its first ANALYZE): none may cost jit_above_cost, or each run
// spends most of a second compiling (seen with 20 replicas reading the log
// through PgBouncer, where every statement is planned anew).
func TestQueries_CheapEnoughNeverToBeJITCompiled(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	s, err := Open(t.Context(), Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, sql := range []string{
		`ALTER TABLE key_events SET (autovacuum_enabled = false)`,
		`ALTER TABLE key_events_meta SET (autovacuum_enabled = false)`,
		`INSERT INTO key_events (kind, org_id, hashes, created_at)
			SELECT 'key.revoked', 'acme', ARRAY[sha256(i::text::bytea)], now() FROM generate_series(1, 3000) AS i`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var jitAbove float64
	if err := conn.QueryRow(ctx, "SELECT current_setting('jit_above_cost')::float8").Scan(&jitAbove); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name, sql string
		args      []any
	}{
		{"events", eventsQuery, []any{int64(2990), 1000}},
		{"latest event seq", latestSeqQuery, nil},
		{"lookup", lookupSelect, []any{make([]byte, 32)}},
		{"standby lookup", standbyLookup, []any{make([]byte, 32)}},
	} {
		t.Run(q.name, func(t *testing.T) {
			var plan []struct {
				Plan struct {
					TotalCost float64 `json:"Total Cost"`
				}
			}
			var raw []byte
			// Custom plan, as the exec and simple protocols get.
			if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+inline(q.sql, q.args), pgx.QueryExecModeSimpleProtocol).Scan(&raw); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
				t.Fatalf("EXPLAIN: %v: %s", err, raw)
			}
			if c := plan[0].Plan.TotalCost; c >= jitAbove {
				t.Errorf("planned cost %.0f ≥ jit_above_cost %.0f: every run would be JIT-compiled", c, jitAbove)
			}
		})
	}
}

// inline writes args into sql as literals, for EXPLAIN ($9 at most).
func inline(sql string, args []any) string {
	for i, a := range args {
		lit := fmt.Sprint(a)
		if b, ok := a.([]byte); ok {
			lit = fmt.Sprintf(`'\x%x'::bytea`, b)
		}
		sql = strings.ReplaceAll(sql, fmt.Sprintf("$%d", i+1), lit)
	}
	return sql
}
