package postgres_test

import (
	"context"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/tcpproxy"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/storetest"
)

func open(t testing.TB, url string, now func() time.Time) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), postgres.Config{URL: url, Now: now})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		return open(t, pgtest.NewDatabase(t), now)
	})
}

// TestConformance_SimpleProtocol runs the suite the way a transaction-mode
// pooler (PgBouncer) needs it: no prepared statements.
func TestConformance_SimpleProtocol(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		return open(t, pgtest.NewDatabase(t)+"&default_query_exec_mode=simple_protocol", now)
	})
}

func TestOpen_BadURLNamesWhichOne(t *testing.T) {
	good := pgtest.DefaultURL
	for _, tc := range []struct {
		name string
		cfg  postgres.Config
		want string
	}{
		{"database url", postgres.Config{URL: "postgres://%zz"}, "--database-url"},
		{"listen url", postgres.Config{URL: good, ListenURL: "postgres://%zz"}, "--listen-database-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := postgres.Open(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestMigrate_ConcurrentReplicasOnFreshDatabase(t *testing.T) {
	url := pgtest.NewDatabase(t)
	const replicas = 8
	stores := make([]*postgres.Store, replicas)
	for i := range stores {
		// The pool through a URL that could be a pooler; migrations go to
		// the direct ListenURL.
		s, err := postgres.Open(t.Context(), postgres.Config{URL: url + "&default_query_exec_mode=simple_protocol", ListenURL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		stores[i] = s
	}
	var g errgroup.Group
	start := make(chan struct{})
	for _, s := range stores {
		g.Go(func() error {
			<-start
			return s.Migrate(t.Context())
		})
	}
	close(start)
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var applied int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM goose_db_version WHERE version_id > 0`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	files, err := fs.Glob(postgres.Migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(files) {
		t.Errorf("goose_db_version has %d applied migrations, want %d (each applied once)", applied, len(files))
	}
	if _, err := stores[0].CreateOrganization(t.Context(), "acme", keygate.Actor{}); err != nil {
		t.Errorf("store unusable after concurrent migrations: %v", err)
	}
}

// TestEvents_VisibleInCommitOrder pauses writer 1 after it inserted its
// event and before it commits, while writer 2 writes: a reader must never
// see writer 2's (higher) seq while writer 1's is uncommitted, or a replica
// following seq > last would skip writer 1's event for good.
func TestEvents_VisibleInCommitOrder(t *testing.T) {
	url := pgtest.NewDatabase(t)
	w1 := open(t, url, nil)
	w2 := open(t, url, nil)
	if err := w1.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, org := range []string{"one", "two"} {
		if _, err := w1.CreateOrganization(ctx, org, keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
	}

	paused := make(chan int64)
	release := make(chan struct{})
	var releaseOnce sync.Once
	// On failure, let writer 1 finish, or closing its pool waits forever.
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	var once sync.Once
	w1.SetBeforeCommit(func(_ context.Context, seq int64) {
		once.Do(func() {
			paused <- seq
			<-release
		})
	})

	w1done := make(chan error, 1)
	go func() {
		_, err := w1.SetOrganizationDisabled(ctx, "one", true, keygate.Actor{})
		w1done <- err
	}()
	seq1 := <-paused

	w2done := make(chan error, 1)
	go func() {
		_, err := w2.SetOrganizationDisabled(ctx, "two", true, keygate.Actor{})
		w2done <- err
	}()

	// While writer 1 is paused, nothing of writer 2 may be visible.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		evs, err := w2.Events(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			t.Fatalf("while seq %d is uncommitted a reader sees %+v", seq1, evs)
		}
		select {
		case err := <-w2done:
			t.Fatalf("writer 2 committed (err %v) while writer 1 held the events lock", err)
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	releaseOnce.Do(func() { close(release) })
	if err := <-w1done; err != nil {
		t.Fatal(err)
	}
	if err := <-w2done; err != nil {
		t.Fatal(err)
	}
	evs, err := w2.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Seq != seq1 || evs[0].OrgID != "one" || evs[1].OrgID != "two" || evs[1].Seq <= seq1 {
		t.Errorf("events %+v, want writer 1's seq %d, then writer 2's", evs, seq1)
	}
}

// TestWrites_Notify pins the NOTIFY on keygate_events with the seq as
// payload, sent by the same transaction.
func TestWrites_Notify(t *testing.T) {
	url := pgtest.NewDatabase(t)
	s := open(t, url, nil)
	ctx := t.Context()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := s.ListenConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.NotifyChannel); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateOrganization(ctx, "acme", keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetOrganizationDisabled(ctx, "acme", true, keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n, err := conn.WaitForNotification(wctx)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || n.Payload != strconv.FormatInt(evs[0].Seq, 10) {
		t.Errorf("notification %q, events %+v: want one NOTIFY per event carrying its seq", n.Payload, evs)
	}
	if n.Channel != postgres.NotifyChannel {
		t.Errorf("channel %q", n.Channel)
	}
}

func BenchmarkLookupKey(b *testing.B) {
	url := pgtest.NewDatabase(b)
	s := open(b, url, nil)
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := s.CreateOrganization(ctx, "acme", keygate.Actor{}); err != nil {
		b.Fatal(err)
	}
	var hashes []keygate.Hash
	for range 200 {
		id, _ := apikey.NewKeyID()
		tok, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.CreateKey(ctx, store.NewKey{ID: id, OrgID: "acme", UserID: "u", Name: "bench",
			Type: keygate.Secret, Environment: keygate.Live, Scopes: []string{"read"},
			Token: store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()}}, keygate.Actor{}); err != nil {
			b.Fatal(err)
		}
		hashes = append(hashes, tok.Hash())
	}
	for _, h := range hashes { // warm: plans prepared, pages cached
		if _, err := s.LookupKey(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := s.LookupKey(ctx, hashes[i%len(hashes)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// TestOpen_KeepsExecModeFromURL pins that the store leaves pgx's
// default_query_exec_mode to the URL: with simple_protocol (what PgBouncer
// in transaction mode needs) lookups and writes create no prepared
// statement on the server; by default pgx prepares and caches them.
func TestOpen_KeepsExecModeFromURL(t *testing.T) {
	url := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		params   string
		prepared bool
	}{
		{"&pool_max_conns=1&default_query_exec_mode=simple_protocol", false},
		{"&pool_max_conns=1", true},
	} {
		t.Run(tc.params, func(t *testing.T) {
			s := open(t, url+tc.params, nil)
			ctx := t.Context()
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			tok, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
			if err != nil {
				t.Fatal(err)
			}
			id, _ := apikey.NewKeyID()
			if _, err := s.EnsureOrganization(ctx, "acme", keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateKey(ctx, store.NewKey{ID: id, OrgID: "acme", UserID: "u", Name: "n",
				Type: keygate.Secret, Environment: keygate.Live,
				Token: store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()}}, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := s.LookupKey(ctx, tok.Hash()); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.RecordLastUsed(ctx, []store.LastUse{{KeyID: id, At: time.Now()}}); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := s.Pool().QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tc.prepared {
				t.Errorf("%d prepared statements on the pool's connection; want prepared=%t", n, tc.prepared)
			}
		})
	}
}

// TestOpen_SilentServerIsABoundedError: a server that accepts and never
// answers fails Open after the connect timeout (5 s unless the URL sets
// connect_timeout), naming host:port and never the password.
func TestOpen_SilentServerIsABoundedError(t *testing.T) {
	for _, tt := range []struct {
		name, query string
		want        time.Duration
	}{
		{"default", "sslmode=disable", postgres.DefaultConnectTimeout},
		{"from the URL", "sslmode=disable&connect_timeout=1", time.Second},
		{"zero is not for ever", "connect_timeout=0", postgres.DefaultConnectTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := tcpproxy.Silent(t)
			start := time.Now()
			_, err := postgres.Open(t.Context(), postgres.Config{URL: "postgres://kg:hunter2@" + addr + "/keygate?" + tt.query})
			took := time.Since(start)
			if err == nil {
				t.Fatal("Open succeeded against a silent server")
			}
			if took < tt.want-100*time.Millisecond || took > tt.want+1500*time.Millisecond {
				t.Errorf("Open failed after %v, want about %v", took, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, addr) || strings.Contains(msg, "hunter2") {
				t.Errorf("error %q: want it to name %s and not the password", msg, addr)
			}
		})
	}
}

// TestMigrate_SilentListenServerIsABoundedError: the direct connection of
// migrations has the same bound (LISTEN connects with the same config).
func TestMigrate_SilentListenServerIsABoundedError(t *testing.T) {
	t.Parallel()
	addr := tcpproxy.Silent(t)
	s, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.NewDatabase(t),
		ListenURL: "postgres://kg:hunter2@" + addr + "/keygate?sslmode=disable"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Without the bound these would wait for ever; the test gives up at 20 s.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	limit := postgres.DefaultConnectTimeout + 1500*time.Millisecond
	start := time.Now()
	if err := s.Migrate(ctx); err == nil || time.Since(start) > limit {
		t.Errorf("Migrate over a silent listen URL: %v after %v, want an error within %v", err, time.Since(start), limit)
	}
}
