package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testcerts"
)

type tlsFixture struct {
	dir            string
	ca, other      *testcerts.CA
	server, client testcerts.Pair
	intruder       testcerts.Pair
}

func newTLSFixture(t *testing.T) *tlsFixture {
	dir := t.TempDir()
	f := &tlsFixture{dir: dir, ca: testcerts.NewCA(t, dir, "mesh"), other: testcerts.NewCA(t, dir, "other")}
	f.server = f.ca.Issue(t, dir, "keygate")
	f.client = f.ca.Issue(t, dir, "envoy")
	f.intruder = f.other.Issue(t, dir, "intruder")
	return f
}

func TestTLS_CheckOverMutualTLS(t *testing.T) {
	f := newTLSFixture(t)
	e := backends[0].env(t)
	tok := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "tls")
	s := serve(t, e, "--grpc-tls-cert", f.server.CertFile, "--grpc-tls-key", f.server.KeyFile, "--grpc-tls-client-ca", f.ca.CertFile)

	if r := check(t, s, tok, "--tls-ca", f.ca.CertFile, "--tls-cert", f.client.CertFile, "--tls-key", f.client.KeyFile); r.code != 0 {
		t.Fatalf("mTLS check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for name, args := range map[string][]string{
		"no client certificate":        {"--tls-ca", f.ca.CertFile},
		"client signed by another CA":  {"--tls-ca", f.ca.CertFile, "--tls-cert", f.intruder.CertFile, "--tls-key", f.intruder.KeyFile},
		"plaintext":                    nil,
		"server not trusted by the CA": {"--tls-ca", f.other.CertFile, "--tls-cert", f.client.CertFile, "--tls-key", f.client.KeyFile},
	} {
		if r := check(t, s, tok, append(args, "--timeout", "2s")...); r.code != 2 {
			t.Errorf("%s: exit %d, want 2 (connection error)\n%s", name, r.code, r.stdout)
		}
	}
}

func TestTLS_HTTPSAndRotation(t *testing.T) {
	f := newTLSFixture(t)
	s := serve(t, backends[0].env(t), "--http-tls-cert", f.server.CertFile, "--http-tls-key", f.server.KeyFile,
		"--grpc-tls-cert", f.server.CertFile, "--grpc-tls-key", f.server.KeyFile, "--tls-reload-interval", "50ms")
	pem, err := os.ReadFile(f.ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + s.httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET https /healthz = %d", resp.StatusCode)
	}
	if resp, err := http.Get("http://" + s.httpAddr + "/healthz"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP answered 200 with --http-tls-cert set")
	}
	if r := invoke(t, env{}, "healthcheck", "--url", "https://"+s.httpAddr+"/healthz", "--tls-ca", f.ca.CertFile); r.code != 0 {
		t.Errorf("healthcheck over TLS: exit %d %s", r.code, r.stderr)
	}
	if r := invoke(t, env{}, "healthcheck", "--url", "https://"+s.httpAddr+"/healthz"); r.code != 1 {
		t.Errorf("healthcheck over TLS without the CA: exit %d, want 1", r.code)
	}

	serial := func(addr string) string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"h2"}})
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	rotated := f.ca.IssueTo(t, f.server, "keygate")
	for _, addr := range []string{s.grpcAddr, s.httpAddr} {
		if !eventually(5*time.Second, func() bool { return serial(addr) == rotated.Serial.String() }) {
			t.Errorf("%s: rotated certificate not served within 5 s (serving %s)", addr, serial(addr))
		}
	}
}

func TestTLS_StartupErrorsNameTheFlag(t *testing.T) {
	f := newTLSFixture(t)
	missing := filepath.Join(f.dir, "missing.pem")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing certificate", []string{"--grpc-tls-cert", missing, "--grpc-tls-key", f.server.KeyFile}, "--grpc-tls-cert: open " + missing},
		{"mismatched key", []string{"--grpc-tls-cert", f.server.CertFile, "--grpc-tls-key", f.client.KeyFile}, "--grpc-tls-cert and --grpc-tls-key: tls: private key does not match public key"},
		{"key missing", []string{"--http-tls-cert", f.server.CertFile}, "--http-tls-cert needs --http-tls-key"},
		{"client CA without TLS", []string{"--grpc-tls-client-ca", f.ca.CertFile}, "--grpc-tls-client-ca needs --grpc-tls-cert"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := invoke(t, backends[0].env(t), append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, tt.args...)...)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line containing %q", r.code, r.stderr, tt.want)
			}
		})
	}
}
