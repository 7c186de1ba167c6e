package usage

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// memStore is one key's remaining in memory, without refill.
type memStore struct {
	mu        sync.Mutex
	remaining int64
}

func (s *memStore) ClaimUses(_ context.Context, _ string, want int64, _ time.Time) (store.UsageClaim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(want, s.remaining)
	s.remaining -= n
	return store.UsageClaim{Limited: true, Granted: n, Remaining: s.remaining}, nil
}

func (s *memStore) ReturnUses(_ context.Context, _ string, _, n int64) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remaining += n
	return true, nil
}

// TestSweep_ASpendRacingTheSweepLosesNoUses: a Spend that loaded a key's
// state just before Sweep forgot it must not claim into the forgotten
// state, where its lease would be neither spent nor given back.
func TestSweep_ASpendRacingTheSweepLosesNoUses(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &memStore{remaining: 1000}
	m := New(Config{Store: s})
	m.Spend(t.Context(), "k", 0, "", 0, now) // a state, holding a lease of 1
	if err := m.Close(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	st := m.state("k")
	st.mu.Lock()
	done := make(chan Result)
	go func() { done <- m.Spend(t.Context(), "k", 0, "", 1, now) }()
	time.Sleep(100 * time.Millisecond) // the Spend has st and waits for its lock
	// What Sweep does to an idle key without a lease, under its lock.
	if st.lease != 0 || !m.keys.CompareAndDelete("k", st) {
		t.Fatal("setup: the state is not sweepable")
	}
	st.gone = true
	st.mu.Unlock()
	if r := <-done; r.Code != "" {
		t.Fatalf("cost 1: %+v", r)
	}
	if err := m.Close(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	if s.remaining != 999 {
		t.Errorf("after one use and Close the store has %d of 999 uses: the lease went to a forgotten state", s.remaining)
	}
}

// TestSweep_ForgetsIdleKeysWhoseLeaseARefillVoided: a lease left over
// when its refill boundary passed is void (Spend would drop it), so an
// idle key holding only such a lease is forgotten like one holding none:
// otherwise every key with a refill that ever had a lease left over stays
// in memory until the process ends.
func TestSweep_ForgetsIdleKeysWhoseLeaseARefillVoided(t *testing.T) {
	now := time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)
	s := &refillStore{memStore: memStore{remaining: 1000}}
	m := New(Config{Store: s})
	m.Spend(t.Context(), "k", 0, "daily", 0, now) // a lease of 1, until midnight
	if m.Held("k") != 1 {
		t.Fatalf("setup: held %d, want 1", m.Held("k"))
	}
	m.Sweep(t.Context(), now.Add(5*time.Minute), 10*time.Minute)
	if _, ok := m.keys.Load("k"); !ok {
		t.Fatal("a key used 5 minutes ago was forgotten")
	}
	m.Sweep(t.Context(), now.Add(2*time.Hour), 10*time.Minute)
	if _, ok := m.keys.Load("k"); ok {
		t.Error("an idle key whose only lease the refill voided is still held")
	}
}

// refillStore answers claims of a key with a daily refill.
type refillStore struct{ memStore }

func (s *refillStore) ClaimUses(ctx context.Context, id string, want int64, now time.Time) (store.UsageClaim, error) {
	c, err := s.memStore.ClaimUses(ctx, id, want, now)
	c.Refill = &keygate.Refill{Interval: keygate.RefillDaily, Amount: 1000}
	return c, err
}
