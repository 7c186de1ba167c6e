package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

func TestAPI_BadRequests_AnswerTheExactCodeAndParam(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		target, tok := e.key(manage.NewKey{})
		id := target.ID
		rolled, _ := e.key(manage.NewKey{Role: "viewer"}) // rolled by the rows that succeed
		rid := rolled.ID
		past := "2020-01-01T00:00:00Z"
		big := `{"name":"x","metadata":{"x":"` + strings.Repeat("a", 64<<10) + `"}}`
		meta4097 := `{"name":"x","metadata":{"x":"` + strings.Repeat("a", 4096-7) + `"}}`
		const keys, patch, roll = "/v1/api-keys", "/v1/api-keys/", "/roll"
		tests := []struct {
			name               string
			method, path, body string
			contentType        string
			status             int
			code               keygate.Code
			param              string
		}{
			// JSON that does not parse: param null.
			{"truncated", "POST", keys, `{"name":`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"not JSON", "POST", keys, `name=x`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"array", "POST", keys, `[{"name":"x"}]`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"string", "POST", keys, `"x"`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"two values", "POST", keys, `{"name":"x"} {"name":"y"}`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"trailing comma", "POST", keys, `{"name":"x",}`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"trailing garbage", "POST", keys, `{"name":"x"}x`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"unterminated", "POST", keys, `{"name":"x"`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"null", "POST", keys, `null`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"missing colon", "POST", keys, `{"name" "x"}`, "", 400, keygate.CodeInvalidRequest, paramNull},
			// Members.
			{"repeated member", "POST", keys, `{"name":"x","name":"y"}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"unknown member", "POST", keys, `{"name":"x","nmae":"y"}`, "", 400, keygate.CodeInvalidRequest, "nmae"},
			{"role is not an API field", "POST", keys, `{"name":"x","role":"owner"}`, "", 400, keygate.CodeInvalidRequest, "role"},
			{"empty object", "POST", keys, `{}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"empty body", "POST", keys, ``, "", 400, keygate.CodeInvalidRequest, "name"},
			{"empty name", "POST", keys, `{"name":""}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"name of 201", "POST", keys, `{"name":"` + strings.Repeat("n", 201) + `"}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"name with control", "POST", keys, `{"name":"a\u0007b"}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"name with newline", "POST", keys, `{"name":"a\nb"}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"name number", "POST", keys, `{"name":5}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"name null", "POST", keys, `{"name":null}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"scopes string", "POST", keys, `{"name":"x","scopes":"read"}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"scopes numbers", "POST", keys, `{"name":"x","scopes":[1]}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"scopes null", "POST", keys, `{"name":"x","scopes":null}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"scope pattern", "POST", keys, `{"name":"x","scopes":["read write"]}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"scope too long", "POST", keys, `{"name":"x","scopes":["a` + strings.Repeat("b", 64) + `"]}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"project_ids string", "POST", keys, `{"name":"x","project_ids":"p"}`, "", 400, keygate.CodeInvalidRequest, "project_ids"},
			{"project id with slash", "POST", keys, `{"name":"x","project_ids":["a/b"]}`, "", 400, keygate.CodeInvalidRequest, "project_ids"},
			{"type unknown", "POST", keys, `{"name":"x","type":"root"}`, "", 400, keygate.CodeInvalidRequest, "type"},
			{"type empty", "POST", keys, `{"name":"x","type":""}`, "", 400, keygate.CodeInvalidRequest, "type"},
			{"type number", "POST", keys, `{"name":"x","type":1}`, "", 400, keygate.CodeInvalidRequest, "type"},
			{"environment unknown", "POST", keys, `{"name":"x","environment":"prod"}`, "", 400, keygate.CodeInvalidRequest, "environment"},
			{"expires_at not RFC 3339", "POST", keys, `{"name":"x","expires_at":"tomorrow"}`, "", 400, keygate.CodeInvalidRequest, "expires_at"},
			{"expires_at date only", "POST", keys, `{"name":"x","expires_at":"2030-01-01"}`, "", 400, keygate.CodeInvalidRequest, "expires_at"},
			{"expires_at past", "POST", keys, `{"name":"x","expires_at":"` + past + `"}`, "", 400, keygate.CodeInvalidRequest, "expires_at"},
			{"expires_at number", "POST", keys, `{"name":"x","expires_at":1893456000}`, "", 400, keygate.CodeInvalidRequest, "expires_at"},
			{"expires_in zero", "POST", keys, `{"name":"x","expires_in":0}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"expires_in negative", "POST", keys, `{"name":"x","expires_in":-5}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"expires_in fraction", "POST", keys, `{"name":"x","expires_in":1.5}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"expires_in string", "POST", keys, `{"name":"x","expires_in":"60"}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"expires_in huge", "POST", keys, `{"name":"x","expires_in":99999999999999}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"both expiries", "POST", keys, `{"name":"x","expires_in":60,"expires_at":"2099-01-01T00:00:00Z"}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"rate negative", "POST", keys, `{"name":"x","rate_limit_per_minute":-1}`, "", 400, keygate.CodeInvalidRequest, "rate_limit_per_minute"},
			{"rate fraction", "POST", keys, `{"name":"x","rate_limit_per_minute":1.5}`, "", 400, keygate.CodeInvalidRequest, "rate_limit_per_minute"},
			{"rate string", "POST", keys, `{"name":"x","rate_limit_per_minute":"10"}`, "", 400, keygate.CodeInvalidRequest, "rate_limit_per_minute"},
			{"rate over 32 bits", "POST", keys, `{"name":"x","rate_limit_per_minute":2147483648}`, "", 400, keygate.CodeInvalidRequest, "rate_limit_per_minute"},
			{"metadata array", "POST", keys, `{"name":"x","metadata":[]}`, "", 400, keygate.CodeInvalidRequest, "metadata"},
			{"metadata string", "POST", keys, `{"name":"x","metadata":"plan"}`, "", 400, keygate.CodeInvalidRequest, "metadata"},
			{"metadata over 4096 bytes", "POST", keys, meta4097, "", 400, keygate.CodeInvalidRequest, "metadata"},
			{"user_id number", "POST", keys, `{"name":"x","user_id":7}`, "", 400, keygate.CodeInvalidRequest, "user_id"},
			{"user_id with space", "POST", keys, `{"name":"x","user_id":"a b"}`, "", 400, keygate.CodeInvalidRequest, "user_id"},
			// Sizes and content types.
			{"over 64 KiB", "POST", keys, big, "", 413, keygate.CodeRequestTooLarge, ""},
			{"text/plain", "POST", keys, `{"name":"x"}`, "text/plain", 415, keygate.CodeUnsupportedMediaType, ""},
			{"form", "POST", keys, `{"name":"x"}`, "application/x-www-form-urlencoded", 415, keygate.CodeUnsupportedMediaType, ""},
			{"latin1", "POST", keys, `{"name":"x"}`, "application/json; charset=latin1", 415, keygate.CodeUnsupportedMediaType, ""},
			{"json suffix", "POST", keys, `{"name":"x"}`, "application/merge-patch+json", 415, keygate.CodeUnsupportedMediaType, ""},
			{"bad media type", "POST", keys, `{"name":"x"}`, "json;;", 415, keygate.CodeUnsupportedMediaType, ""},
			{"PATCH text/plain", "PATCH", patch + id, `{"name":"x"}`, "text/plain", 415, keygate.CodeUnsupportedMediaType, ""},
			{"roll text/plain", "POST", patch + id + roll, `{}`, "text/plain", 415, keygate.CodeUnsupportedMediaType, ""},
			// PATCH.
			{"PATCH nothing", "PATCH", patch + id, `{}`, "", 400, keygate.CodeInvalidRequest, ""},
			{"PATCH empty body", "PATCH", patch + id, ``, "", 400, keygate.CodeInvalidRequest, ""},
			{"PATCH not JSON", "PATCH", patch + id, `{`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"PATCH scopes", "PATCH", patch + id, `{"scopes":["read"]}`, "", 400, keygate.CodeInvalidRequest, "scopes"},
			{"PATCH expires_in", "PATCH", patch + id, `{"expires_in":60}`, "", 400, keygate.CodeInvalidRequest, "expires_in"},
			{"PATCH active string", "PATCH", patch + id, `{"active":"false"}`, "", 400, keygate.CodeInvalidRequest, "active"},
			{"PATCH active null", "PATCH", patch + id, `{"active":null}`, "", 400, keygate.CodeInvalidRequest, "active"},
			{"PATCH name empty", "PATCH", patch + id, `{"name":""}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"PATCH name null", "PATCH", patch + id, `{"name":null}`, "", 400, keygate.CodeInvalidRequest, "name"},
			{"PATCH rate string", "PATCH", patch + id, `{"name":"x","rate_limit_per_minute":"x"}`, "", 400, keygate.CodeInvalidRequest, "rate_limit_per_minute"},
			{"PATCH expires_at past", "PATCH", patch + id, `{"expires_at":"` + past + `"}`, "", 400, keygate.CodeInvalidRequest, "expires_at"},
			{"PATCH metadata array", "PATCH", patch + id, `{"metadata":[1]}`, "", 400, keygate.CodeInvalidRequest, "metadata"},
			{"PATCH over 64 KiB", "PATCH", patch + id, big, "", 413, keygate.CodeRequestTooLarge, ""},
			{"PATCH unknown id", "PATCH", patch + "key_nope", `{"name":"x"}`, "", 404, keygate.CodeNotFound, ""},
			// Roll.
			{"grace negative", "POST", patch + id + roll, `{"grace_seconds":-1}`, "", 400, keygate.CodeInvalidRequest, "grace_seconds"},
			{"grace over 7 days", "POST", patch + id + roll, `{"grace_seconds":604801}`, "", 400, keygate.CodeInvalidRequest, "grace_seconds"},
			{"grace string", "POST", patch + id + roll, `{"grace_seconds":"60"}`, "", 400, keygate.CodeInvalidRequest, "grace_seconds"},
			{"grace null", "POST", patch + id + roll, `{"grace_seconds":null}`, "", 400, keygate.CodeInvalidRequest, "grace_seconds"},
			{"roll unknown member", "POST", patch + id + roll, `{"grace":60}`, "", 400, keygate.CodeInvalidRequest, "grace"},
			{"roll not JSON", "POST", patch + id + roll, `grace=60`, "", 400, keygate.CodeInvalidRequest, paramNull},
			// Queries.
			{"limit 0", "GET", keys + "?limit=0", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"limit 201", "GET", keys + "?limit=201", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"limit negative", "GET", keys + "?limit=-1", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"limit word", "GET", keys + "?limit=ten", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"limit empty", "GET", keys + "?limit=", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"limit twice", "GET", keys + "?limit=5&limit=6", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"status revoked", "GET", keys + "?status=revoked", "", "", 400, keygate.CodeInvalidRequest, "status"},
			{"status unknown", "GET", keys + "?status=all", "", "", 400, keygate.CodeInvalidRequest, "status"},
			{"status empty", "GET", keys + "?status=", "", "", 400, keygate.CodeInvalidRequest, "status"},
			{"cursor not base64", "GET", keys + "?cursor=!!", "", "", 400, keygate.CodeInvalidRequest, "cursor"},
			{"cursor garbage", "GET", keys + "?cursor=Z2FyYmFnZQ", "", "", 400, keygate.CodeInvalidRequest, "cursor"},
			{"cursor well-formed", "GET", keys + "?cursor=MTIzLmtleV9h", "", "", 200, "", ""}, // "123.key_a"
			{"cursor with padding", "GET", keys + "?cursor=MTIzLmtleV9hYg==", "", "", 400, keygate.CodeInvalidRequest, "cursor"},
			{"cursor empty", "GET", keys + "?cursor=", "", "", 400, keygate.CodeInvalidRequest, "cursor"},
			{"audit limit 0", "GET", "/v1/audit-events?limit=0", "", "", 400, keygate.CodeInvalidRequest, "limit"},
			{"audit cursor", "GET", "/v1/audit-events?cursor=x", "", "", 400, keygate.CodeInvalidRequest, "cursor"},
			{"unknown key", "GET", patch + "key_nope", "", "", 404, keygate.CodeNotFound, ""},
			{"unknown path", "GET", "/v1/keys", "", "", 404, keygate.CodeNotFound, ""},
			// What is accepted at the edges.
			{"charset utf-8", "POST", keys, `{"name":"x"}`, "application/json; charset=UTF-8", 201, "", ""},
			{"name of 200", "POST", keys, `{"name":"` + strings.Repeat("é", 200) + `"}`, "", 201, "", ""},
			{"metadata null", "POST", keys, `{"name":"x","metadata":null}`, "", 201, "", ""},
			{"grace 7 days", "POST", patch + rid + roll, `{"grace_seconds":604800}`, "", 201, "", ""},
			{"roll without a body", "POST", patch + rid + roll, ``, "", 201, "", ""},
			{"limit 200", "GET", keys + "?limit=200", "", "", 200, "", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := e.do(req{method: tt.method, path: tt.path, token: tok, body: tt.body, contentType: tt.contentType})
				if tt.code == "" {
					want(t, r, tt.status)
					return
				}
				b := wantError(t, r, tt.status, tt.code, tt.param)
				if b.Error.Message == "" {
					t.Error("no message")
				}
			})
		}
	})
}

func TestAPI_MethodNotAllowed_AnswersAllow(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{})
		for _, tt := range []struct{ method, path, allow string }{
			{"PUT", "/v1/api-keys", "GET, HEAD, POST"},
			{"DELETE", "/v1/api-keys", "GET, HEAD, POST"},
			{"POST", "/v1/api-keys/key_x", "DELETE, GET, HEAD, PATCH"},
			{"PUT", "/v1/api-keys/key_x", "DELETE, GET, HEAD, PATCH"},
			{"GET", "/v1/api-keys/key_x/roll", "POST"},
			{"POST", "/v1/whoami", "GET, HEAD"},
			{"DELETE", "/v1/audit-events", "GET, HEAD"},
			{"POST", "/healthz", "GET, HEAD"},
		} {
			r := e.do(req{method: tt.method, path: tt.path, token: tok})
			wantError(t, r, http.StatusMethodNotAllowed, keygate.CodeMethodNotAllowed, "")
			if got := r.Header.Get("allow"); got != tt.allow {
				t.Errorf("%s %s: allow = %q, want %q", tt.method, tt.path, got, tt.allow)
			}
		}
	})
}

func TestAPI_Authentication_DeniesAsCheckDoes(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{})
		_, other := e.key(manage.NewKey{})
		_, pub := e.key(manage.NewKey{Type: keygate.Publishable, Role: "member"})
		inactiveKey, inactive := e.key(manage.NewKey{})
		soon := e.clock.now().Add(time.Minute)
		_, expired := e.key(manage.NewKey{ExpiresAt: &soon})
		_, disabled := e.key(manage.NewKey{OrgID: "gone"})
		ctx := context.Background()
		if _, err := e.st.UpdateKey(ctx, "acme", inactiveKey.ID, store.KeyUpdate{Active: ptr(false)}, keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.DisableOrganization(ctx, "gone", keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		if err := e.follower.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		e.clock.advance(2 * time.Minute)

		const bearer = `Bearer realm="keygate", error="invalid_token"`
		for _, tt := range []struct {
			name    string
			header  map[string]string
			status  int
			code    keygate.Code
			wwwAuth string
		}{
			{"no credential", nil, 401, keygate.CodeMissingAPIKey, `Bearer realm="keygate"`},
			{"unknown token", map[string]string{"authorization": "Bearer sk_live_00000000000000000000000000000000000000"}, 401, keygate.CodeInvalidAPIKey, bearer},
			{"not a token", map[string]string{"authorization": "Bearer hello"}, 401, keygate.CodeInvalidAPIKey, bearer},
			{"basic", map[string]string{"authorization": "Basic dTpw"}, 401, keygate.CodeInvalidAuthorizationFormat, bearer},
			{"two tokens", map[string]string{"authorization": "Bearer " + tok, "x-api-key": other}, 400, keygate.CodeConflictingCredentials, ""},
			{"inactive", map[string]string{"authorization": "Bearer " + inactive}, 401, keygate.CodeAPIKeyInactive, bearer},
			{"expired", map[string]string{"x-api-key": expired}, 401, keygate.CodeAPIKeyExpired, bearer},
			{"organization disabled", map[string]string{"x-api-key": disabled}, 403, keygate.CodeOrganizationDisabled, ""},
			{"publishable", map[string]string{"x-api-key": pub}, 403, keygate.CodeForbidden, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				h := map[string]string{"x-request-id": "req-" + tt.name}
				for k, v := range tt.header {
					h[k] = v
				}
				for _, path := range []string{"/v1/whoami", "/v1/api-keys"} {
					r := e.do(req{method: "GET", path: path, header: h})
					b := wantError(t, r, tt.status, tt.code, "")
					if got := r.Header.Get("www-authenticate"); got != tt.wwwAuth {
						t.Errorf("www-authenticate = %q, want %q", got, tt.wwwAuth)
					}
					if b.Meta.RequestID != "req-"+tt.name {
						t.Errorf("request_id = %q", b.Meta.RequestID)
					}
					if tt.code == keygate.CodeForbidden {
						continue // Check allows publishable keys on publishable routes
					}
					// The same body as Check's deny for the same request.
					want := checkDenyBody(t, e, h)
					if !jsonEqual(r.Body, want) {
						t.Errorf("API body %s\nCheck body %s", r.Body, want)
					}
				}
			})
		}

		// A generated request id when the client sends none.
		r := e.get("/v1/whoami", "")
		if id := r.Header.Get("x-request-id"); !strings.HasPrefix(id, "req_") || decode[httpapi.ErrorBody](t, r).Meta.RequestID != id {
			t.Errorf("generated x-request-id %q, body %s", id, r.Body)
		}
		r = e.get("/v1/whoami", tok)
		if id := r.Header.Get("x-request-id"); !strings.HasPrefix(id, "req_") {
			t.Errorf("x-request-id on success = %q", id)
		}
	})
}

// checkDenyBody is the body of Check's deny for a request with headers h.
func checkDenyBody(t *testing.T, e *env, h map[string]string) string {
	t.Helper()
	resp, err := e.authz.Check(context.Background(), checkRequest("", h))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDeniedResponse() == nil {
		t.Fatalf("Check allowed %v", h)
	}
	return resp.GetDeniedResponse().GetBody()
}

func TestAPI_Throttle_FailedAttemptsCountWithChecksFromTheSameAddress(t *testing.T) {
	eachStoreWith(t, options{failedAuthLimit: 3}, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{})
		bad := "sk_live_00000000000000000000000000000000000000"
		wantError(t, e.get("/v1/whoami", bad), 401, keygate.CodeInvalidAPIKey, "")
		wantError(t, e.get("/v1/whoami", bad), 401, keygate.CodeInvalidAPIKey, "")
		if code := e.check(bad, "127.0.0.1"); code != keygate.CodeInvalidAPIKey {
			t.Fatalf("Check = %s", code)
		}
		// Three failures from 127.0.0.1, two of them through the API: even
		// a good key from there is throttled now, on both transports.
		r := e.get("/v1/whoami", tok)
		wantError(t, r, http.StatusTooManyRequests, keygate.CodeTooManyFailedAttempts, "")
		if ra := r.Header.Get("retry-after"); ra == "" || ra == "0" {
			t.Errorf("retry-after = %q", ra)
		}
		if code := e.check(tok, "127.0.0.1"); code != keygate.CodeTooManyFailedAttempts {
			t.Errorf("Check from the throttled address = %q, want too_many_failed_attempts", code)
		}
		if code := e.check(tok, "192.0.2.1"); code != "" {
			t.Errorf("Check from another address = %s", code)
		}
		e.clock.advance(70 * time.Second)
		want(t, e.get("/v1/whoami", tok), http.StatusOK)
	})
}

type failingSyncer struct{}

func (failingSyncer) Sync(context.Context) error { return errors.New("store unreachable") }

func TestAPI_Revoke_AnswersUnavailableWhenTheCacheCannotBeSynced(t *testing.T) {
	eachStoreWith(t, options{syncer: failingSyncer{}}, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{})
		k, _ := e.key(manage.NewKey{Role: "viewer"})
		r := e.do(req{method: "DELETE", path: "/v1/api-keys/" + k.ID, token: tok})
		wantError(t, r, http.StatusServiceUnavailable, keygate.CodeServiceUnavailable, "")
		if r.Header.Get("retry-after") != "1" || strings.Contains(string(r.Body), "unreachable") {
			t.Errorf("retry-after %q, body %s", r.Header.Get("retry-after"), r.Body)
		}
	})
}

func TestAPI_Audit_CLIChangesHaveNoActorAndOrganizationEventsNoKey(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		admin, tok := e.key(manage.NewKey{})
		k, _ := e.key(manage.NewKey{Role: "viewer"})
		if _, err := e.cli.RevokeKey(ctx, "acme", k.ID, keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.CreateOrganization(ctx, "other", keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.DisableOrganization(ctx, "acme", keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.EnableOrganization(ctx, "acme", keygate.Actor{}); err != nil {
			t.Fatal(err)
		}
		r := e.get("/v1/audit-events", tok)
		want(t, r, http.StatusOK)
		if strings.Contains(string(r.Body), "hash") || strings.Contains(string(r.Body), "sk_live_") {
			t.Errorf("audit trail holds a secret: %s", r.Body)
		}
		var raw struct {
			Data []map[string]any `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &raw); err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		for _, ev := range raw.Data {
			delete(ev, "id")
			delete(ev, "created_at")
			got = append(got, ev)
		}
		ev := func(action string, key any) map[string]any {
			return map[string]any{"object": "audit_event", "action": action, "actor_key_id": nil, "key_id": key,
				"org_id": "acme", "request_id": nil}
		}
		wantEvents := []map[string]any{
			ev("organization.enabled", nil), ev("organization.disabled", nil),
			ev("api_key.revoked", k.ID), ev("api_key.created", k.ID), ev("api_key.created", admin.ID),
			ev("organization.created", nil),
		}
		if diff := cmp.Diff(wantEvents, got); diff != "" {
			t.Errorf("audit events (-want +got):\n%s", diff)
		}
		// Paginated like the list.
		r = e.get("/v1/audit-events?limit=4", tok)
		page := decode[httpapi.List[httpapi.AuditEvent]](t, r)
		if len(page.Data) != 4 || page.NextCursor == nil {
			t.Fatalf("first page = %+v", page)
		}
		r = e.get("/v1/audit-events?limit=4&cursor="+*page.NextCursor, tok)
		page2 := decode[httpapi.List[httpapi.AuditEvent]](t, r)
		if len(page2.Data) != 2 || page2.NextCursor != nil || page2.Data[1].Action != "organization.created" {
			t.Errorf("second page = %+v", page2)
		}
	})
}
