package pgbouncer_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgbouncer"
	"github.com/keygate/keygate/internal/pgtest"
)

// TestStart_PoolsTransactionsNotSessions checks the helper's PgBouncer:
// with one server connection, two clients that are both connected each
// run a query on that same backend. In session mode the second would wait
// for the first to disconnect.
func TestStart_PoolsTransactionsNotSessions(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	b := pgbouncer.Start(t, pgbouncer.Config{PoolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pids := make([]int, 2)
	conns := make([]*pgx.Conn, 2)
	for i := range conns {
		c, err := pgx.Connect(ctx, b.URL(t, dbURL, "exec"))
		if err != nil {
			t.Fatalf("connecting through pgbouncer: %v\n%s", err, b.Log())
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	for i, c := range conns {
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pids[i]); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	if pids[0] != pids[1] {
		t.Errorf("two clients ran on backends %v with a pool of one", pids)
	}
}
