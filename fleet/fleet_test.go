package fleet_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/store/postgres"
)

func openStore(t *testing.T) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: pgtest.NewDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

// replica is a Reporter whose applied position the test sets.
type replica struct {
	*fleet.Reporter
	applied atomic.Int64
	stop    func()
}

func startReporter(t *testing.T, st *postgres.Store, heartbeat time.Duration) *replica {
	t.Helper()
	r := &replica{}
	rep, err := fleet.NewReporter(fleet.ReporterConfig{Registry: st, Applied: r.applied.Load,
		Hostname: "host", Version: "test", Heartbeat: heartbeat, LiveWithin: time.Second, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	r.Reporter = rep
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rep.Run(ctx) }()
	r.stop = func() { cancel(); <-done }
	t.Cleanup(r.stop)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		list, err := st.Replicas(context.Background(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range list {
			if x.ID == rep.ID() {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("reporter never registered")
		}
	}
}

func TestFleet_WaitReturnsWhenEveryLiveReplicaApplied(t *testing.T) {
	st := openStore(t)
	a, b := startReporter(t, st, time.Hour), startReporter(t, st, time.Hour)
	w := fleet.NewWaiter(st, st.ListenReplicas, time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()

	a.applied.Store(7)
	go func() {
		time.Sleep(100 * time.Millisecond)
		b.applied.Store(7)
	}()
	start := time.Now()
	p, err := w.Wait(ctx, 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeats are an hour apart: only the prompt report of the applied
	// position and its notification can have ended the wait this soon.
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("wait took %v", took)
	}
	p.MS = 0
	if diff := cmp.Diff(fleet.Propagation{Replicas: 2, Applied: 2, Pending: []string{}, Complete: true}, p); diff != "" {
		t.Errorf("propagation (-want +got):\n%s", diff)
	}
}

func TestFleet_WaitTimesOutNamingThePendingReplica(t *testing.T) {
	st := openStore(t)
	a, b := startReporter(t, st, time.Hour), startReporter(t, st, time.Hour)
	w := fleet.NewWaiter(st, nil, time.Second, nil) // fallback poll only
	a.applied.Store(3)
	p, err := w.Wait(context.Background(), 3, 500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if p.Complete || p.Replicas != 2 || p.Applied != 1 || len(p.Pending) != 1 || p.Pending[0] != b.ID() {
		t.Errorf("propagation %+v, want 1 of 2 applied, pending %s", p, b.ID())
	}
	if p.MS < 500 {
		t.Errorf("ms %d, want the timeout (500)", p.MS)
	}
}

func TestFleet_ReplicaStopsBeingLiveAfterTheWindowAndIsGoneWhenStopped(t *testing.T) {
	st := openStore(t)
	a := startReporter(t, st, 50*time.Millisecond)
	b := startReporter(t, st, time.Hour)
	ctx := context.Background()
	time.Sleep(400 * time.Millisecond)
	list, err := st.Replicas(ctx, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]bool{}
	for _, r := range list {
		live[r.ID] = r.Live
	}
	if want := map[string]bool{a.ID(): true, b.ID(): false}; !cmp.Equal(live, want) {
		t.Errorf("live %v, want %v (b reports only hourly)", live, want)
	}
	a.stop()
	list, err = st.Replicas(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != b.ID() {
		t.Errorf("after a stopped: %+v, want b alone", list)
	}
	if n, err := st.ForgetReplicas(ctx, 0); err != nil || n != 1 {
		t.Errorf("ForgetReplicas = %d, %v; want b forgotten", n, err)
	}
}
