package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

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

// storeUse says whether a command may create the embedded store. Only
// serve and migrate do: a `keys create` run in the wrong directory must not
// print a token for a fresh store that no replica reads.
type storeUse int

const (
	existingStore storeUse = iota
	createStore
)

// embeddedPath is the embedded store's file in --data-dir.
func (c *connFlags) embeddedPath() string { return filepath.Join(c.DataDir, "keygate.db") }

// open opens the store that the flags select, PostgreSQL or the embedded
// one, and says which. A --data-dir that does not exist is an error for
// every command; a missing keygate.db is one unless use is createStore.
func (c *connFlags) open(ctx context.Context, logger *slog.Logger, use storeUse) (st store.Store, embedded bool, err error) {
	if c.DatabaseURL != "" {
		pg, err := postgres.Open(ctx, postgres.Config{URL: c.DatabaseURL, ListenURL: c.ListenDatabaseURL, ReadURL: c.ReadDatabaseURL, Now: time.Now, Logger: logger})
		if err != nil {
			return nil, false, fmt.Errorf("opening the PostgreSQL store: %w", err)
		}
		return pg, false, nil
	}
	if err := c.checkDataDir(); err != nil {
		return nil, false, err
	}
	path := c.embeddedPath()
	if use == existingStore {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			if abs, err := filepath.Abs(path); err == nil {
				path = abs // "keygate.db" alone would not say where it looked
			}
			return nil, false, usageErrorf("no embedded store at %s (only serve and migrate create one): is --database-url or KEYGATE_DATABASE_URL missing, or --data-dir wrong?", path)
		}
	}
	lite, err := openEmbedded(ctx, path, logger)
	if err != nil {
		return nil, false, fmt.Errorf("opening the embedded store %s: %w", path, err)
	}
	return lite, true, nil
}

// checkDataDir fails unless --data-dir is an existing directory: no
// command creates it.
func (c *connFlags) checkDataDir() error {
	switch fi, err := os.Stat(c.DataDir); {
	case errors.Is(err, fs.ErrNotExist):
		return usageErrorf("--data-dir %s does not exist; create it, or set --database-url (KEYGATE_DATABASE_URL) for PostgreSQL", c.DataDir)
	case err != nil:
		return usageErrorf("--data-dir: %v", err)
	case !fi.IsDir():
		return usageErrorf("--data-dir %s is not a directory", c.DataDir)
	}
	return nil
}

// databaseAddr is the host:port of a PostgreSQL URL, for messages that
// must name the server but never repeat the URL (it may hold a password).
func databaseAddr(raw string) string {
	cfg, err := pgconn.ParseConfig(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return postgres.Addr(cfg)
}

// openMigrated opens the store and applies the migrations, which are
// idempotent, so that a store written by an older keygate is brought up to
// date by whichever command opens it first.
func (c *connFlags) openMigrated(ctx context.Context, logger *slog.Logger, use storeUse) (store.Store, bool, error) {
	st, embedded, err := c.open(ctx, logger, use)
	if err != nil {
		return nil, false, err
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, false, fmt.Errorf("migrating the store: %w", err)
	}
	return st, embedded, nil
}
