// Package postgres is the PostgreSQL key store, through pgx v5.
//
// Lookups and writes go through a pool on Config.URL, which may be a
// transaction-mode pooler such as PgBouncer: nothing here needs a session
// (no named prepared statements when the URL sets
// default_query_exec_mode=exec or simple_protocol, no session locks, no
// LISTEN). What does need a session, migrations under their advisory lock
// and LISTEN, goes to Config.ListenURL, a direct connection to the primary.
// pgx's default mode (cache_statement) prepares named statements, and
// describe_exec prepares in one round trip and executes in the next, which
// the pooler may send to another server connection: both break there.
//
// Lookups may also go to a hot standby (Config.ReadURL): see standby.go.
//
// Every write that changes a decision takes pg_advisory_xact_lock(eventsLockKey)
// just before it inserts its key event, so events commit in sequence order:
// a reader that has seen seq n and asks for seq > n never skips an event
// that commits late.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/keygate/keygate/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Advisory lock keys. They only need to be distinct from other users of
// advisory locks in the same database; the values spell "kgevents" and
// "kgmigrat" in ASCII.
const (
	eventsLockKey  int64 = 0x6b67_6576_656e_7473
	migrateLockKey int64 = 0x6b67_6d69_6772_6174
)

// NotifyChannel is the channel every event write NOTIFYs, with the event's
// sequence number as payload.
const NotifyChannel = "keygate_events"

// Config configures a Store.
type Config struct {
	// URL (--database-url) is the pool for lookups and writes. It may go
	// through PgBouncer in transaction mode; pgx's default_query_exec_mode
	// from the URL is respected.
	URL string
	// ListenURL (--listen-database-url) is a direct connection to the
	// primary, for migrations and their advisory lock (and LISTEN). Empty
	// means URL.
	ListenURL string
	// ReadURL (--read-database-url), when set, is a hot standby for
	// LookupKey, used once UseStandby says when its answers may be.
	ReadURL string
	// Now is the store's clock; nil means time.Now.
	Now func() time.Time
	// Logger receives operational messages; nil discards them. Tokens and
	// hashes are never logged.
	Logger *slog.Logger
}

// Store is the PostgreSQL store.Store.
type Store struct {
	pool      *pgxpool.Pool
	read      *pgxpool.Pool // the standby's; nil without Config.ReadURL
	standby   atomic.Pointer[standby]
	listenCfg *pgx.ConnConfig
	now       func() time.Time
	log       *slog.Logger

	// beforeCommit, when set (by tests only), runs in every write that logs
	// a key event, after the event is inserted and before the commit.
	beforeCommit func(ctx context.Context, seq int64)
}

var _ store.Store = (*Store)(nil)

// Open parses both URLs, connects the pool and pings it. It does not
// migrate: call Migrate.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	poolCfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: invalid database URL (--database-url): %w", err)
	}
	listenURL := cfg.ListenURL
	if listenURL == "" {
		listenURL = cfg.URL
	}
	// Parsed as a pool URL too, so that pool_* parameters copied from
	// --database-url are dropped rather than sent to the server as
	// runtime parameters (which fails the connection).
	listenCfg, err := pgxpool.ParseConfig(listenURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: invalid listen database URL (--listen-database-url): %w", err)
	}
	boundConnect(poolCfg.ConnConfig)
	boundConnect(listenCfg.ConnConfig)
	var readCfg *pgxpool.Config
	if cfg.ReadURL != "" {
		if readCfg, err = pgxpool.ParseConfig(cfg.ReadURL); err != nil {
			return nil, fmt.Errorf("postgres: invalid read database URL (--read-database-url): %w", err)
		}
		boundConnect(readCfg.ConnConfig)
	}
	s := &Store{listenCfg: listenCfg.ConnConfig, now: cfg.Now, log: cfg.Logger}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// A listen URL at another address than the database URL is the sign
	// of a pooler in front of the latter.
	if (listenCfg.ConnConfig.Host != poolCfg.ConnConfig.Host || listenCfg.ConnConfig.Port != poolCfg.ConnConfig.Port) &&
		pooledUnsafe(poolCfg.ConnConfig.DefaultQueryExecMode) {
		s.log.Warn("--listen-database-url goes elsewhere than --database-url, as with a pooler: " +
			"through PgBouncer in transaction mode, add default_query_exec_mode=exec (or simple_protocol) to --database-url")
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connecting to the database URL: %w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		c := poolCfg.ConnConfig
		return nil, fmt.Errorf("postgres: cannot reach the database at %s (user %s, database %s, connect timeout %s): %w",
			Addr(&c.Config), c.User, c.Database, c.ConnectTimeout, err)
	}
	if readCfg != nil {
		if s.read, err = pgxpool.NewWithConfig(ctx, readCfg); err != nil {
			s.pool.Close()
			return nil, fmt.Errorf("postgres: connecting to the read database URL: %w", err)
		}
		// A standby that is down is no reason not to start: the primary
		// answers until it is back.
		if err := s.read.Ping(ctx); err != nil {
			s.log.Warn("the standby (--read-database-url) does not answer; lookups go to the primary until it does",
				"host", readCfg.ConnConfig.Host, "database", readCfg.ConnConfig.Database, "err", err)
		}
	}
	return s, nil
}

// pooledUnsafe reports whether pgx's exec mode m breaks through a
// transaction-mode pooler: named prepared statements (cache_statement),
// or an unnamed one prepared and executed in separate round trips
// (describe_exec).
func pooledUnsafe(m pgx.QueryExecMode) bool {
	return m == pgx.QueryExecModeCacheStatement || m == pgx.QueryExecModeDescribeExec
}

// DefaultConnectTimeout bounds every connection attempt whose URL sets no
// connect_timeout, so a server that accepts and never answers is an error
// rather than a silent hang.
const DefaultConnectTimeout = 5 * time.Second

// boundConnect gives cfg DefaultConnectTimeout unless its URL set a
// timeout. connect_timeout=0, libpq's "wait for ever", gets it too: a
// hang is never what an operator wants.
func boundConnect(cfg *pgx.ConnConfig) {
	if cfg.ConnectTimeout > 0 {
		return
	}
	cfg.ConnectTimeout = DefaultConnectTimeout // pgconn bounds the dial and the start-up exchange with it
}

// Addr is the host:port of a connection configuration, for messages that
// must name the server but never repeat the URL (it may hold a password).
func Addr(cfg *pgconn.Config) string {
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// Ping checks that the pool's database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pools.
func (s *Store) Close() {
	s.pool.Close()
	if s.read != nil {
		s.read.Close()
	}
}

// ListenerApplicationName is the application_name of the LISTEN
// connection, unless the listen URL sets one.
const ListenerApplicationName = "keygate listener"

// ListenConn opens a new direct connection to ListenURL, for a LISTEN on
// NotifyChannel. The caller closes it.
func (s *Store) ListenConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.listenCfg.Copy()
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		// So operators (and tests) can tell it apart in pg_stat_activity.
		cfg.RuntimeParams["application_name"] = ListenerApplicationName
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connecting to the listen database URL: %w", err)
	}
	return conn, nil
}

// Migrate applies the pending migrations over ListenURL, holding a session
// advisory lock so that replicas starting together apply each migration
// once. It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	db := stdlib.OpenDB(*s.listenCfg.Copy())
	defer db.Close()
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(advisoryLocker{}),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("postgres: migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrating: %w", err)
	}
	for _, r := range results {
		s.log.Info("applied migration", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// advisoryLocker is a goose SessionLocker that waits in pg_advisory_lock
// rather than polling pg_try_advisory_lock as goose's own does (its shortest
// poll is a second, which every replica after the first would wait on
// start). The wait ends with ctx.
type advisoryLocker struct{}

func (advisoryLocker) SessionLock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	return nil
}

func (advisoryLocker) SessionUnlock(ctx context.Context, conn *sql.Conn) error {
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("releasing the migration lock: %w", err)
	}
	return nil
}

// clock returns the store's time, truncated to what PostgreSQL keeps.
func (s *Store) clock() time.Time { return trunc(s.now()) }

func trunc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func truncPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := trunc(*t)
	return &u
}

// PostgreSQL error codes the store translates.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
