package tlsfiles

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testcerts"
)

func files(p testcerts.Pair, ca string) Files {
	return Files{Cert: p.CertFile, Key: p.KeyFile, ClientCA: ca,
		CertFlag: "--grpc-tls-cert", KeyFlag: "--grpc-tls-key", ClientCAFlag: "--grpc-tls-client-ca"}
}

// serveTLS accepts TLS connections with cfg on 127.0.0.1 and completes
// each handshake.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// TLS 1.3 reports a rejected client certificate on the first read.
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "EOF") {
		return nil, err
	}
	st := c.ConnectionState()
	return &st, nil
}

func TestServer_MutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "mesh")
	other := testcerts.NewCA(t, dir, "other")
	srvPair := ca.Issue(t, dir, "keygate")
	goodClient := ca.Issue(t, dir, "envoy")
	badClient := other.Issue(t, dir, "intruder")

	s, err := NewServer(files(srvPair, ca.CertFile), "grpc", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.Config())
	clientCfg := func(p *testcerts.Pair) *tls.Config {
		c, err := ClientConfig(ClientFiles{CA: ca.CertFile})
		if p != nil {
			c, err = ClientConfig(ClientFiles{CA: ca.CertFile, Cert: p.CertFile, Key: p.KeyFile})
		}
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := dial(addr, clientCfg(&goodClient)); err != nil {
		t.Errorf("client signed by the client CA: %v", err)
	}
	if _, err := dial(addr, clientCfg(nil)); err == nil {
		t.Error("client without a certificate was accepted")
	}
	if _, err := dial(addr, clientCfg(&badClient)); err == nil {
		t.Error("client signed by another CA was accepted")
	}
}

func TestServer_PicksUpARotatedCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "mesh")
	pair := ca.Issue(t, dir, "keygate")
	s, err := NewServer(files(pair, ""), "grpc", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx, 20*time.Millisecond) }()
	addr := serveTLS(t, s.Config())
	cfg, _ := ClientConfig(ClientFiles{CA: ca.CertFile})

	st, err := dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.PeerCertificates[0].SerialNumber; got.Cmp(pair.Serial) != 0 {
		t.Fatalf("serial %v, want %v", got, pair.Serial)
	}
	rotated := ca.IssueTo(t, pair, "keygate")
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := dial(addr, cfg)
		if err == nil && st.PeerCertificates[0].SerialNumber.Cmp(rotated.Serial) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("rotated certificate not served within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A broken rotation keeps the last good certificate.
	if err := os.WriteFile(pair.CertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err == nil {
		t.Fatal("Reload of a broken certificate = nil")
	}
	if st, err := dial(addr, cfg); err != nil || st.PeerCertificates[0].SerialNumber.Cmp(rotated.Serial) != 0 {
		t.Errorf("after a broken rotation: %v; want the last good certificate", err)
	}
}

func TestNewServer_ClearErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "mesh")
	a := ca.Issue(t, dir, "a")
	b := ca.Issue(t, dir, "b")
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name string
		f    Files
		want string
	}{
		{"cert without key", Files{Cert: a.CertFile}, "--grpc-tls-cert needs --grpc-tls-key"},
		{"key without cert", Files{Key: a.KeyFile}, "--grpc-tls-key needs --grpc-tls-cert"},
		{"client CA alone", Files{ClientCA: ca.CertFile}, "--grpc-tls-client-ca needs --grpc-tls-cert"},
		{"missing cert", Files{Cert: missing, Key: a.KeyFile}, "--grpc-tls-cert: open " + missing},
		{"missing key", Files{Cert: a.CertFile, Key: missing}, "--grpc-tls-key: open " + missing},
		{"mismatched pair", Files{Cert: a.CertFile, Key: b.KeyFile}, "--grpc-tls-cert and --grpc-tls-key: tls: private key does not match public key"},
		{"client CA not PEM", Files{Cert: a.CertFile, Key: a.KeyFile, ClientCA: a.KeyFile}, "--grpc-tls-client-ca: no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.CertFlag, tt.f.KeyFlag, tt.f.ClientCAFlag = "--grpc-tls-cert", "--grpc-tls-key", "--grpc-tls-client-ca"
			_, err := NewServer(tt.f, "grpc", nil, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("NewServer = %v, want an error starting %q", err, tt.want)
			}
		})
	}
}

func TestClientConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "mesh")
	a := ca.Issue(t, dir, "a")
	for _, tt := range []struct {
		f    ClientFiles
		want string
	}{
		{ClientFiles{CA: filepath.Join(dir, "nope")}, "--tls-ca: open"},
		{ClientFiles{CA: a.KeyFile}, "--tls-ca: no PEM certificate"},
		{ClientFiles{Cert: a.CertFile}, "--tls-cert and --tls-key go together"},
	} {
		if _, err := ClientConfig(tt.f); err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("ClientConfig(%+v) = %v, want %q", tt.f, err, tt.want)
		}
	}
}
