package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate"
)

// FuzzNormalizePath: CheckPath never panics, a path it accepts holds none
// of the forms SPEC §3 forbids, and it agrees with referenceNormalized.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/v1/a.b", "/v1/..a", "//", "/a/./b", "/a/..", "/%2E", "/%5c", `/a\b`, "a", "/a?//", "/a;b", "/a/..;/b", "/a%3Bb", "/a?;"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		err := CheckPath(path)
		if err != nil && !errors.Is(err, ErrNotNormalized) {
			t.Fatalf("CheckPath(%q) = %v, not ErrNotNormalized", path, err)
		}
		if ref := referenceNormalized(path); (err == nil) != ref {
			t.Fatalf("CheckPath(%q) = %v, reference says normalized=%v", path, err, ref)
		}
		if err != nil {
			return
		}
		p, _, _ := strings.Cut(path, "?")
		lower := strings.ToLower(p)
		for _, bad := range []string{"//", "/./", "/../", "%2e", "%2f", "%5c", `\`, ";", "%3b"} {
			if strings.Contains(lower, bad) {
				t.Fatalf("CheckPath accepted %q, which contains %q", path, bad)
			}
		}
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..") {
			t.Fatalf("CheckPath accepted %q", path)
		}
	})
}

// FuzzMatchPolicy compiles arbitrary patterns and matches arbitrary paths:
// nothing panics, the matcher agrees with referenceMatch, and a captured
// project is a non-empty segment without '/'.
func FuzzMatchPolicy(f *testing.F) {
	f.Add("/v1/projects/{project}/**", "/v1/projects/p1/x", true)
	f.Add("/**/{project}/x", "/a/b/x", true)
	f.Add("/v1/**/x/**/y", "/v1/x/x/y/x/y", false)
	f.Add("/*/a/**", "/b/a/", false)
	f.Add("/v1/admin/**", "/v1/admin?x=1", false)
	f.Fuzz(func(t *testing.T, src, path string, project bool) {
		p, err := compilePattern(src, project)
		// The loaded forms must agree with the compiler and never panic.
		_, _ = Default().Resolve("GET", path, map[string]string{ExtProject: src})
		checkDefaultProject(t, strings.SplitN(path, "?", 2)[0])
		if err != nil {
			return
		}
		pr, ok := p.match(path)
		if ref := referenceMatch(p, path); ref != (matchResult{OK: ok, Project: pr}) {
			t.Fatalf("%q.match(%q) = %q, %v; reference %+v", src, path, pr, ok, ref)
		}
		if !ok {
			if pr != "" {
				t.Fatalf("%q.match(%q) failed with project %q", src, path, pr)
			}
			return
		}
		if project && (pr == "" || strings.Contains(pr, "/")) {
			t.Fatalf("%q.match(%q) captured project %q", src, path, pr)
		}
		if !project && pr != "" {
			t.Fatalf("%q.match(%q) captured %q without {project}", src, path, pr)
		}
		if project && !strings.Contains(path, "/"+pr) {
			t.Fatalf("%q.match(%q) captured %q, not a segment of the path", src, path, pr)
		}
	})
}

// FuzzRouteExtensions feeds keygate.cost and keygate.ratelimit values, as
// Envoy sends them in every CheckRequest, to ResolveExt: a cost is taken
// exactly when it is 1 to 4 decimal digits of at most MaxCost (no sign,
// space or other form), a limit name exactly when it has the name syntax;
// anything else is ErrInvalidExtension, never a silent default.
func FuzzRouteExtensions(f *testing.F) {
	for _, s := range [][2]string{{"5", "search"}, {"0", "a"}, {"1000", "z-9_"}, {"1001", "Search"}, {"+5", ""}, {"05", "a b"}, {" 5", "-a"}, {"٥", "ab\x00"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, cost, limit string) {
		r, err := Default().ResolveExt("GET", "/v1/things", ExtMap{ExtCost: cost})
		n, aerr := strconv.Atoi(cost)
		wantCost := aerr == nil && len(cost) >= 1 && len(cost) <= 4 && cost[0] >= '0' && cost[0] <= '9' && n >= 0 && n <= MaxCost
		switch {
		case wantCost && (err != nil || !r.HasCost || r.Cost != n || r.Uses() != n):
			t.Fatalf("cost %q: route %+v, %v; want cost %d", cost, r, err, n)
		case !wantCost && !errors.Is(err, ErrInvalidExtension):
			t.Fatalf("cost %q: route %+v, %v; want ErrInvalidExtension", cost, r, err)
		}
		r, err = Default().ResolveExt("GET", "/v1/things", ExtMap{ExtRateLimit: limit})
		switch valid := keygate.ValidRateLimitName(limit); {
		case valid && (err != nil || r.RateLimit != limit):
			t.Fatalf("ratelimit %q: route %+v, %v; want the limit named", limit, r, err)
		case !valid && !errors.Is(err, ErrInvalidExtension):
			t.Fatalf("ratelimit %q: route %+v, %v; want ErrInvalidExtension", limit, r, err)
		}
	})
}
