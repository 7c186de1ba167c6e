package httpapi_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// TestAPI_Expiry_ShownIsTheInstantEnforced pins SPEC §2: expiry is kept
// to whole seconds, rounded up, so the expires_at the API shows is exactly
// when Check starts answering api_key_expired and when ?status=expired
// starts listing the key.
func TestAPI_Expiry_ShownIsTheInstantEnforced(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// 0.7 s past a whole second: now+1s has a fraction.
		start := time.Now().UTC().Truncate(time.Second).Add(700 * time.Millisecond)
		e.clock.freeze(start)
		_, owner := e.key(manage.NewKey{})

		created := e.create(owner, `{"name":"one second","expires_in":1}`)
		shown := time.Time(*created.ExpiresAt)
		if want := start.Truncate(time.Second).Add(2 * time.Second); !shown.Equal(want) {
			t.Errorf("expires_in 1 at %s shows expires_at %s, want %s (now+1s rounded up)", start, shown, want)
		}
		stored, err := e.st.GetKey(ctx, "acme", created.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !stored.ExpiresAt.Equal(shown) {
			t.Errorf("stored expires_at %s, shown %s: they must be the same instant", stored.ExpiresAt.Format(time.RFC3339Nano), shown)
		}

		for _, tt := range []struct {
			at     time.Time
			status string
			check  keygate.Code
		}{
			{shown.Add(-time.Nanosecond), "active", ""},
			{shown, "expired", keygate.CodeAPIKeyExpired},
		} {
			e.clock.freeze(tt.at)
			if got := e.check(created.Key, "192.0.2.1"); got != tt.check {
				t.Errorf("Check at %s = %q, want %q", tt.at.Format(time.RFC3339Nano), got, tt.check)
			}
			r := e.get("/v1/api-keys/"+created.ID, owner)
			want(t, r, http.StatusOK)
			if got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data.Status; got != tt.status {
				t.Errorf("status at %s = %s, want %s", tt.at.Format(time.RFC3339Nano), got, tt.status)
			}
			for _, s := range []string{"active", "expired"} {
				r := e.get("/v1/api-keys?status="+s, owner)
				want(t, r, http.StatusOK)
				listed := slices.ContainsFunc(decode[httpapi.List[httpapi.APIKey]](t, r).Data,
					func(k httpapi.APIKey) bool { return k.ID == created.ID })
				if listed != (s == tt.status) {
					t.Errorf("at %s ?status=%s lists the key: %v", tt.at.Format(time.RFC3339Nano), s, listed)
				}
			}
		}
	})
}

// TestAPI_Expiry_FractionsRoundUpToTheNextSecond: every way an API call
// sets expires_at stores whole seconds, never earlier than asked, and an
// expiry inherited from the caller never later than the caller's.
func TestAPI_Expiry_FractionsRoundUpToTheNextSecond(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		start := time.Now().UTC().Truncate(time.Second).Add(300 * time.Millisecond)
		e.clock.freeze(start)
		whole := start.Truncate(time.Second)
		_, owner := e.key(manage.NewKey{})
		at := func(d time.Duration) string { return `"` + whole.Add(d).Format(time.RFC3339Nano) + `"` }
		stored := func(id string) time.Time {
			t.Helper()
			k, err := e.st.GetKey(ctx, "acme", id)
			if err != nil {
				t.Fatal(err)
			}
			if k.ExpiresAt == nil {
				t.Fatalf("key %s does not expire", id)
			}
			return *k.ExpiresAt
		}
		for _, tt := range []struct {
			name, body string
			want       time.Time
		}{
			{"expires_at with a fraction", `{"name":"x","expires_at":` + at(time.Hour+250*time.Millisecond) + `}`, whole.Add(time.Hour + time.Second)},
			{"expires_at with a nanosecond", `{"name":"x","expires_at":` + at(time.Hour+time.Nanosecond) + `}`, whole.Add(time.Hour + time.Second)},
			{"whole expires_at", `{"name":"x","expires_at":` + at(time.Hour) + `}`, whole.Add(time.Hour)},
			{"expires_in", `{"name":"x","expires_in":3600}`, whole.Add(time.Hour + time.Second)},
		} {
			t.Run("create "+tt.name, func(t *testing.T) {
				k := e.create(owner, tt.body)
				if got := stored(k.ID); !got.Equal(tt.want) || !time.Time(*k.ExpiresAt).Equal(tt.want) {
					t.Errorf("stored %s, shown %s, want %s", got.Format(time.RFC3339Nano), time.Time(*k.ExpiresAt), tt.want)
				}
			})
		}

		// A past instant stays past, though its next whole second is not.
		past := at(100 * time.Millisecond)
		wantError(t, e.do(req{method: "POST", path: "/v1/api-keys", token: owner, body: `{"name":"x","expires_at":` + past + `}`}),
			http.StatusBadRequest, keygate.CodeInvalidRequest, "expires_at")

		t.Run("PATCH expires_at with a fraction", func(t *testing.T) {
			k := e.create(owner, `{"name":"x"}`)
			r := e.do(req{method: "PATCH", path: "/v1/api-keys/" + k.ID, token: owner,
				body: `{"expires_at":` + at(time.Hour+999*time.Millisecond) + `}`})
			want(t, r, http.StatusOK)
			wantError(t, e.do(req{method: "PATCH", path: "/v1/api-keys/" + k.ID, token: owner, body: `{"expires_at":` + past + `}`}),
				http.StatusBadRequest, keygate.CodeInvalidRequest, "expires_at")
			shown := time.Time(*decode[httpapi.Data[httpapi.APIKey]](t, r).Data.ExpiresAt)
			if w := whole.Add(time.Hour + time.Second); !stored(k.ID).Equal(w) || !shown.Equal(w) {
				t.Errorf("stored %s, shown %s, want %s", stored(k.ID).Format(time.RFC3339Nano), shown, w)
			}
		})

		t.Run("inherited from a caller with a fraction", func(t *testing.T) {
			// A key stored before expiry was kept to whole seconds.
			callerExp := whole.Add(time.Hour + 600*time.Millisecond)
			caller, tok := e.key(manage.NewKey{Role: "member"})
			if _, err := e.st.UpdateKey(ctx, "acme", caller.ID, store.KeyUpdate{ExpiresAt: &callerExp}, keygate.Actor{}); err != nil {
				t.Fatal(err)
			}
			if err := e.follower.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			k := e.create(tok, `{"name":"inherits"}`)
			// Rounding down keeps the key within its creator.
			if w := whole.Add(time.Hour); !stored(k.ID).Equal(w) || !time.Time(*k.ExpiresAt).Equal(w) {
				t.Errorf("stored %s, shown %s, want %s", stored(k.ID).Format(time.RFC3339Nano), time.Time(*k.ExpiresAt), w)
			}
		})
	})
}
