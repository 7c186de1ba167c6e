package httpapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/manage"
)

// TestAPI_InsufficientPermissions_MessageNamesTheScopeOrTheBound: a
// newcomer's 403 says which scope the call needs, or which bound of the
// calling key a create, roll or PATCH would exceed; code, param and shape
// stay as they are.
func TestAPI_InsufficientPermissions_MessageNamesTheScopeOrTheBound(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		e.clock.freeze(time.Now().UTC().Truncate(time.Second))
		exp := e.clock.now().Add(time.Hour)
		expS := exp.Format(time.RFC3339)
		_, viewer := e.key(manage.NewKey{Role: "viewer"})
		_, member := e.key(manage.NewKey{Role: "member", ProjectIDs: []string{"p1", "p2"}, Environment: keygate.Test,
			ExpiresAt: &exp, RateLimitPerMinute: ptr(10)})
		owner, _ := e.key(manage.NewKey{Role: "owner", Environment: keygate.Test})
		inactiveOwner, _ := e.key(manage.NewKey{Role: "owner", Environment: keygate.Test})
		want(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + inactiveOwner.ID, token: member, body: `{"active":false}`}), http.StatusOK)
		for _, tt := range []struct {
			name                    string
			method, path, tok, body string
			param, message          string
		}{
			{"audit needs admin", "GET", "/v1/audit-events", member, "", "",
				`This call needs the "admin" scope.`},
			{"create needs write", "POST", "/v1/api-keys", viewer, `{"name":"x"}`, "",
				`This call needs the "write" scope.`},
			{"user_id", "POST", "/v1/api-keys", member, `{"name":"x","user_id":"bob"}`, "user_id",
				`Creating a key for another user_id needs the "admin" scope.`},
			{"scopes", "POST", "/v1/api-keys", member, `{"name":"x","scopes":["admin","read"]}`, "scopes",
				`A key cannot get more than the key that creates it: the scope "admin" is beyond the calling key's scopes (read, write).`},
			{"every project", "POST", "/v1/api-keys", member, `{"name":"x","project_ids":[]}`, "project_ids",
				`A key cannot get more than the key that creates it: every project is beyond the calling key's projects (p1, p2).`},
			{"a project", "POST", "/v1/api-keys", member, `{"name":"x","project_ids":["p3"]}`, "project_ids",
				`A key cannot get more than the key that creates it: the project "p3" is beyond the calling key's projects (p1, p2).`},
			{"environment", "POST", "/v1/api-keys", member, `{"name":"x","environment":"live"}`, "environment",
				`A key cannot get more than the key that creates it: the environment "live" is not the calling key's ("test").`},
			{"no expiry", "POST", "/v1/api-keys", member, `{"name":"x","expires_at":null}`, "expires_at",
				`A key cannot get more than the key that creates it: never expiring is beyond the calling key's expiry (` + expS + `).`},
			{"later expiry", "POST", "/v1/api-keys", member, `{"name":"x","expires_in":7200}`, "expires_in",
				`A key cannot get more than the key that creates it: the expiry ` + exp.Add(time.Hour).Format(time.RFC3339) +
					` is beyond the calling key's (` + expS + `).`},
			{"rate limit", "POST", "/v1/api-keys", member, `{"name":"x","rate_limit_per_minute":0}`, "rate_limit_per_minute",
				`A key cannot get more than the key that creates it: the rate limit (unlimited) is beyond the calling key's (10 requests per minute).`},
			{"default rate limit", "POST", "/v1/api-keys", member, `{"name":"x","rate_limit_per_minute":null}`, "rate_limit_per_minute",
				`A key cannot get more than the key that creates it: the rate limit (the server default, 100 requests per minute) is beyond the calling key's (10 requests per minute).`},
			{"roll", "POST", "/v1/api-keys/" + owner.ID + "/roll", member, "", "scopes",
				`Rolling a key needs at least its rights: the scope "admin" is beyond the calling key's scopes (read, write).`},
			{"patch", "PATCH", "/v1/api-keys/" + inactiveOwner.ID, member, `{"active":true}`, "scopes",
				`This change widens the key, which needs at least its rights: the scope "admin" is beyond the calling key's scopes (read, write).`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				b := wantError(t, e.do(req{method: tt.method, path: tt.path, token: tt.tok, body: tt.body}),
					http.StatusForbidden, keygate.CodeInsufficientPermissions, tt.param)
				if b.Error.Message != tt.message {
					t.Errorf("message = %q\nwant      %q", b.Error.Message, tt.message)
				}
			})
		}
	})
}

// TestCLIOperations_NotFoundSaysWhatIsMissing: the operations behind
// `keygate keys revoke|list` and `orgs disable|enable` answer not_found
// with a message the CLI can print as it is: what is missing, where, and
// nothing of the store that looked.
func TestCLIOperations_NotFoundSaysWhatIsMissing(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		e.key(manage.NewKey{}) // organization acme
		if _, err := e.cli.CreateOrganization(ctx, "empty", keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name string
			op   func() error
			want string // "" for no error
		}{
			{"revoke an unknown id", func() error {
				_, err := e.cli.RevokeKey(ctx, "acme", "key_nope", keygate.Actor{})
				return err
			}, "no key key_nope in organization acme"},
			{"revoke in an unknown organization", func() error {
				_, err := e.cli.RevokeKey(ctx, "nosuchorg", "key_nope", keygate.Actor{})
				return err
			}, "organization nosuchorg does not exist"},
			{"list an unknown organization", func() error {
				_, err := e.cli.ListKeys(ctx, "nosuchorg")
				return err
			}, "organization nosuchorg does not exist"},
			{"list an empty organization", func() error {
				_, err := e.cli.ListKeys(ctx, "empty")
				return err
			}, ""},
			{"disable an unknown organization", func() error {
				_, err := e.cli.DisableOrganization(ctx, "nosuchorg", keygate.Actor{})
				return err
			}, "organization nosuchorg does not exist"},
			{"enable an unknown organization", func() error {
				_, err := e.cli.EnableOrganization(ctx, "nosuchorg", keygate.Actor{})
				return err
			}, "organization nosuchorg does not exist"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.op()
				if tt.want == "" {
					if err != nil {
						t.Fatalf("err = %v, want none", err)
					}
					return
				}
				if keygate.ErrorCode(err) != keygate.CodeNotFound || keygate.ErrorMessage(err) != tt.want ||
					err.Error() != "not_found: "+tt.want {
					t.Errorf("err = %q (code %s, message %q), want not_found %q", err, keygate.ErrorCode(err), keygate.ErrorMessage(err), tt.want)
				}
			})
		}
	})
}
