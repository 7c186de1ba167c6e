package postgres_test

import (
	"context"
	"errors"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgstandby"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/testaddr"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store/postgres"
)

// gate is a replica's side of a standby lookup, driven by the test.
type gate struct {
	pos       atomic.Int64
	unhealthy atomic.Bool
}

type standbyStore struct {
	*postgres.Store
	gate *gate
	reg  *prometheus.Registry
}

// openWithStandby opens a store on primaryURL reading through readURL.
func openWithStandby(t *testing.T, primaryURL, readURL string) *standbyStore {
	t.Helper()
	s, err := postgres.Open(t.Context(), postgres.Config{URL: primaryURL, ReadURL: readURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	g := &gate{}
	reg := prometheus.NewRegistry()
	if err := s.UseStandby(postgres.StandbyGate{
		Position:   g.pos.Load,
		Healthy:    func() bool { return !g.unhealthy.Load() },
		Timeout:    10 * time.Second, // a loaded machine must not turn an answer into a fallback
		Registerer: reg,
	}); err != nil {
		t.Fatal(err)
	}
	return &standbyStore{Store: s, gate: g, reg: reg}
}

func (s *standbyStore) answered(t *testing.T) float64 {
	return s.counter(t, "keygate_standby_lookups_total", "")
}

func (s *standbyStore) fallbacks(t *testing.T, reason string) float64 {
	return s.counter(t, "keygate_standby_fallbacks_total", reason)
}

func (s *standbyStore) counter(t *testing.T, name, reason string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{reason=%q}", name, reason)
	return 0
}

// createKey creates a key on the store at url and returns it and its
// token's hash.
func createKey(t *testing.T, s *postgres.Store) (keygate.Key, keygate.Hash) {
	t.Helper()
	ck, err := manage.New(s, apikey.DefaultFormat(), time.Now).CreateKey(t.Context(), manage.NewKey{
		OrgID: "acme", UserID: "alice", Name: "standby test", Role: "member", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return ck.Key, ck.Token.Hash()
}

func latest(t *testing.T, s *postgres.Store) int64 {
	t.Helper()
	seq, err := s.LatestEventSeq(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func execOn(t *testing.T, dbURL, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), sql); err != nil {
		t.Fatal(err)
	}
}

// TestStandby_AnswerUsedOnlyAtTheReplicasPosition stands an empty
// database in for a standby that lags: it knows no key, so whichever
// server answered shows in the result.
func TestStandby_AnswerUsedOnlyAtTheReplicasPosition(t *testing.T) {
	primaryURL, laggingURL := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	lagging := open(t, laggingURL, nil)
	if err := lagging.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := openWithStandby(t, primaryURL, laggingURL)
	k, h := createKey(t, s.Store)

	// The replica has applied the key's creation: the standby, at 0, is
	// behind it, and the primary answers.
	s.gate.pos.Store(latest(t, s.Store))
	rec, err := s.LookupKey(t.Context(), h)
	if err != nil || rec.Key.ID != k.ID {
		t.Fatalf("lookup with the standby behind: %v, %v; want key %s from the primary", rec, err, k.ID)
	}
	if got := s.fallbacks(t, "behind"); got != 1 {
		t.Errorf("fallbacks{behind} = %v, want 1", got)
	}

	// A replica that has applied nothing yet may take the standby's word.
	s.gate.pos.Store(0)
	if _, err := s.LookupKey(t.Context(), h); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("lookup with the standby at the replica's position: %v, want the standby's not found", err)
	}
	if got := s.answered(t); got != 1 {
		t.Errorf("standby lookups = %v, want 1", got)
	}

	// The position counts the pruning mark when the log was pruned empty.
	execOn(t, laggingURL, "UPDATE key_events_meta SET pruned_through = 7")
	s.gate.pos.Store(7)
	if _, err := s.LookupKey(t.Context(), h); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("lookup with the standby pruned through the replica's position: %v, want the standby's not found", err)
	}
	s.gate.pos.Store(8)
	if _, err := s.LookupKey(t.Context(), h); err != nil {
		t.Fatalf("lookup with the standby pruned through 7 and the replica at 8: %v, want the primary's key", err)
	}

	// While notifications are down, only the primary.
	s.gate.pos.Store(0)
	s.gate.unhealthy.Store(true)
	if rec, err := s.LookupKey(t.Context(), h); err != nil || rec.Key.ID != k.ID {
		t.Fatalf("lookup while unhealthy: %v, %v; want the primary's key", rec, err)
	}
	if got := s.fallbacks(t, "unhealthy"); got != 1 {
		t.Errorf("fallbacks{unhealthy} = %v, want 1", got)
	}
}

// TestStandby_FailingStandbyFallsBackToThePrimary points the standby at a
// port where nothing listens: lookups still answer, from the primary.
func TestStandby_FailingStandbyFallsBackToThePrimary(t *testing.T) {
	primaryURL := pgtest.NewDatabase(t)
	closed := testaddr.Free(t)
	u, _ := url.Parse(primaryURL)
	u.Host = closed
	s := openWithStandby(t, primaryURL, u.String())
	k, h := createKey(t, s.Store)
	for i := 0; i < 2; i++ {
		rec, err := s.LookupKey(t.Context(), h)
		if err != nil || rec.Key.ID != k.ID {
			t.Fatalf("lookup %d with the standby down: %v, %v", i, rec, err)
		}
	}
	if got := s.fallbacks(t, "error"); got != 1 {
		t.Errorf("fallbacks{error} = %v, want 1", got)
	}
	if got := s.fallbacks(t, "retry"); got != 1 {
		t.Errorf("fallbacks{retry} = %v, want 1 (the second lookup skips the standby that just failed)", got)
	}
}

// TestStandby_PausedReplayNeverResurrectsARevokedKey runs against a real
// streaming standby whose replay is paused while the primary revokes a key
// and creates another.
func TestStandby_PausedReplayNeverResurrectsARevokedKey(t *testing.T) {
	primaryURL := pgtest.NewDatabase(t)
	sb := pgstandby.Start(t)
	sb.WaitReplayed(t)
	s := openWithStandby(t, primaryURL, sb.URL(t, primaryURL))
	k, h := createKey(t, s.Store)
	sb.WaitReplayed(t)
	s.gate.pos.Store(latest(t, s.Store))
	if rec, err := s.LookupKey(t.Context(), h); err != nil || rec.Key.RevokedAt != nil {
		t.Fatalf("lookup of a live key: %v, %v", rec, err)
	}
	if got := s.answered(t); got != 1 {
		t.Fatalf("standby lookups = %v, want 1: a caught-up standby answers", got)
	}

	sb.PauseReplay(t)
	t.Cleanup(func() { sb.ResumeReplay(t) })
	if _, err := s.RevokeKey(t.Context(), "acme", k.ID, keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	k2, h2 := createKey(t, s.Store)
	s.gate.pos.Store(latest(t, s.Store)) // the replica applied both events
	rec, err := s.LookupKey(t.Context(), h)
	if err != nil || rec.Key.RevokedAt == nil {
		t.Fatalf("lookup of the revoked key with replay paused: %+v, %v; want it revoked", rec, err)
	}
	if rec, err := s.LookupKey(t.Context(), h2); err != nil || rec.Key.ID != k2.ID {
		t.Fatalf("lookup of the key created with replay paused: %v, %v; want it found", rec, err)
	}
	if got := s.fallbacks(t, "behind"); got != 2 {
		t.Errorf("fallbacks{behind} = %v, want 2", got)
	}

	sb.ResumeReplay(t)
	sb.WaitReplayed(t)
	rec, err = s.LookupKey(t.Context(), h)
	if err != nil || rec.Key.RevokedAt == nil {
		t.Fatalf("lookup of the revoked key after replay resumed: %+v, %v", rec, err)
	}
	if got := s.answered(t); got != 2 {
		t.Errorf("standby lookups = %v, want 2: the caught-up standby answers again", got)
	}
}
