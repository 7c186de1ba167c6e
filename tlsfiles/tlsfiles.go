// Package tlsfiles serves TLS from certificate files and picks up new ones
// when they change on disk, as cert-manager or a Kubernetes secret mount
// rotates them, without a restart.
package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Files names the PEM files of one TLS endpoint, and the flags they came
// from so that every error names the flag to fix.
type Files struct {
	Cert, Key, ClientCA             string
	CertFlag, KeyFlag, ClientCAFlag string
}

// Enabled reports whether TLS is configured at all.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// Validate checks that the files come as a set: a certificate and its key
// together, and a client CA only with them.
func (f Files) Validate() error {
	switch {
	case f.Cert != "" && f.Key == "":
		return fmt.Errorf("%s needs %s", f.CertFlag, f.KeyFlag)
	case f.Key != "" && f.Cert == "":
		return fmt.Errorf("%s needs %s", f.KeyFlag, f.CertFlag)
	case f.ClientCA != "" && f.Cert == "":
		return fmt.Errorf("%s needs %s and %s: client certificates are only asked for over TLS", f.ClientCAFlag, f.CertFlag, f.KeyFlag)
	}
	return nil
}

// Server holds the current certificate (and client CA pool) of one TLS
// endpoint.
type Server struct {
	files  Files
	logger *slog.Logger

	mu      sync.RWMutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	content []byte // cert, key and CA as last loaded, to notice a change

	reloads *prometheus.CounterVec
}

// NewServer loads the files; an error names the flag at fault. Metrics go
// to reg, labelled with endpoint ("grpc", "http").
func NewServer(f Files, endpoint string, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{files: f, logger: logger.With("endpoint", endpoint)}
	content, cert, pool, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cert, s.pool, s.content = cert, pool, content
	s.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "keygate_tls_reloads_total",
		Help:        "Certificate reloads after the files changed, by result (ok, error: the old certificate is kept).",
		ConstLabels: prometheus.Labels{"endpoint": endpoint},
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(s.reloads); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func (s *Server) load() (content []byte, cert *tls.Certificate, pool *x509.CertPool, err error) {
	f := s.files
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", f.CertFlag, err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", f.KeyFlag, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s and %s: %w", f.CertFlag, f.KeyFlag, err)
	}
	content = append(append([]byte{}, certPEM...), keyPEM...)
	if f.ClientCA != "" {
		caPEM, err := os.ReadFile(f.ClientCA)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", f.ClientCAFlag, err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, nil, nil, fmt.Errorf("%s: no PEM certificate in %s", f.ClientCAFlag, f.ClientCA)
		}
		content = append(content, caPEM...)
	}
	return content, &pair, pool, nil
}

// Config is the server's tls.Config: every handshake gets the certificate
// and client CAs loaded last, and with a client CA a client must present a
// certificate it signed.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.mu.RLock()
			defer s.mu.RUnlock()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*s.cert},
				NextProtos:   []string{"h2", "http/1.1"},
			}
			if s.pool != nil {
				c.ClientCAs = s.pool
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}
}

// Reload reads the files again and, when they changed and load, uses them
// for the next handshakes. Invalid files leave the old certificate in
// place: a half-written rotation must not take the endpoint down.
func (s *Server) Reload() error {
	content, cert, pool, err := s.load()
	if err != nil {
		s.reloads.WithLabelValues("error").Inc()
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(content, s.content) {
		return nil
	}
	s.cert, s.pool, s.content = cert, pool, content
	s.reloads.WithLabelValues("ok").Inc()
	return nil
}

// Run reloads every interval until ctx ends. Polling, rather than file
// events, follows the symlink swaps of Kubernetes secret volumes and works
// on every file system.
func (s *Server) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return errors.New("tlsfiles: reload interval must be positive")
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Reload(); err != nil {
			if err.Error() != lastErr { // once per distinct problem, not every tick
				s.logger.Error("TLS files changed but do not load; keeping the old certificate", "err", err)
			}
			lastErr = err.Error()
			continue
		}
		lastErr = ""
	}
}

// ClientFiles names the PEM files of a TLS client (keygate check).
type ClientFiles struct {
	CA, Cert, Key string
}

// ClientConfig returns the client's tls.Config: the server is verified
// against CA (the system roots when empty), and Cert/Key are presented for
// mTLS when set.
func ClientConfig(f ClientFiles) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", f.CA)
		}
	}
	switch {
	case f.Cert != "" && f.Key != "":
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert and --tls-key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	case f.Cert != "" || f.Key != "":
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	return c, nil
}
