package console

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keygate/keygate/internal/pgtest"
)

// TestBrowser_UsageChartsAndView sends real Checks through a real keygate
// serve, then looks at them in the console: each key's last 24 hours as a
// small chart in the keys list (the layout still fits 1280x800), and the
// usage view of one key by hour and by day, allowed against denied and the
// denials by code. With -update-docs it writes docs/console-usage.png.
func TestBrowser_UsageChartsAndView(t *testing.T) {
	chromium(t)
	k := keygate{bin: buildKeygate(t), env: []string{"KEYGATE_DATABASE_URL=" + pgtest.NewDatabase(t)}}
	adminToken := k.createKey(t, "--org", "acme", "--user", "admin", "--role", "admin", "--name", "Admin console")
	export := k.createKey(t, "--org", "acme", "--user", "svc-reporting", "--role", "viewer", "--name", "Nightly export",
		"--rate-limit", "5", "--remaining", "50000", "--refill", "monthly:50000", "--limit", "search=10/1m", "--limit", "bulk=2/1h")
	mobile := k.createKey(t, "--org", "acme", "--user", "alice", "--role", "member", "--name", "Mobile app")
	k.createKey(t, "--org", "acme", "--user", "bob", "--role", "member", "--name", "Unused key")
	s := serve(t, k, "--last-used-flush", "100ms")

	check := func(token, method string) {
		t.Helper()
		out, code := s.run(t, "check", "--addr", s.grpcAddr, "--key", token, "--method", method, "--path", "/v1/reports")
		if code != 0 && code != 1 {
			t.Fatalf("keygate check: exit %d\n%s", code, out)
		}
	}
	for range 8 {
		check(export, "GET") // 5 allowed, then rate_limited
	}
	for range 2 {
		check(export, "POST") // a viewer: insufficient_permissions
	}
	for range 6 {
		check(mobile, "GET")
	}

	_, whoami := api(t, s, export, "GET", "/v1/whoami", nil)
	exportID, _ := whoami["data"].(map[string]any)["id"].(string)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, u := api(t, s, adminToken, "GET", "/v1/api-keys/"+exportID+"/usage", nil)
		data, _ := u["data"].([]any)
		var allowed, denied float64
		for _, b := range data {
			allowed += b.(map[string]any)["allowed"].(float64)
			denied += b.(map[string]any)["denied"].(float64)
		}
		if allowed == 5 && denied == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage of the export key after 10s: %v", u)
		}
		time.Sleep(50 * time.Millisecond)
	}

	tb := newTab(t)
	tb.do(chromedp.EmulateViewport(1280, 800))
	tb.do(chromedp.Navigate(s.url("/console")))
	tb.signIn(adminToken)
	tb.waitFor("the keys table", `document.querySelectorAll('#keys-body tr').length === 4`)
	tb.waitFor("every row's chart", `[...document.querySelectorAll('#keys-body canvas.spark')].every((c) => c.dataset.drawn === 'true')`)
	sparks := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll('#keys-body tr')].map(
		(tr) => [tr.querySelector('td.name span').textContent, tr.querySelector('canvas.spark').getAttribute('aria-label')]))`)
	for name, want := range map[string]string{
		"Nightly export": "Last 24 hours: 5 allowed, 5 denied",
		"Mobile app":     "Last 24 hours: 6 allowed, 0 denied",
		"Unused key":     "Last 24 hours: 0 allowed, 0 denied",
	} {
		if sparks[name] != want {
			t.Errorf("chart of %s: %q, want %q", name, sparks[name], want)
		}
	}
	for _, p := range eval[[]string](tb, fmt.Sprintf(layoutProblems, true)) {
		t.Errorf("keys view with charts at 1280x800: %s", p)
	}
	tb.screenshot("keys-with-charts-1280x800")
	if n := eval[int](tb, `document.querySelectorAll('#keys-body canvas.spark').length`); n != 4 {
		t.Errorf("%d charts for 4 keys", n)
	}
	if got := tb.unlabelled(); len(got) > 0 {
		t.Errorf("controls without a name: %v", got)
	}

	tb.click("usage-" + exportID)
	tb.waitFor("the usage view", `!document.getElementById('usage-view').hidden && document.getElementById('usage-chart').dataset.drawn === 'true'`)
	tb.waitFocus("the usage view's heading", "usage-title")
	view := func() (string, string, map[string]string, int) {
		codes := eval[map[string]string](tb, `Object.fromEntries([...document.querySelectorAll('#usage-codes tr')].map(
			(tr) => [tr.dataset.code, tr.querySelector('td.num').textContent]))`)
		return tb.text("usage-allowed"), tb.text("usage-denied"), codes, eval[int](tb, `document.querySelectorAll('#usage-rows tr').length`)
	}
	wantCodes := map[string]string{"rate_limited": "3", "insufficient_permissions": "2"}
	if a, d, codes, rows := view(); a != "5" || d != "5" || fmt.Sprint(codes) != fmt.Sprint(wantCodes) || rows != 1 {
		t.Errorf("by hour: allowed %s, denied %s, by code %v, %d rows; want 5, 5, %v, 1", a, d, codes, rows, wantCodes)
	}
	if title := tb.text("usage-title"); title != "Usage of Nightly export" {
		t.Errorf("title %q", title)
	}
	// Its limits, with the uses left as the API has them now (the 5
	// allowed Checks spent some, more while a replica holds a lease).
	tb.waitFor("the key's fresh limits", `document.getElementById('usage-remaining').textContent !== ''`)
	if got, want := tb.limitsShown(), "|monthly to 50"+nnbsp+"000|5 per minute, bulk: 2 per 1 h, search: 10 per 60 s"; !strings.HasSuffix(got, want) {
		t.Errorf("the usage view's limits: %q, want …%q", got, want)
	}
	_, fresh := api(t, s, adminToken, "GET", "/v1/api-keys/"+exportID, nil)
	remaining, _ := fresh["data"].(map[string]any)["remaining"].(float64)
	if got, want := tb.text("usage-remaining"), grouped(int64(remaining)); remaining >= 50000 || got != want {
		t.Errorf("uses left shown %q, want the API's %v, below 50 000", got, remaining)
	}
	shot := tb.screenshot("usage-1280x800")

	tb.click("usage-day")
	tb.waitFor("the daily view", `document.getElementById('usage-day').getAttribute('aria-pressed') === 'true' &&
		document.getElementById('usage-chart').dataset.drawn === 'true'`)
	if a, d, codes, rows := view(); a != "5" || d != "5" || fmt.Sprint(codes) != fmt.Sprint(wantCodes) || rows != 1 {
		t.Errorf("by day: allowed %s, denied %s, by code %v, %d rows", a, d, codes, rows)
	}
	if span := tb.text("usage-span"); !strings.Contains(span, "30 days") {
		t.Errorf("daily span %q", span)
	}
	if pressed := eval[string](tb, `document.getElementById('usage-hour').getAttribute('aria-pressed')`); pressed != "false" {
		t.Errorf("hour button aria-pressed %q after choosing day", pressed)
	}

	tb.click("usage-back")
	tb.waitFor("the keys view", `!document.getElementById('keys-view').hidden`)
	tb.waitFocus("the chart that opened the view", "usage-"+exportID)

	if *updateDocs {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.WriteFile(filepath.Join("..", "docs", "console-usage.png"), b, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tb.checkOwnOriginOnly(s.httpAddr)
}
