package policy

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	good := []string{
		"/", "/v1", "/v1/", "/v1/a.b", "/v1/..a", "/v1/a..", "/v1/.a/", "/v1/...", "/v1/a/...",
		"/v1/%20x", "/v1/%25", "/v1/%3f", "/v1/%C3%A9", "/v1/a%2Bb",
		"/v1/a?x=//", "/v1/a?x=/../", "/v1/a?%2e", `/v1/a?\`, "/v1/a?", "/?",
		"/v1/a/.well-known", "/v1/a?x=;", "/v1/a?;jsessionid=1",
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
		"it percent-encodes a character that needs no encoding": {
			"/v1/%41", "/v1/project%73/p2", "/v1/%7E", "/v1/%7e", "/v1/%5F", "/v1/%2D", "/v1/%30",
		},
		"it contains a malformed percent escape": {"/v1/%", "/v1/%2", "/v1/%zz", "/v1/%g1", "/v1/a%", "/v1/%+1"},
		"it contains ; or %3b (a path parameter, which upstreams strip or resolve)": {
			"/v1/admin;x/users", "/v1/projects/p1/..;/p2/secrets", "/;", "/v1/a;", "/v1/a;?x", "/v1/a%3bb", "/v1/a%3B",
		},
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
	for _, f := range []string{"%2e", "%2f", "%5c", `\`, ";", "%3b"} {
		if strings.Contains(lower, f) {
			return false
		}
	}
	for i := 0; i < len(path); i++ {
		if path[i] != '%' {
			continue
		}
		if i+2 >= len(path) {
			return false
		}
		b, err := strconv.ParseUint(path[i+1:i+3], 16, 8)
		if err != nil || strings.ContainsAny(path[i+1:i+3], "+-") {
			return false
		}
		c := byte(b)
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
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
