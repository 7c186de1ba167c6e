package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/keygate/keygate/internal/pgtest"
)

// syncBuffer is a bytes.Buffer that a running serve writes to while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a test's process environment, read through run's getenv.
type env map[string]string

func (e env) getenv(k string) string { return e[k] }

func (e env) with(kv ...string) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// result is what one keygate invocation left behind.
type result struct {
	code           int
	stdout, stderr string
}

// invoke runs the binary in-process, as main does, like another process
// sharing the store.
func invoke(t *testing.T, e env, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := exitCode(run(ctx, args, e.getenv, &stdout, &stderr), &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// server is a `keygate serve` running in the test.
type server struct {
	grpcAddr, httpAddr string
	stdout, stderr     *syncBuffer
	stop               func() error
}

// serve starts `keygate serve` on ports the kernel picks on 127.0.0.1 and
// waits until it logs its addresses. It is stopped when the test ends.
func serve(t *testing.T, e env, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	done := make(chan error, 1)
	args = append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	go func() { done <- run(ctx, args, e.getenv, s.stdout, s.stderr) }()
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(15 * time.Second):
				stopErr = context.DeadlineExceeded
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("serve returned %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("serve ended early: %v\nstderr:\n%s", err, s.stderr.String())
		default:
		}
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			var rec struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				s.grpcAddr, s.httpAddr = rec.GRPC, rec.HTTP
				return s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("serve did not log its addresses\nstderr:\n%s", s.stderr.String())
	return nil
}

// backend is a store the end-to-end tests run against.
type backend struct {
	name string
	env  func(t *testing.T) env
}

var backends = []backend{
	{"embedded", func(t *testing.T) env { return migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()}) }},
	{"postgres", func(t *testing.T) env { return env{"KEYGATE_DATABASE_URL": pgtest.NewDatabase(t)} }},
}

// migrated creates e's store with `keygate migrate`, as an operator
// would before the first `keys create`, and returns e.
func migrated(t *testing.T, e env) env {
	t.Helper()
	if r := invoke(t, e, "migrate"); r.code != 0 {
		t.Fatalf("migrate: exit %d: %s", r.code, r.stderr)
	}
	return e
}

// closedAddr is a 127.0.0.1 address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// firstLine is the first line of s.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// eventually retries f every 20ms until it returns true or d has passed.
func eventually(d time.Duration, f func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newTestParser(c *cli, e env) (*kong.Kong, error) {
	return newParser(c, e.getenv, io.Discard, io.Discard)
}
