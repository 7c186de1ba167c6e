// Package apikey implements the keygate token format (SPEC §2):
//
//	<type>_<env>_<secret>
//
// where type is the secret or publishable prefix (sk, pk by default), env is
// live or test, and secret is 32 base62 characters from crypto/rand followed
// by a 6-character base62 CRC-32/IEEE checksum of everything before it. A
// scanner can verify a found token offline, and keygate rejects a mistyped
// or made-up token before it touches the cache or the store.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"

	"github.com/keygate/keygate"
)

// The base62 alphabet, in SPEC order.
const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const (
	secretLen   = 32
	checksumLen = 6
	// IDLen is the number of base62 characters after "key_" in a key id.
	idLen = 20
)

// Errors of Parse. Both mean invalid_api_key to a client; they differ only
// for logs and metrics.
var (
	ErrMalformed = errors.New("apikey: token does not have the keygate shape")
	ErrChecksum  = errors.New("apikey: token checksum does not match")
)

var prefixPattern = regexp.MustCompile(`^[a-z]{2,8}$`)

// Format is the token format of one deployment: its two type prefixes.
// The zero value is not usable; use NewFormat or DefaultFormat.
type Format struct {
	secret, publishable string
}

// DefaultFormat returns the format with the default prefixes sk and pk.
func DefaultFormat() Format { return Format{secret: "sk", publishable: "pk"} }

// NewFormat returns a format with the given prefixes, each ^[a-z]{2,8}$ and
// different from the other.
func NewFormat(secretPrefix, publishablePrefix string) (Format, error) {
	if !prefixPattern.MatchString(secretPrefix) {
		return Format{}, fmt.Errorf("secret prefix %q must match ^[a-z]{2,8}$", secretPrefix)
	}
	if !prefixPattern.MatchString(publishablePrefix) {
		return Format{}, fmt.Errorf("publishable prefix %q must match ^[a-z]{2,8}$", publishablePrefix)
	}
	if secretPrefix == publishablePrefix {
		return Format{}, fmt.Errorf("secret and publishable prefixes must differ (both %q)", secretPrefix)
	}
	return Format{secret: secretPrefix, publishable: publishablePrefix}, nil
}

// Token is a parsed, checksum-verified token. It holds the secret: never
// log it, print it only at creation.
type Token struct {
	raw  string
	typ  keygate.KeyType
	env  keygate.Environment
	head int // length of "<type>_<env>_"
}

// String returns the whole token.
func (t Token) String() string { return t.raw }

// Type is the token's key type.
func (t Token) Type() keygate.KeyType { return t.typ }

// Environment is the token's environment.
func (t Token) Environment() keygate.Environment { return t.env }

// Hash is the SHA-256 of the whole token.
func (t Token) Hash() keygate.Hash { return HashString(t.raw) }

// maxLen bounds the length of a token: the longest prefixes, "_live_" and
// the 38 characters of secret and checksum.
const maxLen = 8 + 6 + secretLen + checksumLen

// HashString is the SHA-256 of s. For strings up to a foreign token's
// length it hashes from a stack buffer, so the Check path does not
// allocate.
func HashString(s string) keygate.Hash {
	switch {
	case len(s) <= maxLen:
		var buf [maxLen]byte
		n := copy(buf[:], s)
		return sha256.Sum256(buf[:n])
	case len(s) <= MaxForeignLen:
		return hashForeign(s)
	}
	return sha256.Sum256([]byte(s))
}

// hashForeign is HashString of a string longer than a native token, with
// its own larger buffer so native tokens do not pay to zero it.
func hashForeign(s string) keygate.Hash {
	var buf [MaxForeignLen]byte
	n := copy(buf[:], s)
	return sha256.Sum256(buf[:n])
}

// Prefix is "<type>_<env>_" and the secret's first four characters: what
// identifies a key in lists and logs. A foreign token has none that
// keygate knows to be safe to show: "".
func (t Token) Prefix() string {
	if t.Foreign() {
		return ""
	}
	return t.raw[:t.head+4]
}

// Foreign reports whether t is a token of another system (ParseForeign):
// it has no type or environment of its own.
func (t Token) Foreign() bool { return t.typ == "" && t.raw != "" }

// Bounds of a foreign token (SPEC §9).
const (
	MinForeignLen = 16
	MaxForeignLen = 256
)

// ErrNotForeign is ParseForeign refusing a credential that cannot be a
// token of another system either.
var ErrNotForeign = errors.New("apikey: credential is not 16 to 256 printable ASCII characters without space or comma")

// ParseForeign returns s as a token of another system, imported with its
// hash (SPEC §9): 16 to 256 printable ASCII characters with no space or
// comma. Such a token has no checksum to verify, so only its hash can say
// whether it is a key. It does not allocate.
func ParseForeign(s string) (Token, error) {
	if len(s) < MinForeignLen || len(s) > MaxForeignLen {
		return Token{}, ErrNotForeign
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == ',' {
			return Token{}, ErrNotForeign
		}
	}
	return Token{raw: s}, nil
}

// ParseCredential reads a credential as Check does: Parse, and, when
// foreign is set (--foreign-tokens), a credential without the native
// shape is ParseForeign's. A credential with the native shape is always
// held to its checksum: a mistyped native token is ErrChecksum whatever
// foreign says, and is never looked up. "Native shape" is everything
// Parse checks but the checksum: a type prefix, live or test, and 38
// base62 characters; any other string is not native, so another system's
// "sk_live_" keys of another length can be imported.
func (f Format) ParseCredential(s string, foreign bool) (Token, error) {
	t, err := f.Parse(s)
	if err == ErrMalformed && foreign {
		return ParseForeign(s)
	}
	return t, err
}

// Last4 is the token's last four characters.
func (t Token) Last4() string { return t.raw[len(t.raw)-4:] }

// Generate returns a new random token of type typ in environment env.
func (f Format) Generate(typ keygate.KeyType, env keygate.Environment) (Token, error) {
	p, err := f.prefix(typ)
	if err != nil {
		return Token{}, err
	}
	if !env.Valid() {
		return Token{}, fmt.Errorf("apikey: unknown environment %q", env)
	}
	head := p + "_" + string(env) + "_"
	buf := make([]byte, len(head)+secretLen+checksumLen)
	copy(buf, head)
	if err := randomBase62(buf[len(head) : len(head)+secretLen]); err != nil {
		return Token{}, err
	}
	n := len(head) + secretLen
	putChecksum(buf[n:], crc32.ChecksumIEEE(buf[:n]))
	return Token{raw: string(buf), typ: typ, env: env, head: len(head)}, nil
}

func (f Format) prefix(typ keygate.KeyType) (string, error) {
	switch {
	case f.secret == "":
		return "", errors.New("apikey: zero Format")
	case typ == keygate.Secret:
		return f.secret, nil
	case typ == keygate.Publishable:
		return f.publishable, nil
	}
	return "", fmt.Errorf("apikey: unknown key type %q", typ)
}

// Parse checks that s has the native token shape of f and a correct
// checksum. It does not allocate: Check calls it on every request.
func (f Format) Parse(s string) (Token, error) {
	var t Token
	rest := s
	switch {
	case f.secret != "" && hasPrefixUnderscore(s, f.secret):
		t.typ = keygate.Secret
		rest = s[len(f.secret)+1:]
	case f.publishable != "" && hasPrefixUnderscore(s, f.publishable):
		t.typ = keygate.Publishable
		rest = s[len(f.publishable)+1:]
	default:
		return Token{}, ErrMalformed
	}
	switch {
	case len(rest) >= 5 && rest[:5] == "live_":
		t.env = keygate.Live
	case len(rest) >= 5 && rest[:5] == "test_":
		t.env = keygate.Test
	default:
		return Token{}, ErrMalformed
	}
	body := rest[5:]
	if len(body) != secretLen+checksumLen {
		return Token{}, ErrMalformed
	}
	// One table lookup per character; or-ing the entries catches any
	// non-base62 character (0xff) without a branch per character.
	var bad byte
	for i := 0; i < secretLen; i++ {
		bad |= digits[body[i]]
	}
	var sum uint64
	for i := secretLen; i < len(body); i++ {
		d := digits[body[i]]
		bad |= d
		sum = sum*62 + uint64(d)
	}
	if bad == 0xff {
		return Token{}, ErrMalformed
	}
	if sum != uint64(crcIEEE(s[:len(s)-checksumLen])) {
		return Token{}, ErrChecksum
	}
	t.raw = s
	t.head = len(s) - len(body)
	return t, nil
}

// crcIEEE is crc32.ChecksumIEEE of s without allocating. ChecksumIEEE calls
// through a function variable, so any slice handed to it escapes to the heap,
// even a copy in a stack array: that cost Parse one allocation per call. A
// byte-at-a-time loop costs a dependent table lookup per byte; slicing-by-8
// (the method hash/crc32 itself uses for inputs this short) does eight
// independent lookups per step.
func crcIEEE(s string) uint32 {
	crc := ^uint32(0)
	t := &ieeeSlicing8
	for len(s) >= 8 {
		crc ^= uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		crc = t[0][s[7]] ^ t[1][s[6]] ^ t[2][s[5]] ^ t[3][s[4]] ^
			t[4][crc>>24] ^ t[5][crc>>16&0xff] ^ t[6][crc>>8&0xff] ^ t[7][crc&0xff]
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		crc = t[0][byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

// ieeeSlicing8 is the slicing-by-8 table of CRC-32/IEEE: t[0] is
// crc32.IEEETable and t[k][i] is the CRC of byte i followed by k zero bytes.
var ieeeSlicing8 = func() (t [8][256]uint32) {
	t[0] = *crc32.IEEETable
	for i := range 256 {
		crc := t[0][i]
		for k := 1; k < 8; k++ {
			crc = t[0][crc&0xff] ^ crc>>8
			t[k][i] = crc
		}
	}
	return t
}()

// digits maps a byte to its base62 value, or 0xff for a byte outside the
// alphabet.
var digits = func() (d [256]byte) {
	for i := range d {
		d[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		d[alphabet[i]] = byte(i)
	}
	return d
}()

func hasPrefixUnderscore(s, p string) bool {
	return len(s) > len(p) && s[:len(p)] == p && s[len(p)] == '_'
}

// putChecksum writes v in base62, most significant digit first, left-padded
// with '0' to len(dst).
func putChecksum(dst []byte, v uint32) {
	x := uint64(v)
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = alphabet[x%62]
		x /= 62
	}
}

// randomBase62 fills dst with uniformly random base62 characters from
// crypto/rand, by rejection sampling so no character is more likely.
func randomBase62(dst []byte) error {
	var buf [64]byte
	i := 0
	for i < len(dst) {
		if _, err := rand.Read(buf[:]); err != nil {
			return fmt.Errorf("apikey: reading random bytes: %w", err)
		}
		for _, b := range buf {
			if b >= 248 { // 248 = 4*62: keep the distribution uniform
				continue
			}
			dst[i] = alphabet[b%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

// NewKeyID returns a new key id: "key_" and 20 random base62 characters.
func NewKeyID() (string, error) { return newID("key_") }

// NewAuditID returns a new audit event id: "aud_" and 20 base62 characters.
func NewAuditID() (string, error) { return newID("aud_") }

// NewRequestID returns a new request id: "req_" and 20 base62 characters.
func NewRequestID() (string, error) { return newID("req_") }

func newID(prefix string) (string, error) {
	buf := make([]byte, len(prefix)+idLen)
	copy(buf, prefix)
	if err := randomBase62(buf[len(prefix):]); err != nil {
		return "", err
	}
	return string(buf), nil
}
