package httpapi_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

// foreignToken is a token of another system: printable, no keygate shape.
func foreignToken(t *testing.T) string {
	t.Helper()
	return "legacy-" + rand.Text()
}

func sha256Hex(token string) string {
	h := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(h[:])
}

// importItem is one item for token with the create members in extra
// (a JSON object's members, without braces, or "").
func importItem(token, extra string) string {
	item := `{"name":"imported","hash":"` + sha256Hex(token) + `","prefix":"` + token[:7] + `","last4":"` + token[len(token)-4:] + `"`
	if extra != "" {
		item += "," + extra
	}
	return item + "}"
}

func importBody(items ...string) string { return `{"keys":[` + strings.Join(items, ",") + `]}` }

func (e *env) importKeys(token, body string) response {
	e.t.Helper()
	return e.do(req{method: "POST", path: "/v1/api-keys/import", token: token, body: body})
}

func (e *env) keyCount(token string) int {
	e.t.Helper()
	r := e.get("/v1/api-keys?limit=200", token)
	want(e.t, r, http.StatusOK)
	return len(decode[httpapi.List[httpapi.APIKey]](e.t, r).Data)
}

func TestImport_ThousandKeysInOneCallWorkAtOnce(t *testing.T) {
	eachStoreWith(t, options{foreignTokens: true}, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{})
		tokens := make([]string, manage.MaxImportKeys)
		items := make([]string, len(tokens))
		for i := range tokens {
			tokens[i] = foreignToken(t)
			items[i] = importItem(tokens[i], `"user_id":"u`+fmt.Sprint(i)+`","metadata":{"n":`+fmt.Sprint(i)+`}`)
		}
		// The last token is asked about before the import: the answer is
		// cached as unknown, and the import must still make it work.
		if code := e.check(tokens[999], "192.0.2.9"); code != keygate.CodeInvalidAPIKey {
			t.Fatalf("Check before import = %q", code)
		}
		begin := time.Now()
		r := e.importKeys(admin, importBody(items...))
		took := time.Since(begin)
		want(t, r, http.StatusCreated)
		t.Logf("POST /v1/api-keys/import of %d keys took %v", len(items), took)
		if strings.Contains(string(r.Body), `"key":`) {
			t.Errorf("import answer holds a key field")
		}
		got := decode[httpapi.Data[[]httpapi.APIKey]](t, r).Data
		if len(got) != len(tokens) {
			t.Fatalf("%d keys answered, want %d", len(got), len(tokens))
		}
		for i, k := range got {
			if k.UserID != fmt.Sprint("u", i) || k.Prefix != tokens[i][:7] || k.Last4 != tokens[i][len(tokens[i])-4:] ||
				k.Status != "active" || k.Type != "secret" || k.Environment != "live" || k.OrgID != "acme" {
				t.Fatalf("key %d = %+v", i, k)
			}
		}
		for _, i := range []int{0, 500, 999} {
			if code := e.check(tokens[i], "192.0.2.9"); code != "" {
				t.Errorf("Check of imported token %d = %q, want allowed", i, code)
			}
		}
		// One api_key.imported audit event per key, by the caller.
		imported := 0
		path := "/v1/audit-events?limit=200"
		for {
			r := e.get(path, admin)
			want(t, r, http.StatusOK)
			page := decode[httpapi.List[httpapi.AuditEvent]](t, r)
			for _, a := range page.Data {
				if a.Action == keygate.AuditKeyImported {
					imported++
				}
			}
			if page.NextCursor == nil {
				break
			}
			path = "/v1/audit-events?limit=200&cursor=" + *page.NextCursor
		}
		if imported != len(tokens) {
			t.Errorf("%d api_key.imported audit events, want %d", imported, len(tokens))
		}
	})
}

func TestImport_AHashThatExistsRollsBackTheWholeCall(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{})
		_, otherOrgs := e.key(manage.NewKey{OrgID: "other"})
		_, ownOrgs := e.key(manage.NewKey{Role: "viewer"})
		fresh := []string{foreignToken(t), foreignToken(t), foreignToken(t)}
		before := e.keyCount(admin)
		for _, tt := range []struct {
			name  string
			body  string
			param string
		}{
			{"another organization's key", importBody(importItem(fresh[0], ""), importItem(fresh[1], ""), importItem(otherOrgs, "")), "keys[2].hash"},
			{"a key of the caller's organization", importBody(importItem(fresh[0], ""), importItem(ownOrgs, "")), "keys[1].hash"},
			{"the same hash twice in the call", importBody(importItem(fresh[0], ""), importItem(fresh[1], ""), importItem(fresh[2], ""), importItem(fresh[1], "")), "keys[3].hash"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				wantError(t, e.importKeys(admin, tt.body), http.StatusConflict, keygate.CodeConflict, tt.param)
				if n := e.keyCount(admin); n != before {
					t.Errorf("%d keys after a refused import, want %d", n, before)
				}
				for _, tok := range fresh {
					if code := e.check(tok, "192.0.2.9"); code == "" {
						t.Errorf("a token of the refused import works")
					}
				}
			})
		}
		// The refused hashes were never stored: importing them alone works.
		want(t, e.importKeys(admin, importBody(importItem(fresh[0], ""), importItem(fresh[1], ""))), http.StatusCreated)
	})
}

// An admin key must not be able to test guessed tokens by importing their
// hashes: every hash refused as existing counts one failed authentication
// of the caller's address, and a blocked address may import nothing more,
// although its own key (known to the replica) still authenticates.
func TestImport_ConflictsCountAsFailedAuthentications(t *testing.T) {
	eachStoreWith(t, options{failedAuthLimit: 3}, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{})
		var victims []string
		for range 4 {
			_, tok := e.key(manage.NewKey{OrgID: "victim", Role: "viewer"})
			victims = append(victims, tok)
		}
		want(t, e.get("/v1/whoami", admin), http.StatusOK) // the admin's key is now cached
		for i := range 3 {
			body := importBody(importItem(foreignToken(t), ""), importItem(victims[i], ""))
			wantError(t, e.importKeys(admin, body), http.StatusConflict, keygate.CodeConflict, "keys[1].hash")
		}
		// Three guesses confirmed: the fourth is refused before any hash
		// is read, a guess or not.
		for _, body := range []string{importBody(importItem(victims[3], "")), importBody(importItem(foreignToken(t), ""))} {
			r := e.importKeys(admin, body)
			wantError(t, r, http.StatusTooManyRequests, keygate.CodeTooManyFailedAttempts, "")
			if ra := r.Header.Get("retry-after"); ra == "" || ra == "0" {
				t.Errorf("retry-after = %q", ra)
			}
		}
		// The same throttle as Check's: an unknown token from there is
		// throttled too.
		if code := e.check(foreignToken(t)+"x", "127.0.0.1"); code != keygate.CodeTooManyFailedAttempts {
			t.Errorf("Check from the throttled address = %q, want too_many_failed_attempts", code)
		}
		e.clock.advance(70 * time.Second)
		want(t, e.importKeys(admin, importBody(importItem(foreignToken(t), ""))), http.StatusCreated)
	})
}

func TestImport_BadBodiesNameTheItem(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{})
		tok := foreignToken(t)
		good := importItem(tok, "")
		items := func(n int) string {
			list := make([]string, n)
			for i := range list {
				list[i] = importItem(foreignToken(t), "")
			}
			return importBody(list...)
		}
		hash := sha256Hex(tok)
		for _, tt := range []struct {
			name, body string
			want       outcome
		}{
			{"no keys", `{"keys":[]}`, badParam("keys")},
			{"keys missing", `{}`, badParam("keys")},
			{"keys null", `{"keys":null}`, badParam("keys")},
			{"keys not an array", `{"keys":{}}`, badParam("keys")},
			{"1001 keys", items(manage.MaxImportKeys + 1), badParam("keys")},
			{"unknown top-level member", `{"keys":[` + good + `],"x":1}`, badParam("x")},
			{"item not an object", importBody(good, `"nope"`), badParam("keys[1]")},
			{"hash missing", importBody(good, `{"name":"x","prefix":"abc","last4":"abcd"}`), badParam("keys[1].hash")},
			{"hash without scheme", importBody(strings.Replace(good, "sha256:", "", 1)), badParam("keys[0].hash")},
			{"hash upper-case", importBody(strings.Replace(good, hash, strings.ToUpper(hash[:9])+hash[9:], 1)), badParam("keys[0].hash")},
			{"hash upper-case hex", importBody(strings.Replace(good, hash, "sha256:"+strings.ToUpper(hash[7:]), 1)), badParam("keys[0].hash")},
			{"hash short", importBody(strings.Replace(good, hash, hash[:len(hash)-2], 1)), badParam("keys[0].hash")},
			{"hash not hex", importBody(strings.Replace(good, hash, hash[:len(hash)-1]+"g", 1)), badParam("keys[0].hash")},
			{"hash of another algorithm", importBody(strings.Replace(good, "sha256:", "sha512:", 1)), badParam("keys[0].hash")},
			{"hash a number", importBody(`{"name":"x","hash":1,"prefix":"abc","last4":"abcd"}`), badParam("keys[0].hash")},
			{"prefix empty", importBody(`{"name":"x","hash":"` + hash + `","prefix":"","last4":"abcd"}`), badParam("keys[0].prefix")},
			{"prefix 17", importBody(`{"name":"x","hash":"` + hash + `","prefix":"` + strings.Repeat("p", 17) + `","last4":"abcd"}`), badParam("keys[0].prefix")},
			{"prefix with a space", importBody(`{"name":"x","hash":"` + hash + `","prefix":"ab c","last4":"abcd"}`), badParam("keys[0].prefix")},
			{"prefix with a control character", importBody(`{"name":"x","hash":"` + hash + `","prefix":"ab\u0007","last4":"abcd"}`), badParam("keys[0].prefix")},
			{"last4 of 3", importBody(`{"name":"x","hash":"` + hash + `","prefix":"abc","last4":"abc"}`), badParam("keys[0].last4")},
			{"last4 of 5", importBody(`{"name":"x","hash":"` + hash + `","prefix":"abc","last4":"abcde"}`), badParam("keys[0].last4")},
			{"last4 missing", importBody(`{"name":"x","hash":"` + hash + `","prefix":"abc"}`), badParam("keys[0].last4")},
			{"name missing", importBody(good, `{"hash":"`+sha256Hex(foreignToken(t))+`","prefix":"abc","last4":"abcd"}`), badParam("keys[1].name")},
			{"malformed scope", importBody(good, importItem(foreignToken(t), `"scopes":["Read"]`)), badParam("keys[1].scopes")},
			{"bad allowed source", importBody(importItem(foreignToken(t), `"allowed_sources":["10.0.0.0/8","nope"]`)), badParam("keys[0].allowed_sources[1]")},
			{"unknown item member", importBody(importItem(foreignToken(t), `"key":"secret"`)), badParam("keys[0].key")},
			{"member twice", importBody(importItem(foreignToken(t), `"name":"again"`)), badParam("keys[0].name")},
			{"expired", importBody(importItem(foreignToken(t), `"expires_at":"2001-01-01T00:00:00Z"`)), badParam("keys[0].expires_at")},
			{"not JSON", `{"keys":[`, outcome{http.StatusBadRequest, keygate.CodeInvalidRequest, paramNull}},
		} {
			t.Run(tt.name, func(t *testing.T) { wantsFunc(t, e.importKeys(admin, tt.body), tt.want) })
		}
		if n := e.keyCount(admin); n != 1 {
			t.Errorf("%d keys after refused imports, want 1", n)
		}
	})
}

func TestImport_BodyLimitIsOneMiB(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{})
		// Under 1 MiB but over create's 64 KiB: metadata pads the items.
		pad := strings.Repeat("x", 3000)
		var items []string
		for range 300 {
			items = append(items, importItem(foreignToken(t), `"metadata":{"pad":"`+pad+`"}`))
		}
		body := importBody(items...)
		if len(body) <= httpapi.MaxBodyBytes || len(body) > httpapi.MaxImportBodyBytes {
			t.Fatalf("body of %d bytes does not sit between the limits", len(body))
		}
		want(t, e.importKeys(admin, body), http.StatusCreated)

		items = items[:0]
		for range 360 {
			items = append(items, importItem(foreignToken(t), `"metadata":{"pad":"`+pad+`"}`))
		}
		body = importBody(items...)
		if len(body) <= httpapi.MaxImportBodyBytes {
			t.Fatalf("body of %d bytes is not over 1 MiB", len(body))
		}
		r := e.importKeys(admin, body)
		b := wantError(t, r, http.StatusRequestEntityTooLarge, keygate.CodeRequestTooLarge, "")
		if !strings.Contains(b.Error.Message, "1 MiB") {
			t.Errorf("message %q does not say 1 MiB", b.Error.Message)
		}
		// Other endpoints keep 64 KiB.
		r = e.do(req{method: "POST", path: "/v1/api-keys", token: admin, body: `{"name":"x","metadata":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}`})
		wantError(t, r, http.StatusRequestEntityTooLarge, keygate.CodeRequestTooLarge, "")
	})
}

func TestImport_EveryItemIsHeldToTheCallersRights(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		exp := e.clock.now().Add(time.Hour).UTC().Truncate(time.Second)
		// An admin narrower than the keys it imports: three scopes, one
		// project, test, expiring, 10 a minute.
		_, narrow := e.key(manage.NewKey{Scopes: []string{"admin", "read", "write"}, ProjectIDs: []string{"p1"},
			Environment: keygate.Test, ExpiresAt: &exp, RateLimitPerMinute: ptr(10)})
		_, member := e.key(manage.NewKey{Role: "member"})
		_, viewer := e.key(manage.NewKey{Role: "viewer"})
		ok := func() string { return importItem(foreignToken(t), "") }
		item := func(extra string) string { return importItem(foreignToken(t), extra) }
		for _, tt := range []struct {
			name, token, body string
			want              outcome
		}{
			{"read-only caller", viewer, importBody(ok()), denied("")},
			{"member without admin", member, importBody(ok()), denied("")},
			{"defaults are the caller's", narrow, importBody(ok()), ok201},
			{"scope beyond", narrow, importBody(ok(), item(`"scopes":["read","deploy"]`)), denied("keys[1].scopes")},
			{"every project", narrow, importBody(item(`"project_ids":[]`)), denied("keys[0].project_ids")},
			{"other environment", narrow, importBody(ok(), ok(), item(`"environment":"live"`)), denied("keys[2].environment")},
			{"never expires", narrow, importBody(item(`"expires_at":null`)), denied("keys[0].expires_at")},
			{"higher rate limit", narrow, importBody(item(`"rate_limit_per_minute":11`)), denied("keys[0].rate_limit_per_minute")},
			{"unlimited", narrow, importBody(item(`"rate_limit_per_minute":0`)), denied("keys[0].rate_limit_per_minute")},
			{"malformed scope is 400 before 403", narrow, importBody(item(`"scopes":["Admin"]`)), badParam("keys[0].scopes")},
			{"within every bound", narrow, importBody(item(`"scopes":["read"],"project_ids":["p1"],"user_id":"bob","type":"publishable","rate_limit_per_minute":5`)), ok201},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r := e.importKeys(tt.token, tt.body)
				wantsFunc(t, r, tt.want)
				if tt.want.status != http.StatusCreated {
					return
				}
				for _, k := range decode[httpapi.Data[[]httpapi.APIKey]](t, r).Data {
					if k.Environment != "test" || k.ExpiresAt == nil || k.RateLimitPerMinute == nil || *k.RateLimitPerMinute > 10 ||
						len(k.ProjectIDs) != 1 {
						t.Errorf("imported key %+v is not within the caller", k)
					}
				}
			})
		}
	})
}

func TestImport_ForeignTokensNeedTheFlagNativeTokensKeepTheirChecksum(t *testing.T) {
	format := apikey.DefaultFormat()
	native, err := format.Generate(keygate.Secret, keygate.Live)
	if err != nil {
		t.Fatal(err)
	}
	// A native-shaped token with a wrong checksum, whose hash is imported:
	// never looked up, with or without the flag.
	badSum := native.String()[:len(native.String())-6] + "000000"
	if _, err := format.Parse(badSum); err != apikey.ErrChecksum {
		t.Fatalf("Parse(badSum) = %v", err)
	}
	// Another system's sk_live_ keys of another length are not native.
	stripeLike := "sk_live_" + strings.Repeat("Ab1", 8)
	for _, flag := range []bool{false, true} {
		t.Run(fmt.Sprint("foreign-tokens=", flag), func(t *testing.T) {
			eachStoreWith(t, options{foreignTokens: flag}, func(t *testing.T, e *env) {
				_, admin := e.key(manage.NewKey{})
				foreign := foreignToken(t)
				body := importBody(importItem(foreign, ""), importItem(native.String(), ""), importItem(badSum, ""), importItem(stripeLike, ""))
				want(t, e.importKeys(admin, body), http.StatusCreated)
				wantForeign := keygate.CodeInvalidAPIKey
				if flag {
					wantForeign = ""
				}
				for _, tt := range []struct {
					name, token string
					want        keygate.Code
				}{
					{"foreign", foreign, wantForeign},
					{"sk_live_ of another length", stripeLike, wantForeign},
					{"native", native.String(), ""},
					{"native shape, bad checksum", badSum, keygate.CodeInvalidAPIKey},
					{"foreign, not imported", foreignToken(t), keygate.CodeInvalidAPIKey},
					{"too short", "short-token-1234", keygate.CodeInvalidAPIKey},
				} {
					if tt.name == "too short" {
						tt.token = tt.token[:15]
					}
					if code := e.check(tt.token, "192.0.2.1"); code != tt.want {
						t.Errorf("%s: Check = %q, want %q", tt.name, code, tt.want)
					}
				}
				// The management API authenticates as Check does: with the
				// flag, an imported foreign admin key manages keys too.
				r := e.importKeys(admin, importBody(importItem(foreignToken(t), "")))
				want(t, r, http.StatusCreated)
				adminForeign := foreignToken(t)
				want(t, e.importKeys(admin, importBody(importItem(adminForeign, `"scopes":["read","write","admin"]`))), http.StatusCreated)
				r = e.get("/v1/whoami", adminForeign)
				if flag {
					want(t, r, http.StatusOK)
					var body struct {
						Data json.RawMessage `json:"data"`
					}
					if err := json.Unmarshal(r.Body, &body); err != nil || !strings.Contains(string(body.Data), `"prefix":"legacy-"`) {
						t.Errorf("whoami of the foreign key = %s", r.Body)
					}
				} else {
					wantError(t, r, http.StatusUnauthorized, keygate.CodeInvalidAPIKey, "")
				}
			})
		})
	}
}

// SPEC §9's bounds hold for every item of an import: a usage-limited
// caller imports only usage-limited keys, pays for all of them in the
// import's transaction (100 uses cannot import two keys of 60), and hands
// on its named rate limits, none looser.
func TestImport_UsageLimitedCallerPaysForEveryItem(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		n := int64(100)
		caller, tok := e.key(manage.NewKey{Role: "owner", Remaining: &n,
			RateLimits: []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}}})
		item := func(extra string) string { return importItem(foreignToken(t), extra) }
		wantsFunc(t, e.importKeys(tok, importBody(item(`"remaining":60`), item(`"remaining":60`))), denied("keys[1].remaining"))
		wantsFunc(t, e.importKeys(tok, importBody(item(`"remaining":10`), item(""))), denied("keys[1].remaining"))
		wantsFunc(t, e.importKeys(tok, importBody(item(`"remaining":10,"rate_limits":[]`))), denied("keys[0].rate_limits"))
		wantsFunc(t, e.importKeys(tok, importBody(item(`"remaining":10,"rate_limits":[{"name":"search","limit":20,"duration_seconds":120}]`))),
			denied("keys[0].rate_limits"))
		if got, err := e.st.GetKey(t.Context(), caller.OrgID, caller.ID); err != nil || *got.Remaining != 100 {
			t.Fatalf("after refused imports the caller has %v uses (%v), want 100: a refused import paid", got.Remaining, err)
		}
		r := e.importKeys(tok, importBody(item(`"remaining":60`), item(`"remaining":40`)))
		wantsFunc(t, r, ok201)
		for _, k := range decode[httpapi.Data[[]httpapi.APIKey]](t, r).Data {
			if len(k.RateLimits) != 1 || k.RateLimits[0] != (keygate.RateLimit{Name: "search", Limit: 10, DurationSeconds: 60}) {
				t.Errorf("imported key %s has rate_limits %v, want the caller's", k.ID, k.RateLimits)
			}
		}
		if got, err := e.st.GetKey(t.Context(), caller.OrgID, caller.ID); err != nil || *got.Remaining != 0 {
			t.Errorf("after importing 60 + 40 the caller has %v uses (%v), want 0", got.Remaining, err)
		}
	})
}
