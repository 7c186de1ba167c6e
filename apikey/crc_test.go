package apikey

import (
	"hash/crc32"
	"strings"
	"testing"
)

func TestCRCIEEE_MatchesHashCRC32(t *testing.T) {
	s := strings.Repeat("sk_live_0123456789ABCDEFabcdef\x00\xff", 4)
	for n := 0; n <= len(s); n++ {
		if got, want := crcIEEE(s[:n]), crc32.ChecksumIEEE([]byte(s[:n])); got != want {
			t.Fatalf("crcIEEE(%q) = %08x, want %08x", s[:n], got, want)
		}
	}
}

func BenchmarkCRCIEEE(b *testing.B) {
	s := goldenSkLive[:len(goldenSkLive)-checksumLen]
	b.ReportAllocs()
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		_ = crcIEEE(s)
	}
}
