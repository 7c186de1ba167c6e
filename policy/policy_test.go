package policy

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustLoad(t testing.TB, file string) *Policy {
	t.Helper()
	p, err := Load(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type resolveCase struct {
	name   string
	method string
	path   string
	ext    map[string]string
	want   Route
}

func runResolve(t *testing.T, p *Policy, tests []resolveCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Resolve(tt.method, tt.path, tt.ext)
			if err != nil {
				t.Fatalf("Resolve(%s %s, %v): %v", tt.method, tt.path, tt.ext, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Resolve(%s %s, %v) (-want +got):\n%s", tt.method, tt.path, tt.ext, diff)
			}
		})
	}
}

func TestResolve_DefaultWithoutFile(t *testing.T) {
	tests := []resolveCase{
		{"GET needs read", "GET", "/v1/things", nil, Route{Scope: "read"}},
		{"HEAD needs read", "HEAD", "/", nil, Route{Scope: "read"}},
		{"OPTIONS needs read", "OPTIONS", "/v1/x", nil, Route{Scope: "read"}},
		{"POST needs write", "POST", "/v1/x", nil, Route{Scope: "write"}},
		{"DELETE needs write", "DELETE", "/v1/x", nil, Route{Scope: "write"}},
		{"unknown method needs write", "PURGE", "/v1/x", nil, Route{Scope: "write"}},
		{"methods are case-sensitive", "get", "/v1/x", nil, Route{Scope: "write"}},
		{"project", "GET", "/v1/projects/p1", nil, Route{Scope: "read", Project: "p1", HasProject: true}},
		{"project with trailing slash", "GET", "/v1/projects/p1/", nil, Route{Scope: "read", Project: "p1", HasProject: true}},
		{"project subpath", "PUT", "/v1/projects/p1/files/a", nil, Route{Scope: "write", Project: "p1", HasProject: true}},
		{"project query ignored", "GET", "/v1/projects/p1?x=/v1/projects/p2", nil, Route{Scope: "read", Project: "p1", HasProject: true}},
		{"no project: list", "GET", "/v1/projects", nil, Route{Scope: "read"}},
		{"no project: list with slash", "GET", "/v1/projects/", nil, Route{Scope: "read"}},
		{"no project: case", "GET", "/v1/Projects/p1", nil, Route{Scope: "read"}},
		{"ext scope", "GET", "/v1/x", map[string]string{ExtScope: "billing:read"}, Route{Scope: "billing:read"}},
		{"ext publishable", "POST", "/v1/x", map[string]string{ExtPublishable: "true"}, Route{Scope: "write", Publishable: true}},
		{"ext project", "GET", "/v2/p/p7/x", map[string]string{ExtProject: "/v2/p/{project}/**"}, Route{Scope: "read", Project: "p7", HasProject: true}},
		{"ext project replaces default patterns", "GET", "/v1/projects/p1", map[string]string{ExtProject: "/v2/p/{project}/**"}, Route{Scope: "read"}},
		{"unrelated ext keys", "GET", "/v1/x", map[string]string{"other": "x"}, Route{Scope: "read"}},
	}
	t.Run("nil", func(t *testing.T) { runResolve(t, nil, tests) })
	t.Run("Default", func(t *testing.T) { runResolve(t, Default(), tests) })
	t.Run("empty file", func(t *testing.T) { runResolve(t, mustLoad(t, "empty.yaml"), tests) })
}

func TestResolve_SPECExample(t *testing.T) {
	runResolve(t, mustLoad(t, "example.yaml"), []resolveCase{
		{"admin subtree", "GET", "/v1/admin/users", nil, Route{Scope: "admin"}},
		{"admin itself", "DELETE", "/v1/admin", nil, Route{Scope: "admin"}},
		{"admin with trailing slash", "GET", "/v1/admin/", nil, Route{Scope: "admin"}},
		{"not admin: longer segment", "GET", "/v1/administrators", nil, Route{Scope: "read"}},
		{"uploads publishable", "POST", "/v1/uploads", nil, Route{Scope: "write", Publishable: true}},
		{"uploads with query", "POST", "/v1/uploads?name=a/b", nil, Route{Scope: "write", Publishable: true}},
		{"uploads trailing slash is another path", "POST", "/v1/uploads/", nil, Route{Scope: "write"}},
		{"uploads case-sensitive", "POST", "/v1/Uploads", nil, Route{Scope: "write"}},
		{"uploads other method", "PUT", "/v1/uploads", nil, Route{Scope: "write"}},
		{"GET uploads falls to read rule", "GET", "/v1/uploads", nil, Route{Scope: "read"}},
		{"HEAD read rule", "HEAD", "/v1/things", nil, Route{Scope: "read"}},
		{"DELETE no rule: default", "DELETE", "/v1/things", nil, Route{Scope: "write"}},
		{"outside /v1: default", "GET", "/v2/things", nil, Route{Scope: "read"}},
		{"project from file patterns", "GET", "/v1/projects/p1", nil, Route{Scope: "read", Project: "p1", HasProject: true}},
		{"project subpath", "POST", "/v1/projects/p1/files", nil, Route{Scope: "write", Project: "p1", HasProject: true}},
	})
}

func TestResolve_EachSettingFromItsFirstSource(t *testing.T) {
	runResolve(t, mustLoad(t, "precedence.yaml"), []resolveCase{
		// The first matching rule is the file's answer; what it leaves out
		// comes from the default, never from a later matching rule.
		{"rule without scope: default scope", "GET", "/v1/public/x", nil, Route{Scope: "read", Publishable: true}},
		{"rule without publishable: default", "POST", "/v1/reports/q", nil, Route{Scope: "reports.write"}},
		{"later rule when the first does not match by method", "POST", "/v1/public/x", nil, Route{Scope: "catchall", Publishable: true}},
		{"trailing slash: * needs a non-empty segment", "GET", "/v1/public/x/", nil, Route{Scope: "catchall", Publishable: true}},
		{"case-sensitive: no rule", "GET", "/V1/public/x", nil, Route{Scope: "read"}},
		{"method filter: other method", "DELETE", "/cache/k", nil, Route{Scope: "cache:purge"}},
		{"method no rule can name: rules for every method only", "PURGE", "/cache/k", nil, Route{Scope: "write"}},
		{"method filter: excluded", "GET", "/cache/k", nil, Route{Scope: "read"}},
		{"query ignored", "GET", "/v1/public/x?a=b/c", nil, Route{Scope: "read", Publishable: true}},

		// Context extensions win, each setting on its own.
		{"ext scope over file scope", "POST", "/v1/reports/q", map[string]string{ExtScope: "x"}, Route{Scope: "x"}},
		{"ext scope over default scope, file publishable kept", "GET", "/v1/public/x", map[string]string{ExtScope: "x"},
			Route{Scope: "x", Publishable: true}},
		{"ext publishable over file publishable, file scope kept", "GET", "/v1/other", map[string]string{ExtPublishable: "false"},
			Route{Scope: "catchall"}},
		{"ext publishable over default publishable", "POST", "/v1/reports/q", map[string]string{ExtPublishable: "true"},
			Route{Scope: "reports.write", Publishable: true}},
		{"ext both", "GET", "/v1/public/x", map[string]string{ExtScope: "x", ExtPublishable: "false"}, Route{Scope: "x"}},

		// Projects: the file's list replaces the default patterns.
		{"file projects: first pattern", "GET", "/v1/orgs/o/projects/p2/x", nil, Route{Scope: "catchall", Publishable: true, Project: "p2", HasProject: true}},
		{"file projects: second pattern", "GET", "/v1/p/p3", nil, Route{Scope: "catchall", Publishable: true, Project: "p3", HasProject: true}},
		{"file projects: default patterns unused", "GET", "/v1/projects/p1", nil, Route{Scope: "catchall", Publishable: true}},
		{"ext project over file projects", "GET", "/v1/p/p3", map[string]string{ExtProject: "/v1/{project}/**"},
			Route{Scope: "catchall", Publishable: true, Project: "p", HasProject: true}},
		{"ext project matching nothing", "GET", "/v1/p/p3", map[string]string{ExtProject: "/v9/{project}"},
			Route{Scope: "catchall", Publishable: true}},
	})
}

func TestResolve_EmptyProjectsListMeansNoProject(t *testing.T) {
	runResolve(t, mustLoad(t, "no_projects.yaml"), []resolveCase{
		{"default patterns unused", "GET", "/v1/projects/p1", nil, Route{Scope: "read"}},
	})
}

func TestResolve_InvalidExtensionsFailClosed(t *testing.T) {
	tests := []struct {
		ext  map[string]string
		want string
	}{
		{map[string]string{ExtScope: "Admin"}, `policy: invalid context extension keygate.scope: "Admin" is not a valid scope`},
		{map[string]string{ExtScope: ""}, `policy: invalid context extension keygate.scope: "" is not a valid scope`},
		{map[string]string{ExtPublishable: "yes"}, `policy: invalid context extension keygate.publishable: "yes" is neither "true" nor "false"`},
		{map[string]string{ExtPublishable: "True"}, `policy: invalid context extension keygate.publishable: "True" is neither "true" nor "false"`},
		{map[string]string{ExtProject: "/v1/projects/*"},
			`policy: invalid context extension keygate.project: "/v1/projects/*" is not a valid project pattern: a project pattern must hold {project} exactly once`},
		{map[string]string{ExtProject: "v1/{project}"},
			`policy: invalid context extension keygate.project: "v1/{project}" is not a valid project pattern: it does not start with /`},
		{map[string]string{ExtScope: "read", ExtProject: "/v1//{project}"},
			`policy: invalid context extension keygate.project: "/v1//{project}" is not a valid project pattern: it contains //`},
	}
	for _, p := range []*Policy{nil, mustLoad(t, "example.yaml")} {
		for _, tt := range tests {
			for range 2 { // the second time from the cache
				got, err := p.Resolve("GET", "/v1/projects/p1", tt.ext)
				if !errors.Is(err, ErrInvalidExtension) || err.Error() != tt.want {
					t.Errorf("Resolve(%v) = %+v, %v; want %s", tt.ext, got, err, tt.want)
				}
			}
		}
	}
}

func TestResolve_ExtensionPatternCacheIsBounded(t *testing.T) {
	p := Default()
	for i := range maxExtPatterns + 10 {
		ext := map[string]string{ExtProject: fmt.Sprintf("/v%d/{project}", i)}
		got, err := p.Resolve("GET", fmt.Sprintf("/v%d/p", i), ext)
		if err != nil || got.Project != "p" {
			t.Fatalf("Resolve #%d = %+v, %v", i, got, err)
		}
	}
	if n := p.ext.n.Load(); n != maxExtPatterns {
		t.Errorf("cache holds %d patterns, want %d", n, maxExtPatterns)
	}
}

func TestResolve_DoesNotAllocate(t *testing.T) {
	fifty := fiftyRules(t)
	example := mustLoad(t, "example.yaml")
	ext := map[string]string{ExtProject: "/v2/p/{project}/**"}
	for name, f := range map[string]func(){
		"nil":           func() { _, _ = (*Policy)(nil).Resolve("GET", "/v1/projects/p1/x?y", nil) },
		"fifty rules":   func() { _, _ = fifty.Resolve("DELETE", "/v1/svc47/items/42?x=1", nil) },
		"cached ext":    func() { _, _ = fifty.Resolve("GET", "/v2/p/p1/x", ext) },
		"file projects": func() { _, _ = example.Resolve("GET", "/v1/projects/p1", nil) },
	} {
		f() // warm the extension cache
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: Resolve allocates %v times", name, n)
		}
	}
}

func TestMode_EachSourceInTurn(t *testing.T) {
	p, err := Parse("mode.yaml", []byte(`
rules:
  - {path: "/v1/new/**", mode: report}
  - {methods: [POST], path: "/v1/old/**", mode: enforce}
  - {path: "/v1/old/**", scope: read}
  - {path: "/v1/**", mode: report}
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		pol          *Policy
		method, path string
		ext          map[string]string
		want         Mode
	}{
		{"no file: enforce", nil, "GET", "/v1/new/x", nil, Enforce},
		{"no file, extension report", nil, "GET", "/v1/new/x", map[string]string{ExtMode: "report"}, Report},
		{"file without modes: enforce", mustLoad(t, "example.yaml"), "GET", "/v1/x", nil, Enforce},
		{"rule report", p, "GET", "/v1/new/x", nil, Report},
		{"rule report, query ignored", p, "GET", "/v1/new?x=/v1/old", nil, Report},
		{"rule enforce", p, "POST", "/v1/old/x", nil, Enforce},
		// The first matching rule is the file's answer: a later rule's
		// mode never applies.
		{"first rule leaves mode out: default", p, "GET", "/v1/old/x", nil, Enforce},
		{"later rule", p, "GET", "/v1/other", nil, Report},
		{"no rule matches", p, "GET", "/v2/x", nil, Enforce},
		{"extension enforce over rule report", p, "GET", "/v1/new/x", map[string]string{ExtMode: "enforce"}, Enforce},
		{"extension report over rule enforce", p, "POST", "/v1/old/x", map[string]string{ExtMode: "report"}, Report},
		{"other extensions only: the file", p, "GET", "/v1/new/x", map[string]string{ExtScope: "admin"}, Report},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.pol.ModeExt(tt.method, tt.path, ExtMap(tt.ext))
			if err != nil || got != tt.want {
				t.Errorf("ModeExt = %v, %v; want %v", got, err, tt.want)
			}
			r, err := tt.pol.Resolve(tt.method, tt.path, tt.ext)
			if err != nil || r.Mode != tt.want {
				t.Errorf("Resolve = %+v, %v; want mode %v", r, err, tt.want)
			}
		})
	}
}

func TestMode_InvalidExtensionFailsClosed(t *testing.T) {
	for _, v := range []string{"", "Report", "audit", "true"} {
		ext := map[string]string{ExtMode: v}
		want := `policy: invalid context extension keygate.mode: "` + v + `" is neither "enforce" nor "report"`
		if _, err := Default().ModeExt("GET", "/v1/x", ExtMap(ext)); !errors.Is(err, ErrInvalidExtension) || err.Error() != want {
			t.Errorf("ModeExt(%q) error = %v; want %s", v, err, want)
		}
		if _, err := Default().Resolve("GET", "/v1/x", ext); !errors.Is(err, ErrInvalidExtension) || err.Error() != want {
			t.Errorf("Resolve(%q) error = %v; want %s", v, err, want)
		}
	}
}

func TestModeExt_DoesNotAllocate(t *testing.T) {
	p, err := Parse("mode.yaml", []byte("rules:\n  - {path: \"/v1/**\", mode: report}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ext := ExtMap{ExtMode: "enforce"}
	if n := testing.AllocsPerRun(100, func() {
		_, _ = p.ModeExt("GET", "/v1/x?y", nil)
		_, _ = p.ModeExt("GET", "/v1/x", ext)
	}); n != 0 {
		t.Errorf("ModeExt allocates %v times", n)
	}
}

func TestResolve_RateLimitFromExtensionThenFirstRule(t *testing.T) {
	p, err := Parse("ratelimit.yaml", []byte(`
rules:
  - {methods: [POST], path: "/v1/search", ratelimit: search}
  - {path: "/v1/search", scope: read}
  - {path: "/v1/**", ratelimit: general}
`))
	if err != nil {
		t.Fatal(err)
	}
	runResolve(t, p, []resolveCase{
		{"rule names it", "POST", "/v1/search", nil, Route{Scope: "write", RateLimit: "search"}},
		{"first rule names none: none, not a later rule's", "GET", "/v1/search", nil, Route{Scope: "read"}},
		{"catch-all rule", "GET", "/v1/other", nil, Route{Scope: "read", RateLimit: "general"}},
		{"no rule", "GET", "/v2/x", nil, Route{Scope: "read"}},
		{"ext over rule", "POST", "/v1/search", map[string]string{ExtRateLimit: "burst"}, Route{Scope: "write", RateLimit: "burst"}},
		{"ext where no rule names one", "GET", "/v2/x", map[string]string{ExtRateLimit: "burst"}, Route{Scope: "read", RateLimit: "burst"}},
		{"ext with every other setting: file still read for nothing else", "POST", "/v1/search",
			map[string]string{ExtScope: "x", ExtPublishable: "false", ExtMode: "enforce", ExtRateLimit: "b"}, Route{Scope: "x", RateLimit: "b"}},
		{"other exts, rule's limit", "POST", "/v1/search",
			map[string]string{ExtScope: "x", ExtPublishable: "false", ExtMode: "enforce"}, Route{Scope: "x", RateLimit: "search"}},
	})
	runResolve(t, nil, []resolveCase{
		{"default policy: ext", "GET", "/v1/x", map[string]string{ExtRateLimit: "search"}, Route{Scope: "read", RateLimit: "search"}},
	})
}

func TestResolve_InvalidRateLimitExtensionFailsClosed(t *testing.T) {
	for _, v := range []string{"", "Search", "9lives", "a b", "a,b", "search!", "abcdefghijklmnopqrstuvwxyz0123456"} {
		for _, p := range []*Policy{nil, mustLoad(t, "example.yaml")} {
			got, err := p.Resolve("GET", "/v1/x", map[string]string{ExtRateLimit: v})
			want := fmt.Sprintf(`policy: invalid context extension keygate.ratelimit: %q is not a valid rate limit name (^[a-z][a-z0-9_-]{0,31}$)`, v)
			if !errors.Is(err, ErrInvalidExtension) || err.Error() != want {
				t.Errorf("Resolve(keygate.ratelimit=%q) = %+v, %v; want %s", v, got, err, want)
			}
		}
	}
}
