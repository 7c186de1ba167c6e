package pgstandby_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgstandby"
	"github.com/keygate/keygate/internal/pgtest"
)

// TestStart_StreamsAndPauses checks the helper's standby: a row written on
// the primary reaches it, and while replay is paused the next one does not.
func TestStart_StreamsAndPauses(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	sb := pgstandby.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	primary, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close(context.Background())
	if _, err := primary.Exec(ctx, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	sb.WaitReplayed(t)
	standby, err := pgx.Connect(ctx, sb.URL(t, dbURL))
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close(context.Background())
	count := func() int {
		var n int
		if err := standby.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := count(); got != 1 {
		t.Fatalf("standby has %d rows, want 1", got)
	}
	if _, err := standby.Exec(ctx, "INSERT INTO t VALUES (9)"); err == nil {
		t.Error("the standby accepted a write")
	}

	sb.PauseReplay(t)
	if _, err := primary.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := count(); got != 1 {
		t.Errorf("paused standby has %d rows, want still 1", got)
	}
	sb.ResumeReplay(t)
	sb.WaitReplayed(t)
	if got := count(); got != 2 {
		t.Errorf("resumed standby has %d rows, want 2", got)
	}
}
