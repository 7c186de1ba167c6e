package cache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

// hashList streams a fixed list of hashes, as a store would.
type hashList []keygate.Hash

func (l hashList) LiveTokenHashes(_ context.Context, _ time.Time, fn func(keygate.Hash) error) error {
	for _, h := range l {
		if err := fn(h); err != nil {
			return err
		}
	}
	return nil
}

func benchHashes(n int, salt byte) hashList {
	hs := make(hashList, n)
	for i := range hs {
		var b [9]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		b[8] = salt
		hs[i] = sha256.Sum256(b[:])
	}
	return hs
}

// BenchmarkFilterBuild builds the filter of 1 000 000 live tokens and
// reports its bytes per key.
func BenchmarkFilterBuild(b *testing.B) {
	hs := benchHashes(1_000_000, 1)
	b.ResetTimer()
	var f Filter
	for i := 0; i < b.N; i++ {
		f = Filter{}
		if _, err := f.Build(context.Background(), hs, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(f.Bytes())/float64(len(hs)), "bytes/key")
}

// BenchmarkFilterHas is the cost the filter adds to a cache miss.
func BenchmarkFilterHas(b *testing.B) {
	var f Filter
	if _, err := f.Build(context.Background(), benchHashes(1_000_000, 1), time.Now()); err != nil {
		b.Fatal(err)
	}
	q := benchHashes(1024, 2)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.Has(&q[i&1023])
	}
}
