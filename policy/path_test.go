package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	good := []string{
		"/", "/v1", "/v1/", "/v1/a.b", "/v1/..a", "/v1/a..", "/v1/.a/", "/v1/...", "/v1/a/...",
		"/v1/%41", "/v1/%2", "/v1/%", "/v1/%20x", "/v1/%25", "/v1/%3f",
		"/v1/a?x=//", "/v1/a?x=/../", "/v1/a?%2e", `/v1/a?\`, "/v1/a?", "/?",
		"/v1/a/.well-known",
	}
	bad := map[string][]string{
		"it does not start with /": {"", "v1/a", "?/a", ".", "%2f"},
		"it contains //":           {"//", "//a", "/a//b", "/a//", "/a//?x"},
		"it contains a . or .. segment": {
			"/.", "/..", "/./", "/../", "/a/./b", "/a/../b", "/a/.", "/a/..", "/a/.?x", "/a/..?x=1", "/a/../",
		},
		`it contains an encoded . / or \ (%2e, %2f, %5c)`: {
			"/%2e", "/%2E", "/a%2fb", "/a%2Fb", "/a/%5c", "/a/%5C", "/a/%2e%2e/b", "/a/x%2E", "/%2e?x",
		},
		`it contains \`: {`/\`, `/a\b`, `/a/..\`, `/a\?x`},
	}
	for _, p := range good {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q) = %v, want nil", p, err)
		}
		if !referenceNormalized(p) {
			t.Errorf("reference rejects good path %q", p)
		}
	}
	for reason, paths := range bad {
		for _, p := range paths {
			err := CheckPath(p)
			if !errors.Is(err, ErrNotNormalized) {
				t.Errorf("CheckPath(%q) = %v, want ErrNotNormalized", p, err)
				continue
			}
			if want := "policy: path is not normalized: " + reason; err.Error() != want {
				t.Errorf("CheckPath(%q) = %q, want %q", p, err, want)
			}
			if referenceNormalized(p) {
				t.Errorf("reference accepts bad path %q", p)
			}
		}
	}
}

func TestCheckPath_DoesNotAllocate(t *testing.T) {
	for _, p := range []string{"/v1/projects/p1/files?x=1", "/v1/a/../b", "/v1/%2e"} {
		if n := testing.AllocsPerRun(100, func() { _ = CheckPath(p) }); n != 0 {
			t.Errorf("CheckPath(%q) allocates %v times", p, n)
		}
	}
}

// referenceNormalized restates SPEC §3 over split segments: a leading '/',
// no empty segment but a trailing one, no '.' or '..' segment, and none of
// %2e %2f %5c or '\' (any case), all before the first '?'.
func referenceNormalized(path string) bool {
	path, _, _ = strings.Cut(path, "?")
	if !strings.HasPrefix(path, "/") {
		return false
	}
	lower := strings.ToLower(path)
	for _, f := range []string{"%2e", "%2f", "%5c", `\`} {
		if strings.Contains(lower, f) {
			return false
		}
	}
	segs := strings.Split(path[1:], "/")
	for i, s := range segs {
		if (s == "" && i != len(segs)-1) || s == "." || s == ".." {
			return false
		}
	}
	return true
}
