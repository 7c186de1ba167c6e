package policy

import "errors"

// ErrNotNormalized is matched (errors.Is) by every error CheckPath returns;
// extauthz answers it with 400 invalid_request.
var ErrNotNormalized = errors.New("policy: path is not normalized")

// notNormalized says which form made a path not normalized. It is a string
// constant so that returning it allocates nothing.
type notNormalized string

func (e notNormalized) Error() string { return "policy: path is not normalized: " + string(e) }

// PathReason is what made a path not normalized, as an error of CheckPath
// says it without its prefix ("it contains //"); "" for any other error.
func PathReason(err error) string {
	var n notNormalized
	if errors.As(err, &n) {
		return string(n)
	}
	return ""
}

// Is makes every notNormalized match ErrNotNormalized.
func (e notNormalized) Is(target error) bool { return target == ErrNotNormalized }

const (
	errNoLeadingSlash notNormalized = "it does not start with /"
	errEmptySegment   notNormalized = "it contains //"
	errDotSegment     notNormalized = "it contains a . or .. segment"
	errEncoded        notNormalized = "it contains an encoded . / or \\ (%2e, %2f, %5c)"
	errBackslash      notNormalized = "it contains \\"
	// RFC 3986 §6.2.2.2: a normalized URI never encodes an unreserved
	// character. /v1/project%73/p2 would match no project pattern here
	// while an upstream that decodes it sees /v1/projects/p2.
	errEncodedUnreserved notNormalized = "it percent-encodes a character that needs no encoding"
	errBadEscape         notNormalized = "it contains a malformed percent escape"
	// Tomcat, Jetty and Spring strip ";…" path parameters from a segment
	// or resolve "..;" as "..", so /v1/admin;x/users and /v1/p/..;/q name
	// another route upstream than the one matched here. An encoded ';'
	// (%3b) is refused too: an upstream that decodes before it strips
	// would see the same.
	errSemicolon notNormalized = "it contains ; or %3b (a path parameter, which upstreams strip or resolve)"
)

// CheckPath reports whether the part of path before the first '?' is
// normalized: it starts with '/' and holds no '//', no '.' or '..' segment
// (in the middle as '/./' or '/../', or at the end as '/.' or '/..'), no
// '%2e', '%2f' or '%5c' in either case, no '\', and no ';' or '%3b'. A path that is not
// normalized may name a different resource upstream than the one the route
// policy matched, so it is refused rather than repaired. The error matches
// ErrNotNormalized. CheckPath does not allocate.
func CheckPath(path string) error {
	if len(path) == 0 || path[0] != '/' {
		return errNoLeadingSlash
	}
	for i := 0; i < len(path); i++ {
		switch path[i] {
		case '?':
			return nil
		case '\\':
			return errBackslash
		case ';':
			return errSemicolon
		case '%':
			if i+2 >= len(path) || unhex(path[i+1]) < 0 || unhex(path[i+2]) < 0 {
				return errBadEscape
			}
			lo := path[i+2] | 0x20 // ASCII lower case for letters
			if (path[i+1] == '2' && (lo == 'e' || lo == 'f')) || (path[i+1] == '5' && lo == 'c') {
				return errEncoded
			}
			if path[i+1] == '3' && lo == 'b' {
				return errSemicolon
			}
			if unreserved(byte(unhex(path[i+1])<<4 | unhex(path[i+2]))) {
				return errEncodedUnreserved
			}
		case '/':
			// Look at the segment this slash starts.
			rest := path[i+1:]
			if len(rest) > 0 && rest[0] == '/' {
				return errEmptySegment
			}
			if n := dots(rest); n == 1 || n == 2 {
				return errDotSegment
			}
		}
	}
	return nil
}

// dots returns the length of s's first segment when that segment is made
// of dots only (ended by '/', '?' or the end of the string), and 0
// otherwise.
func dots(s string) int {
	n := 0
	for n < len(s) && s[n] == '.' {
		n++
	}
	if n < len(s) && s[n] != '/' && s[n] != '?' {
		return 0
	}
	return n
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// unreserved reports whether c is an RFC 3986 unreserved character.
func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
