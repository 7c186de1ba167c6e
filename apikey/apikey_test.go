package apikey

import (
	"crypto/sha256"
	"errors"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keygate/keygate"
)

// Golden tokens: the secret is fixed, the checksum is CRC-32/IEEE of
// everything before it in base62, most significant digit first. The CRC
// values were computed outside Go (Python's zlib.crc32) and are repeated
// here so that a change of algorithm shows up as a diff of a constant.
const (
	goldenSecret = "0123456789ABCDEFGHIJKLMNOPQRSTUV"
	// crc32("sk_live_0123456789ABCDEFGHIJKLMNOPQRSTUV") = 0x74e15eeb
	goldenSkLive = "sk_live_" + goldenSecret + "28hqg7"
	// crc32("pk_test_0123456789ABCDEFGHIJKLMNOPQRSTUV") = 0xee07fae6
	goldenPkTest = "pk_test_" + goldenSecret + "4MGJsc"
	// crc32("acme_live_0123456789ABCDEFGHIJKLMNOPQRSTUV") = 0xea8112b5
	goldenAcmeLive = "acme_live_" + goldenSecret + "4IG2In"
	// crc32("sk_live_" + 32 zeros) = 0x88205678
	goldenSkLiveZeros = "sk_live_00000000000000000000000000000000" + "2UYg5A"
)

// refChecksum is an implementation of the SPEC §2 checksum written
// independently of putChecksum: repeated division into a reversed slice.
func refChecksum(beforeChecksum string) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	v := uint64(crc32.ChecksumIEEE([]byte(beforeChecksum)))
	var rev []byte
	for v > 0 {
		rev = append(rev, digits[v%62])
		v /= 62
	}
	for len(rev) < 6 {
		rev = append(rev, '0')
	}
	out := make([]byte, len(rev))
	for i := range rev {
		out[len(rev)-1-i] = rev[i]
	}
	return string(out)
}

// refVerify reports whether the last 6 characters of s are the checksum of
// the rest.
func refVerify(s string) bool {
	return len(s) > 6 && refChecksum(s[:len(s)-6]) == s[len(s)-6:]
}

var base62Secret = regexp.MustCompile(`^[0-9A-Za-z]{32}$`)

// view is what a caller can observe of a Token, for cmp.
type view struct {
	String      string
	Type        keygate.KeyType
	Environment keygate.Environment
	Prefix      string
	Last4       string
	Hash        keygate.Hash
}

func viewOf(t Token) view {
	return view{t.String(), t.Type(), t.Environment(), t.Prefix(), t.Last4(), t.Hash()}
}

// wantView is the view of a valid token s computed without the package.
func wantView(s, typePrefix string, typ keygate.KeyType, env keygate.Environment) view {
	head := typePrefix + "_" + string(env) + "_"
	return view{
		String:      s,
		Type:        typ,
		Environment: env,
		Prefix:      s[:len(head)+4],
		Last4:       s[len(s)-4:],
		Hash:        keygate.Hash(sha256.Sum256([]byte(s))),
	}
}

func mustFormat(t testing.TB, secret, publishable string) Format {
	t.Helper()
	f, err := NewFormat(secret, publishable)
	if err != nil {
		t.Fatalf("NewFormat(%q, %q): %v", secret, publishable, err)
	}
	return f
}

func TestChecksum_GoldenVectors(t *testing.T) {
	tests := []struct {
		name   string
		before string
		crc    uint32
		want   string
	}{
		{"sk live", "sk_live_" + goldenSecret, 0x74e15eeb, goldenSkLive},
		{"pk test", "pk_test_" + goldenSecret, 0xee07fae6, goldenPkTest},
		{"custom prefix", "acme_live_" + goldenSecret, 0xea8112b5, goldenAcmeLive},
		{"zero secret", "sk_live_" + strings.Repeat("0", 32), 0x88205678, goldenSkLiveZeros},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := crc32.ChecksumIEEE([]byte(tt.before)); got != tt.crc {
				t.Fatalf("crc32 = %#x, want %#x", got, tt.crc)
			}
			if got := tt.before + refChecksum(tt.before); got != tt.want {
				t.Errorf("reference token = %q, want %q", got, tt.want)
			}
			var sum [checksumLen]byte
			putChecksum(sum[:], tt.crc)
			if got := tt.before + string(sum[:]); got != tt.want {
				t.Errorf("putChecksum token = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPutChecksum_PadsAndOrdersDigits(t *testing.T) {
	tests := []struct {
		v    uint32
		want string
	}{
		{0, "000000"},
		{1, "000001"},
		{61, "00000z"},
		{62, "000010"},
		{62*62 - 1, "0000zz"},
		{0x74e15eeb, "28hqg7"},
		{^uint32(0), "4gfFC3"}, // 4294967295, the widest checksum
	}
	for _, tt := range tests {
		var buf [checksumLen]byte
		putChecksum(buf[:], tt.v)
		if got := string(buf[:]); got != tt.want {
			t.Errorf("putChecksum(%d) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestGenerate_ShapeAndChecksum(t *testing.T) {
	tests := []struct {
		name                string
		secret, publishable string
		typ                 keygate.KeyType
		env                 keygate.Environment
		wantHead            string
		wantLen             int
	}{
		{"default secret live", "sk", "pk", keygate.Secret, keygate.Live, "sk_live_", 46},
		{"default secret test", "sk", "pk", keygate.Secret, keygate.Test, "sk_test_", 46},
		{"default publishable live", "sk", "pk", keygate.Publishable, keygate.Live, "pk_live_", 46},
		{"default publishable test", "sk", "pk", keygate.Publishable, keygate.Test, "pk_test_", 46},
		{"custom secret", "acme", "pub", keygate.Secret, keygate.Live, "acme_live_", 48},
		{"custom publishable", "acme", "pub", keygate.Publishable, keygate.Test, "pub_test_", 47},
		{"longest prefix", "abcdefgh", "zz", keygate.Secret, keygate.Live, "abcdefgh_live_", 52},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustFormat(t, tt.secret, tt.publishable)
			seen := make(map[string]bool)
			for range 50 {
				tok, err := f.Generate(tt.typ, tt.env)
				if err != nil {
					t.Fatalf("Generate: %v", err)
				}
				s := tok.String()
				if len(s) != tt.wantLen {
					t.Errorf("len(%q) = %d, want %d", s, len(s), tt.wantLen)
				}
				if !strings.HasPrefix(s, tt.wantHead) {
					t.Fatalf("token %q does not start with %q", s, tt.wantHead)
				}
				if secret := s[len(tt.wantHead) : len(s)-6]; !base62Secret.MatchString(secret) {
					t.Errorf("secret %q is not 32 base62 characters", secret)
				}
				if !refVerify(s) {
					t.Errorf("token %q: checksum %q, reference computes %q", s, s[len(s)-6:], refChecksum(s[:len(s)-6]))
				}
				if seen[s] {
					t.Errorf("token %q generated twice", s)
				}
				seen[s] = true
				// What Generate returns is what Parse would return.
				got := viewOf(tok)
				want := wantView(s, map[keygate.KeyType]string{keygate.Secret: tt.secret, keygate.Publishable: tt.publishable}[tt.typ], tt.typ, tt.env)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Generate() token (-want +got):\n%s", diff)
				}
				parsed, err := f.Parse(s)
				if err != nil {
					t.Fatalf("Parse(Generate()) = %v", err)
				}
				if parsed != tok {
					t.Errorf("Parse(%q) = %+v, Generate gave %+v", s, parsed, tok)
				}
			}
		})
	}
}

func TestGenerate_RejectsUnknownTypeEnvironmentAndZeroFormat(t *testing.T) {
	tests := []struct {
		name string
		f    Format
		typ  keygate.KeyType
		env  keygate.Environment
	}{
		{"unknown type", DefaultFormat(), "admin", keygate.Live},
		{"empty type", DefaultFormat(), "", keygate.Live},
		{"unknown environment", DefaultFormat(), keygate.Secret, "prod"},
		{"empty environment", DefaultFormat(), keygate.Secret, ""},
		{"zero format", Format{}, keygate.Secret, keygate.Live},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.f.Generate(tt.typ, tt.env)
			if err == nil {
				t.Fatalf("Generate(%q, %q) = %q, want an error", tt.typ, tt.env, tok.String())
			}
			if tok != (Token{}) {
				t.Errorf("Generate returned a non-zero token %+v with its error", tok)
			}
		})
	}
}

func TestParse_AcceptsValidTokens(t *testing.T) {
	def := DefaultFormat()
	acme := mustFormat(t, "acme", "pub")
	tests := []struct {
		name       string
		f          Format
		in         string
		typePrefix string
		typ        keygate.KeyType
		env        keygate.Environment
	}{
		{"golden sk live", def, goldenSkLive, "sk", keygate.Secret, keygate.Live},
		{"golden pk test", def, goldenPkTest, "pk", keygate.Publishable, keygate.Test},
		{"golden zeros", def, goldenSkLiveZeros, "sk", keygate.Secret, keygate.Live},
		{"golden custom prefix", acme, goldenAcmeLive, "acme", keygate.Secret, keygate.Live},
	}
	// Plus freshly generated tokens of every type and environment.
	for _, fc := range []struct {
		f                   Format
		secret, publishable string
	}{{def, "sk", "pk"}, {acme, "acme", "pub"}} {
		for _, typ := range []keygate.KeyType{keygate.Secret, keygate.Publishable} {
			for _, env := range []keygate.Environment{keygate.Live, keygate.Test} {
				tok, err := fc.f.Generate(typ, env)
				if err != nil {
					t.Fatalf("Generate: %v", err)
				}
				p := fc.secret
				if typ == keygate.Publishable {
					p = fc.publishable
				}
				tests = append(tests, struct {
					name       string
					f          Format
					in         string
					typePrefix string
					typ        keygate.KeyType
					env        keygate.Environment
				}{"generated " + p + " " + string(env), fc.f, tok.String(), p, typ, env})
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.f.Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tt.in, err)
			}
			got := viewOf(tok)
			want := wantView(tt.in, tt.typePrefix, tt.typ, tt.env)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestParse_GoldenFields(t *testing.T) {
	tok, err := DefaultFormat().Parse(goldenSkLive)
	if err != nil {
		t.Fatal(err)
	}
	got := viewOf(tok)
	want := view{
		String:      "sk_live_0123456789ABCDEFGHIJKLMNOPQRSTUV28hqg7",
		Type:        keygate.Secret,
		Environment: keygate.Live,
		Prefix:      "sk_live_0123",
		Last4:       "hqg7",
		Hash:        keygate.Hash(sha256.Sum256([]byte("sk_live_0123456789ABCDEFGHIJKLMNOPQRSTUV28hqg7"))),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse(golden) (-want +got):\n%s", diff)
	}
}

// replaceAt returns s with the byte at i replaced by r (which may be longer
// than one byte).
func replaceAt(s string, i int, r string) string { return s[:i] + r + s[i+1:] }

func TestParse_RejectsWithExactError(t *testing.T) {
	def := DefaultFormat()
	acme := mustFormat(t, "acme", "pub")
	v := goldenSkLive // sk_live_ + 32 secret + 6 checksum
	const secretAt, sumAt = 8, 8 + 32
	tests := []struct {
		name string
		f    Format
		in   string
		want error
	}{
		{"empty", def, "", ErrMalformed},
		{"type only", def, "sk", ErrMalformed},
		{"type and underscore", def, "sk_", ErrMalformed},
		{"only prefix", def, "sk_live_", ErrMalformed},
		{"only prefix publishable", def, "pk_test_", ErrMalformed},
		{"wrong type prefix", def, "xk" + v[2:], ErrMalformed},
		{"type prefix of another length", def, "skk" + v[2:], ErrMalformed},
		{"wrong environment", def, "sk_prod_" + v[8:], ErrMalformed},
		{"environment of another length", def, "sk_staging_" + v[8:], ErrMalformed},
		{"missing first underscore", def, "sklive_" + v[8:], ErrMalformed},
		{"missing second underscore", def, "sk_live" + v[8:], ErrMalformed},
		{"missing both underscores", def, "sklive" + v[8:], ErrMalformed},
		{"dashes for underscores", def, "sk-live-" + v[8:], ErrMalformed},
		{"secret one too short", def, v[:secretAt] + v[secretAt+1:], ErrMalformed},
		{"secret one too long", def, v[:secretAt] + "A" + v[secretAt:], ErrMalformed},
		{"checksum missing", def, v[:sumAt], ErrMalformed},
		{"checksum one too short", def, v[:len(v)-1], ErrMalformed},
		{"dash in secret", def, replaceAt(v, secretAt+5, "-"), ErrMalformed},
		{"underscore in secret", def, replaceAt(v, secretAt+5, "_"), ErrMalformed},
		{"space in secret", def, replaceAt(v, secretAt+5, " "), ErrMalformed},
		{"plus in secret", def, replaceAt(v, secretAt+5, "+"), ErrMalformed},
		{"NUL in secret", def, replaceAt(v, secretAt+5, "\x00"), ErrMalformed},
		{"0xff byte in secret", def, replaceAt(v, secretAt+5, "\xff"), ErrMalformed},
		// é is two bytes: drop a neighbour so the length stays right and
		// only the alphabet check can reject it.
		{"é in secret, same byte length", def, v[:secretAt+5] + "é" + v[secretAt+7:], ErrMalformed},
		{"é in secret, one char longer", def, replaceAt(v, secretAt+5, "é"), ErrMalformed},
		{"dash in checksum", def, replaceAt(v, sumAt+2, "-"), ErrMalformed},
		{"underscore in checksum", def, replaceAt(v, sumAt+2, "_"), ErrMalformed},
		{"space in checksum", def, replaceAt(v, sumAt+2, " "), ErrMalformed},
		{"NUL in checksum", def, replaceAt(v, sumAt+2, "\x00"), ErrMalformed},
		{"é in checksum, same byte length", def, v[:sumAt+2] + "é" + v[sumAt+4:], ErrMalformed},
		{"flipped secret char", def, replaceAt(v, secretAt+5, "x"), ErrChecksum},
		{"flipped first secret char", def, replaceAt(v, secretAt, "1"), ErrChecksum},
		{"flipped last secret char", def, replaceAt(v, sumAt-1, "W"), ErrChecksum},
		{"swapped adjacent secret chars", def, v[:secretAt] + "10" + v[secretAt+2:], ErrChecksum},
		{"case flip in secret", def, replaceAt(v, secretAt+10, "a"), ErrChecksum},
		{"flipped checksum char", def, replaceAt(v, sumAt+2, "i"), ErrChecksum},
		{"flipped last checksum char", def, replaceAt(v, len(v)-1, "8"), ErrChecksum},
		{"checksum above 2^32", def, v[:sumAt] + "zzzzzz", ErrChecksum},
		{"checksum all zeros", def, v[:sumAt] + "000000", ErrChecksum},
		// The checksum covers the head, so relabelling a key fails.
		{"type relabelled sk to pk", def, "pk" + v[2:], ErrChecksum},
		{"environment relabelled live to test", def, "sk_test_" + v[8:], ErrChecksum},
		{"upper-case type", def, "SK" + v[2:], ErrMalformed},
		{"upper-case environment", def, "sk_LIVE_" + v[8:], ErrMalformed},
		{"capitalised environment", def, "sk_Live_" + v[8:], ErrMalformed},
		{"leading space", def, " " + v, ErrMalformed},
		{"trailing space", def, v + " ", ErrMalformed},
		{"trailing newline", def, v + "\n", ErrMalformed},
		{"leading tab", def, "\t" + v, ErrMalformed},
		{"trailing CRLF", def, v + "\r\n", ErrMalformed},
		{"Bearer scheme left on", def, "Bearer " + v, ErrMalformed},
		{"two tokens joined by a comma", def, v + "," + v, ErrMalformed},
		{"pk token, format's publishable prefix differs", acme, goldenPkTest, ErrMalformed},
		{"sk token, format's secret prefix differs", acme, goldenSkLive, ErrMalformed},
		{"custom token under the default format", def, goldenAcmeLive, ErrMalformed},
		{"1 MB token", def, "sk_live_" + strings.Repeat("a", 1<<20), ErrMalformed},
		{"1 MB of garbage", def, strings.Repeat("\xff", 1<<20), ErrMalformed},
		{"zero format", Format{}, v, ErrMalformed},
		{"zero format, empty input", Format{}, "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := tt.f.Parse(tt.in)
			if diff := cmp.Diff(tt.want, err, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("Parse(%.60q) error (-want +got):\n%s", tt.in, diff)
			}
			if tok != (Token{}) {
				t.Errorf("Parse(%.60q) returned a non-zero token with its error", tt.in)
			}
		})
	}
}

// Every single-character substitution in the secret or the checksum is
// caught: CRC-32 detects every error burst of at most 32 bits, and a
// one-byte change is a burst of at most 8; a changed checksum digit changes
// the value, and each value has exactly one 6-digit representation.
func TestParse_EverySingleSubstitutionFailsChecksum(t *testing.T) {
	f := DefaultFormat()
	for _, v := range []string{goldenSkLive, goldenPkTest, goldenSkLiveZeros} {
		for i := len("sk_live_"); i < len(v); i++ {
			for j := 0; j < len(alphabet); j++ {
				c := alphabet[j]
				if c == v[i] {
					continue
				}
				in := replaceAt(v, i, string(c))
				if _, err := f.Parse(in); !errors.Is(err, ErrChecksum) {
					t.Errorf("Parse(%q) = %v, want ErrChecksum", in, err)
				}
			}
		}
	}
}

func TestNewFormat(t *testing.T) {
	tests := []struct {
		name                string
		secret, publishable string
		wantErr             bool
	}{
		{"defaults", "sk", "pk", false},
		{"custom", "acme", "pub", false},
		{"shortest and longest", "ab", "abcdefgh", false},
		{"one prefix is a prefix of the other", "sk", "skp", false},
		{"secret too short", "s", "pk", true},
		{"secret too long", "abcdefghi", "pk", true},
		{"secret upper case", "SK", "pk", true},
		{"secret with a digit", "s1", "pk", true},
		{"secret with an underscore", "s_k", "pk", true},
		{"secret empty", "", "pk", true},
		{"publishable too short", "sk", "p", true},
		{"publishable too long", "sk", "abcdefghi", true},
		{"publishable upper case", "sk", "PK", true},
		{"publishable with a digit", "sk", "p1", true},
		{"publishable with a trailing newline", "sk", "pk\n", true},
		{"equal prefixes", "sk", "sk", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFormat(tt.secret, tt.publishable)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("NewFormat(%q, %q) error = %v, want error: %v", tt.secret, tt.publishable, err, tt.wantErr)
			}
			if tt.wantErr {
				if f != (Format{}) {
					t.Errorf("NewFormat returned a non-zero Format %+v with its error", f)
				}
				return
			}
			if _, err := f.Generate(keygate.Secret, keygate.Live); err != nil {
				t.Errorf("Generate with the new format: %v", err)
			}
		})
	}
}

func TestHashString_IsSHA256(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"token", goldenSkLive},
		{"longest token length", strings.Repeat("a", maxLen)},
		{"one past the stack buffer", strings.Repeat("a", maxLen+1)},
		{"long", strings.Repeat("sk_live_", 1000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := HashString(tt.in)
			want := keygate.Hash(sha256.Sum256([]byte(tt.in)))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("HashString (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewIDs_ShapeAndUniqueness(t *testing.T) {
	tests := []struct {
		name string
		gen  func() (string, error)
		want *regexp.Regexp
	}{
		{"key", NewKeyID, regexp.MustCompile(`^key_[0-9A-Za-z]{20}$`)},
		{"audit", NewAuditID, regexp.MustCompile(`^aud_[0-9A-Za-z]{20}$`)},
		{"request", NewRequestID, regexp.MustCompile(`^req_[0-9A-Za-z]{20}$`)},
	}
	const draws = 10000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := make(map[string]struct{}, draws)
			for range draws {
				id, err := tt.gen()
				if err != nil {
					t.Fatal(err)
				}
				if !tt.want.MatchString(id) {
					t.Fatalf("id %q does not match %s", id, tt.want)
				}
				if _, dup := seen[id]; dup {
					t.Fatalf("id %q drawn twice in %d draws", id, len(seen))
				}
				seen[id] = struct{}{}
			}
		})
	}
}

func TestRandomBase62_FillsEveryLength(t *testing.T) {
	// Around the 64-byte read buffer, where a refill happens.
	for _, n := range []int{0, 1, 32, 63, 64, 65, 200, 1000} {
		buf := make([]byte, n)
		if err := randomBase62(buf); err != nil {
			t.Fatal(err)
		}
		for i, c := range buf {
			if !strings.ContainsRune(alphabet, rune(c)) || c == 0 {
				t.Fatalf("randomBase62(len %d)[%d] = %q, not base62", n, i, c)
			}
		}
	}
}

// A rough uniformity check, not a statistical test: with 100 000 draws the
// mean count is ~1613 and its standard deviation ~40, so the ±30% bounds sit
// about 12 standard deviations out and never fail by chance.
func TestRandomBase62_RoughlyUniform(t *testing.T) {
	const n = 100000
	buf := make([]byte, n)
	if err := randomBase62(buf); err != nil {
		t.Fatal(err)
	}
	counts := make(map[byte]int)
	for _, c := range buf {
		counts[c]++
	}
	mean := float64(n) / float64(len(alphabet))
	for i := 0; i < len(alphabet); i++ {
		c := alphabet[i]
		got := counts[c]
		if got == 0 {
			t.Errorf("%q never drawn in %d characters", c, n)
			continue
		}
		if float64(got) > 1.3*mean || float64(got) < 0.7*mean {
			t.Errorf("%q drawn %d times, mean %.0f: outside ±30%%", c, got, mean)
		}
	}
	if len(counts) != len(alphabet) {
		t.Errorf("%d distinct characters drawn, want %d", len(counts), len(alphabet))
	}
}

// The modulo bias that rejection sampling avoids (a plain b%62 over all 256
// byte values) would draw '0'..'7' 5/4 as often as the rest: about 1.21× the
// mean, inside the rough bounds above. With 1 000 000 draws the standard
// deviation of a count is ~126, so ±5% (~806) is 6 standard deviations: it
// catches the bias and does not fail by chance.
func TestRandomBase62_NoModuloBias(t *testing.T) {
	if testing.Short() {
		t.Skip("draws a million characters")
	}
	const n = 1000000
	buf := make([]byte, n)
	if err := randomBase62(buf); err != nil {
		t.Fatal(err)
	}
	var counts [256]int
	for _, c := range buf {
		counts[c]++
	}
	mean := float64(n) / float64(len(alphabet))
	for i := 0; i < len(alphabet); i++ {
		c := alphabet[i]
		if got := float64(counts[c]); got > 1.05*mean || got < 0.95*mean {
			t.Errorf("%q drawn %d times, mean %.0f: outside ±5%%", c, counts[c], mean)
		}
	}
}

// Parse computes the CRC with its own loop (see crcIEEE); it must agree with
// the standard library on every length, including the empty string.
func TestCRCIEEE_MatchesStandardLibrary(t *testing.T) {
	buf := make([]byte, 300)
	if err := randomBase62(buf); err != nil {
		t.Fatal(err)
	}
	buf[7], buf[100] = 0x00, 0xff // bytes outside the alphabet too
	for n := 0; n <= len(buf); n++ {
		if got, want := crcIEEE(string(buf[:n])), crc32.ChecksumIEEE(buf[:n]); got != want {
			t.Fatalf("crcIEEE(%q) = %#x, want %#x", buf[:n], got, want)
		}
	}
}
