package manage

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/store/postgres"
)

// usageStores are both stores, each fresh and migrated.
func usageStores(t *testing.T) map[string]Store {
	t.Helper()
	pg, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.NewDatabase(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	if err := pg.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return map[string]Store{"sqlite": liteStore(t), "postgres": pg}
}

// meteredCaller is an owner key of acme with remaining uses and refill.
func meteredCaller(t *testing.T, svc *Service, remaining int64, refill *keygate.Refill) Caller {
	t.Helper()
	ck, err := svc.CreateKey(t.Context(), NewKey{OrgID: "acme", UserID: "alice", Name: "metered", Role: "owner",
		Remaining: &remaining, Refill: refill, CreateOrganization: true}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return Caller{Key: ck.Key}
}

// TestCreateKeyAs_UsageLimitedCallerCannotMintUses is the attack of SPEC
// §9: a caller with 100 uses cannot mint ten keys of 100, and concurrent
// creations cannot overdraw it.
func TestCreateKeyAs_UsageLimitedCallerCannotMintUses(t *testing.T) {
	for name, st := range usageStores(t) {
		t.Run(name, func(t *testing.T) {
			svc := New(st, apikey.DefaultFormat(), time.Now)
			c := meteredCaller(t, svc, 100, nil)
			made := 0
			for range 10 {
				_, err := svc.CreateKeyAs(t.Context(), c, CreateRequest{Name: "child", Remaining: Nullable[int64]{Set: true, Value: 100}})
				switch keygate.ErrorCode(err) {
				case "":
					made++
				case keygate.CodeInsufficientPermissions:
				default:
					t.Fatal(err)
				}
			}
			if made != 1 {
				t.Errorf("a caller with 100 uses minted %d keys of 100, want 1", made)
			}
			k, _ := st.GetKey(t.Context(), "acme", c.Key.ID)
			if *k.Remaining != 0 {
				t.Errorf("caller's remaining %d after minting 100, want 0", *k.Remaining)
			}

			// Unlimited children, or none given: refused.
			for _, r := range []Nullable[int64]{{}, {Set: true, Null: true}} {
				_, err := svc.CreateKeyAs(t.Context(), c, CreateRequest{Name: "child", Remaining: r})
				if e := usageErr(err); e == nil || e.Code != keygate.CodeInsufficientPermissions || e.Param != "remaining" {
					t.Errorf("unlimited child of a usage-limited caller (%+v): %v, want insufficient_permissions on remaining", r, err)
				}
			}

			// Concurrent creations of 15 from 100: exactly 6.
			c = meteredCaller(t, svc, 100, nil)
			var ok atomic.Int64
			var wg sync.WaitGroup
			for range 12 {
				wg.Go(func() {
					_, err := svc.CreateKeyAs(t.Context(), c, CreateRequest{Name: "child", Remaining: Nullable[int64]{Set: true, Value: 15}})
					switch keygate.ErrorCode(err) {
					case "":
						ok.Add(1)
					case keygate.CodeInsufficientPermissions:
					default:
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if ok.Load() != 6 {
				t.Errorf("%d concurrent creations of 15 from 100 succeeded, want 6", ok.Load())
			}
			k, _ = st.GetKey(t.Context(), "acme", c.Key.ID)
			if *k.Remaining != 10 {
				t.Errorf("caller's remaining %d, want 10", *k.Remaining)
			}
		})
	}
}

func usageErr(err error) *keygate.Error {
	var e *keygate.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func TestCreateKeyAs_RefillNoLargerNorMoreFrequentThanTheCallers(t *testing.T) {
	st := usageStores(t)["sqlite"]
	svc := New(st, apikey.DefaultFormat(), time.Now)
	c := meteredCaller(t, svc, 1000, &keygate.Refill{Interval: keygate.RefillMonthly, Amount: 500})
	refill := func(i keygate.RefillInterval, n int64) Nullable[keygate.Refill] {
		return Nullable[keygate.Refill]{Set: true, Value: keygate.Refill{Interval: i, Amount: n}}
	}
	for _, tt := range []struct {
		name   string
		refill Nullable[keygate.Refill]
		ok     bool
	}{
		{"monthly, smaller", refill(keygate.RefillMonthly, 100), true},
		{"monthly, equal", refill(keygate.RefillMonthly, 500), true},
		{"monthly, larger", refill(keygate.RefillMonthly, 501), false},
		{"daily: more frequent", refill(keygate.RefillDaily, 1), false},
		{"none", Nullable[keygate.Refill]{}, true},
	} {
		_, err := svc.CreateKeyAs(t.Context(), c, CreateRequest{Name: "child", Remaining: Nullable[int64]{Set: true, Value: 10}, Refill: tt.refill})
		if tt.ok != (err == nil) {
			t.Errorf("%s: %v, want ok %t", tt.name, err, tt.ok)
		}
		if !tt.ok {
			if e := usageErr(err); e == nil || e.Param != "refill" {
				t.Errorf("%s: %v, want param refill", tt.name, err)
			}
		}
	}
	// A caller without refill gives none.
	c2 := meteredCaller(t, svc, 1000, nil)
	_, err := svc.CreateKeyAs(t.Context(), c2, CreateRequest{Name: "child", Remaining: Nullable[int64]{Set: true, Value: 1}, Refill: refill(keygate.RefillMonthly, 1)})
	if keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("refill from a caller without one: %v, want insufficient_permissions", err)
	}
}

func TestValidation_RemainingAndRefillNameTheirParam(t *testing.T) {
	neg, huge := int64(-1), int64(MaxRemaining+1)
	for _, tt := range []struct {
		nk    NewKey
		param string
	}{
		{NewKey{Remaining: &neg}, "remaining"},
		{NewKey{Remaining: &huge}, "remaining"},
		{NewKey{Refill: &keygate.Refill{Interval: "weekly", Amount: 1}}, "refill.interval"},
		{NewKey{Refill: &keygate.Refill{Interval: keygate.RefillDaily, Amount: -5}}, "refill.amount"},
	} {
		tt.nk.OrgID, tt.nk.UserID, tt.nk.Name = "acme", "alice", "k"
		err := ValidateNewKey(tt.nk, time.Now())
		if e := usageErr(err); e == nil || e.Code != keygate.CodeInvalidRequest || e.Param != tt.param {
			t.Errorf("%+v: %v, want invalid_request on %s", tt.nk, err, tt.param)
		}
	}
}

func TestUpdateKeyAs_UsageLimitedCallerCannotRaiseRemaining(t *testing.T) {
	st := usageStores(t)["sqlite"]
	svc := New(st, apikey.DefaultFormat(), time.Now)
	c := meteredCaller(t, svc, 100, nil)
	child, err := svc.CreateKeyAs(t.Context(), c, CreateRequest{Name: "child", Remaining: Nullable[int64]{Set: true, Value: 10}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Nullable[int64]{{Set: true, Value: 11}, {Set: true, Null: true}} {
		_, err := svc.UpdateKeyAs(t.Context(), c, child.Key.ID, KeyChanges{Remaining: r})
		if e := usageErr(err); e == nil || e.Code != keygate.CodeInsufficientPermissions || e.Param != "remaining" {
			t.Errorf("PATCH remaining %+v by a usage-limited caller: %v, want insufficient_permissions", r, err)
		}
	}
	k, err := svc.UpdateKeyAs(t.Context(), c, child.Key.ID, KeyChanges{Remaining: Nullable[int64]{Set: true, Value: 3}})
	if err != nil || *k.Remaining != 3 || k.UsageEpoch != child.Key.UsageEpoch+1 {
		t.Errorf("lowering remaining: %+v, %v; want 3 in a new epoch", k, err)
	}
}
