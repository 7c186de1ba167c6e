// Package pgbouncer runs a real PgBouncer in transaction mode in front of
// the test PostgreSQL server, for tests of keygate behind a pooler.
//
// PgBouncer is the Debian package's binary, started by the test on
// 127.0.0.1 with a configuration it writes into a temporary directory
// (trust authentication, pool_mode transaction) and stopped when the test
// ends; never a system service. Without the binary the test is skipped with
// a message saying so, unless KEYGATE_TEST_REQUIRE_PGBOUNCER=1 (set by CI),
// where it fails.
package pgbouncer

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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/testaddr"
	"github.com/keygate/keygate/internal/testskip"
)

// RequireEnv is the variable that turns a missing PgBouncer into a failure.
const RequireEnv = "KEYGATE_TEST_REQUIRE_PGBOUNCER"

// Bouncer is a running PgBouncer.
type Bouncer struct {
	// Addr is its 127.0.0.1:port.
	Addr string
	dir  string
	log  *lockedBuffer
}

// Config tunes the PgBouncer that Start runs.
type Config struct {
	// PoolSize is default_pool_size: server connections per database and
	// user. Zero means 20.
	PoolSize int
}

// Start runs PgBouncer in transaction mode in front of the test server
// (KEYGATE_TEST_DATABASE_URL, default pgtest.DefaultURL), for every
// database on it, until the test ends.
func Start(t testing.TB, cfg Config) *Bouncer {
	t.Helper()
	bin := binary()
	if bin == "" {
		skipOrFail(t, "pgbouncer is not installed (Debian: apt-get install pgbouncer)")
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 20
	}
	server, err := url.Parse(pgtest.ServerURL())
	if err != nil {
		t.Fatalf("pgbouncer: KEYGATE_TEST_DATABASE_URL is not a URL: %v", err)
	}
	host, port := server.Hostname(), server.Port()
	if port == "" {
		port = "5432"
	}
	dir, err := os.MkdirTemp("", "keygate-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// PgBouncer refuses to run as root: as root, it is started as the
	// postgres user (-u), which must read its configuration.
	var args []string
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			skipOrFail(t, "running as root and there is no postgres user for pgbouncer to run as")
		}
		if err := pgtest.OwnToPostgres(dir); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-u", "postgres")
	}
	userName := server.User.Username()
	if userName == "" {
		userName = "postgres"
	}
	// The listen port is picked free and then handed to PgBouncer, so
	// another process may take it in between: try a few.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr := testaddr.Free(t)
		_, lport, _ := net.SplitHostPort(addr)
		ini := fmt.Sprintf(`[databases]
* = host=%s port=%s

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %s
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
default_pool_size = %d
max_client_conn = 2000
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
admin_users = %s
stats_users = %s
`, host, port, lport, filepath.Join(dir, "userlist.txt"), cfg.PoolSize, userName, userName)
		if err := writeFiles(dir, map[string]string{
			"pgbouncer.ini": ini,
			"userlist.txt":  fmt.Sprintf("%q \"\"\n", userName),
		}); err != nil {
			t.Fatal(err)
		}
		b := &Bouncer{Addr: addr, dir: dir, log: &lockedBuffer{}}
		cmd := exec.Command(bin, append(args, filepath.Join(dir, "pgbouncer.ini"))...)
		cmd.Stdout, cmd.Stderr = b.log, b.log
		if err := cmd.Start(); err != nil {
			t.Fatalf("pgbouncer: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := b.waitReady(exited, 10*time.Second); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = fmt.Errorf("%v\n%s", err, b.log.String())
			continue
		}
		t.Cleanup(func() {
			// SIGINT: PgBouncer's safe shutdown, which waits for clients;
			// tests close theirs first. SIGKILL if that takes too long.
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
		return b
	}
	t.Fatalf("pgbouncer did not start: %v", lastErr)
	return nil
}

// waitReady waits until PgBouncer answers a query on its admin console.
func (b *Bouncer) waitReady(exited <-chan error, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("pgbouncer exited: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := b.admin(ctx, "SHOW VERSION")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgbouncer not ready after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// admin runs a command on PgBouncer's admin console (database pgbouncer),
// which speaks only the simple protocol.
func (b *Bouncer) admin(ctx context.Context, cmd string) error {
	cfg, err := pgx.ParseConfig("postgres://postgres@" + b.Addr + "/pgbouncer?sslmode=disable&default_query_exec_mode=simple_protocol")
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, cmd)
	return err
}

// Clients is how many client connections PgBouncer holds for database db
// (SHOW CLIENTS): proof that a pool goes through it.
func (b *Bouncer) Clients(t testing.TB, db string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig("postgres://postgres@" + b.Addr + "/pgbouncer?sslmode=disable&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgbouncer admin console: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SHOW CLIENTS")
	if err != nil {
		t.Fatalf("pgbouncer: SHOW CLIENTS: %v", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range rows.FieldDescriptions() {
			if f.Name == "database" && vals[i] == db {
				n++
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// URL is dbURL (a database on the test server) through PgBouncer, with
// pgx's default_query_exec_mode set to mode (exec, simple_protocol…; empty
// leaves pgx's default, which prepares named statements).
func (b *Bouncer) URL(t testing.TB, dbURL, mode string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = b.Addr
	q := u.Query()
	if mode != "" {
		q.Set("default_query_exec_mode", mode)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Log is what PgBouncer has printed so far, for a failing test's message.
func (b *Bouncer) Log() string { return b.log.String() }

// binary finds pgbouncer on PATH or where Debian installs it (/usr/sbin,
// which a non-root PATH may lack).
func binary() string {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer"
	}
	return ""
}

func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	testskip.Unless(t, RequireEnv, "pgbouncer: "+msg+"; skipping (set "+RequireEnv+"=1 to fail instead)") // a skip is also on the terminal: `go test ./...` hides skips
}

func writeFiles(dir string, files map[string]string) error {
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// lockedBuffer collects PgBouncer's output while tests read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil // enough to debug with
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
