package manage

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/sqlite"
)

// racingStore applies change to key keyID (an admin's concurrent PATCH)
// between the read manage judges a request on and the write itself, an
// update or a roll of that key.
type racingStore struct {
	*sqlite.Store
	orgID, keyID string
	change       store.KeyUpdate
}

func (r *racingStore) race(ctx context.Context, id string) error {
	if id != r.keyID {
		return nil
	}
	_, err := r.Store.UpdateKey(ctx, r.orgID, r.keyID, r.change, keygate.Actor{})
	return err
}

func (r *racingStore) UpdateKey(ctx context.Context, orgID, id string, u store.KeyUpdate, by keygate.Actor) (keygate.Key, error) {
	if err := r.race(ctx, id); err != nil {
		return keygate.Key{}, err
	}
	return r.Store.UpdateKey(ctx, orgID, id, u, by)
}

func (r *racingStore) RollKey(ctx context.Context, orgID, id string, t store.NewToken, grace time.Duration, by keygate.Actor) (keygate.Key, error) {
	if err := r.race(ctx, id); err != nil {
		return keygate.Key{}, err
	}
	return r.Store.RollKey(ctx, orgID, id, t, grace, by)
}

// A weaker key's active: true on an active key is a no-op, so it needs no
// rights; but if an admin deactivates that key between manage's read and
// the write, the same PATCH would reactivate it. The widening rule is
// judged on the key as the update locks it (issue 12, item 5).
func TestUpdateKeyAs_WideningIsJudgedOnTheLockedKey(t *testing.T) {
	ctx := context.Background()
	st := liteStore(t)
	svc := New(st, apikey.DefaultFormat(), time.Now)
	owner, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "owner", Role: "owner", CreateOrganization: true}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	member, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "member", Role: "member", ProjectIDs: []string{"p1"}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	racing := New(&racingStore{Store: st, orgID: "acme", keyID: owner.Key.ID, change: store.KeyUpdate{Active: ptr(false)}}, apikey.DefaultFormat(), time.Now)
	_, err = racing.UpdateKeyAs(ctx, Caller{Key: member.Key}, owner.Key.ID, KeyChanges{Active: ptr(true)})
	if keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("member's active: true raced with a deactivation = %v; want insufficient_permissions", err)
	}
	k, err := st.GetKey(ctx, "acme", owner.Key.ID)
	if err != nil || k.DisabledAt == nil {
		t.Errorf("owner key after the race: %+v, %v; want it inactive", k, err)
	}
}

// A roll mints a token, so the key may have nothing beyond the caller; if
// an admin widens the key between manage's read and the roll, the roll is
// judged on the widened key, as the roll locks it.
func TestRollKeyAs_BoundsAreJudgedOnTheLockedKey(t *testing.T) {
	ctx := context.Background()
	st := liteStore(t)
	svc := New(st, apikey.DefaultFormat(), time.Now)
	member, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "member", Role: "member",
		RateLimitPerMinute: ptr(10), CreateOrganization: true}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	target, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "target", Role: "member",
		RateLimitPerMinute: ptr(5)}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	racing := New(&racingStore{Store: st, orgID: "acme", keyID: target.Key.ID, change: store.KeyUpdate{RateLimitPerMinute: ptr(1000)}}, apikey.DefaultFormat(), time.Now)
	_, err = racing.RollKeyAs(ctx, Caller{Key: member.Key}, target.Key.ID, 0)
	if keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("roll raced with a widening = %v; want insufficient_permissions", err)
	}
	if k, err := st.GetKey(ctx, "acme", target.Key.ID); err != nil || k.Last4 != target.Key.Last4 {
		t.Errorf("target after the refused roll: %+v, %v; want its old token", k, err)
	}
}
