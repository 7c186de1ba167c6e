// Package console is keygate's web console: one page, embedded in the
// binary, that manages API keys through the management API with a key the
// user pastes. It holds no state and no privilege of its own: every call it
// makes is an ordinary API call, so the API's scopes, RBAC and tenant
// isolation are the console's.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

// assets is the page. Embedded, so that the binary reads no file at run
// time and the console is exactly the one the binary was tested with.
//
//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/console"

// ContentSecurityPolicy is sent with every console response. The page uses
// no inline script or style and talks to its own origin only, so the
// browser may refuse everything else: an injected string can run nothing
// and send nothing anywhere.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the console: the page at /console and /console/, its
// assets under /console/. Every response, errors included, carries the
// security headers.
func Handler() http.Handler {
	files := map[string]asset{}
	err := fs.WalkDir(assets, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) { // not left to the host's mime tables
		case ".html":
			ct = "text/html; charset=utf-8"
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".css":
			ct = "text/css; charset=utf-8"
		}
		files[strings.TrimPrefix(p, "assets/")] = asset{body: b, contentType: ct,
			etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		panic("console: reading the embedded assets: " + err.Error()) // cannot happen: they are compiled in
	}
	return &handler{files: files}
}

type handler struct {
	files map[string]asset
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", ContentSecurityPolicy)
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")

	var name string
	switch p := r.URL.Path; {
	case p == Prefix || p == Prefix+"/" || p == Prefix+"/index.html":
		name = "index.html"
	case strings.HasPrefix(p, Prefix+"/"):
		name = strings.TrimPrefix(p, Prefix+"/")
	}
	a, ok := h.files[name]
	if !ok {
		hd.Set("Cache-Control", "no-store")
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		hd.Set("Cache-Control", "no-store")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd.Set("Content-Type", a.contentType)
	if name == "index.html" {
		// The page is never kept: a new binary's page, and so its
		// assets, are what the next visit gets.
		hd.Set("Cache-Control", "no-store")
	} else {
		hd.Set("Cache-Control", "no-cache")
		hd.Set("ETag", a.etag)
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.body))
}
