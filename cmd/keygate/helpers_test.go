package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
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
	code := exitCode(run(ctx, nil, args, e.getenv, &stdout, &stderr), &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// server is a `keygate serve` running in the test.
type server struct {
	grpcAddr, httpAddr string
	stdout, stderr     *syncBuffer
	// signal is a SIGTERM: the first ends serve's context, the second
	// closes its hurry channel.
	signal func()
	// done is closed when serve has returned; err is what it returned.
	done chan struct{}
	err  error
	stop func() error
}

// serve starts `keygate serve` on ports the kernel picks on 127.0.0.1 and
// waits until it logs its addresses. It is stopped when the test ends.
// Unless args set another, its --shutdown-delay is 0.
func serve(t *testing.T, e env, args ...string) *server {
	t.Helper()
	s := start(t, e, args...)
	s.waitForLog(t, "listening", 20*time.Second)
	return s
}

// start starts `keygate serve` like serve, without waiting for it.
func start(t *testing.T, e env, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hurry := make(chan struct{})
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	args = append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json",
		"--shutdown-delay", "0"}, args...)
	go func() {
		defer close(s.done)
		s.err = run(ctx, hurry, args, e.getenv, s.stdout, s.stderr)
	}()
	signals := 0
	var mu sync.Mutex
	s.signal = func() {
		mu.Lock()
		defer mu.Unlock()
		switch signals++; signals {
		case 1:
			cancel()
		case 2:
			close(hurry)
		}
	}
	var once sync.Once
	var stopErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-s.done:
				stopErr = s.err
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
	return s
}

// waitForLog waits until serve logs a line with message msg and takes the
// addresses from it; it fails the test if serve ends first or d passes.
func (s *server) waitForLog(t *testing.T, msg string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			t.Fatalf("serve ended early: %v\nstderr:\n%s", s.err, s.stderr.String())
		default:
		}
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			var rec struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, msg) {
				s.grpcAddr, s.httpAddr = rec.GRPC, rec.HTTP
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("serve did not log %q within %v\nstderr:\n%s", msg, d, s.stderr.String())
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

// serveProcess is `keygate serve` in a process of its own: this test
// binary re-run as TestHelperServeProcess, with main's signal handling, so
// that a test can SIGTERM or SIGKILL a real serve.
type serveProcess struct {
	cmd      *exec.Cmd
	grpcAddr string
	mu       sync.Mutex
	logs     strings.Builder
	logDone  chan struct{}
}

// startServeProcess starts serve with args (on loopback, JSON logs, no
// shutdown delay) in environment e, and returns once it listens.
func startServeProcess(t *testing.T, e env, args ...string) *serveProcess {
	t.Helper()
	all, _ := json.Marshal(append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--log-format", "json", "--shutdown-delay", "0"}, args...))
	p := &serveProcess{cmd: exec.Command(os.Args[0], "-test.run=^TestHelperServeProcess$", "-test.count=1"), logDone: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "KEYGATE_TEST_SERVE_PROCESS=1", "KEYGATE_TEST_SERVE_ARGS="+string(all))
	for k, v := range e {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout = io.Discard
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.wait() })
	addr := make(chan string, 1)
	go func() {
		defer close(p.logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var rec struct{ Msg, GRPC string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" {
				addr <- rec.GRPC
			}
		}
	}()
	select {
	case p.grpcAddr = <-addr:
	case <-time.After(60 * time.Second):
		t.Fatalf("the serve process did not listen within 60 s:\n%s", p.log())
	}
	return p
}

// wait waits for the process and for its log to be read to the end.
func (p *serveProcess) wait() error {
	err := p.cmd.Wait()
	<-p.logDone
	return err
}

func (p *serveProcess) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// TestHelperServeProcess is `keygate serve` as main runs it, for
// startServeProcess; it runs only in the process that starts.
func TestHelperServeProcess(t *testing.T) {
	if os.Getenv("KEYGATE_TEST_SERVE_PROCESS") != "1" {
		t.Skip("runs only as the child process of startServeProcess")
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv("KEYGATE_TEST_SERVE_ARGS")), &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, hurry, stop := notifyShutdown(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := exitCode(run(ctx, hurry, args, os.Getenv, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}
