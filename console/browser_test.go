package console

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/testskip"
)

var updateDocs = flag.Bool("update-docs", false, "write the keys view's screenshots to docs/console-1280x800.png and docs/console-1440x900.png")

// chromium finds Debian's Chromium. Without it the browser tests skip,
// unless KEYGATE_TEST_REQUIRE_BROWSER=1 (CI), where they fail.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	msg := "console: no Chromium at /usr/bin/chromium or in PATH, so the browser tests cannot run " +
		"(apt-get install -y chromium)"
	testskip.Unless(t, "KEYGATE_TEST_REQUIRE_BROWSER", msg)
	return ""
}

// tab is one headless Chromium tab and what it has seen.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	requests []string // every URL the page asked for
	problems []string // uncaught exceptions and CSP violations
}

// newTab starts Chromium with a fresh profile and nothing that reaches
// the network on its own (this machine has none), and opens a tab.
func newTab(t *testing.T, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting Chromium: %v", err)
	}
	tb := &tab{t: t, ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		tb.mu.Lock()
		defer tb.mu.Unlock()
		switch ev := ev.(type) {
		case *network.EventRequestWillBeSent:
			tb.requests = append(tb.requests, ev.Request.URL)
		case *cdpruntime.EventExceptionThrown:
			tb.problems = append(tb.problems, "exception: "+ev.ExceptionDetails.Text+" "+exceptionDescription(ev.ExceptionDetails))
		case *cdplog.EventEntryAdded:
			if strings.Contains(ev.Entry.Text, "Content Security Policy") {
				tb.problems = append(tb.problems, "CSP: "+ev.Entry.Text)
			}
		case *cdpruntime.EventConsoleAPICalled:
			if ev.Type == cdpruntime.ConsoleAPICalledTypeError {
				tb.problems = append(tb.problems, "console.error")
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return tb
}

func exceptionDescription(d *cdpruntime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}

// do runs actions with a per-step timeout, failing the test on an error.
func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition from Go (chromedp.Poll compiles its
// predicate with new Function, which the console's CSP rightly refuses).
func (tb *tab) waitFor(what, js string) {
	tb.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if eval[bool](tb, "!!("+js+")") {
			return
		}
		if time.Now().After(deadline) {
			errs := eval[[]string](tb, `[...document.querySelectorAll('.error:not([hidden])')].map((e) => e.id + ': ' + e.textContent)`)
			tb.t.Fatalf("waiting for %s (%s): timed out; errors shown: %q", what, js, errs)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (tb *tab) click(id string) { tb.t.Helper(); tb.do(chromedp.Click(chromedp.ID(id))) }

// setValue sets a form control's value and fires input and change, as
// typing or picking would.
func (tb *tab) setValue(id, value string) {
	tb.t.Helper()
	v, _ := json.Marshal(value)
	eval[chromedp.Void](tb, fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.value = %s;
		e.dispatchEvent(new Event('input', {bubbles: true})); e.dispatchEvent(new Event('change', {bubbles: true})); })()`, id, v))
}

func (tb *tab) text(id string) string {
	tb.t.Helper()
	return eval[string](tb, fmt.Sprintf("document.getElementById(%q).textContent", id))
}

// waitFocus waits until the element with id has focus: dialogs give focus
// back on their close event, a task after they closed.
func (tb *tab) waitFocus(what, id string) {
	tb.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := tb.activeID()
		if got == id {
			return
		}
		if time.Now().After(deadline) {
			tb.t.Errorf("focus %s: #%s, want #%s", what, got, id)
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (tb *tab) activeID() string {
	tb.t.Helper()
	return eval[string](tb, "document.activeElement ? document.activeElement.id : ''")
}

// screenshot saves the viewport as name.png in the test's artifact
// directory (a temporary one unless go test -artifacts) and returns the path.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(tb.t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot of the %s view: %s", name, p)
	return p
}

// domHolds reports whether s is anywhere in the page: its markup, or the
// value of any form control (which the markup does not show).
func (tb *tab) domHolds(s string) bool {
	tb.t.Helper()
	return eval[bool](tb, fmt.Sprintf(`(() => { const s = %q;
		return document.documentElement.outerHTML.includes(s) ||
			[...document.querySelectorAll('input, textarea, select')].some((e) => e.value.includes(s)); })()`, s))
}

// domCount counts s in the page's text.
func (tb *tab) domCount(s string) int {
	tb.t.Helper()
	return eval[int](tb, fmt.Sprintf(`document.documentElement.textContent.split(%q).length - 1`, s))
}

// unlabelled lists the form controls without an accessible name: no
// label, no aria-label, and (for a button) no text.
func (tb *tab) unlabelled() []string {
	tb.t.Helper()
	return eval[[]string](tb, `[...document.querySelectorAll('input, select, textarea, button')].filter((e) =>
		!((e.labels && e.labels.length > 0) || e.getAttribute('aria-label') || (e.tagName === 'BUTTON' && e.textContent.trim() !== '')))
		.map((e) => e.id || e.tagName)`)
}

// signIn pastes token into the sign-in form and submits it with Enter.
func (tb *tab) signIn(token string) {
	tb.t.Helper()
	tb.do(chromedp.WaitVisible(chromedp.ID("signin-key")))
	tb.setValue("signin-key", "")
	tb.do(chromedp.SendKeys(chromedp.ID("signin-key"), token+kb.Enter))
}

// api calls the management API directly, as a script would.
func api(t *testing.T, s *server, token, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, s.url(path), rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

var tokenShape = regexp.MustCompile(`^sk_live_[0-9A-Za-z]{38}$`)

// TestBrowser_ConsoleEndToEnd drives the console in headless Chromium
// against a real keygate serve on PostgreSQL, as a user would: admin
// creates, copies, rolls, deactivates, edits and revokes a key, and
// keygate check confirms each decision; a member sees only their keys; a
// publishable key is refused with the API's message. The page talks to no
// host but its own and trips no CSP violation.
func TestBrowser_ConsoleEndToEnd(t *testing.T) {
	chromium(t) // skip before building anything
	k := keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATABASE_URL=" + pgtest.NewDatabase(t)}}
	adminToken := k.createKey(t, "--org", "acme", "--user", "admin", "--role", "admin", "--name", "Admin console")
	aliceToken := k.createKey(t, "--org", "acme", "--user", "alice", "--role", "member", "--name", "Alice's laptop")
	publishable := k.createKey(t, "--org", "acme", "--user", "alice", "--type", "publishable", "--name", "Checkout widget")
	k.createKey(t, "--org", "acme", "--user", "bob", "--role", "member", "--name", "Nightly export",
		"--project", "proj_reports", "--expires-in", "90d", "--rate-limit", "600")
	k.createKey(t, "--org", "acme", "--user", "admin", "--role", "viewer", "--name", "Staging smoke tests")
	k.createKey(t, "--org", "globex", "--user", "admin", "--role", "admin", "--name", "Globex admin")
	s := serve(t, k)
	origin := "http://" + s.httpAddr

	tb := newTab(t)
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		_, err := chromedp.CallBrowser(tb.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name, AllowWithoutSanitization: true},
			Setting:    browser.PermissionSettingGranted, Origin: origin,
		})
		if err != nil {
			t.Logf("granting %s: %v (the copy falls back to selecting the text)", name, err)
		}
	}

	// Signed out.
	tb.do(chromedp.Navigate(origin+"/console"), chromedp.WaitVisible(chromedp.ID("signin-key")))
	tb.waitFocus("on load", "signin-key")
	tb.screenshot("signed-out")

	// Admin signs in: the organization's keys, newest first, and whoami.
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 5`)
	if got := tb.text("whoami-org") + "|" + tb.text("whoami-user") + "|" + tb.text("whoami-scopes"); got != "acme|admin|admin, read, write" {
		t.Errorf("whoami header: %q", got)
	}
	names := eval[[]string](tb, `[...document.querySelectorAll('#keys-body td.name > span:first-child')].map((e) => e.textContent)`)
	if want := []string{"Staging smoke tests", "Nightly export", "Checkout widget", "Alice's laptop", "Admin console"}; strings.Join(names, "|") != strings.Join(want, "|") {
		t.Errorf("admin's keys: %q, want %q (the organization's, newest first)", names, want)
	}
	if eval[string](tb, `sessionStorage.getItem('keygate.console.key')`) != adminToken {
		t.Error("the key is not in sessionStorage")
	}
	if eval[int](tb, `localStorage.length`) != 0 || eval[string](tb, `document.cookie`) != "" {
		t.Error("the console wrote to localStorage or a cookie")
	}
	if tb.domHolds(adminToken) {
		t.Error("the signed-in key is in the DOM")
	}
	// The session survives a reload of the tab.
	tb.do(chromedp.Reload())
	tb.waitFor("the keys table after a reload", `document.querySelectorAll('#keys-body tr').length === 5`)

	// Status filter.
	tb.setValue("status-filter", "expired")
	tb.waitFor("the expired filter", `document.querySelectorAll('#keys-body tr').length === 0 && !document.getElementById('keys-empty').hidden`)
	tb.setValue("status-filter", "")
	tb.waitFor("all keys again", `document.querySelectorAll('#keys-body tr').length === 5`)

	// Create: a client-side metadata error, an API error with its
	// request id, then a key.
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	tb.waitFocus("in the create form", "create-name")
	scopes := eval[[]string](tb, `[...document.querySelectorAll('#create-scopes-list input')].map((e) => e.value)`)
	if strings.Join(scopes, ",") != "admin,read,write" {
		t.Errorf("scope choices %q, want the caller's: admin,read,write", scopes)
	}
	if got := tb.checkedScopes(); got != "read,write" {
		t.Errorf("scopes ticked when the form opens: %q, want read,write (admin only when chosen)", got)
	}
	tb.do(chromedp.SendKeys(chromedp.ID("create-name"), "CI pipeline"))
	tb.setValue("create-metadata", `[1, 2]`)
	tb.click("create-submit")
	tb.waitFor("the metadata error", `!document.getElementById('create-error').hidden`)
	if got := tb.text("create-error"); !strings.Contains(got, "must be a JSON object") {
		t.Errorf("client-side metadata error: %q", got)
	}
	tb.setValue("create-metadata", `{"blob": "`+strings.Repeat("x", 5000)+`"}`)
	tb.click("create-submit")
	tb.waitFor("the API's error", `document.querySelector('#create-error .request-id')`)
	apiErr := tb.text("create-error")
	_, direct := api(t, s, adminToken, "POST", "/v1/api-keys", map[string]any{"name": "x", "metadata": map[string]string{"blob": strings.Repeat("x", 5000)}})
	if msg, _ := direct["error"].(map[string]any)["message"].(string); msg == "" || !strings.Contains(apiErr, msg) {
		t.Errorf("create error shows %q, want the API's message %q", apiErr, msg)
	}
	if rid := eval[string](tb, `document.querySelector('#create-error .request-id').textContent`); rid == "" {
		t.Error("create error shows no request id")
	}
	tb.setValue("create-metadata", `{"plan": "pro", "customer": "cus_42"}`)
	tb.setValue("create-rate", "60")
	tb.setValue("create-projects", "proj_web, proj_api")
	tb.screenshot("create-form")
	tb.click("create-submit")

	// The reveal panel: the token once, focus in the panel, copy.
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	tb.waitFocus("when the reveal panel opens", "reveal-copy")
	token := tb.text("reveal-token")
	keyID := tb.text("reveal-key-id")
	if !tokenShape.MatchString(token) {
		t.Fatalf("reveal panel shows %q, not a token", token)
	}
	if n := tb.domCount(token); n != 1 {
		t.Errorf("the new token is %d times in the page, want once (the reveal panel)", n)
	}
	tb.screenshot("reveal-panel")
	tb.click("reveal-copy")
	tb.waitFor("the copy", `document.getElementById('reveal-status').textContent !== ''`)
	var copied string
	if status := tb.text("reveal-status"); strings.HasPrefix(status, "Copied") {
		copied = eval[string](tb, `navigator.clipboard.readText()`)
		t.Log("copy: read back from the clipboard (navigator.clipboard, permission granted over CDP)")
	} else {
		copied = eval[string](tb, `window.getSelection().toString()`)
		t.Logf("copy: the clipboard was refused (%q); read the selected text of the reveal panel", status)
	}
	if copied != token {
		t.Fatalf("copied %q, want the token %q", copied, token)
	}
	if code := s.check(t, token); code != 0 {
		t.Errorf("keygate check with the created key: exit %d, want 0 (allowed)", code)
	}
	tb.click("reveal-close")
	tb.waitFor("the reveal panel to close", `!document.getElementById('reveal-dialog').open`)
	tb.waitFocus("after the reveal panel (what opened it)", "new-key")
	if tb.domHolds(token) {
		t.Error("the token is still in the DOM after the reveal panel closed")
	}
	row := fmt.Sprintf(`document.querySelector('#keys-body tr[data-key-id=%q]')`, keyID)
	if got := eval[string](tb, row+`.textContent`); !strings.Contains(got, "CI pipeline") || !strings.Contains(got, "proj_api, proj_web") ||
		!strings.Contains(got, "read, write") || strings.Contains(got, "admin, read") {
		t.Errorf("new key's row: %q", got)
	}
	if got := apiScopes(t, s, adminToken, keyID); got != "read,write" {
		t.Errorf("a key created without touching the scope boxes has scopes %q, want read,write", got)
	}
	tb.screenshot("keys")

	// Roll with no grace: the old token is denied at once, the new one works.
	tb.click("roll-" + keyID)
	tb.waitFor("the roll dialog", `document.getElementById('roll-dialog').open`)
	if got := eval[string](tb, `document.getElementById('roll-grace').value`); got != "0" {
		t.Errorf("default grace %q, want 0", got)
	}
	tb.click("roll-submit")
	tb.waitFor("the reveal panel after the roll", `document.getElementById('reveal-dialog').open && document.getElementById('reveal-token').textContent !== ''`)
	rolled := tb.text("reveal-token")
	if !tokenShape.MatchString(rolled) || rolled == token {
		t.Fatalf("roll revealed %q", rolled)
	}
	tb.do(chromedp.KeyEvent(kb.Escape)) // Escape closes and forgets too
	tb.waitFor("the reveal panel to close", `!document.getElementById('reveal-dialog').open`)
	if tb.domHolds(rolled) {
		t.Error("the rolled token is still in the DOM after Escape")
	}
	tb.waitFocus("after the roll's reveal", "roll-"+keyID)
	if code := s.check(t, token); code != 1 {
		t.Errorf("keygate check with the token rolled with grace 0: exit %d, want 1 (denied)", code)
	}
	if code := s.check(t, rolled); code != 0 {
		t.Errorf("keygate check with the new token: exit %d, want 0", code)
	}

	// Deactivate, activate.
	tb.click("toggle-" + keyID)
	tb.waitFor("inactive", row+`.dataset.status === 'inactive'`)
	if code := s.check(t, rolled); code != 1 {
		t.Errorf("keygate check with a deactivated key: exit %d, want 1", code)
	}
	tb.waitFocus("after deactivate", "toggle-"+keyID)
	tb.do(chromedp.KeyEvent(kb.Enter)) // the focused Activate button, from the keyboard
	tb.waitFor("active", row+`.dataset.status === 'active'`)
	if code := s.check(t, rolled); code != 0 {
		t.Errorf("keygate check with a reactivated key: exit %d, want 0", code)
	}

	// Edit name and rate limit.
	tb.click("edit-" + keyID)
	tb.waitFor("the edit dialog", `document.getElementById('edit-dialog').open`)
	if got := eval[string](tb, `document.getElementById('edit-rate').value`); got != "60" {
		t.Errorf("edit form's rate limit %q, want 60", got)
	}
	tb.setValue("edit-name", "CI pipeline (prod)")
	tb.setValue("edit-rate", "30")
	if got := eval[string](tb, `document.getElementById('edit-sources').value`); got != "" {
		t.Errorf("edit form's allowed sources %q, want none", got)
	}
	if got := eval[string](tb, row+`.querySelector('.sources').textContent`); got != "anywhere" {
		t.Errorf("row's sources %q, want anywhere", got)
	}
	tb.setValue("edit-sources", "spiffe://cluster.local/ns/ci/*, 10.0.0.0/8")
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open && `+row+`.textContent.includes('CI pipeline (prod)')`)
	_, got := api(t, s, adminToken, "GET", "/v1/api-keys/"+keyID, nil)
	if d, _ := got["data"].(map[string]any); d["name"] != "CI pipeline (prod)" || d["rate_limit_per_minute"] != 30.0 ||
		fmt.Sprint(d["allowed_sources"]) != "[10.0.0.0/8 spiffe://cluster.local/ns/ci/*]" {
		t.Errorf("after the edit the API has %v", got["data"])
	}
	if got := eval[string](tb, row+`.querySelector('.sources').textContent`); got != "10.0.0.0/8, spiffe://cluster.local/ns/ci/*" {
		t.Errorf("row's sources after the edit %q", got)
	}
	tb.waitFocus("after the edit", "edit-"+keyID)

	// Revoke, after a confirmation that names the key.
	tb.click("revoke-" + keyID)
	tb.waitFor("the revoke dialog", `document.getElementById('revoke-dialog').open`)
	if got := tb.text("revoke-text"); !strings.Contains(got, "CI pipeline (prod)") {
		t.Errorf("revoke confirmation %q does not name the key", got)
	}
	tb.waitFocus("in the revoke dialog", "revoke-cancel")
	tb.click("revoke-submit")
	tb.waitFor("the revoked row to go", row+` === null`)
	tb.waitFor("focus on the next row", `document.activeElement && document.activeElement.closest('#keys-body tr') !== null`)
	if code := s.check(t, rolled); code != 1 {
		t.Errorf("keygate check with the revoked key: exit %d, want 1", code)
	}

	// Every control has a name, the table's row buttons and the create
	// form's scope boxes included.
	if got := tb.unlabelled(); len(got) != 0 {
		t.Errorf("controls without a label: %q", got)
	}

	// The audit trail.
	tb.click("nav-audit")
	tb.waitFor("the audit trail", `document.querySelectorAll('#audit-body tr').length > 0`)
	actions := eval[[]string](tb, `[...document.querySelectorAll('#audit-body tr')].map((e) => e.dataset.action)`)
	for _, want := range []string{"api_key.revoked", "api_key.updated", "api_key.rolled", "api_key.created", "organization.created"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Errorf("audit trail %q lacks %s", actions, want)
		}
	}
	if actions[0] != "api_key.revoked" {
		t.Errorf("audit trail starts with %s, want the revoke (newest first)", actions[0])
	}
	tb.screenshot("audit")

	// Sign out forgets the key.
	tb.click("sign-out")
	tb.waitFor("the sign-in view", `!document.getElementById('signin-view').hidden`)
	if eval[int](tb, `sessionStorage.length`) != 0 {
		t.Error("sign-out left the key in sessionStorage")
	}

	// A member sees their own keys only, page by page.
	for i := range 21 {
		if code, body := api(t, s, aliceToken, "POST", "/v1/api-keys", map[string]any{"name": fmt.Sprintf("Alice batch %02d", i)}); code != 201 {
			t.Fatalf("creating alice's key %d: %d %v", i, code, body)
		}
	}
	tb.signIn(aliceToken)
	tb.waitFor("a first page", `document.querySelectorAll('#keys-body tr').length === 20 && !document.getElementById('keys-more').hidden`)
	if !eval[bool](tb, `document.getElementById('nav-audit').hidden`) {
		t.Error("a member is offered the audit trail")
	}
	tb.click("keys-more")
	tb.waitFor("the last page", `document.getElementById('keys-more').hidden && document.querySelectorAll('#keys-body tr').length === 23`)
	users := eval[[]string](tb, `[...new Set([...document.querySelectorAll('#keys-body td.user')].map((e) => e.textContent))]`)
	if strings.Join(users, ",") != "alice" {
		t.Errorf("a member sees keys of %q, want alice's only", users)
	}
	tb.click("sign-out")

	// The admin's audit trail now runs to two pages.
	total := 0
	for cursor := ""; ; {
		_, page := api(t, s, adminToken, "GET", "/v1/audit-events?limit=200"+cursor, nil)
		data, _ := page["data"].([]any)
		total += len(data)
		next, _ := page["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = "&cursor=" + url.QueryEscape(next)
	}
	if total <= 20 {
		t.Fatalf("the audit trail has %d events, too few for a second page", total)
	}
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `!document.getElementById('keys-view').hidden`)
	tb.click("nav-audit")
	tb.waitFor("a first page of events", `document.querySelectorAll('#audit-body tr').length === 20 && !document.getElementById('audit-more').hidden`)
	tb.click("audit-more")
	tb.waitFor("every event", fmt.Sprintf(`document.getElementById('audit-more').hidden && document.querySelectorAll('#audit-body tr').length === %d`, total))
	tb.click("sign-out")

	// A publishable key is refused with the API's message.
	code, refusal := api(t, s, publishable, "GET", "/v1/whoami", nil)
	msg, _ := refusal["error"].(map[string]any)["message"].(string)
	if code != 403 || msg == "" {
		t.Fatalf("API answer to a publishable key: %d %v", code, refusal)
	}
	tb.signIn(publishable)
	tb.waitFor("the refusal", `!document.getElementById('signin-error').hidden`)
	if got := tb.text("signin-error"); !strings.Contains(got, msg) || !strings.Contains(got, "Request id") {
		t.Errorf("publishable sign-in shows %q, want the API's message %q and a request id", got, msg)
	}
	if !eval[bool](tb, `document.getElementById('keys-view').hidden && sessionStorage.length === 0`) {
		t.Error("a publishable key got past sign-in")
	}

	tb.checkOwnOriginOnly(s.httpAddr)
}

// checkOwnOriginOnly fails the test if the page asked any host but host
// (its own), or threw or tripped the CSP.
func (tb *tab) checkOwnOriginOnly(host string) {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	sawAPI := false
	for _, raw := range tb.requests {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "data" {
			continue
		}
		if u.Scheme != "http" || u.Host != host {
			tb.t.Errorf("the page requested %s: not its own origin http://%s", raw, host)
		}
		sawAPI = sawAPI || strings.HasPrefix(u.Path, "/v1/")
	}
	if !sawAPI {
		tb.t.Errorf("saw no API request among %d requests: is the network listener working?", len(tb.requests))
	}
	for _, p := range tb.problems {
		tb.t.Errorf("page: %s", p)
	}
}

// screens are the viewport sizes the keys view is laid out for. At the
// common desktop sizes (fit) nothing scrolls sideways; narrower, the table
// may scroll under its actions column, which stays in view.
var screens = []struct {
	width, height int64
	fit           bool
}{
	{1280, 800, true},
	{1440, 900, true},
	{1024, 768, false},
	{390, 844, false}, // a phone
}

// TestBrowser_KeysViewFitsCommonScreens lays out an organization's keys,
// every column filled (projects, expiry, last use, an inactive key, a long
// name), at common screen sizes and checks that every row's actions are
// in the viewport, inside the table's visible box and not covered; at
// 1280x800 and 1440x900 without any horizontal scrolling, of the page or
// of the table. With -update-docs it writes those two screenshots to docs/.
func TestBrowser_KeysViewFitsCommonScreens(t *testing.T) {
	chromium(t)
	k := keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATABASE_URL=" + pgtest.NewDatabase(t)}}
	adminToken := k.createKey(t, "--org", "acme", "--user", "admin", "--role", "admin", "--name", "Admin console")
	used := []string{adminToken,
		k.createKey(t, "--org", "acme", "--user", "alice", "--role", "member", "--name", "Alice's laptop"),
		k.createKey(t, "--org", "acme", "--user", "svc-reporting", "--role", "member", "--name", "Nightly export to the data warehouse",
			"--project", "proj_reports", "--project", "proj_billing", "--expires-in", "90d", "--rate-limit", "600",
			"--remaining", "1250000", "--refill", "monthly:1250000"),
		k.createKey(t, "--org", "acme", "--user", "ci-bot", "--role", "member", "--name", "CI pipeline (prod)",
			"--project", "proj_api", "--project", "proj_web", "--expires-in", "30d"),
	}
	k.createKey(t, "--org", "acme", "--user", "alice", "--type", "publishable", "--name", "Checkout widget")
	k.createKey(t, "--org", "acme", "--user", "admin", "--role", "viewer", "--env", "test", "--name", "Staging smoke tests",
		"--remaining", "0", "--refill", "daily:200")
	s := serve(t, k, "--last-used-flush", "100ms")
	for _, token := range used {
		s.check(t, token)
	}
	var inactive string
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, list := api(t, s, adminToken, "GET", "/v1/api-keys", nil)
		data, _ := list["data"].([]any)
		lastUsed := 0
		for _, v := range data {
			d := v.(map[string]any)
			if d["last_used_at"] != nil {
				lastUsed++
			}
			if d["name"] == "Alice's laptop" {
				inactive, _ = d["id"].(string)
			}
		}
		if lastUsed == len(used) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d keys show a last use after 10s", lastUsed, len(used))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := api(t, s, adminToken, "PATCH", "/v1/api-keys/"+inactive, map[string]any{"active": false}); code != 200 {
		t.Fatalf("deactivating a key: %d %v", code, body)
	}

	tb := newTab(t)
	tb.do(chromedp.Navigate(s.url("/console")))
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 6`)
	tb.waitFor("every row's chart", `[...document.querySelectorAll('#keys-body canvas.spark')].every((c) => c.dataset.drawn === 'true')`)
	if n := eval[int](tb, `document.querySelectorAll('#keys-body .uses').length`); n != 2 {
		t.Errorf("%d rows say how many uses they have left, want 2 (the usage-limited keys)", n)
	}
	for _, sc := range screens {
		size := fmt.Sprintf("%dx%d", sc.width, sc.height)
		tb.do(chromedp.EmulateViewport(sc.width, sc.height))
		if got := eval[[]int64](tb, `[window.innerWidth, window.innerHeight]`); got[0] != sc.width || got[1] != sc.height {
			t.Fatalf("viewport %v, want %s", got, size)
		}
		for _, p := range eval[[]string](tb, fmt.Sprintf(layoutProblems, sc.fit)) {
			t.Errorf("at %s: %s", size, p)
		}
		shot := tb.screenshot("keys-" + size)
		if *updateDocs && sc.fit {
			b, err := os.ReadFile(shot)
			if err == nil {
				err = os.WriteFile(filepath.Join("..", "docs", "console-"+size+".png"), b, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	tb.checkOwnOriginOnly(s.httpAddr)
}

// layoutProblems is a script that lists what is wrong with the keys
// view's layout in the current viewport: the page scrolling sideways, with
// %t the table scrolling sideways too, and any row action outside the
// viewport or the table's visible box, or covered by something else. Each
// row is scrolled into view (vertically only) to be looked at.
const layoutProblems = `(() => {
	const fit = %t;
	const root = document.documentElement;
	const vw = Math.min(window.innerWidth, root.clientWidth);
	const out = [];
	if (root.scrollWidth > root.clientWidth) {
		out.push('the page scrolls sideways: ' + root.scrollWidth + 'px wide in ' + root.clientWidth + 'px');
	}
	const wrap = document.querySelector('#keys-view .table-wrap');
	if (fit && wrap.scrollWidth > wrap.clientWidth) {
		out.push('the keys table scrolls sideways: ' + wrap.scrollWidth + 'px wide in ' + wrap.clientWidth + 'px');
	}
	for (const tr of document.querySelectorAll('#keys-body tr')) {
		window.scrollBy(0, tr.getBoundingClientRect().top - 80);
		const box = wrap.getBoundingClientRect();
		const buttons = tr.querySelectorAll('td.row-actions button');
		if (buttons.length < 4) {
			out.push('row ' + tr.dataset.keyId + ' has ' + buttons.length + ' actions, want 4');
		}
		for (const b of buttons) {
			const r = b.getBoundingClientRect();
			const where = b.id + ' (' + b.textContent + ') at x ' + Math.round(r.left) + '-' + Math.round(r.right) +
				', y ' + Math.round(r.top) + '-' + Math.round(r.bottom);
			if (r.width === 0 || r.left < 0 || r.right > vw || r.left < box.left || r.right > box.right) {
				out.push(where + ': outside the viewport (0-' + vw + ') or the table (' + Math.round(box.left) + '-' + Math.round(box.right) + ')');
				continue;
			}
			if (r.top < 0 || r.bottom > window.innerHeight) {
				out.push(where + ': not in view after scrolling its row into view');
				continue;
			}
			const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
			if (hit === null || !b.contains(hit)) {
				out.push(where + ': covered by ' + (hit === null ? 'nothing' : hit.tagName + ' ' + hit.className));
			}
		}
	}
	window.scrollTo(0, 0);
	return out;
})()`

// TestBrowser_QuickStartOwnerKeyAndCopyFallback follows the README's
// quick start: the first `keygate serve` on the embedded store prints an
// owner key, which signs in to the console, opened at the HTTP port's
// root. The page is served under a host name that is not a secure context
// (plain HTTP, not localhost), so the browser offers no clipboard API and
// the copy button selects the token instead.
func TestBrowser_QuickStartOwnerKeyAndCopyFallback(t *testing.T) {
	chromium(t)
	s := serve(t, keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATA_DIR=" + t.TempDir()}})
	lines := strings.Split(strings.TrimSpace(s.stdout.String()), "\n")
	owner := lines[len(lines)-1]
	if !tokenShape.MatchString(owner) {
		t.Fatalf("serve printed %q, want the owner key on its last line", s.stdout.String())
	}
	_, port, _ := strings.Cut(s.httpAddr, ":")
	host := "console.test:" + port
	tb := newTab(t, chromedp.Flag("host-resolver-rules", "MAP console.test 127.0.0.1"))

	// The HTTP port's root, as a newcomer types it, lands on the console.
	tb.do(chromedp.Navigate("http://"+host+"/"), chromedp.WaitVisible(chromedp.ID("signin-key")))
	if got := eval[string](tb, `location.pathname`); got != "/console" {
		t.Errorf("http://%s/ ended at %s, want /console", host, got)
	}
	if eval[bool](tb, `window.isSecureContext`) {
		t.Fatal("http://console.test is a secure context; the fallback is not exercised")
	}
	// The sign-in page says where a first key comes from, on both stores.
	if !eval[bool](tb, `document.getElementById('signin-where').checkVisibility()`) {
		t.Error("the sign-in page does not show where a key comes from")
	}
	where := strings.Join(strings.Fields(tb.text("signin-where")), " ")
	for _, want := range []string{
		"embedded store", "keygate serve", "prints an owner key",
		"PostgreSQL", "keygate keys create --org ORG --user USER --name NAME --role owner",
	} {
		if !strings.Contains(where, want) {
			t.Errorf("the sign-in page says %q, want it to mention %q", where, want)
		}
	}
	tb.screenshot("signed-out")
	tb.signIn(owner)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 1`)
	if got := tb.text("whoami-org") + "|" + tb.text("whoami-user"); got != "default|admin" {
		t.Errorf("whoami %q, want default|admin", got)
	}
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	if got := tb.checkedScopes(); got != "read,write" {
		t.Errorf("the owner's create form ticks %q, want read,write (admin only when chosen)", got)
	}
	tb.do(chromedp.SendKeys(chromedp.ID("create-name"), "From the quick start"+kb.Enter))
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	token := tb.text("reveal-token")
	if got := apiScopes(t, s, owner, tb.text("reveal-key-id")); got != "read,write" {
		t.Errorf("the owner's key created with the boxes untouched has scopes %q, want read,write", got)
	}
	tb.click("reveal-copy")
	tb.waitFor("the fallback", `document.getElementById('reveal-status').textContent.includes('selected')`)
	if got := eval[string](tb, `window.getSelection().toString()`); got != token {
		t.Errorf("selected %q, want the token %q", got, token)
	}
	tb.click("reveal-close")
	tb.waitFor("the panel to close", `!document.getElementById('reveal-dialog').open`)
	if tb.domHolds(token) {
		t.Error("the token is still in the DOM after the panel closed")
	}
	if got := eval[string](tb, `window.getSelection().toString()`); got != "" {
		t.Errorf("the selection still holds %q after the panel closed", got)
	}
	if code := s.check(t, token); code != 0 {
		t.Errorf("keygate check with the key created from the quick start: exit %d, want 0", code)
	}

	// admin is there to choose, and a choice is honoured.
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	tb.click("create-scope-admin")
	if got := tb.checkedScopes(); got != "admin,read,write" {
		t.Errorf("after ticking admin: %q, want admin,read,write", got)
	}
	tb.do(chromedp.SendKeys(chromedp.ID("create-name"), "Second admin"+kb.Enter))
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	if got := apiScopes(t, s, owner, tb.text("reveal-key-id")); got != "admin,read,write" {
		t.Errorf("a key created with admin ticked has scopes %q, want admin,read,write", got)
	}
	tb.click("reveal-close")
	tb.waitFor("the panel to close", `!document.getElementById('reveal-dialog').open`)
	tb.checkOwnOriginOnly(host)
}

// checkedScopes lists the scope boxes ticked in the create form.
func (tb *tab) checkedScopes() string {
	tb.t.Helper()
	return strings.Join(eval[[]string](tb, `[...document.querySelectorAll('#create-scopes-list input:checked')].map((e) => e.value)`), ",")
}

// apiScopes asks the API for a key's scopes, sorted and comma-separated.
func apiScopes(t *testing.T, s *server, token, id string) string {
	t.Helper()
	code, body := api(t, s, token, "GET", "/v1/api-keys/"+id, nil)
	d, _ := body["data"].(map[string]any)
	if code != 200 || d == nil {
		t.Fatalf("GET /v1/api-keys/%s: %d %v", id, code, body)
	}
	var scopes []string
	for _, v := range d["scopes"].([]any) {
		scopes = append(scopes, v.(string))
	}
	slices.Sort(scopes)
	return strings.Join(scopes, ",")
}
