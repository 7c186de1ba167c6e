package cache

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

// positionProbe records, at each invalidation, the follower's Position as
// a lookup racing that invalidation would read it.
type positionProbe struct {
	f      *Follower
	during map[int64]int64 // event seq (0: purge) → Position seen while applying it
}

func (p *positionProbe) Apply(ev keygate.Event) { p.during[ev.Seq] = p.f.Position() }
func (p *positionProbe) Purge()                 { p.during[0] = p.f.Position() }
func (p *positionProbe) MarkSynced(time.Time)   {}

// TestFollower_PositionCoversTheInvalidationInProgress pins what the
// standby lookup relies on: while an event's invalidation runs, Position
// is already that event's sequence (and the log's end during a purge), so
// a load that began after the invalidation never accepts a standby that
// has not replayed it.
func TestFollower_PositionCoversTheInvalidationInProgress(t *testing.T) {
	log := &fakeLog{}
	log.add(keygate.Event{Kind: keygate.EventKeyCreated})
	probe := &positionProbe{during: map[int64]int64{}}
	f, err := NewFollower(log, probe, time.Second, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	probe.f = f
	ctx := context.Background()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.Position(); got != 1 {
		t.Errorf("Position after Start = %d, want the log's end, 1", got)
	}
	log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []int64{2, 3} {
		if got := probe.during[seq]; got < seq {
			t.Errorf("Position while applying event %d = %d, want at least %d", seq, got, seq)
		}
	}

	// Pruned past the follower: the purge happens at the log's new end.
	for i := 0; i < 3; i++ {
		log.add(keygate.Event{Kind: keygate.EventKeyRevoked})
	}
	log.mu.Lock()
	log.pruned = 6
	log.mu.Unlock()
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := probe.during[0]; got < 6 {
		t.Errorf("Position during the purge = %d, want at least 6", got)
	}
	if got := f.Position(); got != 6 {
		t.Errorf("Position after the purge = %d, want 6", got)
	}
}
