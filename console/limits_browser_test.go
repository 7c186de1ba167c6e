package console

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/keygate/keygate/internal/pgtest"
)

// nnbsp groups digits in the console's counts ("50 000").
const nnbsp = "\u202f"

// grouped writes n as the console does: digits grouped by three with
// nnbsp from five digits on.
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	if len(s) < 5 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(nnbsp)
		}
		b.WriteRune(c)
	}
	return b.String()
}

// TestBrowser_UsageLimitsInFormListAndView sets and reads SPEC §9's usage
// limits through the console against a real keygate serve: a key created
// in the form with uses and a refill shows its uses left in the keys list
// and its limits in the usage view; the edit form changes and then clears
// them; a bad refill amount, and what a usage-limited caller may not
// hand out, show the API's error under the field that caused it; a key
// created by the CLI with named rate limits shows them in the usage view.
func TestBrowser_UsageLimitsInFormListAndView(t *testing.T) {
	chromium(t)
	k := keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATABASE_URL=" + pgtest.NewDatabase(t)}}
	adminToken := k.createKey(t, "--org", "acme", "--user", "admin", "--role", "admin", "--name", "Admin console")
	search := k.createKey(t, "--org", "acme", "--user", "svc-search", "--role", "member", "--name", "Search service",
		"--remaining", "5", "--refill", "daily:5", "--limit", "search=10/1m", "--limit", "bulk=1000/24h")
	reseller := k.createKey(t, "--org", "acme", "--user", "reseller", "--role", "admin", "--name", "Reseller",
		"--remaining", "100", "--refill", "daily:100")
	s := serve(t, k)
	searchID := keyID(t, s, search)
	resellerID := keyID(t, s, reseller)

	tb := newTab(t)
	tb.do(chromedp.EmulateViewport(1280, 800))
	tb.do(chromedp.Navigate(s.url("/console")))
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 3`)

	// The list: uses left under the status of usage-limited keys only.
	hints := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll('#keys-body tr')].map(
		(tr) => [tr.querySelector('td.name span').textContent, (tr.querySelector('.uses') || {}).textContent || '']))`)
	for name, want := range map[string]string{"Search service": "5 uses left", "Reseller": "100 uses left", "Admin console": ""} {
		if hints[name] != want {
			t.Errorf("keys list, %s: hint %q, want %q", name, hints[name], want)
		}
	}

	// The form checks that a refill has both halves before it sends one.
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	tb.setValue("create-name", "Metered partner")
	tb.setValue("create-refill-amount", "1000")
	tb.click("create-submit")
	tb.waitFor("the interval's error", `document.getElementById('create-refill-interval-error')`)
	if got := tb.fieldState("create-refill-interval"); got != "invalid|create-refill-interval-error|focused" {
		t.Errorf("a refill amount without an interval: %s", got)
	}

	// A bad amount: the API's own message, under the amount.
	tb.setValue("create-refill-interval", "daily")
	tb.setValue("create-refill-amount", "10000000000000000")
	tb.click("create-submit")
	tb.waitFor("the API's error", `document.querySelector('#create-error .request-id') && document.getElementById('create-refill-amount-error')`)
	code, direct := api(t, s, adminToken, "POST", "/v1/api-keys", map[string]any{"name": "x",
		"refill": map[string]any{"interval": "daily", "amount": int64(1e16)}})
	apiErr, _ := direct["error"].(map[string]any)
	if code != 400 || apiErr["param"] != "refill.amount" {
		t.Fatalf("the API's answer to a refill of 10^16: %d %v, want 400 with param refill.amount", code, direct)
	}
	if got, want := tb.text("create-refill-amount-error"), apiErr["message"].(string); got != want {
		t.Errorf("error under the refill amount %q, want the API's message %q", got, want)
	}
	if got := tb.fieldState("create-refill-amount"); got != "invalid|create-refill-amount-error|focused" {
		t.Errorf("the refill amount after the API's error: %s", got)
	}
	if eval[bool](tb, `document.getElementById('create-refill-interval').hasAttribute('aria-invalid') || !!document.getElementById('create-refill-interval-error')`) {
		t.Error("the interval's earlier error is still shown")
	}
	if got := tb.text("create-error"); !strings.Contains(got, apiErr["message"].(string)) || !strings.Contains(got, "invalid_request") {
		t.Errorf("the form's error box shows %q, want the API's message and code", got)
	}
	tb.screenshot("create-form-refill-error")

	// Fixed: the key is created with its uses and refill.
	tb.setValue("create-refill-amount", "1000")
	tb.setValue("create-remaining", "250")
	tb.click("create-submit")
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	if eval[bool](tb, `!!document.querySelector('#create-form .field-error, #create-form [aria-invalid]')`) {
		t.Error("the create form still shows a field error after it succeeded")
	}
	partnerID := tb.text("reveal-key-id")
	tb.click("reveal-close")
	tb.waitFor("the panel to close", `!document.getElementById('reveal-dialog').open`)
	if got := apiUsageLimit(t, s, adminToken, partnerID); got != "250 daily:1000" {
		t.Errorf("the key created in the form has %s, want 250 daily:1000", got)
	}
	hint := fmt.Sprintf(`document.querySelector('tr[data-key-id=%q] .uses')`, partnerID)
	tb.waitFor("the new row", hint)
	if got := eval[string](tb, hint+`.textContent + '|' + `+hint+`.title`); got != "250 uses left|250 uses left; refills daily to 1000" {
		t.Errorf("the new row's hint: %q", got)
	}

	// Its usage view: uses left, refill, no rate limit.
	tb.click("usage-" + partnerID)
	tb.waitFor("the usage view", `!document.getElementById('usage-view').hidden && document.getElementById('usage-chart').dataset.drawn === 'true'`)
	if got := tb.limitsShown(); got != "250|daily to 1000|none" {
		t.Errorf("usage view of the new key: %q, want 250|daily to 1000|none", got)
	}
	tb.click("usage-back")
	tb.waitFor("the keys view", `!document.getElementById('keys-view').hidden`)

	// The edit form shows the limits, and sends what changed.
	tb.click("edit-" + partnerID)
	tb.waitFor("the edit form", `document.getElementById('edit-dialog').open`)
	if got := eval[string](tb, `['edit-remaining', 'edit-refill-interval', 'edit-refill-amount'].map((id) => document.getElementById(id).value).join('|')`); got != "250|daily|1000" {
		t.Errorf("edit form shows %q, want 250|daily|1000", got)
	}
	tb.setValue("edit-remaining", "300")
	tb.setValue("edit-refill-interval", "monthly")
	tb.setValue("edit-refill-amount", "50000")
	tb.screenshot("edit-form-limits")
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open && `+hint+` && `+hint+`.textContent === '300 uses left'`)
	if got := apiUsageLimit(t, s, adminToken, partnerID); got != "300 monthly:50000" {
		t.Errorf("after the edit the key has %s, want 300 monthly:50000", got)
	}
	if got := eval[string](tb, hint+`.title`); got != "300 uses left; refills monthly to 50"+nnbsp+"000" {
		t.Errorf("the row's hint after the edit: %q", got)
	}
	tb.click("edit-" + partnerID)
	tb.waitFor("the edit form", `document.getElementById('edit-dialog').open`)
	tb.setValue("edit-remaining", "")
	tb.setValue("edit-refill-interval", "")
	tb.setValue("edit-refill-amount", "")
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open && !`+hint)
	if got := apiUsageLimit(t, s, adminToken, partnerID); got != "unlimited none" {
		t.Errorf("after clearing the limits the key has %s, want unlimited none", got)
	}

	tb.click("usage-" + partnerID)
	tb.waitFor("the usage view", `!document.getElementById('usage-view').hidden && document.getElementById('usage-chart').dataset.drawn === 'true'`)
	if got := tb.limitsShown(); got != "unlimited|none|none" {
		t.Errorf("usage view of a key without limits: %q, want unlimited|none|none", got)
	}
	tb.click("usage-back")
	tb.waitFor("the keys view", `!document.getElementById('keys-view').hidden`)

	// A key made by the CLI with named limits, whose uses changed since
	// the list was loaded: the usage view shows the API's number now, and
	// the row follows.
	if code, body := api(t, s, adminToken, "PATCH", "/v1/api-keys/"+searchID, map[string]any{"remaining": 3}); code != 200 {
		t.Fatalf("PATCH remaining: %d %v", code, body)
	}
	tb.click("usage-" + searchID)
	tb.waitFor("the usage view", `!document.getElementById('usage-view').hidden && document.getElementById('usage-chart').dataset.drawn === 'true'`)
	tb.waitFor("the key's uses as the API has them", `document.getElementById('usage-remaining').textContent === '3'`)
	if got := tb.limitsShown(); got != "3|daily to 5|bulk: 1000 per 24 h, search: 10 per 60 s" {
		t.Errorf("usage view of the CLI's key: %q", got)
	}
	searchHint := fmt.Sprintf(`document.querySelector('tr[data-key-id=%q] .uses').textContent`, searchID)
	tb.waitFor("the row's fresh uses", searchHint+` === '3 uses left'`)
	if got := eval[string](tb, `[...document.querySelectorAll('#usage-rate-limits .limit')].map((e) => e.dataset.limit).join(',')`); got != "bulk,search" {
		t.Errorf("named limits shown: %q, want bulk,search", got)
	}
	tb.screenshot("usage-named-limits")
	tb.click("usage-back")
	tb.waitFor("the keys view", `!document.getElementById('keys-view').hidden`)
	tb.click("sign-out")
	tb.waitFor("the sign-in view", `!document.getElementById('signin-view').hidden`)

	// A usage-limited admin may not hand out more than it has: the API's
	// 403 shows under the field it names.
	tb.signIn(reseller)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length > 0`)
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	tb.setValue("create-name", "Sub-reseller")
	tb.setValue("create-remaining", "10")
	tb.setValue("create-refill-interval", "daily")
	tb.setValue("create-refill-amount", "500")
	tb.click("create-submit")
	tb.waitFor("the refill's error", `document.getElementById('create-refill-amount-error')`)
	code, direct = api(t, s, reseller, "POST", "/v1/api-keys", map[string]any{"name": "x", "remaining": 10,
		"refill": map[string]any{"interval": "daily", "amount": 500}})
	apiErr, _ = direct["error"].(map[string]any)
	if code != 403 || apiErr["param"] != "refill" {
		t.Fatalf("the API's answer to a refill beyond the caller's: %d %v, want 403 with param refill", code, direct)
	}
	if got, want := tb.text("create-refill-amount-error"), apiErr["message"].(string); got != want {
		t.Errorf("error under the refill %q, want the API's %q", got, want)
	}
	for _, id := range []string{"create-refill-amount", "create-refill-interval"} {
		if got := eval[bool](tb, fmt.Sprintf(`document.getElementById(%q).getAttribute('aria-invalid') === 'true'`, id)); !got {
			t.Errorf("#%s is not marked invalid for a refill beyond the caller's", id)
		}
	}
	tb.setValue("create-remaining", "")
	tb.setValue("create-refill-interval", "")
	tb.setValue("create-refill-amount", "")
	tb.click("create-submit")
	tb.waitFor("the uses' error", `document.getElementById('create-remaining-error')`)
	if got := tb.fieldState("create-remaining"); got != "invalid|create-remaining-error|focused" {
		t.Errorf("unlimited uses from a usage-limited caller: %s", got)
	}
	if got := tb.text("create-remaining-error"); !strings.Contains(got, "unlimited uses are beyond") {
		t.Errorf("error under the uses: %q", got)
	}
	tb.click("create-cancel")
	if got := apiUsageLimit(t, s, adminToken, resellerID); got != "100 daily:100" {
		t.Errorf("the refused creates changed the reseller's uses: %s", got)
	}
	tb.checkOwnOriginOnly(s.httpAddr)
}

// fieldState says how a form control stands: "invalid" or "valid", the
// ids of its error messages (aria-describedby ids ending in -error), and
// whether it has focus.
func (tb *tab) fieldState(id string) string {
	tb.t.Helper()
	return eval[string](tb, fmt.Sprintf(`(() => { const e = document.getElementById(%q);
		const errs = (e.getAttribute('aria-describedby') || '').split(' ').filter((s) => s.endsWith('-error') && document.getElementById(s));
		return (e.getAttribute('aria-invalid') === 'true' ? 'invalid' : 'valid') + '|' + errs.join(',') + '|' +
			(document.activeElement === e ? 'focused' : 'not focused'); })()`, id))
}

// limitsShown is the usage view's line of limits: uses left, refill and
// rate limits, separated by |, the rate limits by ", ", spaces normalized.
func (tb *tab) limitsShown() string {
	tb.t.Helper()
	return eval[string](tb, `[document.getElementById('usage-remaining').textContent, document.getElementById('usage-refill').textContent,
		[...document.getElementById('usage-rate-limits').children].map((e) => e.textContent).join(', ')].join('|')`)
}

// keyID asks the API for the id of token's key.
func keyID(t *testing.T, s *server, token string) string {
	t.Helper()
	code, body := api(t, s, token, "GET", "/v1/whoami", nil)
	d, _ := body["data"].(map[string]any)
	id, _ := d["id"].(string)
	if code != 200 || id == "" {
		t.Fatalf("whoami: %d %v", code, body)
	}
	return id
}

// apiUsageLimit is a key's remaining and refill as the API has them:
// "250 daily:1000", "unlimited none".
func apiUsageLimit(t *testing.T, s *server, token, id string) string {
	t.Helper()
	code, body := api(t, s, token, "GET", "/v1/api-keys/"+id, nil)
	d, _ := body["data"].(map[string]any)
	if code != 200 || d == nil {
		t.Fatalf("GET /v1/api-keys/%s: %d %v", id, code, body)
	}
	out := "unlimited"
	if r, ok := d["remaining"].(float64); ok {
		out = fmt.Sprint(int64(r))
	}
	if r, ok := d["refill"].(map[string]any); ok {
		return out + fmt.Sprintf(" %s:%d", r["interval"], int64(r["amount"].(float64)))
	}
	return out + " none"
}
