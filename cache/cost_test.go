package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/keygate/keygate"
)

// liveHeap is the live heap after a full collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// The cost the cache gives its entries is the heap they really hold,
// ristretto's bookkeeping included, within 10 % (SPEC §10), so
// --cache-max-bytes bounds memory. Keys as the load harness seeds them:
// one user, two scopes, a small metadata object, 200 organizations.
func TestCost_BoundsTheHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap of 100 000 cached keys")
	}
	const n = 100_000
	rs := &recentStore{fakeStore: newFakeStore()}
	loaded := time.Now()
	for i := 0; i < n; i++ {
		h := hashOf(fmt.Sprint("cost", i))
		rs.recs[h] = keygate.KeyRecord{Key: keygate.Key{
			ID: fmt.Sprintf("key_%020d", i), OrgID: fmt.Sprintf("org_bench_%03d", i%200), UserID: "bench-user",
			Name: "bench", Type: keygate.Secret, Environment: keygate.Live, Scopes: []string{"read", "write"},
			Metadata: json.RawMessage(`{"plan":"bench"}`),
		}, LoadedAt: loaded}
		rs.order = append(rs.order, h)
	}
	before := liveHeap()
	c, err := New(rs, Config{MaxBytes: n * 440, TTL: time.Hour, NegativeTTL: time.Minute,
		Metadata: func(raw json.RawMessage) string { return string(raw) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.Preload(context.Background(), rs, n)
	if err != nil {
		t.Fatal(err)
	}
	held := int64(liveHeap()) - int64(before)
	cost := int64(c.store.Metrics.CostAdded() - c.store.Metrics.CostEvicted())
	t.Logf("%d keys cached: heap +%d B (%d B a key), cost %d B (%d B a key), ratio %.3f",
		got, held, held/int64(got), cost, cost/int64(got), float64(held)/float64(cost))
	if got < n*9/10 {
		t.Fatalf("only %d of %d keys were cached", got, n)
	}
	if r := float64(held) / float64(cost); r > 1.10 || r < 0.80 {
		t.Errorf("the cache holds %.2f× the cost it counts; want within 10 %% (and not far below)", r)
	}
	runtime.KeepAlive(c)
}
