package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
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
