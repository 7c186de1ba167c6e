package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type matchResult struct {
	OK      bool
	Project string
}

func TestPattern_MatchesEveryForm(t *testing.T) {
	tests := []struct {
		pattern string
		path    string
		want    matchResult
	}{
		// Literal: exact, case-sensitive, trailing slash distinct.
		{"/v1/uploads", "/v1/uploads", matchResult{OK: true}},
		{"/v1/uploads", "/v1/Uploads", matchResult{}},
		{"/v1/uploads", "/v1/uploads/", matchResult{}},
		{"/v1/uploads", "/v1/uploadsx", matchResult{}},
		{"/v1/uploads/", "/v1/uploads/", matchResult{OK: true}},
		{"/v1/uploads/", "/v1/uploads", matchResult{}},
		{"/", "/", matchResult{OK: true}},
		{"/", "/a", matchResult{}},

		// *: one non-empty segment.
		{"/v1/*", "/v1/a", matchResult{OK: true}},
		{"/v1/*", "/v1/", matchResult{}},
		{"/v1/*", "/v1", matchResult{}},
		{"/v1/*", "/v1/a/b", matchResult{}},
		{"/v1/*/x", "/v1/a/x", matchResult{OK: true}},
		{"/v1/*/x", "/v1//x", matchResult{}},
		{"/*", "/", matchResult{}},
		{"/*", "/a", matchResult{OK: true}},

		// ** at the end: zero or more segments, a trailing slash included.
		{"/v1/admin/**", "/v1/admin", matchResult{OK: true}},
		{"/v1/admin/**", "/v1/admin/", matchResult{OK: true}},
		{"/v1/admin/**", "/v1/admin/x", matchResult{OK: true}},
		{"/v1/admin/**", "/v1/admin/x/y/", matchResult{OK: true}},
		{"/v1/admin/**", "/v1/administrator", matchResult{}},
		{"/v1/admin/**", "/v1/Admin/x", matchResult{}},
		{"/v1/admin/**", "/v1", matchResult{}},
		{"/**", "/", matchResult{OK: true}},
		{"/**", "/a/b/c", matchResult{OK: true}},

		// ** in the middle.
		{"/v1/**/meta", "/v1/meta", matchResult{OK: true}},
		{"/v1/**/meta", "/v1/a/meta", matchResult{OK: true}},
		{"/v1/**/meta", "/v1/a/b/meta", matchResult{OK: true}},
		{"/v1/**/meta", "/v1/a/b/meta/", matchResult{}},
		{"/v1/**/meta", "/v1/a/metas", matchResult{}},
		{"/v1/**/x/**/y", "/v1/x/x/y/x/y", matchResult{OK: true}},
		{"/v1/**/x/**/y", "/v1/x/x/z", matchResult{}},

		// ** at the start.
		{"/**/meta", "/meta", matchResult{OK: true}},
		{"/**/meta", "/a/b/meta", matchResult{OK: true}},
		{"/**/meta", "/a/b/meta/c", matchResult{}},
		{"/**/*", "/", matchResult{}},
		{"/**/*", "/a/b", matchResult{OK: true}},

		// {project}: one non-empty segment, captured.
		{"/v1/projects/{project}", "/v1/projects/p1", matchResult{OK: true, Project: "p1"}},
		{"/v1/projects/{project}", "/v1/projects/", matchResult{}},
		{"/v1/projects/{project}", "/v1/projects/p1/x", matchResult{}},
		{"/v1/projects/{project}/**", "/v1/projects/p1", matchResult{OK: true, Project: "p1"}},
		{"/v1/projects/{project}/**", "/v1/projects/p1/", matchResult{OK: true, Project: "p1"}},
		{"/v1/projects/{project}/**", "/v1/projects/p1/files/2", matchResult{OK: true, Project: "p1"}},
		{"/v1/projects/{project}/**", "/v1/projects", matchResult{}},
		{"/v1/projects/{project}/**", "/v1/projects//x", matchResult{}},
		{"/v1/*/projects/{project}", "/v1/org/projects/p9", matchResult{OK: true, Project: "p9"}},
		// The earliest ** stays shortest.
		{"/**/{project}/**", "/a/b/c", matchResult{OK: true, Project: "a"}},
		// A capture from a failed alignment is replaced by the one that matched.
		{"/**/{project}/x", "/a/b/x", matchResult{OK: true, Project: "b"}},

		// Not a path.
		{"/**", "", matchResult{}},
		{"/**", "a/b", matchResult{}},
	}
	for _, tt := range tests {
		project := strings.Contains(tt.pattern, projectSegment)
		p, err := compilePattern(tt.pattern, project)
		if err != nil {
			t.Fatalf("compilePattern(%q): %v", tt.pattern, err)
		}
		var got matchResult
		got.Project, got.OK = p.match(tt.path)
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%q.match(%q) (-want +got):\n%s", tt.pattern, tt.path, diff)
		}
		if ref := referenceMatch(p, tt.path); ref != got {
			t.Errorf("%q.match(%q) = %+v, reference %+v", tt.pattern, tt.path, got, ref)
		}
	}
}

func TestCompilePattern_RejectsInvalidPatterns(t *testing.T) {
	tests := []struct {
		pattern string
		project bool
		want    string
	}{
		{"", false, "empty"},
		{"v1/x", false, "it does not start with /"},
		{"/v1//x", false, "it contains //"},
		{"/v1/./x", false, "it contains a . or .. segment"},
		{"/v1/..", false, "it contains a . or .. segment"},
		{"/v1/%2E", false, `it contains an encoded . / or \ (%2e, %2f, %5c)`},
		{`/v1\x`, false, `it contains \`},
		{"/v1/x?y=1", false, "it contains ? (the query string is never matched)"},
		{"/v1/a b", false, "it contains a space or a control character"},
		{"/v1/a*", false, "* and ** must be a whole segment"},
		{"/v1/***", false, "* and ** must be a whole segment"},
		{"/v1/{id}", false, "{ and } may appear only as the whole segment {project}"},
		{"/v1/{project}", false, "{project} is allowed only in project patterns"},
		{"/v1/projects", true, "a project pattern must hold {project} exactly once"},
		{"/v1/{project}/{project}", true, "a project pattern must hold {project} exactly once"},
		{"/v1/x{project}", true, "{ and } may appear only as the whole segment {project}"},
	}
	for _, tt := range tests {
		_, err := compilePattern(tt.pattern, tt.project)
		got := "<nil>"
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("compilePattern(%q, %v) = %q, want %q", tt.pattern, tt.project, got, tt.want)
		}
	}
}

func TestDefaultProject_EqualsTheDefaultPatterns(t *testing.T) {
	for _, path := range []string{"/", "/v1", "/v1/projects", "/v1/projects/", "/v1/projects/p", "/v1/projects/p/",
		"/v1/projects/p/x/y", "/v1/projects//x", "/v1/projectsx/p", "/v2/projects/p"} {
		checkDefaultProject(t, path)
	}
}

func checkDefaultProject(t *testing.T, path string) {
	t.Helper()
	var want matchResult
	for _, src := range []string{"/v1/projects/{project}", "/v1/projects/{project}/**"} {
		p, err := compilePattern(src, true)
		if err != nil {
			t.Fatal(err)
		}
		if want.Project, want.OK = p.match(path); want.OK {
			break
		}
	}
	var got matchResult
	got.Project, got.OK = defaultProject(path)
	if got != want {
		t.Errorf("defaultProject(%q) = %+v, compiled default patterns %+v", path, got, want)
	}
}

func TestPatternMatch_DoesNotAllocate(t *testing.T) {
	p, err := compilePattern("/v1/**/projects/{project}/**", true)
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { p.match("/v1/a/b/projects/p1/files/x") }); n != 0 {
		t.Errorf("match allocates %v times", n)
	}
}

// referenceMatch is a slow, obviously correct matcher: split into segments
// and try every alignment recursively, each '**' shortest first (failures
// are memoized, so many '**' stay polynomial).
func referenceMatch(p *pattern, path string) matchResult {
	if path == "" || path[0] != '/' {
		return matchResult{}
	}
	parts := strings.Split(path[1:], "/")
	failed := map[[2]int]bool{}
	var rec func(si, pi int) (string, bool)
	rec = func(si, pi int) (string, bool) {
		if failed[[2]int{si, pi}] {
			return "", false
		}
		pr, ok := func() (string, bool) {
			if si == len(p.segs) {
				return "", pi == len(parts)
			}
			s := p.segs[si]
			if s.kind == segAny {
				for i := pi; i <= len(parts); i++ {
					if pr, ok := rec(si+1, i); ok {
						return pr, true
					}
				}
				return "", false
			}
			if pi == len(parts) {
				return "", false
			}
			switch s.kind {
			case segLiteral:
				if parts[pi] != s.lit {
					return "", false
				}
			case segOne, segProject:
				if parts[pi] == "" {
					return "", false
				}
			}
			pr, ok := rec(si+1, pi+1)
			if ok && s.kind == segProject {
				pr = parts[pi]
			}
			return pr, ok
		}()
		if !ok {
			failed[[2]int{si, pi}] = true
		}
		return pr, ok
	}
	pr, ok := rec(0, 0)
	return matchResult{OK: ok, Project: pr}
}
