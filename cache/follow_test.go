package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

type fakeLog struct {
	mu     sync.Mutex
	events []keygate.Event
	pruned int64
}

func (l *fakeLog) add(ev keygate.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev.Seq = int64(len(l.events)) + 1
	l.events = append(l.events, ev)
}

func (l *fakeLog) LatestEventSeq(context.Context) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.events)), nil
}

func (l *fakeLog) Events(_ context.Context, after int64, limit int) ([]keygate.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if after < l.pruned {
		return nil, store.ErrEventsPruned
	}
	var out []keygate.Event
	for _, ev := range l.events {
		if ev.Seq > after && len(out) < limit {
			out = append(out, ev)
		}
	}
	return out, nil
}

type recorder struct {
	applied []int64
	purges  int
}

func (r *recorder) Apply(ev keygate.Event) { r.applied = append(r.applied, ev.Seq) }
func (r *recorder) Purge()                 { r.purges++ }
func (r *recorder) MarkSynced(time.Time)   {}

func TestFollower_AppliesEventsAfterStartInOrder(t *testing.T) {
	log := &fakeLog{}
	log.add(keygate.Event{Kind: keygate.EventKeyCreated}) // before start: not applied
	rec := &recorder{}
	f, err := NewFollower(log, rec, time.Second, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < eventBatch+5; i++ {
		log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	}
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if len(rec.applied) != eventBatch+5 || rec.applied[0] != 2 || rec.applied[len(rec.applied)-1] != eventBatch+6 {
		t.Fatalf("applied %d events from %v to %v; want seq 2..%d", len(rec.applied), rec.applied[0], rec.applied[len(rec.applied)-1], eventBatch+6)
	}
	if got, want := f.LastSeq(), int64(eventBatch+6); got != want {
		t.Errorf("LastSeq = %d, want %d", got, want)
	}
}

func TestFollower_PrunedLogPurgesTheCache(t *testing.T) {
	log := &fakeLog{}
	rec := &recorder{}
	f, err := NewFollower(log, rec, time.Second, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	}
	log.pruned = 2 // events 1 and 2 are gone before the follower read them
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(recorder{purges: 1}, *rec, cmp.AllowUnexported(recorder{})); diff != "" {
		t.Errorf("after a pruned read (-want +got):\n%s", diff)
	}
	log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int64{4}, rec.applied); diff != "" {
		t.Errorf("applied after purge (-want +got):\n%s", diff)
	}
}

func TestFollower_RunPollsUntilContextEnds(t *testing.T) {
	log := &fakeLog{}
	c := newTestCache(t, newFakeStore(), nil)
	f, err := NewFollower(log, c, 5*time.Millisecond, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	log.add(keygate.Event{Kind: keygate.EventKeyRevoked, Hashes: []keygate.Hash{hashOf("x")}})
	deadline := time.Now().Add(5 * time.Second)
	for f.LastSeq() != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil at context end", err)
	}
	if f.LastSeq() != 1 {
		t.Errorf("LastSeq = %d, want 1", f.LastSeq())
	}
}

func TestFollower_ConcurrentSyncsApplyEachEventOnce(t *testing.T) {
	log := &fakeLog{}
	rec := &countingInvalidator{}
	f, err := NewFollower(log, rec, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 500; i++ {
		log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Sync(context.Background()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := rec.n.Load(); got != 500 {
		t.Errorf("events applied = %d, want 500 (each once)", got)
	}
	if f.LastSeq() != 500 {
		t.Errorf("LastSeq = %d, want 500", f.LastSeq())
	}
}

type countingInvalidator struct{ n atomic.Int64 }

func (c *countingInvalidator) Apply(keygate.Event)  { c.n.Add(1) }
func (c *countingInvalidator) Purge()               {}
func (c *countingInvalidator) MarkSynced(time.Time) {}
