package main

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/tcpproxy"
)

// TestKeys_SilentDatabaseFailsWithinTheConnectTimeout: `keys list` against
// a database that accepts and never answers fails after the 5 s connect
// timeout, naming host:port and never the password.
func TestKeys_SilentDatabaseFailsWithinTheConnectTimeout(t *testing.T) {
	t.Parallel()
	addr := tcpproxy.Silent(t)
	start := time.Now()
	r := invoke(t, env{"KEYGATE_DATABASE_URL": "postgres://kg:hunter2@" + addr + "/keygate?sslmode=disable"},
		"keys", "list", "--org", "acme")
	took := time.Since(start)
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (stderr %q)", r.code, r.stderr)
	}
	if took > 6500*time.Millisecond {
		t.Errorf("keys list took %v, want about 5 s", took)
	}
	oneLineNaming(t, r, addr)
	if strings.Contains(r.stderr, "hunter2") {
		t.Errorf("stderr repeats the password: %q", r.stderr)
	}
}

// readyz is serve's /readyz: status and body.
func readyz(t *testing.T, s *server) (int, map[string]any) {
	t.Helper()
	code, body := httpGet(t, "http://"+s.httpAddr+"/readyz")
	var v map[string]any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("/readyz %d: body %q is not JSON: %v", code, body, err)
	}
	return code, v
}

// TestServe_AnswersHealthWhileTheDatabaseDoesNot: with PostgreSQL
// accepting and never answering, serve answers /healthz (200) at once and
// says in /readyz (503) what it waits for, first the pool's server, then
// the migrations' one, and comes up on its own once both answer.
func TestServe_AnswersHealthWhileTheDatabaseDoesNot(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pool, direct := tcpproxy.Start(t, u.Host), tcpproxy.Start(t, u.Host)
	pool.Blackhole()
	direct.Blackhole()
	// A password the server's trust auth ignores, to see it is never shown;
	// connect_timeout=1 keeps the test short (the 5 s default is pinned by
	// TestKeys_SilentDatabaseFailsWithinTheConnectTimeout).
	proxied := func(p *tcpproxy.Proxy) string {
		v := *u
		v.Host, v.User = p.Addr(), url.UserPassword(u.User.Username(), "hunter2")
		q := v.Query()
		q.Set("connect_timeout", "1")
		v.RawQuery = q.Encode()
		return v.String()
	}
	s := start(t, env{"KEYGATE_DATABASE_URL": proxied(pool), "KEYGATE_LISTEN_DATABASE_URL": proxied(direct)})
	s.waitForLog(t, "starting", 5*time.Second)

	if code, body := httpGet(t, "http://"+s.httpAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz while the database hangs = %d %s, want 200", code, body)
	}
	// want checks /readyz, then waits until an attempt to reach the server
	// has timed out, and checks both probes again: serve stays up.
	want := func(waitingFor string) {
		t.Helper()
		check := func() {
			t.Helper()
			if code, body := readyz(t, s); code != 503 || body["status"] != "starting" || body["waiting_for"] != waitingFor {
				t.Errorf("/readyz = %d %v, want 503 starting, waiting for %q", code, body, waitingFor)
			}
			if code, body := httpGet(t, "http://"+s.httpAddr+"/healthz"); code != 200 {
				t.Errorf("/healthz while waiting for %s = %d %s, want 200", waitingFor, code, body)
			}
		}
		if !eventually(5*time.Second, func() bool { _, body := readyz(t, s); return body["waiting_for"] == waitingFor }) {
			t.Fatalf("/readyz never said it waits for %q", waitingFor)
		}
		check()
		if !eventually(5*time.Second, func() bool { return retried(s, waitingFor) }) {
			t.Fatalf("no timed-out attempt on %s was logged:\n%s", waitingFor, s.stderr.String())
		}
		check()
	}
	want("database " + pool.Addr())
	if code, body := httpGet(t, "http://"+s.httpAddr+"/v1/whoami"); code != 503 || !strings.Contains(body, "service_unavailable") {
		t.Errorf("the API while starting = %d %s, want 503 service_unavailable", code, body)
	}

	pool.Restore()
	want("database " + direct.Addr() + " (migrations)")

	direct.Restore()
	s.waitForLog(t, "listening", 15*time.Second)
	if code, body := readyz(t, s); code != 200 {
		t.Errorf("/readyz once the database answers = %d %v, want 200", code, body)
	}
	if logs := s.stderr.String(); strings.Contains(logs, "hunter2") {
		t.Errorf("the log repeats the password:\n%s", logs)
	}
}

// retried tells whether serve logged a failed attempt on the database while
// waiting for waitingFor.
func retried(s *server, waitingFor string) bool {
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		var rec struct {
			Msg        string `json:"msg"`
			WaitingFor string `json:"waiting_for"`
			Err        string `json:"err"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "the database is not ready; retrying" &&
			rec.WaitingFor == waitingFor && strings.Contains(rec.Err, "timeout") {
			return true
		}
	}
	return false
}

// TestServe_EmptyPostgresStoreSaysHowToMakeTheFirstKey: serve on a
// PostgreSQL store with no key logs one INFO line with the command that
// makes the first owner key, prints no token, and says nothing once a key
// exists.
func TestServe_EmptyPostgresStoreSaysHowToMakeTheFirstKey(t *testing.T) {
	e := env{"KEYGATE_DATABASE_URL": pgtest.NewDatabase(t)}
	const command = "keygate keys create --org ORG --user USER --name NAME --role owner"
	firstKeyLines := func(s *server) int {
		n := 0
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			var rec struct{ Level, Command string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Command != "" {
				if rec.Level != "INFO" || rec.Command != command {
					t.Errorf("log line %s: want level INFO and command %q", line, command)
				}
				n++
			}
		}
		return n
	}
	s := serve(t, e)
	if n := firstKeyLines(s); n != 1 {
		t.Errorf("%d lines with the first-key command on an empty store, want 1:\n%s", n, s.stderr.String())
	}
	if out := s.stdout.String(); out != "" {
		t.Errorf("serve on PostgreSQL printed %q, want no key", out)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}

	createKey(t, e, "--org", "acme", "--user", "alice", "--name", "first", "--role", "owner")
	s = serve(t, e)
	if n := firstKeyLines(s); n != 0 {
		t.Errorf("the first-key command logged with a key in the store:\n%s", s.stderr.String())
	}
}

// TestServe_SignalWhileWaitingForTheDatabaseStops: a SIGTERM while the
// database does not answer ends serve at once, exit 0.
func TestServe_SignalWhileWaitingForTheDatabaseStops(t *testing.T) {
	s := start(t, env{"KEYGATE_DATABASE_URL": "postgres://kg@" + tcpproxy.Silent(t) + "/keygate?sslmode=disable"})
	s.waitForLog(t, "starting", 5*time.Second)
	signalled := time.Now()
	s.signal()
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
		t.Fatal("serve still waiting for the database 3 s after the signal")
	}
	if s.err != nil {
		t.Errorf("serve returned %v, want nil (exit 0)", s.err)
	}
	t.Logf("stopped %v after the signal", time.Since(signalled).Round(time.Millisecond))
}
