package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime/debug"
	"time"

	"github.com/keygate/keygate/tlsfiles"
)

// healthcheckCmd is `keygate healthcheck`, the container's HEALTHCHECK: the
// image has no curl, and the binary is already there.
type healthcheckCmd struct {
	URL     string        `name:"url" default:"http://127.0.0.1:8001/healthz" help:"URL to probe."`
	Timeout time.Duration `default:"3s" help:"How long to wait for an answer."`
	TLSCA   string        `name:"tls-ca" placeholder:"FILE" help:"Verify an https --url against this CA (PEM)."`
	// A container probes its own 127.0.0.1, which the serving certificate
	// rarely names; liveness needs no identity check.
	TLSSkipVerify bool `name:"tls-skip-verify" help:"Do not verify an https --url's certificate (for probing one's own 127.0.0.1)."`

	tlsConfig *tls.Config
}

// Validate checks --url and --timeout.
func (h *healthcheckCmd) Validate() error {
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q must be an absolute http(s) URL", h.URL)
	}
	if h.Timeout <= 0 {
		return fmt.Errorf("--timeout must be positive")
	}
	if h.TLSCA != "" {
		cfg, err := tlsfiles.ClientConfig(tlsfiles.ClientFiles{CA: h.TLSCA})
		if err != nil {
			return err
		}
		h.tlsConfig = cfg
	}
	if h.TLSSkipVerify {
		h.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
	}
	return nil
}

// Run exits 0 when the URL answers 200 and 1 otherwise.
func (h *healthcheckCmd) Run(d *deps) error {
	client := &http.Client{Timeout: h.Timeout}
	if h.tlsConfig != nil {
		client.Transport = &http.Transport{TLSClientConfig: h.tlsConfig}
	}
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, h.URL, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: HTTP %d", h.URL, resp.StatusCode)
	}
	return nil
}

// versionCmd is `keygate version`.
type versionCmd struct{}

// version is the release a build states, set with
// -ldflags "-X main.version=v1.2.3" (the Dockerfile's VERSION build arg): a
// build from a source tree without .git, like the image's, records no
// module version. Empty means the version Go recorded.
var version string

// Run prints the version (the ldflags one, else the module version Go
// recorded) and the VCS revision Go recorded in the binary.
func (versionCmd) Run(d *deps) error {
	v, revision, goVersion := buildVersion()
	fmt.Fprintf(d.stdout, "keygate %s", v)
	if revision != "" {
		fmt.Fprintf(d.stdout, " (%s)", revision)
	}
	fmt.Fprintf(d.stdout, " %s\n", goVersion)
	return nil
}

// buildVersion is the version a build states (version, set by ldflags)
// or else what Go recorded in the binary: the module version ("(devel)"
// for a build from a work tree), the VCS revision ("" when unknown) and
// the Go version; `keygate version` and keygate_build_info say the same.
func buildVersion() (v, revision, goVersion string) {
	v = "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	if version != "" {
		v = version
	}
	return v, revision, goVersion
}
