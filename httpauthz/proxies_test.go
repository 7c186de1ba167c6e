package httpauthz_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testaddr"
	"github.com/keygate/keygate/internal/testskip"
	"github.com/keygate/keygate/manage"
)

// These tests run the configurations shipped in envoy/ with the real proxies (Debian's
// nginx and caddy packages) in front of an echo upstream and keygate, and drive them
// with real HTTP requests (SPEC §16).

// requireProxy returns the path of a proxy's binary, or skips (fails under
// KEYGATE_TEST_REQUIRE_PROXIES=1, as CI runs) when it is not installed.
func requireProxy(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	msg := fmt.Sprintf("%s is not installed (apt-get install -y %s): skipping the end-to-end tests through it", name, name)
	testskip.Unless(t, "KEYGATE_TEST_REQUIRE_PROXIES", msg)
	return ""
}

// echoed is what the echo upstream saw.
type echoed struct {
	Method  string              `json:"method"`
	URI     string              `json:"uri"`
	Headers map[string][]string `json:"headers"`
}

// startEcho is an upstream answering every request with a JSON echo of it.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := echoed{Method: r.Method, URI: r.RequestURI, Headers: map[string][]string{}}
		for k, v := range r.Header {
			e.Headers[strings.ToLower(k)] = v
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo", "1")
		_ = json.NewEncoder(w).Encode(e)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// shipped is a configuration from envoy/ with its addresses replaced.
func shipped(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "envoy", name))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("%s no longer holds %q", name, replace[i])
		}
		s = strings.ReplaceAll(s, replace[i], replace[i+1])
	}
	return s
}

// runProxy starts cmd and waits until addr accepts connections; the
// process is stopped at the end of the test.
func runProxy(t *testing.T, cmd *exec.Cmd, addr, logPath string) {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		out.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited at start:\n%s", cmd.Path, log)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	t.Fatalf("%s did not listen on %s within 10s:\n%s", cmd.Path, addr, log)
}

func startNginx(t *testing.T, keygate, upstream string) string {
	bin := requireProxy(t, "nginx")
	dir := t.TempDir()
	addr := testaddr.Free(t)
	conf := shipped(t, "nginx.conf",
		"server 127.0.0.1:9002;", "server "+keygate+";",
		"server 127.0.0.1:8080;", "server "+upstream+";",
		"listen 127.0.0.1:8000;", "listen "+addr+";",
		// Everything nginx writes stays in the test's directory.
		"http {\n", "http {\n    access_log off;\n    client_body_temp_path "+dir+"/body;\n    proxy_temp_path "+dir+
			"/proxy;\n    fastcgi_temp_path "+dir+"/fastcgi;\n    uwsgi_temp_path "+dir+"/uwsgi;\n    scgi_temp_path "+dir+"/scgi;\n")
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path,
		"-g", "daemon off; pid "+filepath.Join(dir, "nginx.pid")+"; error_log "+filepath.Join(dir, "error.log")+" warn;")
	runProxy(t, cmd, addr, filepath.Join(dir, "nginx.out"))
	return addr
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startCaddy(t *testing.T, keygate, upstream string) string {
	bin := requireProxy(t, "caddy")
	dir := t.TempDir()
	addr := testaddr.Free(t)
	conf := shipped(t, "Caddyfile",
		"forward_auth 127.0.0.1:9002", "forward_auth "+keygate,
		"reverse_proxy 127.0.0.1:8080", "reverse_proxy "+upstream,
		"http://:8000", "http://:"+port(t, addr))
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	runProxy(t, cmd, addr, filepath.Join(dir, "caddy.out"))
	return addr
}

func TestNginx_AuthRequestInFrontOfKeygate(t *testing.T) {
	requireProxy(t, "nginx")
	g := startGate(t, gateOpts{})
	up := startEcho(t)
	throughProxy(t, g, startNginx(t, g.addr, up), features{rateLimitOnAllow: true})
}

func TestCaddy_ForwardAuthInFrontOfKeygate(t *testing.T) {
	requireProxy(t, "caddy")
	g := startGate(t, gateOpts{})
	up := startEcho(t)
	throughProxy(t, g, startCaddy(t, g.addr, up), features{relaysBody: true})
}

// features says what the proxy's configuration can pass on.
type features struct {
	// relaysBody: keygate's deny body reaches the client (Caddy; nginx's
	// auth_request cannot).
	relaysBody bool
	// rateLimitOnAllow: an allow's ratelimit-* reach the client (nginx;
	// Caddy's forward_auth copies headers only onto the request).
	rateLimitOnAllow bool
}

// throughProxy drives a proxy in front of keygate and the echo upstream.
func throughProxy(t *testing.T, g *gate, proxy string, f features) {
	id, tok := g.key(manage.NewKey{Scopes: []string{"read"}})
	one := 1
	_, limited := g.key(manage.NewKey{Scopes: []string{"read"}, RateLimitPerMinute: &one})

	t.Run("allow", func(t *testing.T) {
		for _, cred := range []map[string]string{{"x-api-key": tok}, {"authorization": "Bearer " + tok}} {
			h := map[string]string{"x-keygate-key-id": "forged", "x-keygate-project-ids": "forged",
				// A client cannot name the method or URI judged.
				"x-forwarded-method": "DELETE", "x-original-method": "POST", "x-original-uri": "/v1/admin"}
			for k, v := range cred {
				h[k] = v
			}
			resp := rawRequest(t, proxy, "GET", "/v1/things?page=2", h)
			b := body(t, resp.Body)
			if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "1" {
				t.Fatalf("status %d, body %s: want the upstream's 200", resp.StatusCode, b)
			}
			var e echoed
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatal(err)
			}
			if e.Method != "GET" || e.URI != "/v1/things?page=2" {
				t.Errorf("upstream saw %s %s", e.Method, e.URI)
			}
			for name, want := range map[string]string{"x-keygate-key-id": id, "x-keygate-org-id": "acme", "x-keygate-user-id": "alice",
				"x-keygate-scopes": "read", "x-keygate-key-type": "secret", "x-keygate-environment": "live"} {
				if got := e.Headers[name]; len(got) != 1 || got[0] != want {
					t.Errorf("upstream saw %s = %q, want %q", name, got, want)
				}
			}
			for _, name := range []string{"x-api-key", "authorization", "x-keygate-project-ids"} {
				if got, ok := e.Headers[name]; ok {
					t.Errorf("upstream saw %s = %q; it must be stripped", name, got)
				}
			}
		}
	})

	deny := func(t *testing.T, method, target string, h map[string]string, status int, code string) *http.Response {
		t.Helper()
		resp := rawRequest(t, proxy, method, target, h)
		b := body(t, resp.Body)
		if resp.StatusCode != status {
			t.Fatalf("status %d, body %s, want %d", resp.StatusCode, b, status)
		}
		if resp.Header.Get("X-Echo") != "" {
			t.Fatal("a deny reached the upstream")
		}
		if f.relaysBody {
			d := decodeDeny(t, b)
			if d.Error.Code != code || d.Meta.RequestID != h["x-request-id"] {
				t.Errorf("body %s, want code %s and request_id %q", b, code, h["x-request-id"])
			}
		}
		return resp
	}
	t.Run("missing key", func(t *testing.T) {
		resp := deny(t, "GET", "/v1/things", map[string]string{"x-request-id": "r-missing"}, 401, "missing_api_key")
		if got := resp.Header.Get("WWW-Authenticate"); got != `Bearer realm="keygate"` {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		resp := deny(t, "GET", "/v1/things", map[string]string{"x-api-key": mangle(tok), "x-request-id": "r-unknown"}, 401, "invalid_api_key")
		if got := resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
			t.Errorf("WWW-Authenticate = %q", got)
		}
	})
	t.Run("scope", func(t *testing.T) {
		deny(t, "POST", "/v1/things", map[string]string{"x-api-key": tok, "x-request-id": "r-scope"}, 403, "insufficient_permissions")
	})
	t.Run("raw path", func(t *testing.T) {
		// The proxy passes the request target as received; keygate judges it.
		for _, target := range []string{"/v1/%2e%2e/admin", "//v1/things", "/v1/%2fthings", "/v1/things;a=b"} {
			deny(t, "GET", target, map[string]string{"x-api-key": tok, "x-request-id": "r-path"}, 400, "invalid_request")
		}
	})
	t.Run("rate limited", func(t *testing.T) {
		h := map[string]string{"x-api-key": limited, "x-request-id": "r-limit"}
		resp := rawRequest(t, proxy, "GET", "/v1/things", h)
		if resp.StatusCode != 200 {
			t.Fatalf("first request: %d", resp.StatusCode)
		}
		if f.rateLimitOnAllow && (resp.Header.Get("RateLimit-Limit") != "1" || resp.Header.Get("RateLimit-Remaining") != "0") {
			t.Errorf("allow: RateLimit-Limit %q, RateLimit-Remaining %q, want 1 and 0",
				resp.Header.Get("RateLimit-Limit"), resp.Header.Get("RateLimit-Remaining"))
		}
		resp = deny(t, "GET", "/v1/things", h, 429, "rate_limited")
		if resp.Header.Get("Retry-After") == "" || resp.Header.Get("RateLimit-Limit") != "1" {
			t.Errorf("Retry-After %q, RateLimit-Limit %q", resp.Header.Get("Retry-After"), resp.Header.Get("RateLimit-Limit"))
		}
	})
}

// A keygate that does not answer is a deny through either proxy, never an allow.
func TestProxies_KeygateDownFailsClosed(t *testing.T) {
	up := startEcho(t)
	down := testaddr.Free(t)
	for _, p := range []struct {
		name   string
		start  func(t *testing.T, keygate, upstream string) string
		status int
	}{{"nginx", startNginx, 503}, {"caddy", startCaddy, 502}} {
		t.Run(p.name, func(t *testing.T) {
			requireProxy(t, p.name)
			resp := rawRequest(t, p.start(t, down, up), "GET", "/v1/things", map[string]string{"x-api-key": "kg_live_x"})
			b := body(t, resp.Body)
			if resp.StatusCode != p.status || resp.Header.Get("X-Echo") != "" {
				t.Fatalf("status %d, body %s: want %d, and nothing upstream", resp.StatusCode, b, p.status)
			}
		})
	}
}
