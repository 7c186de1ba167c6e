package manage

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

func rl(name string, limit, seconds int) keygate.RateLimit {
	return keygate.RateLimit{Name: name, Limit: limit, DurationSeconds: seconds}
}

func TestCreateKey_RateLimitsValidatedAndSorted(t *testing.T) {
	svc, ctx := sourcesService(t)
	k, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "k", Role: "owner", CreateOrganization: true,
		RateLimits: []keygate.RateLimit{rl("upload", 5, 60), rl("bulk_export-2", 1, 86400), rl("a", 1, 1)}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []keygate.RateLimit{rl("a", 1, 1), rl("bulk_export-2", 1, 86400), rl("upload", 5, 60)}; !slices.Equal(k.Key.RateLimits, want) {
		t.Errorf("RateLimits = %v, want %v", k.Key.RateLimits, want)
	}
	for _, tc := range []struct {
		list  []keygate.RateLimit
		param string
		msg   string
	}{
		{[]keygate.RateLimit{rl("ok", 1, 1), rl("ok", 1, 1), rl("Bad", 1, 1)}, "rate_limits[1].name", `"ok" is also rate_limits[0].name`},
		{[]keygate.RateLimit{rl("ok", 1, 1), rl("x", 1, 1), rl("Bad", 1, 1)}, "rate_limits[2].name", `must match ^[a-z][a-z0-9_-]{0,31}$`},
		{[]keygate.RateLimit{rl("", 1, 1)}, "rate_limits[0].name", "must match"},
		{[]keygate.RateLimit{rl("9a", 1, 1)}, "rate_limits[0].name", "must match"},
		{[]keygate.RateLimit{rl(strings.Repeat("a", 33), 1, 1)}, "rate_limits[0].name", "must match"},
		{[]keygate.RateLimit{rl("a", 0, 1)}, "rate_limits[0].limit", "must be 1 to"},
		{[]keygate.RateLimit{rl("a", -3, 1)}, "rate_limits[0].limit", "must be 1 to"},
		{[]keygate.RateLimit{rl("a", 1, 0)}, "rate_limits[0].duration_seconds", "must be 1 to 86400"},
		{[]keygate.RateLimit{rl("a", 1, 86401)}, "rate_limits[0].duration_seconds", "must be 1 to 86400"},
		{[]keygate.RateLimit{rl("a", 1, 1), rl("b", 1, 1), rl("c", 1, 1), rl("d", 1, 1), rl("e", 1, 1),
			rl("f", 1, 1), rl("g", 1, 1), rl("h", 1, 1), rl("i", 1, 1)}, "rate_limits", "at most 8"},
	} {
		_, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "k", Role: "owner", RateLimits: tc.list}, keygate.Actor{})
		var e *keygate.Error
		if !asError(err, &e) || e.Code != keygate.CodeInvalidRequest || e.Param != tc.param || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("CreateKey(%v) = %v, want invalid_request on %s saying %q", tc.list, err, tc.param, tc.msg)
		}
	}
}

// A created key carries every named limit of its creator, none looser,
// plus any it adds; by default the creator's (SPEC §9).
func TestRateLimits_CreateCarriesTheCallersNoLooser(t *testing.T) {
	svc, ctx := sourcesService(t)
	caller, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "ci", Role: "owner", CreateOrganization: true,
		RateLimits: []keygate.RateLimit{rl("search", 10, 60), rl("upload", 100, 3600)}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	c := Caller{Key: caller.Key}
	def, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(def.Key.RateLimits, caller.Key.RateLimits) {
		t.Errorf("default RateLimits = %v, want the caller's %v", def.Key.RateLimits, caller.Key.RateLimits)
	}
	for _, ok := range [][]keygate.RateLimit{
		{rl("search", 10, 60), rl("upload", 100, 3600)},
		{rl("search", 1, 60), rl("upload", 100, 3600), rl("bulk", 1, 86400)}, // stricter, and one added
		{rl("search", 5, 30), rl("upload", 50, 1800)},                        // the same rates, smaller bursts
	} {
		if _, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "inside", RateLimits: &ok}); err != nil {
			t.Errorf("create with %v: %v", ok, err)
		}
	}
	for _, tc := range []struct {
		list []keygate.RateLimit
		msg  string
	}{
		{[]keygate.RateLimit{}, `going without the calling key's named rate limit "search" (10 per 60 s)`},
		{[]keygate.RateLimit{rl("search", 10, 60)}, `"upload" (100 per 3600 s)`},
		{[]keygate.RateLimit{rl("search", 11, 60), rl("upload", 100, 3600)}, `the named rate limit "search" (11 per 60 s) is looser than the calling key's ("search" (10 per 60 s))`},
		{[]keygate.RateLimit{rl("search", 10, 59), rl("upload", 100, 3600)}, "looser"},
		{[]keygate.RateLimit{rl("search", 20, 120), rl("upload", 100, 3600)}, "looser"},        // the same rate, twice the burst
		{[]keygate.RateLimit{rl("search2", 10, 60), rl("upload", 100, 3600)}, "going without"}, // a renamed limit is a dropped one
	} {
		_, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "outside", RateLimits: &tc.list})
		if e, _ := err.(*keygate.Error); e == nil || e.Code != keygate.CodeInsufficientPermissions || e.Param != "rate_limits" || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("create with %v = %v, want insufficient_permissions on rate_limits saying %q", tc.list, err, tc.msg)
		}
	}
	// A bad body is 400 before the bounds are judged.
	bad := []keygate.RateLimit{rl("Search", 1, 60)}
	if _, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "bad", RateLimits: &bad}); keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
		t.Errorf("create with a bad name = %v, want invalid_request", err)
	}
	// A roll mints a credential: the key must carry the caller's limits.
	owner, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "free", Role: "owner"}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RollKeyAs(ctx, c, owner.Key.ID, 0); keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("limited caller rolling an unlimited key = %v, want insufficient_permissions", err)
	}
}

// PATCH may not drop or loosen a named limit beyond the caller's own;
// narrowing needs only access (SPEC §5).
func TestRateLimits_PatchCannotDropOrLoosenBeyondTheCaller(t *testing.T) {
	svc, ctx := sourcesService(t)
	caller, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "ci", Role: "owner", CreateOrganization: true,
		RateLimits: []keygate.RateLimit{rl("search", 10, 60)}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	c := Caller{Key: caller.Key}
	strict := []keygate.RateLimit{rl("bulk", 1, 60), rl("search", 2, 60)}
	k, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "strict", RateLimits: &strict})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]keygate.RateLimit{{}, {rl("bulk", 1, 60)}, {rl("search", 11, 60)}, {rl("bulk", 1, 60), rl("search", 1, 1)}} {
		_, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{RateLimits: &bad})
		if e := asKeygateError(err); e == nil || e.Code != keygate.CodeInsufficientPermissions || e.Param != "rate_limits" {
			t.Errorf("PATCH rate_limits %v = %v, want insufficient_permissions on rate_limits", bad, err)
		}
	}
	// Loosening within the caller is fine (it holds the key's rights);
	// dropping "bulk", which the caller lacks, too.
	within := []keygate.RateLimit{rl("search", 10, 60)}
	if got, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{RateLimits: &within}); err != nil || !slices.Equal(got.RateLimits, within) {
		t.Errorf("PATCH within the caller = %v, %v", got.RateLimits, err)
	}
	// A member (fewer rights than the key) may narrow, never widen.
	member, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "m", Role: "member", ProjectIDs: []string{"p1"}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	m := Caller{Key: member.Key}
	narrower := []keygate.RateLimit{rl("new", 1, 1), rl("search", 5, 60)}
	if got, err := svc.UpdateKeyAs(ctx, m, k.Key.ID, KeyChanges{RateLimits: &narrower}); err != nil || !slices.Equal(got.RateLimits, narrower) {
		t.Errorf("member narrowing = %v, %v", got.RateLimits, err)
	}
	for _, bad := range [][]keygate.RateLimit{{rl("search", 5, 60)}, {rl("new", 2, 1), rl("search", 5, 60)}} {
		if _, err := svc.UpdateKeyAs(ctx, m, k.Key.ID, KeyChanges{RateLimits: &bad}); keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
			t.Errorf("member PATCH %v = %v, want insufficient_permissions", bad, err)
		}
	}
	badName := []keygate.RateLimit{rl("ok", 1, 1), rl("x y", 1, 1)}
	_, err = svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{RateLimits: &badName})
	if e := asKeygateError(err); e == nil || e.Code != keygate.CodeInvalidRequest || e.Param != "rate_limits[1].name" {
		t.Errorf("PATCH with a bad name = %v, want invalid_request on rate_limits[1].name", err)
	}
}

// Clearing the limits of a key that has none needs no rights; if an admin
// limits that key between manage's read and the write, the same PATCH
// would drop the new limit. It is judged on the key as the update locks it.
func TestUpdateKeyAs_DroppingANamedLimitIsJudgedOnTheLockedKey(t *testing.T) {
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
	racing := New(&racingStore{Store: st, orgID: "acme", keyID: owner.Key.ID,
		change: store.KeyUpdate{RateLimits: &[]keygate.RateLimit{rl("search", 1, 60)}}}, apikey.DefaultFormat(), time.Now)
	_, err = racing.UpdateKeyAs(ctx, Caller{Key: member.Key}, owner.Key.ID, KeyChanges{RateLimits: &[]keygate.RateLimit{}})
	if keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("member's rate_limits: [] raced with a new limit = %v; want insufficient_permissions", err)
	}
	k, err := st.GetKey(ctx, "acme", owner.Key.ID)
	if err != nil || !slices.Equal(k.RateLimits, []keygate.RateLimit{rl("search", 1, 60)}) {
		t.Errorf("owner key after the race: %v, %v; want its new limit kept", k.RateLimits, err)
	}
}

func asKeygateError(err error) *keygate.Error {
	var e *keygate.Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
