package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/leak"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// report is one partner-format item.
type report struct {
	Token  string `json:"token"`
	Type   string `json:"type"`
	URL    string `json:"url"`
	Source string `json:"source"`
}

func reportBody(t *testing.T, items ...report) string {
	t.Helper()
	b, err := json.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (e *env) leak(body string, header map[string]string) response {
	e.t.Helper()
	return e.do(req{method: "POST", path: "/v1/leaked-keys", body: body, header: header})
}

// leakedAudit returns the api_key.leaked events of org acme.
func (e *env) leakedAudit(admin string) []httpapi.AuditEvent {
	e.t.Helper()
	r := e.get("/v1/audit-events?limit=200", admin)
	want(e.t, r, http.StatusOK)
	var out []httpapi.AuditEvent
	for _, a := range decode[httpapi.List[httpapi.AuditEvent]](e.t, r).Data {
		if a.Action == keygate.AuditKeyLeaked {
			out = append(out, a)
		}
	}
	return out
}

// lookAlike has the native shape and a wrong checksum.
func lookAlike(tok string) string {
	last := tok[len(tok)-1]
	repl := byte('0')
	if last == '0' {
		repl = '1'
	}
	return tok[:len(tok)-1] + string(repl)
}

func TestLeakedKeys_TrueAndFalsePositivesInOrderRevokedAndAudited(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, admin := e.key(manage.NewKey{Name: "admin"})
		leaked, leakedTok := e.key(manage.NewKey{Name: "leaked"})
		pub, pubTok := e.key(manage.NewKey{Name: "browser", Type: keygate.Publishable})
		unknown, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
		if err != nil {
			t.Fatal(err)
		}
		items := []report{
			{"not a token at all", "keygate_api_key", "https://github.com/o/r/blob/a/1", "content"},
			{leakedTok, "keygate_api_key", "https://github.com/o/r/blob/a/.env", "content"},
			{unknown.String(), "keygate_api_key", "https://gist.github.com/x", "gist"},
			{lookAlike(leakedTok), "keygate_api_key", "", ""},
			{pubTok, "keygate_publishable_key", "https://github.com/o/r/issues/1", "issue_comment"},
			{leakedTok, "keygate_api_key", "https://github.com/o/r/blob/a/.env", "content"},
		}
		if e.check(leakedTok, "10.0.0.1") != "" {
			t.Fatal("the key is not live before the report")
		}
		r := e.leak(reportBody(t, items...), nil)
		want(t, r, http.StatusOK)
		got := decode[[]leak.Result](t, r)
		wantLabels := []string{"false_positive", "true_positive", "false_positive", "false_positive", "true_positive", "true_positive"}
		var wantResults []leak.Result
		for i, it := range items {
			wantResults = append(wantResults, leak.Result{TokenRaw: it.Token, TokenType: it.Type, Label: wantLabels[i]})
		}
		if diff := cmp.Diff(wantResults, got); diff != "" {
			t.Errorf("answer (-want +got):\n%s", diff)
		}
		// Revoked: this replica denies it as soon as the answer is out.
		if code := e.check(leakedTok, "10.0.0.1"); code != keygate.CodeInvalidAPIKey {
			t.Errorf("check of the leaked key = %q, want invalid_api_key", code)
		}
		// The publishable key is recorded, never acted on.
		if rec, err := e.st.LookupKey(context.Background(), apikey.HashString(pubTok)); err != nil ||
			rec.Key.RevokedAt != nil || rec.Key.DisabledAt != nil {
			t.Errorf("the reported publishable key was acted on: %+v, %v", rec, err)
		}
		audit := e.leakedAudit(admin)
		if len(audit) != 2 {
			t.Fatalf("%d api_key.leaked events, want 2 (one per key, the repeat is not audited twice): %+v", len(audit), audit)
		}
		byKey := map[string]httpapi.AuditEvent{}
		for _, a := range audit {
			byKey[*a.KeyID] = a
		}
		a, ok := byKey[leaked.ID]
		if !ok || a.URL == nil || *a.URL != "https://github.com/o/r/blob/a/.env" || a.Source == nil || *a.Source != "content" ||
			a.ActorKeyID != nil || a.RequestID == nil {
			t.Errorf("audit event of the leaked key = %+v", a)
		}
		if p, ok := byKey[pub.ID]; !ok || *p.Source != "issue_comment" {
			t.Errorf("audit event of the publishable key = %+v", p)
		}
		// Nothing in the audit events holds the token.
		if raw := e.get("/v1/audit-events", admin); strings.Contains(string(raw.Body), leakedTok) {
			t.Error("the audit trail holds the token")
		}
	})
}

func TestLeakedKeys_EachAction(t *testing.T) {
	signer := newSigner(t, "k1")
	for _, tc := range []struct {
		action store.LeakAction
		keys   *leak.KeySet
		want   keygate.Code // Check after the report
	}{
		{store.LeakRevoke, nil, keygate.CodeInvalidAPIKey},
		{store.LeakDeactivate, nil, keygate.CodeAPIKeyInactive},
		{store.LeakNotify, signer.keySet(t), ""},
	} {
		t.Run(string(tc.action), func(t *testing.T) {
			eachStoreWith(t, options{leakAction: tc.action, leakKeys: tc.keys}, func(t *testing.T, e *env) {
				_, admin := e.key(manage.NewKey{Name: "admin"})
				_, tok := e.key(manage.NewKey{Name: "leaked"})
				body := reportBody(t, report{tok, "keygate_api_key", "https://github.com/o/r", "content"})
				r := e.leak(body, signer.sign(body))
				want(t, r, http.StatusOK)
				if got := decode[[]leak.Result](t, r); got[0].Label != leak.TruePositive {
					t.Errorf("label %q, want true_positive", got[0].Label)
				}
				if code := e.check(tok, "10.0.0.1"); code != tc.want {
					t.Errorf("check after the report = %q, want %q", code, tc.want)
				}
				if n := len(e.leakedAudit(admin)); n != 1 {
					t.Errorf("%d api_key.leaked events, want 1", n)
				}
			})
		})
	}
}

func TestLeakedKeys_NotifyNeedsReportKeys(t *testing.T) {
	_, err := leak.New(leak.Config{Action: store.LeakNotify})
	if err == nil || !strings.Contains(err.Error(), "--leak-report-keys") {
		t.Errorf("notify without keys: %v, want an error naming --leak-report-keys", err)
	}
}

// signer is a reporter's P-256 key.
type signer struct {
	id   string
	priv *ecdsa.PrivateKey
	file string
}

func newSigner(t *testing.T, id string) *signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "keys.pem")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := os.WriteFile(file, []byte("# key-id: "+id+"\n"+string(pemKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	return &signer{id: id, priv: priv, file: file}
}

func (s *signer) keySet(t *testing.T) *leak.KeySet {
	t.Helper()
	ks, err := leak.LoadKeySet(s.file, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

func (s *signer) sign(body string) map[string]string {
	digest := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, s.priv, digest[:])
	if err != nil {
		panic(err)
	}
	return map[string]string{"Github-Public-Key-Identifier": s.id,
		"Github-Public-Key-Signature": base64.StdEncoding.EncodeToString(sig)}
}

func TestLeakedKeys_Signatures(t *testing.T) {
	good := newSigner(t, "github-1")
	other := newSigner(t, "github-1") // same id, another key: a wrong signature
	stranger := newSigner(t, "github-9")
	eachStoreWith(t, options{leakKeys: good.keySet(t), failedAuthLimit: 1000}, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{Name: "leaked"})
		body := reportBody(t, report{tok, "keygate_api_key", "https://github.com/o/r", "content"})
		tampered := good.sign(body)
		tampered["Github-Public-Key-Signature"] = good.sign(body + " ")["Github-Public-Key-Signature"]
		for _, tc := range []struct {
			name   string
			header map[string]string
		}{
			{"missing", nil},
			{"no signature", map[string]string{"Github-Public-Key-Identifier": "github-1"}},
			{"wrong key", other.sign(body)},
			{"other body", tampered},
			{"not base64", map[string]string{"Github-Public-Key-Identifier": "github-1", "Github-Public-Key-Signature": "%%%"}},
			{"unknown key id", stranger.sign(body)},
		} {
			r := e.leak(body, tc.header)
			wantError(t, r, http.StatusUnauthorized, keygate.CodeInvalidSignature, "")
			if r.Header.Get("www-authenticate") != "" {
				t.Errorf("%s: www-authenticate %q on invalid_signature", tc.name, r.Header.Get("www-authenticate"))
			}
			if code := e.check(tok, "10.0.0.1"); code != "" {
				t.Fatalf("%s: the key was acted on (check %q)", tc.name, code)
			}
		}
		// Signed by the configured key: accepted, and its false positives
		// cost nothing.
		r := e.leak(body, good.sign(body))
		want(t, r, http.StatusOK)
		if code := e.check(tok, "10.0.0.1"); code != keygate.CodeInvalidAPIKey {
			t.Errorf("after a signed report: check %q, want invalid_api_key", code)
		}
	})
}

func TestLeakedKeys_ReportKeysReadAgainWhenTheFileChanges(t *testing.T) {
	first := newSigner(t, "old")
	ks := first.keySet(t)
	next := newSigner(t, "new")
	b, err := os.ReadFile(next.file)
	if err != nil {
		t.Fatal(err)
	}
	// GitHub's JSON form, replacing the PEM file.
	doc, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": "new", "key": strings.SplitN(string(b), "\n", 2)[1], "is_current": true}}})
	if err := os.WriteFile(first.file, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	body := `[{"token":"x"}]`
	h := next.sign(body)
	if err := ks.Verify(h["Github-Public-Key-Identifier"], h["Github-Public-Key-Signature"], []byte(body)); err != nil {
		t.Errorf("new key after the file changed: %v", err)
	}
	h = first.sign(body)
	if err := ks.Verify(h["Github-Public-Key-Identifier"], h["Github-Public-Key-Signature"], []byte(body)); err == nil {
		t.Error("the old key still verifies after the file changed")
	}
}

func TestLeakedKeys_BadBodies(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		items := make([]string, 101)
		for i := range items {
			items[i] = `{"token":"x"}`
		}
		for _, tc := range []struct {
			name, body, contentType string
			status                  int
			code                    keygate.Code
			param                   string
		}{
			{"not JSON", `{"token":`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"an object", `{"token":"x"}`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"trailing data", `[{"token":"x"}] []`, "", 400, keygate.CodeInvalidRequest, paramNull},
			{"empty", `[]`, "", 400, keygate.CodeInvalidRequest, ""},
			{"101 items", "[" + strings.Join(items, ",") + "]", "", 400, keygate.CodeInvalidRequest, ""},
			{"no token", `[{"type":"t"}]`, "", 400, keygate.CodeInvalidRequest, "[0].token"},
			{"token a number", `[{"token":"x"},{"token":1}]`, "", 400, keygate.CodeInvalidRequest, "[1].token"},
			{"url null", `[{"token":"x","url":null}]`, "", 400, keygate.CodeInvalidRequest, "[0].url"},
			{"item not an object", `[{"token":"x"},null]`, "", 400, keygate.CodeInvalidRequest, "[1]"},
			{"oversize", `[{"token":"` + strings.Repeat("a", 64<<10) + `"}]`, "", 413, keygate.CodeRequestTooLarge, ""},
			{"not JSON content type", `[{"token":"x"}]`, "text/plain", 415, keygate.CodeUnsupportedMediaType, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := e.do(req{method: "POST", path: "/v1/leaked-keys", body: tc.body, contentType: tc.contentType})
				wantError(t, r, tc.status, tc.code, tc.param)
			})
		}
		wantError(t, e.get("/v1/leaked-keys", ""), http.StatusMethodNotAllowed, keygate.CodeMethodNotAllowed, "")
	})
}

func TestLeakedKeys_FalsePositivesCountTowardTheThrottle(t *testing.T) {
	eachStoreWith(t, options{failedAuthLimit: 3}, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{Name: "leaked"})
		guesses := reportBody(t, report{Token: "a"}, report{Token: "b"}, report{Token: lookAlike(tok)})
		want(t, e.leak(guesses, nil), http.StatusOK)
		// The address is blocked now: a whole report answers 429, before
		// any item is looked at (the live key stays live).
		r := e.leak(reportBody(t, report{Token: tok}), nil)
		wantError(t, r, http.StatusTooManyRequests, keygate.CodeTooManyFailedAttempts, "")
		if r.Header.Get("retry-after") == "" {
			t.Error("429 without retry-after")
		}
		if code := e.check(tok, "10.0.0.1"); code != "" {
			t.Errorf("the key was acted on by a blocked report (check %q)", code)
		}
		// The same throttle as Check's and the API's: the address is
		// blocked there too.
		if code := e.check(lookAlike(tok), "127.0.0.1"); code != keygate.CodeTooManyFailedAttempts {
			t.Errorf("check from the reporting address = %q, want too_many_failed_attempts", code)
		}
	})
}

func TestLeakedKeys_SignedFalsePositivesDoNotCount(t *testing.T) {
	s := newSigner(t, "k")
	eachStoreWith(t, options{failedAuthLimit: 2, leakKeys: s.keySet(t)}, func(t *testing.T, e *env) {
		_, tok := e.key(manage.NewKey{Name: "k"})
		for i := range 3 {
			body := reportBody(t, report{Token: fmt.Sprint("guess", i)}, report{Token: "other"}, report{Token: "third"})
			want(t, e.leak(body, s.sign(body)), http.StatusOK)
		}
		if code := e.check(lookAlike(tok), "127.0.0.1"); code != keygate.CodeInvalidAPIKey {
			t.Errorf("check from the reporting address = %q, want invalid_api_key (not throttled)", code)
		}
	})
}
