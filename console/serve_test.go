package console

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// built is the keygate binary, built once for the tests of this package.
var built struct {
	once     sync.Once
	dir, bin string
	err      error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildKeygate builds the keygate binary (once): the console is tested
// inside the real `keygate serve`, as a user runs it.
func buildKeygate(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if built.dir, built.err = os.MkdirTemp("", "keygate-console-test-"); built.err != nil {
			return
		}
		bin := filepath.Join(built.dir, "keygate")
		out, err := exec.Command(goTool, "build", "-o", bin, "github.com/keygate/keygate/cmd/keygate").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build ./cmd/keygate: %v\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// lockedBuffer is a buffer a process writes to while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// keygate is a built binary and the environment (the store) it runs with.
type keygate struct {
	bin string
	env []string
}

// run runs one keygate command to its end and returns its stdout and exit
// status.
func (k keygate) run(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = append(os.Environ(), k.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), 0
	case errors.As(err, &ee):
		return stdout.String() + stderr.String(), ee.ExitCode()
	}
	t.Fatalf("keygate %s: %v", strings.Join(args, " "), err)
	return "", -1
}

// createKey runs `keygate keys create` and returns the token.
func (k keygate) createKey(t *testing.T, args ...string) string {
	t.Helper()
	out, code := k.run(t, append([]string{"keys", "create"}, args...)...)
	if code != 0 {
		t.Fatalf("keygate keys create %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	token, _, _ := strings.Cut(out, "\n")
	return strings.TrimSpace(token)
}

// server is a `keygate serve` child process on 127.0.0.1.
type server struct {
	keygate
	grpcAddr, httpAddr string
	stdout, stderr     *lockedBuffer
}

// serve starts `keygate serve` on ports the kernel picks on 127.0.0.1,
// waits until it logs them, and stops it (SIGTERM) when the test ends.
func serve(t *testing.T, k keygate, args ...string) *server {
	t.Helper()
	s := &server{keygate: k, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}}
	args = append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(k.bin, args...)
	cmd.Env = append(os.Environ(), k.env...)
	cmd.Stdout = s.stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			_, _ = s.stderr.Write([]byte(line + "\n"))
			var rec struct{ Msg, GRPC, HTTP string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				addrs <- [2]string{rec.GRPC, rec.HTTP}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("keygate serve: %v\nstderr:\n%s", err, s.stderr.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("keygate serve did not stop on SIGTERM")
		}
	})
	select {
	case a := <-addrs:
		s.grpcAddr, s.httpAddr = a[0], a[1]
	case err := <-done:
		done <- err
		t.Fatalf("keygate serve ended early: %v\nstderr:\n%s", err, s.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("keygate serve did not log its addresses\nstderr:\n%s", s.stderr.String())
	}
	return s
}

// url is the HTTP address of path on s.
func (s *server) url(path string) string { return "http://" + s.httpAddr + path }

// check runs `keygate check` against s with token and returns its exit
// status: 0 allowed, 1 denied.
func (s *server) check(t *testing.T, token string) int {
	t.Helper()
	out, code := s.run(t, "check", "--addr", s.grpcAddr, "--key", token)
	if code != 0 && code != 1 {
		t.Fatalf("keygate check: exit %d\n%s", code, out)
	}
	return code
}

func httpGet(t *testing.T, url string) *http.Response {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// noFollow is a client that shows a redirect instead of following it.
var noFollow = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// httpDo sends one request without following redirects and returns the
// response and its body.
func httpDo(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

// checkAPINotFound fails unless res is the API's JSON 404 (the error
// envelope with code not_found), not the console's or ServeMux's page.
func checkAPINotFound(t *testing.T, what string, res *http.Response, body string) {
	t.Helper()
	var env struct {
		Error struct{ Code string } `json:"error"`
	}
	if res.StatusCode != http.StatusNotFound || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") ||
		json.Unmarshal([]byte(body), &env) != nil || env.Error.Code != "not_found" {
		t.Errorf("%s: %d %q %q, want the API's JSON 404 (not_found)", what, res.StatusCode, res.Header.Get("Content-Type"), body)
	}
}

// TestServe_ConsoleFlag runs the real binary: the console is at /console
// by default, with its security headers, and GET / redirects to it;
// --console=false (or KEYGATE_CONSOLE=false) leaves /console and / to the
// API's 404 while the rest of --http-addr works.
func TestServe_ConsoleFlag(t *testing.T) {
	bin := buildKeygate(t)
	tests := []struct {
		name    string
		env     []string
		args    []string
		console bool
	}{
		{"default", nil, nil, true},
		{"flag off", nil, []string{"--console=false"}, false},
		{"env off", []string{"KEYGATE_CONSOLE=false"}, nil, false},
		{"flag wins over env", []string{"KEYGATE_CONSOLE=false"}, []string{"--console"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := keygate{bin: bin, env: append([]string{"KEYGATE_DATA_DIR=" + t.TempDir()}, tt.env...)}
			s := serve(t, k, tt.args...)
			for _, p := range []string{"/console", "/console/", "/console/app.js", "/console/style.css"} {
				res := httpGet(t, s.url(p))
				if !tt.console {
					if res.StatusCode != http.StatusNotFound {
						t.Errorf("GET %s: %d, want 404", p, res.StatusCode)
					}
					continue
				}
				if res.StatusCode != http.StatusOK {
					t.Errorf("GET %s: %d, want 200", p, res.StatusCode)
				}
				for k, want := range securityHeaders {
					if got := res.Header.Get(k); got != want {
						t.Errorf("GET %s: %s = %q, want %q", p, k, got, want)
					}
				}
			}
			// A browser pointed at the HTTP port lands on the console; only
			// GET and HEAD of "/" itself, everything else is the API's.
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				for _, p := range []string{"/", "/?from=bookmark"} {
					res, body := httpDo(t, method, s.url(p))
					if !tt.console {
						if method == http.MethodGet {
							checkAPINotFound(t, method+" "+p+" without the console", res, body)
						} else if res.StatusCode != http.StatusNotFound {
							t.Errorf("%s %s without the console: %d, want 404", method, p, res.StatusCode)
						}
						continue
					}
					if res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/console" {
						t.Errorf("%s %s: %d, Location %q; want 302 to /console", method, p, res.StatusCode, res.Header.Get("Location"))
					}
				}
			}
			for _, r := range []struct{ method, path string }{
				{http.MethodPost, "/"}, {http.MethodPut, "/"}, {http.MethodDelete, "/"},
				{http.MethodGet, "/nope"}, {http.MethodGet, "/index.html"}, {http.MethodGet, "/console.html"},
			} {
				res, body := httpDo(t, r.method, s.url(r.path))
				checkAPINotFound(t, r.method+" "+r.path, res, body)
			}
			if res := httpGet(t, s.url("/healthz")); res.StatusCode != http.StatusOK {
				t.Errorf("GET /healthz: %d, want 200", res.StatusCode)
			}
			if res := httpGet(t, s.url("/v1/whoami")); res.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET /v1/whoami without a key: %d, want 401 from the API", res.StatusCode)
			}
		})
	}
}
