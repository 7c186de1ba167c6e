// Package sqlite is the embedded key store: one SQLite file through
// modernc.org/sqlite (pure Go, no cgo).
//
// `keygate serve` and CLI commands in other processes share the file at the
// same time, so every connection runs in WAL mode (readers never block the
// writer), waits on a busy timeout instead of failing, enforces foreign
// keys, syncs every commit to disk (synchronous=FULL: with NORMAL, a revoke
// acknowledged just before a power cut could be lost and the key work
// again), and starts write transactions with BEGIN IMMEDIATE: a transaction
// that will write takes the write lock first, so it never has to upgrade a
// stale read snapshot and fail with SQLITE_BUSY. Writers are serialized by
// SQLite itself, so event sequence numbers become visible in commit order.
package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keygate/keygate/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// busyTimeout is how long a statement waits for another process's lock.
const busyTimeout = 10 * time.Second

// Config configures a Store.
type Config struct {
	// Path is the database file; it is created when missing.
	Path string
	// Now is the store's clock; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages; nil discards them. Tokens and
	// hashes are never logged.
	Logger *slog.Logger
}

// Store is the SQLite store.Store.
type Store struct {
	db  *sql.DB
	now func() time.Time
	log *slog.Logger
}

var _ store.Store = (*Store)(nil)

// Open opens (creating when missing) the database file and pings it. It
// does not migrate: call Migrate.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("sqlite: no database path")
	}
	if strings.Contains(cfg.Path, "?") {
		return nil, fmt.Errorf("sqlite: database path %q must not contain '?'", cfg.Path)
	}
	dsn := cfg.Path + fmt.Sprintf("?_busy_timeout=%d&_journal_mode=WAL&_foreign_keys=1&_synchronous=FULL&_txlock=immediate",
		busyTimeout.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", cfg.Path, err)
	}
	if err := ping(ctx, db); err != nil {
		db.Close()
		return nil, openError(cfg.Path, err)
	}
	s := &Store{db: db, now: cfg.Now, log: cfg.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return s, nil
}

// ping opens the first connection. Processes opening a new file together
// race to switch it to WAL, and the loser gets SQLITE_BUSY at once: SQLite
// does not wait where waiting could deadlock, so busy_timeout does not help.
// ping retries that, within the busy timeout. (synchronous=FULL makes the
// switch fsync, which widens the race.)
func ping(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		err := db.PingContext(ctx)
		if err == nil || sqliteCode(err)&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(lockPoll):
		}
	}
}

// openError explains a database file SQLite could not open or write. Its own
// text, "unable to open database file (14)", names neither the file nor what
// to check, and the usual cause is a directory that is missing or belongs to
// another user (a container's working directory, a volume owned by root).
func openError(path string, err error) error {
	switch sqliteCode(err) & 0xff { // the primary result code
	case sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM:
	default:
		return fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	if abs, aerr := filepath.Abs(path); aerr == nil {
		path = abs
	}
	return fmt.Errorf("sqlite: cannot open database file %s: check that directory %s exists and that it and the file are writable by uid %d gid %d, the user this process runs as (SQLite also creates %s-wal and %s-shm there): %w",
		path, filepath.Dir(path), os.Getuid(), os.Getgid(), filepath.Base(path), filepath.Base(path), err)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() { s.db.Close() }

// Migrate applies the pending migrations, under a lock that other
// processes sharing the file respect. It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	var owner [8]byte
	_, _ = rand.Read(owner[:]) // crypto/rand.Read never fails
	p, err := goose.NewProvider(goose.DialectSQLite3, s.db, fsys,
		goose.WithLocker(&leaseLocker{owner: hex.EncodeToString(owner[:])}),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("sqlite: migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: migrating: %w", err)
	}
	for _, r := range results {
		s.log.Info("applied migration", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// leaseLocker is a goose Locker for processes sharing one SQLite file,
// which has no advisory locks: a one-row table whose row is the lock,
// taken by inserting it, and taken over only once its lease has passed (a
// process that died mid-migration does not block the others forever).
type leaseLocker struct{ owner string }

const (
	migrationLease = time.Minute
	lockPoll       = 20 * time.Millisecond
)

func (l *leaseLocker) Lock(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS keygate_migration_lock (
		id INTEGER PRIMARY KEY CHECK (id = 1), owner TEXT NOT NULL, expires_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("creating the migration lock: %w", err)
	}
	for {
		now := time.Now() // the wall clock: leases are between processes
		res, err := db.ExecContext(ctx, `INSERT INTO keygate_migration_lock (id, owner, expires_at) VALUES (1, ?, ?)
			ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
			WHERE keygate_migration_lock.expires_at < ?`,
			l.owner, now.Add(migrationLease).UnixMicro(), now.UnixMicro())
		if err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the migration lock: %w", ctx.Err())
		case <-time.After(lockPoll):
		}
	}
}

func (l *leaseLocker) Unlock(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, `DELETE FROM keygate_migration_lock WHERE owner = ?`, l.owner); err != nil {
		return fmt.Errorf("releasing the migration lock: %w", err)
	}
	return nil
}

// clock returns the store's time, truncated to microseconds like every
// time the store keeps.
func (s *Store) clock() time.Time { return trunc(s.now()) }

func trunc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Times are stored as INTEGER microseconds since the Unix epoch.

func toUS(t time.Time) int64 { return t.UnixMicro() }

func toUSPtr(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	v := t.UnixMicro()
	return &v
}

func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullUS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromUS(v.Int64)
	return &t
}

// sqliteCode returns the extended result code of a SQLite error, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

func isUnique(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

func isForeignKey(err error) bool { return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY }
