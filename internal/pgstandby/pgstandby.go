// Package pgstandby makes a real streaming hot standby of the test
// PostgreSQL server, for tests of lookups on a standby.
//
// Start copies the running cluster with pg_basebackup -R into a temporary
// directory, starts it with pg_ctl on a free port on 127.0.0.1, and when the
// test ends stops it and removes the directory. As root, both run as the
// postgres OS user (PostgreSQL refuses root). The primary must accept
// replication connections from 127.0.0.1 (pg_hba.conf:
// `host replication all 127.0.0.1/32 trust`, which .ci/run adds); without
// that or without the server binaries the test is skipped with a message
// saying so, unless KEYGATE_TEST_REQUIRE_STANDBY=1 (set by CI), where it
// fails.
package pgstandby

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/testaddr"
	"github.com/keygate/keygate/internal/testskip"
)

// RequireEnv is the variable that turns a missing standby into a failure.
const RequireEnv = "KEYGATE_TEST_REQUIRE_STANDBY"

// Standby is a running hot standby of the test server.
type Standby struct {
	// Addr is its 127.0.0.1:port.
	Addr    string
	primary string // the test server's URL
	data    string
	bin     string
	asUser  []string // the runuser prefix, as root
}

// Start makes and starts a streaming standby of the test server
// (KEYGATE_TEST_DATABASE_URL, default pgtest.DefaultURL) until the test
// ends. It returns once the standby accepts read-only queries.
func Start(t testing.TB) *Standby {
	t.Helper()
	s := &Standby{primary: pgtest.ServerURL()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	primary, err := pgx.Connect(ctx, s.primary)
	if err != nil {
		skipOrFail(t, "the primary does not answer: "+err.Error())
	}
	defer primary.Close(context.Background())
	var version int
	if err := primary.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		t.Fatal(err)
	}
	// A hot standby needs these at least as high as on the primary.
	var settings [][2]string
	rows, _ := primary.Query(ctx, `SELECT name, setting FROM pg_settings WHERE name IN
		('max_connections', 'max_worker_processes', 'max_wal_senders', 'max_prepared_transactions', 'max_locks_per_transaction')`)
	for rows.Next() {
		var kv [2]string
		if err := rows.Scan(&kv[0], &kv[1]); err != nil {
			t.Fatal(err)
		}
		settings = append(settings, kv)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	s.bin = binDir(version / 10000)
	if s.bin == "" {
		skipOrFail(t, fmt.Sprintf("no pg_basebackup and pg_ctl of PostgreSQL %d (looked in /usr/lib/postgresql/%d/bin and PATH)", version/10000, version/10000))
	}

	dir, err := os.MkdirTemp("", "keygate-standby-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			skipOrFail(t, "running as root and there is no postgres user to run the standby as")
		}
		if err := pgtest.OwnToPostgres(dir); err != nil {
			t.Fatal(err)
		}
		s.asUser = []string{"runuser", "-u", "postgres", "--"}
	}
	s.data = filepath.Join(dir, "data")

	pu, err := url.Parse(s.primary)
	if err != nil {
		t.Fatal(err)
	}
	host, port, userName := pu.Hostname(), pu.Port(), pu.User.Username()
	if port == "" {
		port = "5432"
	}
	if userName == "" {
		userName = "postgres"
	}
	// -c fast: do not wait for a spread checkpoint; -X stream: the WAL of
	// the copy comes along; -R: standby.signal and primary_conninfo.
	if out, err := s.run(ctx, "pg_basebackup", "-h", host, "-p", port, "-U", userName, "-D", s.data,
		"-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
		msg := fmt.Sprintf("pg_basebackup failed: %v: %s", err, out)
		if strings.Contains(string(out), "pg_hba.conf") {
			skipOrFail(t, msg+"; the primary needs `host replication all 127.0.0.1/32 trust` in pg_hba.conf (and a reload)")
		}
		t.Fatal("pgstandby: " + msg)
	}

	// The primary's configuration (on Debian in /etc) does not come with
	// the copy: the standby gets its own.
	s.Addr = testaddr.Free(t)
	_, sport, _ := net.SplitHostPort(s.Addr)
	conf := fmt.Sprintf(`
port = %s
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
hot_standby = on
shared_buffers = 32MB
fsync = off
ssl = off
logging_collector = off
cluster_name = 'keygate-test-standby'
`, sport, dir)
	for _, kv := range settings {
		conf += fmt.Sprintf("%s = %s\n", kv[0], kv[1])
	}
	hba := "local all all trust\nhost all all 127.0.0.1/32 trust\n"
	for name, body := range map[string]string{"postgresql.conf": conf, "pg_hba.conf": hba, "pg_ident.conf": ""} {
		f, err := os.OpenFile(filepath.Join(s.data, name), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString(body)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(s.asUser) > 0 {
			if err := pgtest.OwnToPostgres(filepath.Join(s.data, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	logFile := filepath.Join(dir, "standby.log")
	if out, err := s.run(ctx, "pg_ctl", "-D", s.data, "-l", logFile, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("pgstandby: pg_ctl start: %v: %s\n%s", err, out, log)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if out, err := s.run(ctx, "pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop"); err != nil {
			t.Errorf("pgstandby: pg_ctl stop: %v: %s", err, out)
		}
	})
	// pg_ctl -w returns once the standby accepts connections; it is a hot
	// standby streaming from the primary when it says it is in recovery.
	conn, err := pgx.Connect(ctx, s.URL(t, s.primary))
	if err != nil {
		t.Fatalf("pgstandby: connecting to the standby: %v", err)
	}
	defer conn.Close(context.Background())
	var recovering bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovering); err != nil || !recovering {
		t.Fatalf("pgstandby: the standby is not in recovery (%v, %v)", recovering, err)
	}
	return s
}

// URL is dbURL (a database on the test server) on the standby.
func (s *Standby) URL(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = s.Addr
	return u.String()
}

// WaitReplayed waits until the standby has replayed everything the primary
// had written when it was called: a database created on the primary just
// before is then there too.
func (s *Standby) WaitReplayed(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lsn string
	s.primaryRow(t, ctx, "SELECT pg_current_wal_lsn()::text", &lsn)
	for {
		var done bool
		s.standbyRow(t, ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", []any{lsn}, &done)
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pgstandby: the standby did not replay up to %s within 30 s", lsn)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// PauseReplay stops the standby applying WAL (it still receives it): from
// now on it answers as of this moment, however far the primary moves.
func (s *Standby) PauseReplay(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.standbyRow(t, ctx, "SELECT pg_wal_replay_pause()::text", nil, new(string))
	// Pausing is requested, and takes effect at the next record.
	for {
		var state string
		s.standbyRow(t, ctx, "SELECT pg_get_wal_replay_pause_state()", nil, &state)
		if state == "paused" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pgstandby: replay still %q 10 s after the pause", state)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ResumeReplay undoes PauseReplay.
func (s *Standby) ResumeReplay(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.standbyRow(t, ctx, "SELECT pg_wal_replay_resume()::text", nil, new(string))
}

func (s *Standby) primaryRow(t testing.TB, ctx context.Context, sql string, dest any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.primary)
	if err != nil {
		t.Fatalf("pgstandby: primary: %v", err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql).Scan(dest); err != nil {
		t.Fatalf("pgstandby: primary: %s: %v", sql, err)
	}
}

func (s *Standby) standbyRow(t testing.TB, ctx context.Context, sql string, args []any, dest any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, s.URL(t, s.primary))
	if err != nil {
		t.Fatalf("pgstandby: standby: %v", err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest); err != nil {
		t.Fatalf("pgstandby: standby: %s: %v", sql, err)
	}
}

// run runs one of the server's programs, as the postgres user when root.
func (s *Standby) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	argv := append(append(append([]string{}, s.asUser...), filepath.Join(s.bin, prog)), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves the server running with our output pipes; do
	// not wait for them to close.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// binDir is where pg_basebackup and pg_ctl of PostgreSQL major live.
func binDir(major int) string {
	dir := fmt.Sprintf("/usr/lib/postgresql/%d/bin", major)
	if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
		return dir
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	testskip.Unless(t, RequireEnv, "pgstandby: "+msg+"; skipping (set "+RequireEnv+"=1 to fail instead)") // a skip is also on the terminal: `go test ./...` hides skips
}
