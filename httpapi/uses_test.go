package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

func TestAPI_UsageLimitedKey_CreateCheckPatch(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{Name: "admin"})
		k := e.create(admin, `{"name":"metered","remaining":3,"refill":{"interval":"monthly","amount":100}}`)
		if k.Remaining == nil || *k.Remaining != 3 || k.Refill == nil || *k.Refill != (httpapi.Refill{Interval: "monthly", Amount: 100}) {
			t.Fatalf("created remaining %v refill %+v, want 3 and monthly 100", k.Remaining, k.Refill)
		}
		for i := range 3 {
			if code := e.check(k.Key, "203.0.113.7"); code != "" {
				t.Fatalf("use %d: %s, want allowed", i+1, code)
			}
		}
		if code := e.check(k.Key, "203.0.113.7"); code != keygate.CodeUsageExceeded {
			t.Fatalf("4th use: %q, want usage_exceeded", code)
		}

		// PATCH remaining starts a new epoch: exactly 2 more.
		r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + k.ID, token: admin, body: `{"remaining":2}`})
		want(t, r, http.StatusOK)
		if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data; got.Remaining == nil || *got.Remaining != 2 {
			t.Fatalf("PATCH remaining 2: %v", got.Remaining)
		}
		allowed := 0
		for range 5 {
			if e.check(k.Key, "203.0.113.7") == "" {
				allowed++
			}
		}
		if allowed != 2 {
			t.Errorf("%d allowed after PATCH remaining 2, want 2", allowed)
		}

		// null: unlimited again, refill dropped.
		r = e.do(req{method: "PATCH", path: "/v1/api-keys/" + k.ID, token: admin, body: `{"remaining":null}`})
		want(t, r, http.StatusOK)
		if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data; got.Remaining != nil || got.Refill != nil {
			t.Errorf("PATCH remaining null: remaining %v refill %v, want both null", got.Remaining, got.Refill)
		}
		if code := e.check(k.Key, "203.0.113.7"); code != "" {
			t.Errorf("unlimited again: %s, want allowed", code)
		}
	})
}

func TestAPI_UsageFieldsAreValidatedWithTheirParam(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{Name: "admin"})
		for _, tt := range []struct{ body, param string }{
			{`{"name":"x","remaining":-1}`, "remaining"},
			{`{"name":"x","remaining":"10"}`, "remaining"},
			{`{"name":"x","remaining":1.5}`, "remaining"},
			{`{"name":"x","refill":{"interval":"weekly","amount":1}}`, "refill.interval"},
			{`{"name":"x","refill":{"interval":"daily"}}`, "refill.amount"},
			{`{"name":"x","refill":{"interval":"daily","amount":-1}}`, "refill.amount"},
			{`{"name":"x","refill":{"interval":"daily","amount":1,"every":2}}`, "refill.every"},
			{`{"name":"x","refill":"daily:5"}`, "refill"},
		} {
			r := e.do(req{method: "POST", path: "/v1/api-keys", token: admin, body: tt.body})
			wantError(t, r, http.StatusBadRequest, keygate.CodeInvalidRequest, tt.param)
		}
	})
}

// TestAPI_UsageLimitedCallerPaysForTheKeysItCreates: a caller with 100
// uses cannot mint ten keys of 100 (SPEC §9).
func TestAPI_UsageLimitedCallerPaysForTheKeysItCreates(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		n := int64(100)
		caller, tok := e.key(manage.NewKey{Name: "metered owner", Remaining: &n})
		e.create(tok, `{"name":"child","remaining":100}`)
		for range 9 {
			r := e.do(req{method: "POST", path: "/v1/api-keys", token: tok, body: `{"name":"child","remaining":100}`})
			wantError(t, r, http.StatusForbidden, keygate.CodeInsufficientPermissions, "remaining")
		}
		r := e.do(req{method: "POST", path: "/v1/api-keys", token: tok, body: `{"name":"unlimited child"}`})
		wantError(t, r, http.StatusForbidden, keygate.CodeInsufficientPermissions, "remaining")
		got, err := e.st.GetKey(t.Context(), caller.OrgID, caller.ID)
		if err != nil || *got.Remaining != 0 {
			t.Errorf("caller remaining %v, %v; want 0", got.Remaining, err)
		}
	})
}
