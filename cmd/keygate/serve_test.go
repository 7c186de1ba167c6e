package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServe_HTTPServerHasLimits pins the HTTP server's limits: a slow
// client cannot hold a connection for ever, and the write timeout outlasts
// the longest wait a request may ask for (30 s, SPEC §12) by 5 s or more.
func TestServe_HTTPServerHasLimits(t *testing.T) {
	web := newWebServer(slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		name string
		got  time.Duration
	}{
		{"ReadHeaderTimeout", web.ReadHeaderTimeout}, {"ReadTimeout", web.ReadTimeout},
		{"WriteTimeout", web.WriteTimeout}, {"IdleTimeout", web.IdleTimeout},
	} {
		if tt.got <= 0 {
			t.Errorf("%s is %v: unset", tt.name, tt.got)
		}
	}
	if web.WriteTimeout < 35*time.Second {
		t.Errorf("WriteTimeout %v: want at least 35 s (30 s wait + 5 s)", web.WriteTimeout)
	}
	if web.MaxHeaderBytes <= 0 || web.MaxHeaderBytes > 1<<20 {
		t.Errorf("MaxHeaderBytes %d: want a limit below net/http's 1 MiB default", web.MaxHeaderBytes)
	}
}

func TestServe_OversizeHeaderIs431(t *testing.T) {
	s := serve(t, backends[0].env(t))
	req, err := http.NewRequest("GET", "http://"+s.httpAddr+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-padding", strings.Repeat("a", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET /healthz with a 128 KiB header = %d, want 431", resp.StatusCode)
	}
	// A header well inside the limit still gets through.
	req.Header.Set("x-padding", strings.Repeat("a", 32<<10))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz with a 32 KiB header = %d, want 200", resp.StatusCode)
	}
}
