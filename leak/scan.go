package leak

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
)

// Finding is one token found by a Scanner, without the token: its prefix
// (type, environment and the secret's first 4 characters) and last 4, as
// keygate shows keys everywhere.
type Finding struct {
	Line        int
	Prefix      string
	Last4       string
	Type        keygate.KeyType
	Environment keygate.Environment
}

// Scanner finds native tokens in text and verifies their checksums
// offline, so that look-alikes (a wrong checksum) are not reported.
type Scanner struct {
	format apikey.Format
	re     *regexp.Regexp
}

// NewScanner returns a Scanner for tokens with the given type prefixes
// (--secret-prefix, --publishable-prefix).
func NewScanner(secretPrefix, publishablePrefix string) (*Scanner, error) {
	f, err := apikey.NewFormat(secretPrefix, publishablePrefix)
	if err != nil {
		return nil, err
	}
	// The prefixes are ^[a-z]{2,8}$: nothing to quote. \b on both sides:
	// a token inside a longer word is not one.
	re := regexp.MustCompile(`\b(?:` + secretPrefix + `|` + publishablePrefix + `)_(?:live|test)_[0-9A-Za-z]{38}\b`)
	return &Scanner{format: f, re: re}, nil
}

// maxLine bounds one line of a scanned file (minified files have long ones).
const maxLine = 64 << 20

// Scan calls found for every token in r with a valid checksum, and
// returns how many matches of the shape it rejected for their checksum.
func (s *Scanner) Scan(r io.Reader, found func(Finding)) (rejected int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	for line := 1; sc.Scan(); line++ {
		for _, m := range s.re.FindAll(sc.Bytes(), -1) {
			tok, err := s.format.Parse(string(m))
			if err != nil {
				rejected++
				continue
			}
			found(Finding{Line: line, Prefix: tok.Prefix(), Last4: tok.Last4(), Type: tok.Type(), Environment: tok.Environment()})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return rejected, fmt.Errorf("a line is longer than %d MiB", maxLine>>20)
		}
		return rejected, err
	}
	return rejected, nil
}
