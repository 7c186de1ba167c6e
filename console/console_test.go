package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// securityHeaders are what every console response must carry.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
	"X-Content-Type-Options": "nosniff",
}

// assetNames lists the files under assets/ on disk, as the test sees them.
func assetNames(t *testing.T) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir("assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		names = append(names, filepath.ToSlash(strings.TrimPrefix(p, "assets"+string(filepath.Separator))))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no assets")
	}
	return names
}

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

func TestHandler_SecurityHeadersOnEveryResponse(t *testing.T) {
	h := Handler()
	paths := []string{"/console", "/console/", "/console/index.html", "/console/nope.js", "/console/../go.mod"}
	for _, n := range assetNames(t) {
		paths = append(paths, "/console/"+n)
	}
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		for _, p := range paths {
			w := get(t, h, method, p)
			for k, want := range securityHeaders {
				if got := w.Header().Get(k); got != want {
					t.Errorf("%s %s (%d): %s = %q, want %q", method, p, w.Code, k, got, want)
				}
			}
		}
	}
}

func TestHandler_ServesIndexAndAssets(t *testing.T) {
	h := Handler()
	tests := []struct {
		path, contentType, cacheControl string
		status                          int
	}{
		{"/console", "text/html; charset=utf-8", "no-store", 200},
		{"/console/", "text/html; charset=utf-8", "no-store", 200},
		{"/console/app.js", "text/javascript; charset=utf-8", "no-cache", 200},
		{"/console/api.js", "text/javascript; charset=utf-8", "no-cache", 200},
		{"/console/style.css", "text/css; charset=utf-8", "no-cache", 200},
		{"/console/missing.js", "text/plain; charset=utf-8", "no-store", 404},
		{"/console/assets/app.js", "text/plain; charset=utf-8", "no-store", 404},
	}
	for _, tt := range tests {
		w := get(t, h, http.MethodGet, tt.path)
		if w.Code != tt.status || w.Header().Get("Content-Type") != tt.contentType || w.Header().Get("Cache-Control") != tt.cacheControl {
			t.Errorf("GET %s: %d %q %q, want %d %q %q", tt.path, w.Code, w.Header().Get("Content-Type"),
				w.Header().Get("Cache-Control"), tt.status, tt.contentType, tt.cacheControl)
		}
	}
	if w := get(t, h, http.MethodPost, "/console"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /console: %d, Allow %q; want 405, GET, HEAD", w.Code, w.Header().Get("Allow"))
	}
}

func TestHandler_AssetsRevalidateByETag(t *testing.T) {
	h := Handler()
	etag := get(t, h, http.MethodGet, "/console/app.js").Header().Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on app.js")
	}
	r := httptest.NewRequest(http.MethodGet, "/console/app.js", nil)
	r.Header.Set("If-None-Match", etag)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", w.Code)
	}
}

// TestHandler_AssetsAreEmbedded serves every asset from a working
// directory without them: nothing is read from the file system at run
// time, and what is served is what is in the repository.
func TestHandler_AssetsAreEmbedded(t *testing.T) {
	want := map[string][]byte{}
	for _, n := range assetNames(t) {
		b, err := os.ReadFile(filepath.Join("assets", n))
		if err != nil {
			t.Fatal(err)
		}
		want[n] = b
	}
	t.Chdir(t.TempDir())
	h := Handler()
	for n, b := range want {
		w := get(t, h, http.MethodGet, "/console/"+n)
		if w.Code != 200 || w.Body.String() != string(b) {
			t.Errorf("GET /console/%s: %d, body differs from assets/%s: %v", n, w.Code, n, w.Body.String() != string(b))
		}
	}
	if w := get(t, h, http.MethodGet, "/console"); w.Body.String() != string(want["index.html"]) {
		t.Error("GET /console is not assets/index.html")
	}
}

// forbidden are what the assets must never contain: HTML parsed from
// strings (an injection sink), eval, storage that outlives the tab or
// travels with requests, and any absolute URL (a third-party request).
var forbidden = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`innerHTML`), "innerHTML parses data as HTML"},
	{regexp.MustCompile(`outerHTML`), "outerHTML parses data as HTML"},
	{regexp.MustCompile(`insertAdjacentHTML`), "insertAdjacentHTML parses data as HTML"},
	{regexp.MustCompile(`createContextualFragment|DOMParser|srcdoc`), "parses data as HTML"},
	{regexp.MustCompile(`document\s*\.\s*write`), "document.write parses data as HTML"},
	{regexp.MustCompile(`\beval\b|new\s+Function\b|setTimeout\s*\(\s*['"]`), "code from strings"},
	{regexp.MustCompile(`localStorage|indexedDB`), "the key is kept in sessionStorage only"},
	{regexp.MustCompile(`document\s*\.\s*cookie`), "the key is never a cookie"},
	{regexp.MustCompile(`(?i)https?://`), "no absolute URL: the console talks to its own origin only"},
	{regexp.MustCompile(`(?i)javascript:`), "javascript: URLs are inline script"},
	{regexp.MustCompile(`(?i)\bimport\s*\(`), "dynamic import"},
}

// forbiddenHTML are what the page must not contain beyond that: inline
// script, inline handlers, inline style (the CSP refuses them all).
var forbiddenHTML = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]`), "an inline <script> body"},
	{regexp.MustCompile(`(?i)\son[a-z]+\s*=`), "an on* handler attribute"},
	{regexp.MustCompile(`(?i)\sstyle\s*=`), "an inline style attribute"},
	{regexp.MustCompile(`(?i)<style\b`), "an inline <style>"},
}

func TestAssets_NoUnsafeSinksOrForeignURLs(t *testing.T) {
	for _, n := range assetNames(t) {
		b, err := assets.ReadFile("assets/" + n)
		if err != nil {
			t.Fatal(err)
		}
		checks := forbidden
		if strings.HasSuffix(n, ".html") {
			checks = append(append([]struct {
				re  *regexp.Regexp
				why string
			}{}, forbidden...), forbiddenHTML...)
		}
		for _, c := range checks {
			for _, loc := range c.re.FindAllIndex(b, -1) {
				line := 1 + strings.Count(string(b[:loc[0]]), "\n")
				t.Errorf("%s:%d: %q: %s", n, line, b[loc[0]:loc[1]], c.why)
			}
		}
		if strings.HasSuffix(n, ".html") {
			for _, tag := range scriptsWithoutSrc(string(b)) {
				t.Errorf("%s: %s has no src: inline script", n, tag)
			}
		}
	}
}

var scriptTag = regexp.MustCompile(`(?is)<script\b[^>]*>`)

// scriptsWithoutSrc returns the <script> tags of page that load nothing,
// so hold their code inline.
func scriptsWithoutSrc(page string) []string {
	var out []string
	for _, tag := range scriptTag.FindAllString(page, -1) {
		if !regexp.MustCompile(`(?i)\ssrc\s*=`).MatchString(tag) {
			out = append(out, tag)
		}
	}
	return out
}

// TestAssets_ScanCatchesWhatItLooksFor keeps the scan honest: each pattern
// fires on an example of what it forbids.
func TestAssets_ScanCatchesWhatItLooksFor(t *testing.T) {
	bad := []string{
		`e.innerHTML = x`, `e.outerHTML`, `e.insertAdjacentHTML('x', y)`, `document.write(x)`, `eval(x)`,
		`localStorage.setItem`, `document.cookie = x`, `fetch("https://cdn.example")`, `<a href="http://x">`,
	}
	badHTML := []string{`<script>alert(1)</script>`, `<button onclick="x()">`, `<p style="color:red">`, `<style>p{}</style>`}
	match := func(s string, list []struct {
		re  *regexp.Regexp
		why string
	}) bool {
		for _, c := range list {
			if c.re.MatchString(s) {
				return true
			}
		}
		return false
	}
	for _, s := range bad {
		if !match(s, forbidden) {
			t.Errorf("scan misses %q", s)
		}
	}
	for _, s := range badHTML {
		if !match(s, forbiddenHTML) {
			t.Errorf("HTML scan misses %q", s)
		}
	}
	if got := scriptsWithoutSrc(`<script type="module">x()</script><script src="/a.js"></script>`); len(got) != 1 {
		t.Errorf("scriptsWithoutSrc found %q, want the one inline script", got)
	}
	if match(`<script type="module" src="/console/app.js"></script>`, forbiddenHTML) {
		t.Error("HTML scan refuses the page's own module script")
	}
}
