package apikey

import (
	"testing"

	"github.com/keygate/keygate"
)

func BenchmarkParseToken(b *testing.B) {
	f := DefaultFormat()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Parse(goldenSkLive); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = HashString(goldenSkLive)
	}
}

func BenchmarkGenerate(b *testing.B) {
	f := DefaultFormat()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Generate(keygate.Secret, keygate.Live); err != nil {
			b.Fatal(err)
		}
	}
}
