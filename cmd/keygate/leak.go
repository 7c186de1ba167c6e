package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/leak"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
)

// leakFlags configure POST /v1/leaked-keys on serve (SPEC §13).
type leakFlags struct {
	LeakAction     string `name:"leak-action" env:"KEYGATE_LEAK_ACTION" default:"revoke" enum:"revoke,deactivate,notify" help:"What a reported leak of a live secret key does: revoke, deactivate, or notify (only the audit event; needs --leak-report-keys)."`
	LeakReportKeys string `name:"leak-report-keys" env:"KEYGATE_LEAK_REPORT_KEYS" placeholder:"FILE" help:"Public keys (PEM with '# key-id:' lines, or GitHub's secret-scanning JSON) that every leak report must be signed with; read again when it changes."`
}

// Validate checks the flags, naming the one at fault.
func (f *leakFlags) Validate() error {
	_, err := f.config(nil)
	return err
}

// config is the leak.Config of the flags, the key file read.
func (f *leakFlags) config(logger *slog.Logger) (leak.Config, error) {
	cfg := leak.Config{Action: store.LeakAction(f.LeakAction), Logger: logger}
	if f.LeakReportKeys != "" {
		ks, err := leak.LoadKeySet(f.LeakReportKeys, logger)
		if err != nil {
			return leak.Config{}, fmt.Errorf("--leak-report-keys: %w", err)
		}
		cfg.Keys = ks
	}
	return cfg, cfg.Validate()
}

// service returns the leak-report handler of serve, with the store, the
// token format and the failed-auth throttle (nil: --failed-auth-limit 0)
// the decision uses.
func (f *leakFlags) service(st leak.Store, format apikey.Format, throttle *ratelimit.Throttle, logger *slog.Logger) (*leak.Service, error) {
	cfg, err := f.config(logger)
	if err != nil {
		return nil, err
	}
	cfg.Store, cfg.Format, cfg.Now = st, format, time.Now
	if throttle != nil { // a nil *Throttle in the interface would not be nil
		cfg.Throttle = throttle
	}
	return leak.New(cfg)
}
