package apikey

import (
	"strings"
	"testing"
)

var longestForeign = strings.Repeat("f", MaxForeignLen)

// Check calls Parse and HashString on every request: they must not allocate.
func TestParseAndHash_DoNotAllocate(t *testing.T) {
	f := DefaultFormat()
	custom := mustFormat(t, "abcdefgh", "pub")
	longest, err := custom.Generate("secret", "live")
	if err != nil {
		t.Fatal(err)
	}
	badChecksum := goldenSkLive[:len(goldenSkLive)-6] + "000000"
	tests := []struct {
		name string
		fn   func()
	}{
		{"Parse valid", func() {
			if _, err := f.Parse(goldenSkLive); err != nil {
				t.Fatal(err)
			}
		}},
		{"Parse valid, longest prefix", func() {
			if _, err := custom.Parse(longest.String()); err != nil {
				t.Fatal(err)
			}
		}},
		{"Parse bad checksum", func() {
			if _, err := f.Parse(badChecksum); err == nil {
				t.Fatal("Parse accepted a bad checksum")
			}
		}},
		{"Parse malformed", func() {
			if _, err := f.Parse("Bearer nonsense"); err == nil {
				t.Fatal("Parse accepted garbage")
			}
		}},
		{"HashString", func() { _ = HashString(goldenSkLive) }},
		{"Token.Hash", func() { _ = longest.Hash() }},
		{"ParseCredential foreign, longest, and its hash", func() {
			tok, err := f.ParseCredential(longestForeign, true)
			if err != nil {
				t.Fatal(err)
			}
			_ = tok.Hash()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, tt.fn); got != 0 {
				t.Errorf("allocations per run = %v, want 0", got)
			}
		})
	}
}
