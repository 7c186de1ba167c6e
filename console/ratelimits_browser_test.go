package console

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keygate/keygate/internal/pgtest"
)

// TestBrowser_NamedRateLimitsInForms sets SPEC §9's named rate limits
// through the create and edit forms' editor against a real keygate serve:
// a key created with two rows has them (API and usage view); the edit
// form shows the key's list, sends it only when the rows changed, and
// sends [] when every row is removed; the API's 400 on a row's field
// shows under that field of that row; and a caller with a named limit of
// its own sees it in the create form and cannot hand out a looser one:
// the API's 403 shows under the editor.
func TestBrowser_NamedRateLimitsInForms(t *testing.T) {
	chromium(t)
	k := keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATABASE_URL=" + pgtest.NewDatabase(t)}}
	adminToken := k.createKey(t, "--org", "acme", "--user", "admin", "--role", "admin", "--name", "Admin console")
	capped := k.createKey(t, "--org", "acme", "--user", "partner", "--role", "owner", "--name", "Partner owner",
		"--limit", "search=10/1m")
	s := serve(t, k)

	tb := newTab(t)
	tb.do(chromedp.EmulateViewport(1280, 800))
	tb.do(chromedp.Navigate(s.url("/console")))
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 2`)
	tb.recordCalls()

	// Create: an admin without named limits starts with no rows; Add
	// gives a row and puts focus in its name.
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	if got := tb.limitRowsShown("create"); got != "" {
		t.Errorf("create form of a caller without named limits shows rows %q, want none", got)
	}
	tb.setValue("create-name", "Partner search")
	tb.do(chromedp.SendKeys(chromedp.ID("create-limits-add"), kb.Enter)) // by keyboard
	rows := tb.limitRows("create")
	if len(rows) != 1 {
		t.Fatalf("%d rows after Add, want 1", len(rows))
	}
	tb.waitFocus("after Add", rows[0].Name)
	tb.setValue(rows[0].Name, "search")
	tb.setValue(rows[0].Limit, "10")
	tb.click("create-limits-add")
	rows = tb.limitRows("create")
	tb.setValue(rows[1].Name, "bulk")
	tb.setValue(rows[1].Limit, "1000")
	tb.setValue(rows[1].Per, "24")
	tb.setValue(rows[1].Unit, "3600")
	if got := tb.unlabelled(); len(got) > 0 {
		t.Errorf("controls without a name: %v", got)
	}
	if got := eval[[]string](tb, `[...document.querySelectorAll('#create-limits-rows input, #create-limits-rows select')].map((e) => e.labels[0].textContent)`); strings.Join(got, "|") !=
		"Name of limit 1|Requests of limit 1|Per of limit 1|Unit of limit 1|Name of limit 2|Requests of limit 2|Per of limit 2|Unit of limit 2" {
		t.Errorf("the rows' labels: %q", got)
	}
	tb.screenshot("create-form-named-limits")
	for _, sc := range []struct{ w, h int64 }{{390, 844}, {1280, 800}} {
		tb.do(chromedp.EmulateViewport(sc.w, sc.h))
		if p := eval[string](tb, editorOverflow); p != "" {
			t.Errorf("at %dx%d: %s", sc.w, sc.h, p)
		}
		if sc.w == 390 {
			tb.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('create-limits').scrollIntoView()`))
			tb.screenshot("create-form-named-limits-390x844")
		}
	}
	tb.click("create-submit")
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	id := tb.text("reveal-key-id")
	tb.click("reveal-close")
	tb.waitFor("the panel to close", `!document.getElementById('reveal-dialog').open`)
	if got := apiRateLimits(t, s, adminToken, id); got != "bulk=1000/86400,search=10/60" {
		t.Errorf("the key created in the form has named limits %q, want bulk=1000/86400,search=10/60", got)
	}
	if got := tb.lastSent("POST"); got != `{"rate_limits":[{"duration_seconds":60,"limit":10,"name":"search"},{"duration_seconds":86400,"limit":1000,"name":"bulk"}]}` {
		t.Errorf("the create sent %s", got)
	}
	tb.waitFor("the new row", fmt.Sprintf(`document.getElementById(%q)`, "usage-"+id))
	tb.click("usage-" + id)
	tb.waitFor("the usage view", `!document.getElementById('usage-view').hidden && document.getElementById('usage-chart').dataset.drawn === 'true'`)
	if got := tb.limitsShown(); got != "unlimited|none|bulk: 1000 per 24 h, search: 10 per 60 s" {
		t.Errorf("usage view of the new key: %q", got)
	}
	tb.click("usage-back")
	tb.waitFor("the keys view", `!document.getElementById('keys-view').hidden`)

	// Edit: the key's list (sorted by name, each window in its largest
	// whole unit); change one, remove the other.
	tb.click("edit-" + id)
	tb.waitFor("the edit form", `document.getElementById('edit-dialog').open`)
	if got := tb.limitRowsShown("edit"); got != "bulk 1000 24 3600|search 10 1 60" {
		t.Errorf("the edit form shows %q, want bulk 1000 24 3600|search 10 1 60", got)
	}
	rows = tb.limitRows("edit")
	tb.setValue(rows[1].Limit, "20")
	tb.setValue(rows[1].Per, "30")
	tb.setValue(rows[1].Unit, "1")
	tb.click(rows[0].Remove)
	tb.waitFocus("after removing a row", rows[1].Remove)
	if got := eval[string](tb, fmt.Sprintf(`document.getElementById(%q).getAttribute('aria-label')`, rows[1].Remove)); got != "Remove limit 1" {
		t.Errorf("the remaining row's remove button is %q, want Remove limit 1", got)
	}
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open`)
	if got := apiRateLimits(t, s, adminToken, id); got != "search=20/30" {
		t.Errorf("after the edit the key has %q, want search=20/30", got)
	}
	if got := tb.lastSent("PATCH"); got != `{"rate_limits":[{"duration_seconds":30,"limit":20,"name":"search"}]}` {
		t.Errorf("the edit sent %s", got)
	}

	// An edit that leaves the rows alone does not send them: a change
	// made elsewhere since the form opened stays.
	tb.click("edit-" + id)
	tb.waitFor("the edit form", `document.getElementById('edit-dialog').open`)
	if code, body := api(t, s, adminToken, "PATCH", "/v1/api-keys/"+id, map[string]any{
		"rate_limits": []map[string]any{{"name": "search", "limit": 5, "duration_seconds": 60}}}); code != 200 {
		t.Fatalf("PATCH rate_limits: %d %v", code, body)
	}
	tb.setValue("edit-name", "Partner search v2")
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open`)
	if got := apiRateLimits(t, s, adminToken, id); got != "search=5/60" {
		t.Errorf("an edit of the name left the key with named limits %q, want search=5/60 (rate_limits not sent)", got)
	}
	if got := tb.lastSent("PATCH"); got != `{"name":"Partner search v2"}` {
		t.Errorf("an edit of the name sent %s", got)
	}

	// The API's 400 for a row shows under that row's field.
	tb.click("edit-" + id)
	tb.waitFor("the edit form", `document.getElementById('edit-dialog').open`)
	rows = tb.limitRows("edit")
	tb.setValue(rows[0].Name, "Search")
	tb.click("edit-submit")
	tb.waitFor("the API's error", `document.querySelector('#edit-error .request-id')`)
	code, direct := api(t, s, adminToken, "PATCH", "/v1/api-keys/"+id, map[string]any{
		"rate_limits": []map[string]any{{"name": "Search", "limit": 5, "duration_seconds": 60}}})
	apiErr, _ := direct["error"].(map[string]any)
	if code != 400 || apiErr["param"] != "rate_limits[0].name" {
		t.Fatalf("the API's answer to the name Search: %d %v, want 400 with param rate_limits[0].name", code, direct)
	}
	if got := tb.fieldState(rows[0].Name); got != "invalid|"+rows[0].Name+"-error|focused" {
		t.Errorf("the bad name after the API's error: %s", got)
	}
	if got, want := tb.text(rows[0].Name+"-error"), apiErr["message"].(string); got != want {
		t.Errorf("under the name: %q, want the API's message %q", got, want)
	}
	if !eval[bool](tb, fmt.Sprintf(`document.getElementById(%q).contains(document.getElementById(%q))`, rows[0].ID, rows[0].Name+"-error")) {
		t.Error("the name's error is not in its row")
	}
	if got := tb.text("edit-error"); !strings.Contains(got, apiErr["message"].(string)) || !strings.Contains(got, "invalid_request") {
		t.Errorf("the edit form's error box shows %q", got)
	}
	tb.screenshot("edit-form-named-limit-error")

	// A second row's window beyond 24 hours: the error is under that
	// row's window, number and unit alike, and the first row's is gone.
	tb.setValue(rows[0].Name, "search")
	tb.click("edit-limits-add")
	rows = tb.limitRows("edit")
	tb.setValue(rows[1].Name, "bulk")
	tb.setValue(rows[1].Limit, "100")
	tb.setValue(rows[1].Per, "25")
	tb.setValue(rows[1].Unit, "3600")
	tb.click("edit-submit")
	tb.waitFor("the window's error", fmt.Sprintf(`document.getElementById(%q)`, rows[1].Per+"-error"))
	if got := tb.fieldState(rows[1].Per); got != "invalid|"+rows[1].Per+"-error|focused" {
		t.Errorf("the window beyond 24 h: %s", got)
	}
	if got := tb.fieldState(rows[1].Unit); !strings.HasPrefix(got, "invalid|"+rows[1].Per+"-error|") {
		t.Errorf("the unit of the window beyond 24 h: %s", got)
	}
	if got := tb.text(rows[1].Per + "-error"); !strings.Contains(got, "rate_limits[1].duration_seconds") {
		t.Errorf("under the window: %q", got)
	}
	if got := tb.fieldState(rows[0].Name); !strings.HasPrefix(got, "valid||") {
		t.Errorf("the first row's name still shows an error: %s", got)
	}

	// Every row removed: [] clears the list.
	for len(tb.limitRows("edit")) > 0 {
		tb.click(tb.limitRows("edit")[0].Remove)
	}
	tb.waitFocus("after removing the last row", "edit-limits-add")
	tb.click("edit-submit")
	tb.waitFor("the edit", `!document.getElementById('edit-dialog').open`)
	if got := apiRateLimits(t, s, adminToken, id); got != "" {
		t.Errorf("after removing every row the key has %q, want none", got)
	}
	if got := tb.lastSent("PATCH"); got != `{"rate_limits":[]}` {
		t.Errorf("removing every row sent %s", got)
	}

	// At most 8 rows.
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	for range 8 {
		tb.click("create-limits-add")
	}
	if got := eval[string](tb, `document.querySelectorAll('#create-limits-rows .rl-row').length + '|' + document.getElementById('create-limits-add').disabled`); got != "8|true" {
		t.Errorf("after 8 adds: %s rows|add disabled, want 8|true", got)
	}
	tb.click("create-cancel")
	tb.click("sign-out")
	tb.waitFor("the sign-in view", `!document.getElementById('signin-view').hidden`)

	// A caller with a named limit: the create form starts with it, and a
	// looser one is refused with the API's 403 under the editor.
	tb.signIn(capped)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length > 0`)
	tb.click("new-key")
	tb.waitFor("the create form", `document.getElementById('create-dialog').open`)
	if got := tb.limitRowsShown("create"); got != "search 10 1 60" {
		t.Errorf("the create form of a caller with search=10/1m shows %q", got)
	}
	tb.setValue("create-name", "Sub key")
	rows = tb.limitRows("create")
	tb.setValue(rows[0].Limit, "20")
	tb.click("create-submit")
	tb.waitFor("the editor's error", `document.getElementById('create-limits-error')`)
	code, direct = api(t, s, capped, "POST", "/v1/api-keys", map[string]any{"name": "x",
		"rate_limits": []map[string]any{{"name": "search", "limit": 20, "duration_seconds": 60}}})
	apiErr, _ = direct["error"].(map[string]any)
	if code != 403 || apiErr["param"] != "rate_limits" {
		t.Fatalf("the API's answer to a looser named limit: %d %v, want 403 with param rate_limits", code, direct)
	}
	if got, want := tb.text("create-limits-error"), apiErr["message"].(string); got != want {
		t.Errorf("under the editor: %q, want the API's %q", got, want)
	}
	if got := tb.fieldState("create-limits"); got != "invalid|create-limits-error|focused" {
		t.Errorf("the editor after the 403: %s", got)
	}
	if !eval[bool](tb, `document.getElementById('create-limits-hint').nextElementSibling === document.getElementById('create-limits-error')`) {
		t.Error("the 403 is not under the editor")
	}
	tb.screenshot("create-form-named-limit-403")
	// Back to the caller's own limit: the rows are unchanged, so nothing
	// is sent and the key gets the caller's limit.
	tb.setValue(rows[0].Limit, "10")
	tb.click("create-submit")
	tb.waitFor("the reveal panel", `document.getElementById('reveal-dialog').open`)
	sub := tb.text("reveal-key-id")
	tb.click("reveal-close")
	if got := apiRateLimits(t, s, capped, sub); got != "search=10/60" {
		t.Errorf("the key created with the caller's rows untouched has %q, want search=10/60", got)
	}
	if got := tb.lastSent("POST"); strings.Contains(got, "rate_limits") {
		t.Errorf("the create with untouched rows sent %s", got)
	}
	tb.checkOwnOriginOnly(s.httpAddr)
}

// editorOverflow says what of the create form's limits editor is outside
// the dialog's width, or that the dialog scrolls sideways; "" when all fits.
const editorOverflow = `(() => {
	const d = document.getElementById('create-dialog');
	if (d.scrollWidth > d.clientWidth) {
		return 'the create dialog scrolls sideways: ' + d.scrollWidth + 'px in ' + d.clientWidth + 'px';
	}
	const box = d.getBoundingClientRect();
	for (const e of document.querySelectorAll('#create-limits-rows input, #create-limits-rows select, #create-limits-rows button')) {
		const r = e.getBoundingClientRect();
		if (r.width === 0 || r.left < box.left || r.right > box.right) {
			return '#' + e.id + ' at x ' + Math.round(r.left) + '-' + Math.round(r.right) + ', outside the dialog (' +
				Math.round(box.left) + '-' + Math.round(box.right) + ')';
		}
	}
	return '';
})()`

// limitRow is one row of a named limits editor: its id and its controls'.
type limitRow struct{ ID, Name, Limit, Per, Unit, Remove string }

// limitRows lists the rows of the editor of form prefix.
func (tb *tab) limitRows(prefix string) []limitRow {
	tb.t.Helper()
	return eval[[]limitRow](tb, fmt.Sprintf(`[...document.querySelectorAll('#%s-limits-rows .rl-row')].map((r) => ({
		ID: r.id,
		Name: r.querySelector('[data-field=name]').id, Limit: r.querySelector('[data-field=limit]').id,
		Per: r.querySelector('[data-field=per]').id, Unit: r.querySelector('[data-field=unit]').id,
		Remove: r.querySelector('button[data-action=remove-limit]').id }))`, prefix))
}

// limitRowsShown is what the editor's rows hold: "name limit per unit"
// (the unit in seconds), rows separated by |.
func (tb *tab) limitRowsShown(prefix string) string {
	tb.t.Helper()
	return eval[string](tb, fmt.Sprintf(`[...document.querySelectorAll('#%s-limits-rows .rl-row')].map((r) =>
		['name', 'limit', 'per', 'unit'].map((f) => r.querySelector('[data-field=' + f + ']').value).join(' ')).join('|')`, prefix))
}

// recordCalls wraps the page's fetch to keep the method and body of
// every call to the keys API, for lastSent.
func (tb *tab) recordCalls() {
	tb.t.Helper()
	eval[chromedp.Void](tb, `(() => { window.__sent = []; const f = window.fetch;
		window.fetch = (path, init) => { window.__sent.push({ method: (init && init.method) || 'GET', path: String(path),
			body: init && typeof init.body === 'string' ? init.body : '' }); return f(path, init); }; })()`)
}

// lastSent is the body of the last call to /v1/api-keys… with method,
// cut to what the test looks at: rate_limits, and for a PATCH the name
// (JSON, keys sorted; a member not sent is absent).
func (tb *tab) lastSent(method string) string {
	tb.t.Helper()
	body := eval[string](tb, fmt.Sprintf(`(() => { const c = window.__sent.filter((c) => c.method === %q && c.path.startsWith('/v1/api-keys')).pop();
		return c ? c.body : ''; })()`, method))
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return "unparsable: " + body
	}
	out := map[string]any{}
	for _, k := range []string{"name", "rate_limits"} {
		if v, ok := m[k]; ok && (k != "name" || method == "PATCH") {
			out[k] = v
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

// apiRateLimits is a key's named rate limits as the API has them:
// "bulk=1000/86400,search=10/60", "" for none.
func apiRateLimits(t *testing.T, s *server, token, id string) string {
	t.Helper()
	code, body := api(t, s, token, "GET", "/v1/api-keys/"+id, nil)
	d, _ := body["data"].(map[string]any)
	list, ok := d["rate_limits"].([]any)
	if code != 200 || !ok {
		t.Fatalf("GET /v1/api-keys/%s: %d %v (rate_limits must be a list)", id, code, body)
	}
	var out []string
	for _, v := range list {
		l := v.(map[string]any)
		out = append(out, fmt.Sprintf("%s=%d/%d", l["name"], int64(l["limit"].(float64)), int64(l["duration_seconds"].(float64))))
	}
	return strings.Join(out, ",")
}
