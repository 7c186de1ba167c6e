package usage_test

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/usage"
)

// fullStore is the store the tests create keys in and lease from.
type fullStore interface {
	usage.Store
	CreateOrganization(ctx context.Context, id string, by keygate.Actor) (keygate.Organization, error)
	CreateKey(ctx context.Context, k store.NewKey, by keygate.Actor) (keygate.Key, error)
	UpdateKey(ctx context.Context, orgID, id string, u store.KeyUpdate, by keygate.Actor) (keygate.Key, error)
	GetKey(ctx context.Context, orgID, id string) (keygate.Key, error)
	Migrate(ctx context.Context) error
}

// replicas opens n stores on one fresh PostgreSQL database: n replicas.
func replicas(t *testing.T, n int) []fullStore {
	t.Helper()
	url := pgtest.NewDatabase(t)
	var out []fullStore
	for range n {
		s, err := postgres.Open(t.Context(), postgres.Config{URL: url})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		out = append(out, s)
	}
	if err := out[0].Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return out
}

func embedded(t *testing.T, now func() time.Time) fullStore {
	t.Helper()
	s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "keygate.db"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func createKey(t *testing.T, s fullStore, remaining int64, refill *keygate.Refill) keygate.Key {
	t.Helper()
	if _, err := s.CreateOrganization(t.Context(), "acme", keygate.Actor{}); err != nil && keygate.ErrorCode(err) != keygate.CodeConflict {
		t.Fatal(err)
	}
	id, _ := apikey.NewKeyID()
	tok, _ := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
	k, err := s.CreateKey(t.Context(), store.NewKey{
		ID: id, OrgID: "acme", UserID: "alice", Name: "metered", Type: keygate.Secret, Environment: keygate.Live,
		Scopes: []string{"read"}, Remaining: &remaining, Refill: refill,
		Token: store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()},
	}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hammer sends requests from callers goroutines, each sending perCaller
// requests round-robin over the managers still alive, and counts allows
// and usage_exceeded denies. kill, when set, is called after a tenth of the
// requests: the replica it names stops answering at once (its lease lost,
// as with SIGKILL).
func hammer(t *testing.T, ms []*usage.Manager, k keygate.Key, callers, perCaller int, kill func() int) (allowed, exceeded int64) {
	t.Helper()
	var (
		allow, deny atomic.Int64
		dead        atomic.Int64
		sent        atomic.Int64
		once        sync.Once
		wg          sync.WaitGroup
	)
	dead.Store(-1)
	total := int64(callers * perCaller)
	for c := range callers {
		wg.Go(func() {
			for i := range perCaller {
				if kill != nil && sent.Add(1) == total/10 {
					once.Do(func() { dead.Store(int64(kill())) })
				}
				r := (c + i) % len(ms)
				if int64(r) == dead.Load() {
					r = (r + 1) % len(ms)
				}
				res := ms[r].Spend(t.Context(), k.ID, k.UsageEpoch, "", 1, time.Now())
				switch res.Code {
				case "":
					allow.Add(1)
				case keygate.CodeUsageExceeded:
					deny.Add(1)
				default:
					t.Errorf("Spend: %s", res.Code)
				}
			}
		})
	}
	wg.Wait()
	return allow.Load(), deny.Load()
}

// TestSpend_TwoReplicasAllowExactlyRemaining is the exactness test of SPEC
// §9: two replicas on one PostgreSQL database and 64 concurrent callers
// spend a key with remaining 500. Every use is allowed exactly once.
func TestSpend_TwoReplicasAllowExactlyRemaining(t *testing.T) {
	st := replicas(t, 2)
	k := createKey(t, st[0], 500, nil)
	c0, c1 := &counting{Store: st[0]}, &counting{Store: st[1]}
	ms := []*usage.Manager{usage.New(usage.Config{Store: c0}), usage.New(usage.Config{Store: c1})}
	allowed, exceeded := hammer(t, ms, k, 64, 20, nil)
	if allowed != 500 || exceeded != 64*20-500 {
		t.Errorf("allowed %d, usage_exceeded %d; want exactly 500 and %d", allowed, exceeded, 64*20-500)
	}
	claims := c0.claims.Load() + c1.claims.Load()
	t.Logf("%d requests, %d allowed, %d claims (database writes)", 64*20, allowed, claims)
	if claims >= allowed {
		t.Errorf("%d claims for %d allows: request rate drives the write rate one to one", claims, allowed)
	}
	if got, _ := st[0].GetKey(t.Context(), "acme", k.ID); *got.Remaining != 0 {
		t.Errorf("remaining in the store %d, want 0", *got.Remaining)
	}
}

// TestSpend_AKilledReplicaNeverGrantsExtraUses: a replica that stops
// mid-run without giving its lease back (SIGKILL) loses those uses; the
// total never passes remaining.
func TestSpend_AKilledReplicaNeverGrantsExtraUses(t *testing.T) {
	st := replicas(t, 2)
	k := createKey(t, st[0], 500, nil)
	ms := []*usage.Manager{usage.New(usage.Config{Store: st[0]}), usage.New(usage.Config{Store: st[1]})}
	var lost int64
	allowed, _ := hammer(t, ms, k, 64, 20, func() int {
		lost = ms[1].Held(k.ID) // what dies with it
		return 1
	})
	if allowed > 500 {
		t.Fatalf("allowed %d uses of 500 with a replica killed", allowed)
	}
	t.Logf("allowed %d of 500; the killed replica held about %d", allowed, lost)
}

// TestSpend_PatchVoidsLeasesOfTheOldEpoch: after a PATCH of remaining,
// the uses allowed by all replicas never exceed the new value, though one
// held a large lease of the old epoch.
func TestSpend_PatchVoidsLeasesOfTheOldEpoch(t *testing.T) {
	st := replicas(t, 2)
	k := createKey(t, st[0], 1000, nil)
	a := usage.New(usage.Config{Store: st[0]})
	b := usage.New(usage.Config{Store: st[1]})
	reg := prometheus.NewRegistry()
	if err := a.Register(reg); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 100 { // a's lease grows while it spends fast
		if r := a.Spend(t.Context(), k.ID, k.UsageEpoch, "", 1, now); r.Code != "" {
			t.Fatal(r.Code)
		}
	}
	if a.Held(k.ID) == 0 {
		t.Fatal("replica a holds no lease; the test needs one")
	}
	held := a.Held(k.ID)
	u, err := st[1].UpdateKey(t.Context(), "acme", k.ID, store.KeyUpdate{Remaining: ptr[int64](5)}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for i := range 40 {
		m := a
		if i%2 == 1 {
			m = b
		}
		// Both replicas have heard of the PATCH: their views are of the
		// new epoch.
		if r := m.Spend(t.Context(), k.ID, u.UsageEpoch, "", 1, now); r.Code == "" {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("allowed %d uses after PATCH remaining 5, want 5", allowed)
	}
	if got := metric(t, reg, "keygate_usage_voided_uses_total"); got != float64(held) {
		t.Errorf("voided %v uses, want a's old lease of %d", got, held)
	}
	// a's old lease is void: giving it back on shutdown adds nothing.
	if err := a.Close(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	if got, _ := st[0].GetKey(t.Context(), "acme", k.ID); *got.Remaining != 0 {
		t.Errorf("remaining %d after a's shutdown, want 0", *got.Remaining)
	}
}

// TestSpend_CloseGivesUnspentLeasesBack: a graceful shutdown returns the
// lease to its epoch.
func TestSpend_CloseGivesUnspentLeasesBack(t *testing.T) {
	st := replicas(t, 1)
	k := createKey(t, st[0], 1000, nil)
	m := usage.New(usage.Config{Store: st[0]})
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for range 50 {
		m.Spend(t.Context(), k.ID, k.UsageEpoch, "", 1, now)
	}
	held := m.Held(k.ID)
	if held == 0 {
		t.Fatal("no lease held")
	}
	if err := m.Close(t.Context(), now); err != nil {
		t.Fatal(err)
	}
	if got, _ := st[0].GetKey(t.Context(), "acme", k.ID); *got.Remaining != 950 {
		t.Errorf("remaining %d after a graceful shutdown, want 950 (every unspent use given back)", *got.Remaining)
	}
	// The metrics tell the same story: what was claimed, spent and
	// given back, and fewer claims than uses.
	claims, claimed, returned := metric(t, reg, "keygate_usage_claims_total"), metric(t, reg, "keygate_usage_claimed_uses_total"),
		metric(t, reg, "keygate_usage_returned_uses_total")
	if claimed != 50+float64(held) || returned != float64(held) || claims < 1 || claims >= 50 {
		t.Errorf("claims %v, claimed %v, returned %v; want claimed = 50 spent + %d held = returned + 50, and fewer claims than uses", claims, claimed, returned, held)
	}
}

// metric is the value of the counter name in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func ptr[T any](v T) *T { return &v }

// counting counts the claims a manager makes of its store.
type counting struct {
	usage.Store
	claims atomic.Int64
}

func (c *counting) ClaimUses(ctx context.Context, keyID string, want int64, now time.Time) (store.UsageClaim, error) {
	c.claims.Add(1)
	return c.Store.ClaimUses(ctx, keyID, want, now)
}

// TestSpend_RefillAtMidnightUTC drives a daily refill with an injected
// clock: spent at 23:59:59 (retry-after 1 s), allowed again at 00:00.
func TestSpend_RefillAtMidnightUTC(t *testing.T) {
	now := time.Date(2026, 12, 6, 23, 59, 59, 0, time.UTC)
	s := embedded(t, func() time.Time { return now })
	k := createKey(t, s, 3, &keygate.Refill{Interval: keygate.RefillDaily, Amount: 3})
	m := usage.New(usage.Config{Store: s})
	for i := range 3 {
		if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillDaily, 1, now); r.Code != "" || r.Remaining != int64(2-i) {
			t.Fatalf("use %d: %+v, want allowed with %d remaining", i+1, r, 2-i)
		}
	}
	r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillDaily, 1, now)
	if r.Code != keygate.CodeUsageExceeded || r.RetryAfter != time.Second {
		t.Fatalf("4th use: %+v, want usage_exceeded with retry-after 1s", r)
	}
	now = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillDaily, 1, now); r.Code != "" || r.Remaining != 2 {
		t.Fatalf("at 00:00 UTC: %+v, want allowed after the refill, 2 remaining", r)
	}
}

func TestSpend_MonthlyRefillAcrossALeapFebruary(t *testing.T) {
	now := time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC)
	s := embedded(t, func() time.Time { return now })
	k := createKey(t, s, 1, &keygate.Refill{Interval: keygate.RefillMonthly, Amount: 2})
	m := usage.New(usage.Config{Store: s})
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillMonthly, 1, now); r.Code != "" {
		t.Fatal(r.Code)
	}
	r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillMonthly, 1, now)
	if r.Code != keygate.CodeUsageExceeded || r.RetryAfter != 12*time.Hour {
		t.Fatalf("spent on 29 February noon: %+v, want usage_exceeded, retry-after 12h (1 March 00:00)", r)
	}
	now = time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 2 {
		if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillMonthly, 1, now); r.Code != "" {
			t.Fatalf("1 March use %d: %+v, want allowed (refilled to 2)", i+1, r)
		}
	}
	r = m.Spend(t.Context(), k.ID, k.UsageEpoch, keygate.RefillMonthly, 1, now)
	if want := 31 * 24 * time.Hour; r.Code != keygate.CodeUsageExceeded || r.RetryAfter != want {
		t.Fatalf("spent on 1 March: %+v, want retry-after %s (1 April)", r, want)
	}
}

func TestSpend_CostZeroAndCostBeyondRemaining(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := embedded(t, func() time.Time { return now })
	k := createKey(t, s, 5, nil)
	m := usage.New(usage.Config{Store: s, Recheck: time.Nanosecond})
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, "", 6, now); r.Code != keygate.CodeUsageExceeded || r.RetryAfter != 0 {
		t.Fatalf("cost 6 of 5: %+v, want usage_exceeded without retry-after (no refill)", r)
	}
	now = now.Add(time.Millisecond)
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, "", 5, now); r.Code != "" || r.Remaining != 0 {
		t.Fatalf("cost 5 of 5 after a denied cost 6: %+v, want allowed, 0 remaining (a deny spends nothing)", r)
	}
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, "", 0, now); r.Code != "" {
		t.Fatalf("cost 0 of 0: %+v, want allowed", r)
	}
	if r := m.Spend(t.Context(), k.ID, k.UsageEpoch, "", 1, now); r.Code != keygate.CodeUsageExceeded {
		t.Fatalf("cost 1 of 0: %+v, want usage_exceeded", r)
	}
}

func TestSweep_GivesBackIdleLeasesAndForgetsIdleKeys(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := embedded(t, func() time.Time { return now })
	spent := createKey(t, s, 1, nil)
	held := createKey(t, s, 1000, nil)
	m := usage.New(usage.Config{Store: s})
	m.Spend(t.Context(), spent.ID, spent.UsageEpoch, "", 1, now)
	m.Spend(t.Context(), held.ID, held.UsageEpoch, "", 1, now)
	m.Spend(t.Context(), held.ID, held.UsageEpoch, "", 1, now) // a lease of 2: 1 left
	if err := m.Sweep(t.Context(), now.Add(5*time.Minute), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := m.Held(held.ID); got != 1 {
		t.Errorf("a key used 5 minutes ago lost its lease: held %d, want 1", got)
	}
	if err := m.Sweep(t.Context(), now.Add(time.Hour), 10*time.Minute); err != nil {
		t.Fatal(err)
	}
	// The idle key's unspent use is back in the store, not stranded.
	if got, _ := s.GetKey(t.Context(), "acme", held.ID); *got.Remaining != 1000-2 {
		t.Errorf("remaining %d after the sweep, want %d (the unspent use given back)", *got.Remaining, 1000-2)
	}
	if got := m.Held(held.ID); got != 0 {
		t.Errorf("held %d after the sweep, want 0", got)
	}
	// The swept key is asked of the store again: still spent.
	if r := m.Spend(t.Context(), spent.ID, spent.UsageEpoch, "", 1, now.Add(time.Hour)); r.Code != keygate.CodeUsageExceeded {
		t.Errorf("swept, spent key: %+v, want usage_exceeded", r)
	}
}
