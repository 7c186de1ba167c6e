package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
)

// connFlags are the flags of every command that opens the store. They
// also read KEYGATE_* variables, so a container sets them once.
type connFlags struct {
	DatabaseURL       string `name:"database-url" env:"KEYGATE_DATABASE_URL" placeholder:"URL" help:"PostgreSQL URL (postgres://…); unset: the embedded store in --data-dir."`
	ListenDatabaseURL string `name:"listen-database-url" env:"KEYGATE_LISTEN_DATABASE_URL" placeholder:"URL" help:"Direct PostgreSQL URL for migrations and notifications when --database-url goes through a pooler (default: --database-url)."`
	ReadDatabaseURL   string `name:"read-database-url" env:"KEYGATE_READ_DATABASE_URL" placeholder:"URL" help:"PostgreSQL hot standby for cache misses; its answer is used only when it has replayed every event this replica applied, else the primary answers."`
	DataDir           string `name:"data-dir" env:"KEYGATE_DATA_DIR" default:"." placeholder:"DIR" help:"Directory of the embedded store, file keygate.db."`
	SecretPrefix      string `name:"secret-prefix" env:"KEYGATE_SECRET_PREFIX" default:"sk" help:"Type prefix of secret keys, ^[a-z]{2,8}$."`
	PublishablePrefix string `name:"publishable-prefix" env:"KEYGATE_PUBLISHABLE_PREFIX" default:"pk" help:"Type prefix of publishable keys, ^[a-z]{2,8}$."`
	LogLevel          string `name:"log-level" env:"KEYGATE_LOG_LEVEL" default:"info" help:"debug, info, warn or error."`
	LogFormat         string `name:"log-format" env:"KEYGATE_LOG_FORMAT" default:"text" enum:"text,json" help:"text or json."`

	format apikey.Format
	level  slog.Level
}

// Validate checks the connection flags, naming the flag at fault. It never
// repeats a database URL: it may hold a password.
func (c *connFlags) Validate() error {
	if err := validateDatabaseURL("--database-url", c.DatabaseURL); err != nil {
		return err
	}
	if c.ListenDatabaseURL != "" {
		if c.DatabaseURL == "" {
			return fmt.Errorf("--listen-database-url needs --database-url: the embedded store has no listener")
		}
		if err := validateDatabaseURL("--listen-database-url", c.ListenDatabaseURL); err != nil {
			return err
		}
	}
	if c.ReadDatabaseURL != "" {
		if c.DatabaseURL == "" {
			return fmt.Errorf("--read-database-url needs --database-url: the embedded store has no standby")
		}
		if err := validateDatabaseURL("--read-database-url", c.ReadDatabaseURL); err != nil {
			return err
		}
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		return fmt.Errorf("--data-dir must not be empty")
	}
	f, err := apikey.NewFormat(c.SecretPrefix, c.PublishablePrefix)
	if err != nil {
		switch {
		case !validPrefix(c.SecretPrefix):
			return fmt.Errorf("--secret-prefix: %v", err)
		case !validPrefix(c.PublishablePrefix):
			return fmt.Errorf("--publishable-prefix: %v", err)
		}
		return fmt.Errorf("--secret-prefix and --publishable-prefix: %v", err)
	}
	c.format = f
	if err := c.level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q must be debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// validPrefix tells which of the two prefixes apikey.NewFormat rejected,
// so the message names the right flag; NewFormat stays the authority.
func validPrefix(p string) bool {
	if len(p) < 2 || len(p) > 8 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 'a' || p[i] > 'z' {
			return false
		}
	}
	return true
}

func validateDatabaseURL(flag, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url's error quotes the whole URL, password and all.
		return fmt.Errorf("%s is not a valid URL", flag)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("%s: unsupported scheme %q: want postgres:// or postgresql://, or leave it unset for the embedded store", flag, u.Scheme)
	}
	return nil
}

// logger returns the process logger on w. Logs go to stderr; stdout is
// for what a command answers (and the one-time display of a token).
func (c *connFlags) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// open opens the store that the flags select, PostgreSQL or the embedded
// one, and says which.
func (c *connFlags) open(ctx context.Context, logger *slog.Logger) (st store.Store, embedded bool, err error) {
	if c.DatabaseURL != "" {
		pg, err := postgres.Open(ctx, postgres.Config{URL: c.DatabaseURL, ListenURL: c.ListenDatabaseURL, ReadURL: c.ReadDatabaseURL, Now: time.Now, Logger: logger})
		if err != nil {
			return nil, false, fmt.Errorf("opening the PostgreSQL store: %w", err)
		}
		return pg, false, nil
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, false, fmt.Errorf("--data-dir: %w", err)
	}
	path := filepath.Join(c.DataDir, "keygate.db")
	lite, err := openEmbedded(ctx, path, logger)
	if err != nil {
		return nil, false, fmt.Errorf("opening the embedded store %s: %w", path, err)
	}
	return lite, true, nil
}

// openMigrated opens the store and applies the migrations, which are
// idempotent: a CLI write on a fresh embedded store just works.
func (c *connFlags) openMigrated(ctx context.Context, logger *slog.Logger) (store.Store, bool, error) {
	st, embedded, err := c.open(ctx, logger)
	if err != nil {
		return nil, false, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, false, fmt.Errorf("migrating the store: %w", err)
	}
	return st, embedded, nil
}
