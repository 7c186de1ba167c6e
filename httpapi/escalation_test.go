package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// outcome is what one call should answer: a status and, for an error, its
// code and param.
type outcome struct {
	status int
	code   keygate.Code
	param  string
}

var (
	ok201  = outcome{status: http.StatusCreated}
	ok200  = outcome{status: http.StatusOK}
	denied = func(param string) outcome {
		return outcome{http.StatusForbidden, keygate.CodeInsufficientPermissions, param}
	}
	badParam  = func(param string) outcome { return outcome{http.StatusBadRequest, keygate.CodeInvalidRequest, param} }
	wantsFunc = func(t *testing.T, r response, o outcome) {
		t.Helper()
		if o.code == "" {
			want(t, r, o.status)
			return
		}
		wantError(t, r, o.status, o.code, o.param)
	}
)

func TestAPI_NoEscalation_CreateNeverGivesMoreThanTheCaller(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		exp := e.clock.now().Add(time.Hour).UTC().Truncate(time.Second)
		// A restricted member: two scopes, two projects, test, expiring,
		// limited to 10 a minute (the server default is 100).
		_, tok := e.key(manage.NewKey{Scopes: []string{"read", "write"}, ProjectIDs: []string{"p1", "p2"},
			Environment: keygate.Test, ExpiresAt: &exp, RateLimitPerMinute: ptr(10)})
		later := exp.Add(time.Minute).Format(time.RFC3339)
		earlier := exp.Add(-time.Minute).Format(time.RFC3339)
		for _, tt := range []struct {
			name, body string
			want       outcome
		}{
			{"defaults", `{"name":"x"}`, ok201},
			{"scope beyond", `{"name":"x","scopes":["admin"]}`, denied("scopes")},
			{"one scope beyond", `{"name":"x","scopes":["read","deploy"]}`, denied("scopes")},
			{"malformed scope is 400 first", `{"name":"x","scopes":["Admin"]}`, badParam("scopes")},
			{"fewer scopes", `{"name":"x","scopes":["read"]}`, ok201},
			{"no scopes", `{"name":"x","scopes":[]}`, ok201},
			{"every project", `{"name":"x","project_ids":[]}`, denied("project_ids")},
			{"project beyond", `{"name":"x","project_ids":["p1","p3"]}`, denied("project_ids")},
			{"fewer projects", `{"name":"x","project_ids":["p2"]}`, ok201},
			{"other environment", `{"name":"x","environment":"live"}`, denied("environment")},
			{"same environment", `{"name":"x","environment":"test"}`, ok201},
			{"never expires", `{"name":"x","expires_at":null}`, denied("expires_at")},
			{"expires later", `{"name":"x","expires_at":"` + later + `"}`, denied("expires_at")},
			{"expires earlier", `{"name":"x","expires_at":"` + earlier + `"}`, ok201},
			{"expires_in beyond", `{"name":"x","expires_in":7200}`, denied("expires_in")},
			{"expires_in within", `{"name":"x","expires_in":60}`, ok201},
			{"higher rate limit", `{"name":"x","rate_limit_per_minute":11}`, denied("rate_limit_per_minute")},
			{"server default above the caller's", `{"name":"x","rate_limit_per_minute":null}`, denied("rate_limit_per_minute")},
			{"unlimited", `{"name":"x","rate_limit_per_minute":0}`, denied("rate_limit_per_minute")},
			{"same rate limit", `{"name":"x","rate_limit_per_minute":10}`, ok201},
			{"own user_id from a non-admin", `{"name":"x","user_id":"alice"}`, denied("user_id")},
			{"other user_id from a non-admin", `{"name":"x","user_id":"bob"}`, denied("user_id")},
			{"publishable is narrower", `{"name":"x","type":"publishable"}`, ok201},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantsFunc(t, e.do(req{method: "POST", path: "/v1/api-keys", token: tok, body: tt.body}), tt.want)
			})
		}

		// The defaults are the caller's.
		got := e.create(tok, `{"name":"defaults"}`).APIKey
		if !slices.Equal(got.Scopes, []string{"read", "write"}) || !slices.Equal(got.ProjectIDs, []string{"p1", "p2"}) ||
			got.Environment != "test" || got.Type != "secret" || got.UserID != "alice" || got.OrgID != "acme" ||
			got.ExpiresAt == nil || !time.Time(*got.ExpiresAt).Equal(exp) || got.RateLimitPerMinute == nil || *got.RateLimitPerMinute != 10 {
			t.Errorf("defaults = %+v", got)
		}
	})
}

func TestAPI_NoEscalation_AdminsAndUnlimitedCallers(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{Role: "admin"})                                  // effective limit: the default, 100
		_, unlimited := e.key(manage.NewKey{Role: "member", RateLimitPerMinute: ptr(0)}) // unlimited
		for _, tt := range []struct {
			name, token, body string
			want              outcome
		}{
			{"admin sets user_id", admin, `{"name":"x","user_id":"bob"}`, ok201},
			{"admin at the default", admin, `{"name":"x","rate_limit_per_minute":100}`, ok201},
			{"admin above the default", admin, `{"name":"x","rate_limit_per_minute":101}`, denied("rate_limit_per_minute")},
			{"admin null is the default", admin, `{"name":"x","rate_limit_per_minute":null}`, ok201},
			{"admin unlimited", admin, `{"name":"x","rate_limit_per_minute":0}`, denied("rate_limit_per_minute")},
			{"admin gives admin", admin, `{"name":"x","scopes":["admin","read"]}`, ok201},
			{"unlimited gives unlimited", unlimited, `{"name":"x","rate_limit_per_minute":0}`, ok201},
			{"unlimited gives any", unlimited, `{"name":"x","rate_limit_per_minute":1000000}`, ok201},
			{"unlimited gives the default", unlimited, `{"name":"x","rate_limit_per_minute":null}`, ok201},
			{"member gives admin", unlimited, `{"name":"x","scopes":["admin"]}`, denied("scopes")},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantsFunc(t, e.do(req{method: "POST", path: "/v1/api-keys", token: tt.token, body: tt.body}), tt.want)
			})
		}
		k := e.create(admin, `{"name":"for bob","user_id":"bob","scopes":["read"]}`)
		if k.UserID != "bob" {
			t.Errorf("user_id = %s", k.UserID)
		}
	})
}

func TestAPI_NoEscalation_RollNeedsEverythingTheKeyHas(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		exp := e.clock.now().Add(time.Hour)
		_, member := e.key(manage.NewKey{Role: "member"}) // read, write; live; no expiry; default limit
		_, restricted := e.key(manage.NewKey{Role: "member", ProjectIDs: []string{"p1"}})
		_, expiring := e.key(manage.NewKey{Role: "member", ExpiresAt: &exp})
		owner, _ := e.key(manage.NewKey{Role: "owner"})
		unlimited, _ := e.key(manage.NewKey{Role: "member", RateLimitPerMinute: ptr(0)})
		testEnv, _ := e.key(manage.NewKey{Role: "member", Environment: keygate.Test})
		plain, _ := e.key(manage.NewKey{Role: "viewer", ProjectIDs: []string{"p1"}, ExpiresAt: &exp})
		member2, _ := e.key(manage.NewKey{Role: "member"})
		for _, tt := range []struct {
			name, token, id string
			want            outcome
		}{
			{"more scopes", member, owner.ID, denied("scopes")},
			{"unlimited key", member, unlimited.ID, denied("rate_limit_per_minute")},
			{"other environment", member, testEnv.ID, denied("environment")},
			{"every project from a restricted caller", restricted, unlimited.ID, denied("project_ids")},
			{"never-expiring key from an expiring caller", expiring, member2.ID, denied("expires_at")},
			{"within", member, plain.ID, ok201},
			{"within a restricted caller", restricted, plain.ID, ok201},
			{"within an expiring caller", expiring, plain.ID, ok201},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantsFunc(t, e.do(req{method: "POST", path: "/v1/api-keys/" + tt.id + "/roll", token: tt.token}), tt.want)
			})
		}
	})
}

func TestAPI_NoEscalation_PatchCannotWidenAKeyBeyondTheCaller(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		exp := e.clock.now().Add(time.Hour).UTC().Truncate(time.Second)
		self, tok := e.key(manage.NewKey{Role: "member", ExpiresAt: &exp, RateLimitPerMinute: ptr(10)})
		later := exp.Add(time.Minute).Format(time.RFC3339)
		earlier := exp.Add(-time.Minute).Format(time.RFC3339)
		for _, tt := range []struct {
			name, body string
			want       outcome
		}{
			{"higher rate limit", `{"rate_limit_per_minute":11}`, denied("rate_limit_per_minute")},
			{"back to the higher default", `{"rate_limit_per_minute":null}`, denied("rate_limit_per_minute")},
			{"unlimited", `{"rate_limit_per_minute":0}`, denied("rate_limit_per_minute")},
			{"lower rate limit", `{"rate_limit_per_minute":5}`, ok200},
			{"never expires", `{"expires_at":null}`, denied("expires_at")},
			{"expires later", `{"expires_at":"` + later + `"}`, denied("expires_at")},
			{"expires earlier", `{"expires_at":"` + earlier + `"}`, ok200},
			{"rename", `{"name":"renamed"}`, ok200},
			{"metadata", `{"metadata":{"plan":"free"}}`, ok200},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantsFunc(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + self.ID, token: tok, body: tt.body}), tt.want)
			})
		}
		got, err := e.st.GetKey(context.Background(), "acme", self.ID)
		if err != nil {
			t.Fatal(err)
		}
		if *got.RateLimitPerMinute != 5 || !got.ExpiresAt.Equal(exp.Add(-time.Minute)) || got.Name != "renamed" ||
			!jsonEqual(got.Metadata, `{"plan":"free"}`) {
			t.Errorf("after the patches: %+v", got)
		}
		// Deactivating itself is allowed, and the key is denied at once.
		want(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + self.ID, token: tok, body: `{"active":false}`}), http.StatusOK)
		wantError(t, e.get("/v1/whoami", tok), http.StatusUnauthorized, keygate.CodeAPIKeyInactive, "")
	})
}

func TestAPI_Whoami_IsTheCallersKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		k, tok := e.key(manage.NewKey{Role: "viewer", Metadata: []byte(`{"a":1}`)})
		r := e.get("/v1/whoami", tok)
		want(t, r, http.StatusOK)
		wantBody, _ := json.Marshal(httpapi.Data[httpapi.APIKey]{Data: httpapi.NewAPIKey(k, e.clock.now())})
		if !jsonEqual(r.Body, string(wantBody)) {
			t.Errorf("whoami = %s, want %s", r.Body, wantBody)
		}
	})
}

// jsonEqual reports whether got and want are the same JSON value.
func jsonEqual(got []byte, want string) bool {
	var a, b any
	return json.Unmarshal(got, &a) == nil && json.Unmarshal([]byte(want), &b) == nil && reflect.DeepEqual(a, b)
}

// TestAPI_NoEscalation_PatchWideningNeedsTheKeysRights is the attack of a
// weak key on a stronger key of the same user: PATCH may not turn it back
// on, lengthen its life or raise its limit unless the caller holds at
// least the key's rights, by the bounds of create and roll. Narrowing
// needs only access.
func TestAPI_NoEscalation_PatchWideningNeedsTheKeysRights(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		exp := e.clock.now().Add(time.Hour).UTC().Truncate(time.Second)
		later := `"` + exp.Add(time.Hour).Format(time.RFC3339) + `"`
		earlier := `"` + exp.Add(-time.Minute).Format(time.RFC3339) + `"`
		// The attackers: alice's member keys restricted to project p1
		// (effective limit: the server default, 100), one of them expiring.
		_, member := e.key(manage.NewKey{Role: "member", ProjectIDs: []string{"p1"}})
		_, expiring := e.key(manage.NewKey{Role: "member", ProjectIDs: []string{"p1"}, ExpiresAt: &exp})
		// Targets: keys of the same user, made fresh for each row.
		active := func(nk manage.NewKey) func() (keygate.Key, string) {
			return func() (keygate.Key, string) { return e.key(nk) }
		}
		inactive := func(nk manage.NewKey) func() (keygate.Key, string) {
			return func() (keygate.Key, string) {
				k, tok := e.key(nk)
				k, err := e.st.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(false)}, keygate.Actor{})
				if err != nil {
					t.Fatal(err)
				}
				return k, tok
			}
		}
		owner := manage.NewKey{Role: "owner", ExpiresAt: &exp, RateLimitPerMinute: ptr(5)}
		ownerForever := manage.NewKey{Role: "owner", RateLimitPerMinute: ptr(1000)}
		viewer := func(edit func(*manage.NewKey)) manage.NewKey {
			nk := manage.NewKey{Role: "viewer", ProjectIDs: []string{"p1"}, ExpiresAt: &exp}
			if edit != nil {
				edit(&nk)
			}
			return nk
		}
		for _, tt := range []struct {
			name   string
			caller string
			target func() (keygate.Key, string)
			body   string
			want   outcome
		}{
			// Every widening field against an owner key.
			{"reactivate an owner key", member, inactive(owner), `{"active":true}`, denied("scopes")},
			{"clear its expiry", member, inactive(owner), `{"expires_at":null}`, denied("scopes")},
			{"push its expiry later", member, inactive(owner), `{"expires_at":` + later + `}`, denied("scopes")},
			{"raise its limit", member, inactive(owner), `{"rate_limit_per_minute":6}`, denied("scopes")},
			{"its limit back to the default", member, inactive(owner), `{"rate_limit_per_minute":null}`, denied("scopes")},
			{"make it unlimited", member, inactive(owner), `{"rate_limit_per_minute":0}`, denied("scopes")},
			{"a widening beside narrowings", member, inactive(owner), `{"name":"x","rate_limit_per_minute":1,"active":true}`, denied("scopes")},
			{"the same on an active owner key", member, active(owner), `{"expires_at":null}`, denied("scopes")},
			// Each bound alone: a key with one right beyond the caller.
			{"reactivate a key for every project", member, inactive(viewer(func(k *manage.NewKey) { k.ProjectIDs = nil })), `{"active":true}`, denied("project_ids")},
			{"reactivate a key of another project", member, inactive(viewer(func(k *manage.NewKey) { k.ProjectIDs = []string{"p2"} })), `{"active":true}`, denied("project_ids")},
			{"reactivate a test key", member, inactive(viewer(func(k *manage.NewKey) { k.Environment = keygate.Test })), `{"active":true}`, denied("environment")},
			{"reactivate a key above the caller's limit", member, inactive(viewer(func(k *manage.NewKey) { k.RateLimitPerMinute = ptr(101) })), `{"active":true}`, denied("rate_limit_per_minute")},
			{"reactivate an unlimited key", member, inactive(viewer(func(k *manage.NewKey) { k.RateLimitPerMinute = ptr(0) })), `{"active":true}`, denied("rate_limit_per_minute")},
			{"raise a limit above the caller's", member, active(viewer(nil)), `{"rate_limit_per_minute":101}`, denied("rate_limit_per_minute")},
			{"reactivate a key that outlives the caller", expiring, inactive(viewer(func(k *manage.NewKey) { k.ExpiresAt = nil })), `{"active":true}`, denied("expires_at")},
			{"extend a key past the caller", expiring, active(viewer(nil)), `{"expires_at":` + later + `}`, denied("expires_at")},
			// Widening within the caller's rights.
			{"reactivate a key within the caller", member, inactive(viewer(nil)), `{"active":true}`, ok200},
			{"reactivate one the expiring caller outlives", expiring, inactive(viewer(nil)), `{"active":true}`, ok200},
			{"extend a key within the caller", member, active(viewer(nil)), `{"expires_at":` + later + `}`, ok200},
			{"raise a limit within the caller's", member, active(viewer(func(k *manage.NewKey) { k.RateLimitPerMinute = ptr(5) })), `{"rate_limit_per_minute":100}`, ok200},
			// Narrowing a stronger key needs only access.
			{"deactivate an owner key", member, active(owner), `{"active":false}`, ok200},
			{"deactivate it again", member, inactive(owner), `{"active":false}`, ok200},
			{"reactivating an active key changes nothing", member, active(owner), `{"active":true}`, ok200},
			{"bring its expiry earlier", member, inactive(owner), `{"expires_at":` + earlier + `}`, ok200},
			{"the same expiry", member, inactive(owner), `{"expires_at":"` + exp.Format(time.RFC3339) + `"}`, ok200},
			{"give a never-expiring key an expiry beyond the caller's", expiring, active(ownerForever), `{"expires_at":` + later + `}`, ok200},
			{"lower its limit", member, inactive(owner), `{"rate_limit_per_minute":4}`, ok200},
			{"the same limit", member, inactive(owner), `{"rate_limit_per_minute":5}`, ok200},
			{"lower a limit that stays above the caller's", member, active(ownerForever), `{"rate_limit_per_minute":500}`, ok200},
			{"limit an unlimited key", member, active(viewer(func(k *manage.NewKey) { k.RateLimitPerMinute = ptr(0) })), `{"rate_limit_per_minute":1000}`, ok200},
			{"rename it", member, inactive(owner), `{"name":"renamed"}`, ok200},
			{"replace its metadata", member, inactive(owner), `{"metadata":{"plan":"free"}}`, ok200},
		} {
			t.Run(tt.name, func(t *testing.T) {
				before, tok := tt.target()
				r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + before.ID, token: tt.caller, body: tt.body})
				wantsFunc(t, r, tt.want)
				if tt.want.code == "" {
					return
				}
				// A refused widening changed nothing, and Check still says so.
				after, err := e.st.GetKey(ctx, "acme", before.ID)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(before, after); diff != "" {
					t.Errorf("a refused PATCH changed the key (-before +after):\n%s", diff)
				}
				if got, want := e.check(tok, "192.0.2.1"), checkCode(before, e.clock.now()); got != want {
					t.Errorf("Check after a refused PATCH = %q, want %q", got, want)
				}
			})
		}
	})
}

// checkCode is Check's answer for key k at now, ignoring route policy:
// "" for an active key.
func checkCode(k keygate.Key, now time.Time) keygate.Code {
	switch k.Status(now) {
	case keygate.StatusInactive:
		return keygate.CodeAPIKeyInactive
	case keygate.StatusExpired:
		return keygate.CodeAPIKeyExpired
	}
	return ""
}
