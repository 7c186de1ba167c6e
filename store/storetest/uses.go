package storetest

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// The usage-limit cases (SPEC §9), run by Run.

func withUsage(remaining *int64, refill *keygate.Refill) func(*store.NewKey) {
	return func(nk *store.NewKey) { nk.Remaining, nk.Refill = remaining, refill }
}

func (e *env) claim(t *testing.T, id string, want int64, now time.Time) store.UsageClaim {
	t.Helper()
	c, err := e.s.ClaimUses(e.ctx, id, want, now)
	if err != nil {
		t.Fatalf("ClaimUses(%s, %d): %v", id, want, err)
	}
	return c
}

func (e *env) remaining(t *testing.T, org, id string) *int64 {
	t.Helper()
	k, err := e.s.GetKey(e.ctx, org, id)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	return k.Remaining
}

func testUsageClaimTakesAtMostRemaining(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](10), nil)))
	if k.Remaining == nil || *k.Remaining != 10 || k.Refill != nil {
		t.Fatalf("created remaining %v refill %v, want 10 and none", k.Remaining, k.Refill)
	}
	now := e.clock.Now()
	for _, step := range []struct{ want, granted, left int64 }{{4, 4, 6}, {10, 6, 0}, {1, 0, 0}} {
		c := e.claim(t, k.ID, step.want, now)
		if !c.Limited || c.Granted != step.granted || c.Remaining != step.left || c.Epoch != k.UsageEpoch {
			t.Errorf("claim %d: %+v, want granted %d remaining %d epoch %d", step.want, c, step.granted, step.left, k.UsageEpoch)
		}
	}
	if got := e.remaining(t, "acme", k.ID); got == nil || *got != 0 {
		t.Errorf("GetKey remaining %v, want 0", got)
	}
	free := e.key(t, newKey(t, "acme"))
	if c := e.claim(t, free.ID, 5, now); c.Limited {
		t.Errorf("claim of an unlimited key: %+v, want Limited false", c)
	}
	_, err := e.s.ClaimUses(e.ctx, "key_unknown", 1, now)
	wantErr(t, "claim of an unknown key", err, keygate.ErrNotFound)
	if _, err := e.s.RevokeKey(e.ctx, "acme", k.ID, cli); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.ClaimUses(e.ctx, k.ID, 1, now)
	wantErr(t, "claim of a revoked key", err, keygate.ErrNotFound)
}

func testUsageConcurrentClaimsNeverOverdraw(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](100), nil)))
	var total atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				c, err := e.s.ClaimUses(e.ctx, k.ID, 3, e.clock.Now())
				if err != nil {
					t.Error(err)
					return
				}
				if c.Granted == 0 {
					return
				}
				total.Add(c.Granted)
			}
		})
	}
	wg.Wait()
	if got := total.Load(); got != 100 {
		t.Errorf("concurrent claims granted %d uses in total, want exactly 100", got)
	}
}

func testUsageRefillOncePerPeriod(t *testing.T, e *env) {
	e.org(t, "acme")
	// The suite's clock is 2026-11-22 10:00 UTC.
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](2), &keygate.Refill{Interval: keygate.RefillDaily, Amount: 5})))
	day := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	if c := e.claim(t, k.ID, 10, day.Add(23*time.Hour+59*time.Minute)); c.Granted != 2 || c.Epoch != k.UsageEpoch {
		t.Fatalf("claim before midnight: %+v, want the 2 left, no refill", c)
	}
	next := day.AddDate(0, 0, 1) // 00:00 UTC exactly: the refill is due
	c := e.claim(t, k.ID, 1, next)
	if c.Granted != 1 || c.Remaining != 4 || c.Epoch != k.UsageEpoch+1 {
		t.Fatalf("claim at 00:00: %+v, want 1 granted of a refill to 5, epoch %d", c, k.UsageEpoch+1)
	}
	if c := e.claim(t, k.ID, 1, next.Add(time.Hour)); c.Remaining != 3 || c.Epoch != k.UsageEpoch+1 {
		t.Fatalf("second claim of the day: %+v, want no second refill", c)
	}
	// Reads show remaining after a due refill, without a claim.
	e.clock.Advance(48 * time.Hour)
	if got := e.remaining(t, "acme", k.ID); got == nil || *got != 5 {
		t.Errorf("GetKey two days later: remaining %v, want 5 (refilled)", got)
	}
	page, err := e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme"})
	if err != nil || len(page.Keys) != 1 || page.Keys[0].Remaining == nil || *page.Keys[0].Remaining != 5 {
		t.Errorf("ListKeys two days later: %+v, %v; want remaining 5", page.Keys, err)
	}

	// Monthly, across a leap February: Jan 31 → Feb 1 → Feb 29 → Mar 1.
	m := e.key(t, newKey(t, "acme", withUsage(ptr[int64](0), &keygate.Refill{Interval: keygate.RefillMonthly, Amount: 3})))
	for _, step := range []struct {
		at      time.Time
		granted int64
	}{
		{time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC), 0},
		{time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), 1},
		{time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), 1},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), 1}, // refill again: 3 → 2 left
		{time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), 1},
		{time.Date(2027, 2, 28, 23, 59, 0, 0, time.UTC), 1}, // refilled on 1 February: 2 left
	} {
		if c := e.claim(t, m.ID, 1, step.at); c.Granted != step.granted {
			t.Errorf("monthly claim at %s: %+v, want %d granted", step.at, c, step.granted)
		}
	}
	// February 2027 refilled to 3 on Feb 1 (at the last claim), 2 left;
	// on 1 March it is 3 again.
	if c := e.claim(t, m.ID, 10, time.Date(2027, 2, 28, 23, 59, 59, 0, time.UTC)); c.Granted != 2 {
		t.Errorf("end of February: %+v, want the 2 left", c)
	}
	if c := e.claim(t, m.ID, 10, time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)); c.Granted != 3 {
		t.Errorf("1 March: %+v, want a refill to 3", c)
	}
}

func testUsageReturnOnlyInTheSameEpoch(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](10), nil)))
	c := e.claim(t, k.ID, 5, e.clock.Now())
	ok, err := e.s.ReturnUses(e.ctx, k.ID, c.Epoch, 2)
	if err != nil || !ok {
		t.Fatalf("ReturnUses same epoch: %v, %v; want taken back", ok, err)
	}
	if got := e.remaining(t, "acme", k.ID); *got != 7 {
		t.Errorf("remaining after a return of 2: %d, want 7", *got)
	}
	u, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Remaining: ptr[int64](3)}, cli)
	if err != nil {
		t.Fatal(err)
	}
	if u.UsageEpoch != c.Epoch+1 || *u.Remaining != 3 {
		t.Errorf("PATCH remaining 3: epoch %d remaining %d, want epoch %d and 3", u.UsageEpoch, *u.Remaining, c.Epoch+1)
	}
	// The lease of the old epoch is void: its return adds nothing.
	if ok, err := e.s.ReturnUses(e.ctx, k.ID, c.Epoch, 3); err != nil || ok {
		t.Errorf("ReturnUses of a voided lease: %v, %v; want refused", ok, err)
	}
	if got := e.remaining(t, "acme", k.ID); *got != 3 {
		t.Errorf("remaining after a void return: %d, want 3", *got)
	}
	// Refill and clearing round-trip.
	u, err = e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Refill: &keygate.Refill{Interval: keygate.RefillMonthly, Amount: 9}}, cli)
	if err != nil || u.Refill == nil || *u.Refill != (keygate.Refill{Interval: keygate.RefillMonthly, Amount: 9}) || *u.Remaining != 3 {
		t.Errorf("PATCH refill: %+v, %v", u, err)
	}
	u, err = e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{ClearRemaining: true}, cli)
	if err != nil || u.Remaining != nil || u.Refill != nil {
		t.Errorf("PATCH remaining null: remaining %v refill %v, %v; want both null", u.Remaining, u.Refill, err)
	}
	if c := e.claim(t, k.ID, 1, e.clock.Now()); c.Limited {
		t.Errorf("claim after remaining null: %+v, want unlimited", c)
	}
}

func testUsageDebitInCreate(t *testing.T, e *env) {
	e.org(t, "acme")
	payer := e.key(t, newKey(t, "acme", withUsage(ptr[int64](100), nil)))
	debit := func(n int64) func(*store.NewKey) {
		return func(nk *store.NewKey) {
			nk.Remaining = ptr(n)
			nk.Debit = &store.Debit{KeyID: payer.ID, Uses: n}
		}
	}
	e.key(t, newKey(t, "acme", debit(60)))
	_, err := e.s.CreateKey(e.ctx, newKey(t, "acme", debit(60)), cli)
	wantErr(t, "a debit beyond the payer's remaining", err, store.ErrInsufficientUses)
	if got := e.remaining(t, "acme", payer.ID); *got != 40 {
		t.Errorf("payer remaining %d, want 40", *got)
	}
	page, _ := e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme"})
	if len(page.Keys) != 2 {
		t.Errorf("%d keys, want 2: a refused debit creates nothing", len(page.Keys))
	}
	free := e.key(t, newKey(t, "acme"))
	_, err = e.s.CreateKey(e.ctx, newKey(t, "acme", func(nk *store.NewKey) {
		nk.Remaining = ptr[int64](1)
		nk.Debit = &store.Debit{KeyID: free.ID, Uses: 1}
	}), cli)
	wantErr(t, "a debit of an unlimited key", err, store.ErrInsufficientUses)

	// Concurrent creations never overdraw: 40 left, ten ask for 15.
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			_, err := e.s.CreateKey(e.ctx, newKey(t, "acme", debit(15)), cli)
			switch {
			case err == nil:
				ok.Add(1)
			case !errors.Is(err, store.ErrInsufficientUses):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 2 {
		t.Errorf("%d concurrent creations of 15 from 40 succeeded, want 2", ok.Load())
	}
	if got := e.remaining(t, "acme", payer.ID); *got != 10 {
		t.Errorf("payer remaining %d, want 10", *got)
	}
}

// testUsageConcurrentClaimsRefillOnce: many replicas claiming at the
// refill boundary refill the key exactly once.
func testUsageConcurrentClaimsRefillOnce(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](0), &keygate.Refill{Interval: keygate.RefillDaily, Amount: 100})))
	boundary := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC) // the suite's clock is the 22nd
	var total atomic.Int64
	epochs := sync.Map{}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for {
				c, err := e.s.ClaimUses(e.ctx, k.ID, 7, boundary.Add(time.Duration(i)*time.Millisecond))
				if err != nil {
					t.Error(err)
					return
				}
				epochs.Store(c.Epoch, true)
				if c.Granted == 0 {
					return
				}
				total.Add(c.Granted)
			}
		})
	}
	wg.Wait()
	if got := total.Load(); got != 100 {
		t.Errorf("claims at the boundary granted %d uses, want exactly one refill of 100", got)
	}
	epochs.Range(func(ep, _ any) bool {
		if ep.(int64) != k.UsageEpoch+1 {
			t.Errorf("a claim answered epoch %d, want only %d (one refill)", ep, k.UsageEpoch+1)
		}
		return true
	})
}

// testUsageClaimsRacingPatchesStayWithinEachEpoch: claims racing PATCHes
// of remaining never grant, in the epoch a PATCH starts, more than the
// value it set (SPEC §9), nor fail.
func testUsageClaimsRacingPatchesStayWithinEachEpoch(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", withUsage(ptr[int64](0), nil)))
	var (
		mu      sync.Mutex
		granted = map[int64]int64{} // epoch → uses granted in it
		set     = map[int64]int64{} // epoch → the value that started it
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	set[k.UsageEpoch] = 0
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				c, err := e.s.ClaimUses(e.ctx, k.ID, 2, e.clock.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				granted[c.Epoch] += c.Granted
				mu.Unlock()
			}
		})
	}
	for i := range 8 {
		n := int64(5 + i%3)
		u, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Remaining: &n}, cli)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		set[u.UsageEpoch] = n
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	for epoch, n := range granted {
		v, ok := set[epoch]
		if !ok {
			t.Errorf("claims granted %d uses in epoch %d, which no PATCH started", n, epoch)
		} else if n > v {
			t.Errorf("claims granted %d uses in epoch %d, started with %d", n, epoch, v)
		}
	}
}
