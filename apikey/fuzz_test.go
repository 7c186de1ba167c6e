package apikey

import (
	"crypto/sha256"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/keygate/keygate"
)

// fuzzFormat pairs a Format with a regular expression for its native shape,
// written from SPEC §2 rather than from Parse.
type fuzzFormat struct {
	f                   Format
	secret, publishable string
	shape               *regexp.Regexp
}

func newFuzzFormat(t testing.TB, secret, publishable string) fuzzFormat {
	return fuzzFormat{
		f:           mustFormat(t, secret, publishable),
		secret:      secret,
		publishable: publishable,
		shape:       regexp.MustCompile(`^(` + secret + `|` + publishable + `)_(live|test)_[0-9A-Za-z]{38}$`),
	}
}

// FuzzParseToken checks Parse against an oracle built from the SPEC: a
// string without the native shape is ErrMalformed, one with it and a wrong
// checksum is ErrChecksum, anything else parses, and a parsed token reads
// back the way SPEC §2 describes.
func FuzzParseToken(f *testing.F) {
	f.Add(goldenSkLive)
	f.Add(goldenPkTest)
	f.Add(goldenAcmeLive)
	f.Add(goldenSkLiveZeros)
	f.Add("")
	f.Add("sk_live_")
	f.Add(goldenSkLive[:len(goldenSkLive)-6] + "zzzzzz")
	f.Add(" " + goldenSkLive)
	f.Add("pub_test_" + goldenSecret + refChecksum("pub_test_"+goldenSecret))
	f.Add("abcdefgh_live_" + goldenSecret + refChecksum("abcdefgh_live_"+goldenSecret))

	formats := []fuzzFormat{
		newFuzzFormat(f, "sk", "pk"),
		newFuzzFormat(f, "acme", "pub"),
		newFuzzFormat(f, "abcdefgh", "sk"),
	}
	// Foreign credentials (SPEC §9): the bounds of length and alphabet,
	// and native-looking strings that are not of the native shape.
	f.Add("0123456789abcdef")
	f.Add("0123456789abcde")
	f.Add(strings.Repeat("x", 256))
	f.Add(strings.Repeat("x", 257))
	f.Add("legacy token with spaces")
	f.Add("legacy,token,with,commas")
	f.Add("sk_live_0123456789abcdefghijklmn")
	f.Add("legacy-token-\x7f-del-chars")
	f.Add("ghp_ÄÖÜ0123456789abcdef")
	f.Fuzz(func(t *testing.T, s string) {
		for _, ff := range formats {
			checkParse(t, ff, s)
			checkParseCredential(t, ff, s)
		}
	})
}

// foreignShape is SPEC §9's foreign credential, written from the SPEC:
// 16 to 256 printable ASCII characters, none a space or a comma.
var foreignShape = regexp.MustCompile(`^[!-+\--~]{16,256}$`)

// checkParseCredential checks ParseCredential against the same oracle and
// SPEC §9: without the flag it is Parse; with it, a string of the native
// shape is still Parse's (a wrong checksum is never a foreign token), and
// any other string is a foreign token exactly when foreignShape matches.
func checkParseCredential(t *testing.T, ff fuzzFormat, s string) {
	native, nerr := ff.f.Parse(s)
	if tok, err := ff.f.ParseCredential(s, false); tok != native || err != nerr {
		t.Fatalf("ParseCredential(%q, false) = %+v, %v; want Parse's %+v, %v", s, tok, err, native, nerr)
	}
	tok, err := ff.f.ParseCredential(s, true)
	if ff.shape.MatchString(s) {
		if tok != native || err != nerr {
			t.Fatalf("ParseCredential(%q, true) of the native shape = %+v, %v; want Parse's %+v, %v", s, tok, err, native, nerr)
		}
		return
	}
	if !foreignShape.MatchString(s) {
		if err != ErrNotForeign || tok != (Token{}) {
			t.Fatalf("ParseCredential(%q, true) = %+v, %v; want ErrNotForeign", s, tok, err)
		}
		return
	}
	if err != nil || !tok.Foreign() || tok.String() != s || tok.Type() != "" || tok.Environment() != "" || tok.Prefix() != "" {
		t.Fatalf("ParseCredential(%q, true) = %+v, %v; want a foreign token", s, tok, err)
	}
	if got, want := tok.Hash(), keygate.Hash(sha256.Sum256([]byte(s))); got != want {
		t.Fatalf("foreign Hash() = %x, want %x", got, want)
	}
	if got, want := tok.Last4(), s[len(s)-4:]; got != want {
		t.Fatalf("foreign Last4() = %q, want %q", got, want)
	}
}

func checkParse(t *testing.T, ff fuzzFormat, s string) {
	tok, err := ff.f.Parse(s)

	shaped := ff.shape.MatchString(s)
	var want error
	switch {
	case !shaped:
		want = ErrMalformed
	case !refVerify(s):
		want = ErrChecksum
	}
	if err != want { // Parse returns the sentinels themselves, unwrapped
		t.Fatalf("%s/%s: Parse(%q) = %v, oracle wants %v", ff.secret, ff.publishable, s, err, want)
	}
	if err != nil {
		if tok != (Token{}) {
			t.Fatalf("Parse(%q) returned a non-zero token with %v", s, err)
		}
		return
	}

	if len(s) > 52 {
		t.Fatalf("Parse accepted %d bytes, longer than any token", len(s))
	}
	if !tok.Type().Valid() || !tok.Environment().Valid() {
		t.Fatalf("Parse(%q): type %q, environment %q", s, tok.Type(), tok.Environment())
	}
	typePrefix := ff.secret
	if tok.Type() == keygate.Publishable {
		typePrefix = ff.publishable
	}
	head := typePrefix + "_" + string(tok.Environment()) + "_"
	if !strings.HasPrefix(s, head) || len(s) != len(head)+secretLen+checksumLen {
		t.Fatalf("Parse(%q): type %q and environment %q do not match the head", s, tok.Type(), tok.Environment())
	}
	if got, want := tok.Prefix(), s[:len(head)+4]; got != want {
		t.Fatalf("Prefix() = %q, want %q", got, want)
	}
	if got, want := tok.Last4(), s[len(s)-4:]; got != want {
		t.Fatalf("Last4() = %q, want %q", got, want)
	}
	if tok.String() != s {
		t.Fatalf("String() = %q, want %q", tok.String(), s)
	}
	if got, want := tok.Hash(), keygate.Hash(sha256.Sum256([]byte(s))); got != want {
		t.Fatalf("Hash() = %x, want %x", got, want)
	}
	again, err := ff.f.Parse(tok.String())
	if err != nil || again != tok {
		t.Fatalf("re-parsing String() = %+v, %v; want %+v", again, err, tok)
	}

	// Any single-character change after the head is caught by the checksum:
	// CRC-32 detects every burst error of at most 32 bits and a one-byte
	// change is a burst of at most 8; a changed checksum digit changes a
	// value that has exactly one 6-digit base62 form. No collision is
	// possible, so this is asserted, not estimated.
	for i := len(head); i < len(s); i++ {
		for j := 0; j < len(alphabet); j++ {
			if alphabet[j] == s[i] {
				continue
			}
			flipped := s[:i] + alphabet[j:j+1] + s[i+1:]
			if _, err := ff.f.Parse(flipped); !errors.Is(err, ErrChecksum) {
				t.Fatalf("Parse(%q), one character from %q, = %v, want ErrChecksum", flipped, s, err)
			}
		}
	}
}
