package fleet

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/store"
)

// fakeRegistry answers Replicas with one live replica at applied and
// counts the reads.
type fakeRegistry struct {
	mu      sync.Mutex
	applied int64
	reads   int
}

func (f *fakeRegistry) ReportReplica(context.Context, store.Replica) error { return nil }
func (f *fakeRegistry) DeregisterReplica(context.Context, string) error    { return nil }
func (f *fakeRegistry) ForgetReplicas(context.Context, time.Duration) (int64, error) {
	return 0, nil
}

func (f *fakeRegistry) Replicas(context.Context, time.Duration) ([]store.ReplicaStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return []store.ReplicaStatus{{Replica: store.Replica{ID: "rep_a", AppliedSeq: f.applied}, Live: true}}, nil
}

func (f *fakeRegistry) set(applied int64) {
	f.mu.Lock()
	f.applied = applied
	f.mu.Unlock()
}

func (f *fakeRegistry) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func TestWait_NoTightPollingAndANotificationEndsTheWaitAtOnce(t *testing.T) {
	reg := &fakeRegistry{}
	notifyc := make(chan func(), 1)
	listen := func(ctx context.Context, notify func()) error {
		notifyc <- notify
		<-ctx.Done()
		return nil
	}
	w := NewWaiter(reg, listen, time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = w.Run(ctx) }()

	// No report: a second of waiting reads the registry about once per
	// FallbackPoll, never in a tight loop.
	p, err := w.Wait(ctx, 5, time.Second)
	if err != nil || p.Complete || len(p.Pending) != 1 {
		t.Fatalf("Wait = %+v, %v; want rep_a pending", p, err)
	}
	if n := reg.count(); n < 2 || n > 6 {
		t.Errorf("%d registry reads in a 1 s wait, want about 1 per %v", n, FallbackPoll)
	}

	notify := <-notifyc // the LISTEN connection Run opened for the waits
	done := make(chan Propagation)
	go func() {
		p, _ := w.Wait(ctx, 5, 10*time.Second)
		done <- p
	}()
	time.Sleep(50 * time.Millisecond)
	reg.set(5)
	notified := time.Now()
	notify()
	select {
	case p := <-done:
		if !p.Complete || p.Applied != 1 {
			t.Errorf("propagation %+v, want complete", p)
		}
		if took := time.Since(notified); took > FallbackPoll/2 {
			t.Errorf("wait ended %v after the notification", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not end")
	}
}
