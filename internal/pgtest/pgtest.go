// Package pgtest gives a test its own empty PostgreSQL database, so tests
// that touch PostgreSQL run in parallel without seeing each other's rows.
//
// The server is KEYGATE_TEST_DATABASE_URL (default DefaultURL). When it does
// not answer, the test is skipped with a message saying so (written on the
// terminal too, see package testskip), unless
// KEYGATE_TEST_REQUIRE_POSTGRES=1 (set by CI), where it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/testskip"
)

// DefaultURL is the server used when KEYGATE_TEST_DATABASE_URL is unset.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// ServerURL is the test server: KEYGATE_TEST_DATABASE_URL, else
// DefaultURL.
func ServerURL() string {
	if s := os.Getenv("KEYGATE_TEST_DATABASE_URL"); s != "" {
		return s
	}
	return DefaultURL
}

// OwnToPostgres makes the postgres OS user the owner of path, for a
// server program a root test runs as that user (PostgreSQL and PgBouncer
// refuse to run as root). The error says when there is no such user.
func OwnToPostgres(path string) error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Chown(path, uid, gid)
}

// NewDatabase creates a fresh, empty database on the test server and returns
// its URL (the server URL with the database name replaced, other parameters
// kept). The database is dropped, with FORCE, when the test ends; close
// pools before then or let FORCE end them.
func NewDatabase(t testing.TB) string {
	t.Helper()
	serverURL := ServerURL()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatalf("pgtest: KEYGATE_TEST_DATABASE_URL is not a URL: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := connect(ctx, serverURL)
	if err != nil {
		msg := "pgtest: PostgreSQL at " + u.Redacted() + " does not answer (" + err.Error() +
			"); set KEYGATE_TEST_DATABASE_URL to a server where the user may CREATE DATABASE"
		testskip.Unless(t, "KEYGATE_TEST_REQUIRE_POSTGRES", msg) // a skip is also on the terminal: `go test ./...` hides skips
	}
	defer admin.Close(context.Background())

	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	name := "keygate_test_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := connect(ctx, serverURL)
		if err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})

	u.Path = "/" + name
	return u.String()
}

func connect(ctx context.Context, serverURL string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > 5*time.Second {
		cfg.ConnectTimeout = 5 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
}
