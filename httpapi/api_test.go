package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

func ptr[T any](v T) *T { return &v }

// cmpTime compares wire timestamps as instants.
var cmpTime = cmp.Comparer(func(a, b httpapi.Time) bool { return time.Time(a).Equal(time.Time(b)) })

func TestAPI_KeyLifecycle_CreateListGetPatchRollRevoke(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		admin, adminTok := e.key(manage.NewKey{Name: "admin"})
		var bodies []string // every answer without a token in it
		call := func(r req) response {
			t.Helper()
			r.token = adminTok
			if r.header == nil {
				r.header = map[string]string{"x-request-id": "req-" + r.method + "-" + r.path}
			}
			resp := e.do(r)
			if got := resp.Header.Get("x-request-id"); got != r.header["x-request-id"] {
				t.Errorf("%s %s: x-request-id = %q, want %q", r.method, r.path, got, r.header["x-request-id"])
			}
			return resp
		}

		// Create: 201, the whole key object and its token, once.
		r := call(req{method: "POST", path: "/v1/api-keys", body: `{"name":"CI Pipeline","scopes":["read","write"],` +
			`"rate_limit_per_minute":60,"metadata":{"plan":"pro"},"expires_in":3600}`})
		want(t, r, http.StatusCreated)
		var raw map[string]map[string]any
		if err := json.Unmarshal(r.Body, &raw); err != nil {
			t.Fatal(err)
		}
		var fields []string
		for k := range raw["data"] {
			fields = append(fields, k)
		}
		slices.Sort(fields)
		wantFields := []string{"allowed_sources", "created_at", "environment", "expires_at", "id", "key", "last4", "last_used_at", "metadata",
			"name", "object", "org_id", "prefix", "project_ids", "rate_limit_per_minute", "rate_limits", "refill", "remaining", "scopes", "status", "type", "user_id"}
		if diff := cmp.Diff(wantFields, fields); diff != "" {
			t.Errorf("create fields (-want +got):\n%s", diff)
		}
		created := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data
		tok, err := apikey.DefaultFormat().Parse(created.Key)
		if err != nil {
			t.Fatalf("created token %q: %v", created.Key, err)
		}
		got := created.APIKey
		wantKey := httpapi.APIKey{
			ID: got.ID, Object: "api_key", Name: "CI Pipeline", Prefix: tok.Prefix(), Last4: tok.Last4(), Type: "secret",
			Environment: "live", OrgID: "acme", UserID: "alice", Scopes: []string{"read", "write"}, ProjectIDs: []string{},
			RateLimitPerMinute: ptr(60), Metadata: json.RawMessage(`{"plan":"pro"}`), AllowedSources: []string{}, RateLimits: []keygate.RateLimit{}, Status: "active",
			CreatedAt: got.CreatedAt, ExpiresAt: got.ExpiresAt,
		}
		if diff := cmp.Diff(wantKey, got, cmpTime); diff != "" {
			t.Errorf("created key (-want +got):\n%s", diff)
		}
		if !strings.HasPrefix(got.ID, "key_") || got.ExpiresAt == nil ||
			time.Time(*got.ExpiresAt).Sub(time.Time(got.CreatedAt)).Round(time.Minute) != time.Hour {
			t.Errorf("id %q, created %v, expires %v", got.ID, got.CreatedAt, got.ExpiresAt)
		}
		if code := e.check(created.Key, ""); code != "" {
			t.Errorf("Check of the created key = %s, want allowed", code)
		}
		id := got.ID

		// List: newest first, the new key above the admin's.
		r = call(req{method: "GET", path: "/v1/api-keys"})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		list := decode[httpapi.List[httpapi.APIKey]](t, r)
		if len(list.Data) != 2 || list.Data[0].ID != id || list.Data[1].ID != admin.ID || list.NextCursor != nil {
			t.Errorf("list = %+v", list)
		}
		if !strings.Contains(string(r.Body), `"next_cursor":null`) {
			t.Errorf("list body %s lacks next_cursor null", r.Body)
		}

		// Get.
		r = call(req{method: "GET", path: "/v1/api-keys/" + id})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		if diff := cmp.Diff(wantKey, decode[httpapi.Data[httpapi.APIKey]](t, r).Data, cmpTime); diff != "" {
			t.Errorf("get (-want +got):\n%s", diff)
		}

		// Patch: deactivate (Check denies at once), rename, and replace
		// metadata and the limits.
		r = call(req{method: "PATCH", path: "/v1/api-keys/" + id, body: `{"active":false}`})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		if s := decode[httpapi.Data[httpapi.APIKey]](t, r).Data.Status; s != "inactive" {
			t.Errorf("status after active:false = %s", s)
		}
		if code := e.check(created.Key, ""); code != keygate.CodeAPIKeyInactive {
			t.Errorf("Check after deactivation = %q, want api_key_inactive", code)
		}
		r = call(req{method: "PATCH", path: "/v1/api-keys/" + id, body: `{"name":"CI 2","active":true,` +
			`"rate_limit_per_minute":null,"expires_at":null,"metadata":{"tier":1}}`})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		patched := decode[httpapi.Data[httpapi.APIKey]](t, r).Data
		wantKey.Name, wantKey.RateLimitPerMinute, wantKey.ExpiresAt, wantKey.Metadata = "CI 2", nil, nil, json.RawMessage(`{"tier":1}`)
		if diff := cmp.Diff(wantKey, patched, cmpTime); diff != "" {
			t.Errorf("patched (-want +got):\n%s", diff)
		}
		if code := e.check(created.Key, ""); code != "" {
			t.Errorf("Check after reactivation = %s", code)
		}

		// Roll with no grace: the old token is denied once the call has
		// returned, the new one allowed; same id and settings.
		r = call(req{method: "POST", path: "/v1/api-keys/" + id + "/roll", body: `{"grace_seconds":0}`})
		want(t, r, http.StatusCreated)
		rolled := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data
		newTok, err := apikey.DefaultFormat().Parse(rolled.Key)
		if err != nil || rolled.Key == created.Key {
			t.Fatalf("rolled token %q: %v", rolled.Key, err)
		}
		wantKey.Prefix, wantKey.Last4 = newTok.Prefix(), newTok.Last4()
		if diff := cmp.Diff(wantKey, rolled.APIKey, cmpTime); diff != "" {
			t.Errorf("rolled (-want +got):\n%s", diff)
		}
		if code := e.check(created.Key, ""); code != keygate.CodeInvalidAPIKey {
			t.Errorf("Check of the old token after roll = %q, want invalid_api_key", code)
		}
		if code := e.check(rolled.Key, ""); code != "" {
			t.Errorf("Check of the new token = %s", code)
		}

		// Revoke: 200 with status revoked; then 404 and gone from the
		// list, denied by Check, and still in the store.
		r = call(req{method: "DELETE", path: "/v1/api-keys/" + id})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		revoked := decode[httpapi.Data[httpapi.APIKey]](t, r).Data
		wantKey.Status = "revoked"
		if diff := cmp.Diff(wantKey, revoked, cmpTime); diff != "" {
			t.Errorf("revoked (-want +got):\n%s", diff)
		}
		if code := e.check(rolled.Key, ""); code != keygate.CodeInvalidAPIKey {
			t.Errorf("Check after revoke = %q, want invalid_api_key", code)
		}
		for _, r := range []response{
			call(req{method: "GET", path: "/v1/api-keys/" + id}),
			call(req{method: "DELETE", path: "/v1/api-keys/" + id}),
			call(req{method: "PATCH", path: "/v1/api-keys/" + id, body: `{"name":"x"}`}),
			call(req{method: "POST", path: "/v1/api-keys/" + id + "/roll"}),
		} {
			wantError(t, r, http.StatusNotFound, keygate.CodeNotFound, "")
		}
		r = call(req{method: "GET", path: "/v1/api-keys"})
		bodies = append(bodies, string(r.Body))
		if l := decode[httpapi.List[httpapi.APIKey]](t, r).Data; len(l) != 1 || l[0].ID != admin.ID {
			t.Errorf("list after revoke = %+v", l)
		}
		rec, err := e.st.LookupKey(context.Background(), newTok.Hash())
		if err != nil || rec.Key.ID != id || rec.Key.RevokedAt == nil {
			t.Errorf("store lookup after revoke = %+v, %v; want the key, revoked", rec, err)
		}

		// Audit: one event per change, newest first, with the caller and
		// the request id; nothing secret.
		r = call(req{method: "GET", path: "/v1/audit-events"})
		want(t, r, http.StatusOK)
		bodies = append(bodies, string(r.Body))
		events := decode[httpapi.List[httpapi.AuditEvent]](t, r).Data
		type ev struct{ Action, Actor, Key, Req string }
		var gotEvents []ev
		for _, a := range events {
			if a.Object != "audit_event" || a.OrgID != "acme" || !strings.HasPrefix(a.ID, "aud_") {
				t.Errorf("audit event %+v", a)
			}
			gotEvents = append(gotEvents, ev{a.Action, deref(a.ActorKeyID), deref(a.KeyID), deref(a.RequestID)})
		}
		wantEvents := []ev{
			{"api_key.revoked", admin.ID, id, "req-DELETE-/v1/api-keys/" + id},
			{"api_key.rolled", admin.ID, id, "req-POST-/v1/api-keys/" + id + "/roll"},
			{"api_key.updated", admin.ID, id, "req-PATCH-/v1/api-keys/" + id},
			{"api_key.updated", admin.ID, id, "req-PATCH-/v1/api-keys/" + id},
			{"api_key.created", admin.ID, id, "req-POST-/v1/api-keys"},
			{"api_key.created", "", admin.ID, ""}, // the CLI: no actor, no request id
			{"organization.created", "", "", ""},
		}
		if diff := cmp.Diff(wantEvents, gotEvents); diff != "" {
			t.Errorf("audit events (-want +got):\n%s", diff)
		}

		// The tokens appear in the create and roll answers only.
		for _, b := range bodies {
			for _, secret := range []string{created.Key, rolled.Key, adminTok} {
				if strings.Contains(b, secret) || strings.Contains(b, secret[len(secret)-20:]) {
					t.Errorf("an answer holds a token: %s", b)
				}
			}
		}
		if got := e.usage.recorded(); len(got) == 0 || got[0] != admin.ID {
			t.Errorf("usage recorded %v, want the admin's calls", got)
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestAPI_RollWithGrace_OldTokenWorksUntilTheDeadline(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, adminTok := e.key(manage.NewKey{})
		k, oldTok := e.key(manage.NewKey{Role: "member"})
		r := e.do(req{method: "POST", path: "/v1/api-keys/" + k.ID + "/roll", token: adminTok, body: `{"grace_seconds":60}`})
		want(t, r, http.StatusCreated)
		newTok := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data.Key

		for _, tok := range []string{oldTok, newTok} {
			if code := e.check(tok, ""); code != "" {
				t.Errorf("within the grace: Check = %s, want allowed", code)
			}
		}
		e.clock.advance(59 * time.Second)
		if code := e.check(oldTok, ""); code != "" {
			t.Errorf("1s before the deadline: Check of the old token = %s", code)
		}
		e.clock.advance(2 * time.Second)
		if code := e.check(oldTok, ""); code != keygate.CodeInvalidAPIKey {
			t.Errorf("after the deadline: Check of the old token = %q, want invalid_api_key", code)
		}
		if code := e.check(newTok, ""); code != "" {
			t.Errorf("after the deadline: Check of the new token = %s", code)
		}
		// The API authenticates the same way.
		wantError(t, e.get("/v1/whoami", oldTok), http.StatusUnauthorized, keygate.CodeInvalidAPIKey, "")
		want(t, e.get("/v1/whoami", newTok), http.StatusOK)
	})
}

func TestAPI_Pagination_WalksEveryKeyOnceWhileKeysAreCreated(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, adminTok := e.key(manage.NewKey{})
		before := map[string]bool{}
		for i := range 23 {
			k, _ := e.key(manage.NewKey{Name: fmt.Sprintf("k%d", i), Role: "viewer"})
			before[k.ID] = true
		}
		ctx, stop := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := e.cli.CreateKey(ctx, manage.NewKey{OrgID: "acme", UserID: "bob", Name: fmt.Sprintf("new%d", i), Role: "viewer"},
					keygate.Actor{}); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		})
		seen := map[string]int{}
		var last time.Time
		path, pages := "/v1/api-keys?limit=5", 0
		for {
			r := e.get(path, adminTok)
			want(t, r, http.StatusOK)
			page := decode[httpapi.List[httpapi.APIKey]](t, r)
			pages++
			for _, k := range page.Data {
				seen[k.ID]++
				if !last.IsZero() && time.Time(k.CreatedAt).After(last) {
					t.Errorf("key %s created %v after the previous one (%v): not newest first", k.ID, k.CreatedAt, last)
				}
				last = time.Time(k.CreatedAt)
			}
			if page.NextCursor == nil {
				break
			}
			if len(page.Data) != 5 {
				t.Errorf("a page before the last has %d keys", len(page.Data))
			}
			path = "/v1/api-keys?limit=5&cursor=" + *page.NextCursor
		}
		stop()
		wg.Wait()
		for id := range before {
			if seen[id] != 1 {
				t.Errorf("key %s seen %d times, want once", id, seen[id])
			}
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("key %s seen %d times", id, n)
			}
		}
		if pages < 5 {
			t.Errorf("%d pages for 24+ keys of 5", pages)
		}
	})
}

func TestAPI_List_StatusFilter(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		admin, tok := e.key(manage.NewKey{})
		soon := e.clock.now().Add(time.Minute)
		expiring, _ := e.key(manage.NewKey{Role: "viewer", ExpiresAt: &soon})
		inactive, _ := e.key(manage.NewKey{Role: "viewer"})
		want(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + inactive.ID, token: tok, body: `{"active":false}`}), http.StatusOK)
		e.clock.advance(2 * time.Minute) // expiring has expired
		for status, ids := range map[string][]string{
			"":                 {inactive.ID, expiring.ID, admin.ID},
			"?status=active":   {admin.ID},
			"?status=inactive": {inactive.ID},
			"?status=expired":  {expiring.ID},
		} {
			r := e.get("/v1/api-keys"+status, tok)
			want(t, r, http.StatusOK)
			var got []string
			for _, k := range decode[httpapi.List[httpapi.APIKey]](t, r).Data {
				got = append(got, k.ID)
				if status != "" && "?status="+k.Status != status {
					t.Errorf("%s listed a key with status %s", status, k.Status)
				}
			}
			if diff := cmp.Diff(ids, got); diff != "" {
				t.Errorf("list%s (-want +got):\n%s", status, diff)
			}
		}
	})
}

func TestAPI_TenantIsolation_AnotherOrganizationsIDsAreNotFound(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		aKey, _ := e.key(manage.NewKey{OrgID: "org-a", Role: "member"})
		_, bTok := e.key(manage.NewKey{OrgID: "org-b"}) // an owner of B: every scope
		id := aKey.ID
		for _, r := range []req{
			{method: "GET", path: "/v1/api-keys/" + id},
			{method: "PATCH", path: "/v1/api-keys/" + id, body: `{"name":"mine now"}`},
			{method: "PATCH", path: "/v1/api-keys/" + id, body: `{"active":false}`},
			{method: "DELETE", path: "/v1/api-keys/" + id},
			{method: "POST", path: "/v1/api-keys/" + id + "/roll"},
			{method: "POST", path: "/v1/api-keys/" + id + "/roll", body: `{"grace_seconds":60}`},
		} {
			t.Run(r.method+" "+r.path+" "+r.body, func(t *testing.T) {
				r.token = bTok
				wantError(t, e.do(r), http.StatusNotFound, keygate.CodeNotFound, "")
			})
		}
		// Endpoints without an id show B's own things only.
		for _, path := range []string{"/v1/api-keys", "/v1/api-keys?status=active", "/v1/audit-events", "/v1/whoami"} {
			r := e.get(path, bTok)
			want(t, r, http.StatusOK)
			if strings.Contains(string(r.Body), "org-a") || strings.Contains(string(r.Body), id) {
				t.Errorf("GET %s as org-b shows org-a: %s", path, r.Body)
			}
		}
		// Creating with A's identifiers still creates in B.
		k := e.create(bTok, `{"name":"x","user_id":"alice"}`)
		if k.OrgID != "org-b" {
			t.Errorf("created in %s", k.OrgID)
		}
		// A's key is untouched and still allowed.
		got, err := e.st.GetKey(context.Background(), "org-a", id)
		if err != nil || got.Name != "test key" || got.DisabledAt != nil || got.Prefix != aKey.Prefix {
			t.Errorf("org-a's key after org-b's attempts: %+v, %v", got, err)
		}
	})
}

func TestAPI_Visibility_MembersSeeTheirOwnUsersKeysAdminsTheOrganization(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		alice, aliceTok := e.key(manage.NewKey{UserID: "alice", Role: "member"})
		aliceCI, _ := e.key(manage.NewKey{UserID: "alice", Role: "viewer"})
		bob, _ := e.key(manage.NewKey{UserID: "bob", Role: "member"})
		owner, ownerTok := e.key(manage.NewKey{UserID: "carol", Role: "owner"})

		ids := func(tok string) []string {
			r := e.get("/v1/api-keys", tok)
			want(t, r, http.StatusOK)
			var out []string
			for _, k := range decode[httpapi.List[httpapi.APIKey]](t, r).Data {
				out = append(out, k.ID)
			}
			return out
		}
		if diff := cmp.Diff([]string{aliceCI.ID, alice.ID}, ids(aliceTok)); diff != "" {
			t.Errorf("member's list (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{owner.ID, bob.ID, aliceCI.ID, alice.ID}, ids(ownerTok)); diff != "" {
			t.Errorf("owner's list (-want +got):\n%s", diff)
		}
		for _, r := range []req{
			{method: "GET", path: "/v1/api-keys/" + bob.ID},
			{method: "PATCH", path: "/v1/api-keys/" + bob.ID, body: `{"name":"x"}`},
			{method: "DELETE", path: "/v1/api-keys/" + bob.ID},
			{method: "POST", path: "/v1/api-keys/" + bob.ID + "/roll"},
			{method: "GET", path: "/v1/api-keys/" + owner.ID},
		} {
			r.token = aliceTok
			wantError(t, e.do(r), http.StatusNotFound, keygate.CodeNotFound, "")
		}
		want(t, e.get("/v1/api-keys/"+aliceCI.ID, aliceTok), http.StatusOK)
		want(t, e.get("/v1/api-keys/"+bob.ID, ownerTok), http.StatusOK)
		wantError(t, e.get("/v1/audit-events", aliceTok), http.StatusForbidden, keygate.CodeInsufficientPermissions, "")

		// A member's own key, revoked by itself: allowed, and final.
		want(t, e.do(req{method: "DELETE", path: "/v1/api-keys/" + alice.ID, token: aliceTok}), http.StatusOK)
		wantError(t, e.get("/v1/whoami", aliceTok), http.StatusUnauthorized, keygate.CodeInvalidAPIKey, "")
		// An admin acts on another user's key.
		want(t, e.do(req{method: "DELETE", path: "/v1/api-keys/" + bob.ID, token: ownerTok}), http.StatusOK)
	})
}

func TestAPI_Scopes_ReadWriteAdminPerEndpoint(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		own, viewerTok := e.key(manage.NewKey{Role: "viewer"}) // read only
		_, writerTok := e.key(manage.NewKey{Scopes: []string{"write"}})
		_, noneTok := e.key(manage.NewKey{Scopes: []string{"deploy"}})
		for _, tt := range []struct {
			r     req
			token string
		}{
			{req{method: "POST", path: "/v1/api-keys", body: `{"name":"x","scopes":[]}`}, viewerTok},
			{req{method: "PATCH", path: "/v1/api-keys/" + own.ID, body: `{"name":"x"}`}, viewerTok},
			{req{method: "DELETE", path: "/v1/api-keys/" + own.ID}, viewerTok},
			{req{method: "POST", path: "/v1/api-keys/" + own.ID + "/roll"}, viewerTok},
			{req{method: "GET", path: "/v1/audit-events"}, viewerTok},
			{req{method: "GET", path: "/v1/api-keys"}, writerTok},
			{req{method: "GET", path: "/v1/api-keys/" + own.ID}, writerTok},
			{req{method: "GET", path: "/v1/api-keys"}, noneTok},
		} {
			tt.r.token = tt.token
			wantError(t, e.do(tt.r), http.StatusForbidden, keygate.CodeInsufficientPermissions, "")
		}
		// whoami needs no scope at all.
		r := e.get("/v1/whoami", noneTok)
		want(t, r, http.StatusOK)
		if k := decode[httpapi.Data[httpapi.APIKey]](t, r).Data; !slices.Equal(k.Scopes, []string{"deploy"}) {
			t.Errorf("whoami = %+v", k)
		}
		want(t, e.get("/v1/api-keys", viewerTok), http.StatusOK)
	})
}
