package keygate

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func TestKeyView_ReadsAsTheRecord(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Second)
	five := 5
	far := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	for _, tc := range []struct {
		name string
		key  Key
	}{
		{"active", Key{ID: "key_0123456789abcdefghij", OrgID: "acme", UserID: "alice", Type: Secret, Environment: Live, Scopes: []string{"read", "write"}}},
		{"revoked beats expired", Key{ID: "key_a", RevokedAt: &past, ExpiresAt: &past}},
		{"expired now", Key{ID: "key_b", ExpiresAt: &now, DisabledAt: &past}},
		{"expires later", Key{ID: "key_c", ExpiresAt: &future}},
		{"expires past UnixNano's range", Key{ID: "key_far", ExpiresAt: &far}},
		{"inactive", Key{ID: "key_d", DisabledAt: &future}},
		{"long id", Key{ID: "key_0123456789abcdefghijklmnopqrstuvwxyz", Type: Publishable, Environment: Test, RateLimitPerMinute: &five, ProjectIDs: []string{"p1", "p2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := NewKeyView(&KeyRecord{Key: tc.key, LoadedAt: past}, "")
			if got, want := v.Status(now), tc.key.Status(now); got != want {
				t.Errorf("Status = %s, want %s", got, want)
			}
			if v.ID() != tc.key.ID || v.OrgID() != tc.key.OrgID || v.UserID() != tc.key.UserID {
				t.Errorf("ids = %q %q %q", v.ID(), v.OrgID(), v.UserID())
			}
			if (v.Type() == Publishable) != (tc.key.Type == Publishable) || (v.Environment() == Test) != (tc.key.Environment == Test) {
				t.Errorf("type, environment = %s, %s", v.Type(), v.Environment())
			}
			for _, s := range tc.key.Scopes {
				if !v.HasScope(s) {
					t.Errorf("HasScope(%q) = false", s)
				}
			}
			if v.HasScope("rea") || v.HasScope("") || v.HasScope("read,write") {
				t.Error("HasScope matched a part or a join of scopes")
			}
			if v.Restricted() != (len(tc.key.ProjectIDs) > 0) {
				t.Errorf("Restricted = %v", v.Restricted())
			}
			for _, p := range tc.key.ProjectIDs {
				if !v.HasProject(p) {
					t.Errorf("HasProject(%q) = false", p)
				}
			}
			limit, ok := v.RateLimit()
			if ok != (tc.key.RateLimitPerMinute != nil) || (ok && limit != *tc.key.RateLimitPerMinute) {
				t.Errorf("RateLimit = %d, %v", limit, ok)
			}
			if v.Age(now) != time.Second {
				t.Errorf("Age = %v, want 1s", v.Age(now))
			}
		})
	}
}

func TestKeyView_RolledTokenExpiresAtItsGrace(t *testing.T) {
	now := time.Now()
	grace := now.Add(time.Minute)
	v := NewKeyView(&KeyRecord{Key: Key{ID: "key_a"}, TokenExpiresAt: &grace}, "")
	if v.TokenExpired(now) || !v.TokenExpired(grace) {
		t.Errorf("TokenExpired before/at grace = %v/%v, want false/true", v.TokenExpired(now), v.TokenExpired(grace))
	}
}

// Interned values are freed once no view holds them: each distinct scope
// set used to add permanent entries outside --cache-max-bytes (issue 12,
// item 7: 50 000 sets kept 100 003 entries, +68 MiB).
func TestKeyView_InternedValuesAreReclaimed(t *testing.T) {
	// unique drops the map entries of collected values in the background
	// after a collection, so the heap is read until it settles.
	heap := func() uint64 {
		var m runtime.MemStats
		low := ^uint64(0)
		for range 20 {
			runtime.GC()
			runtime.ReadMemStats(&m)
			low = min(low, m.HeapAlloc)
			time.Sleep(5 * time.Millisecond)
		}
		return low
	}
	const n = 50_000
	build := func() []*KeyView {
		vs := make([]*KeyView, n)
		for i := range vs {
			s := fmt.Sprintf("scope-%07d-%s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")
			vs[i] = NewKeyView(&KeyRecord{Key: Key{ID: "key_x", OrgID: "org-" + s, UserID: "user-" + s,
				Scopes: []string{s}, ProjectIDs: []string{s}}}, "meta-"+s)
		}
		return vs
	}
	before := heap()
	vs := build()
	held := heap()
	runtime.KeepAlive(vs)
	vs = nil
	// Under the race detector unique's background cleanup takes longer.
	after := heap()
	for deadline := time.Now().Add(10 * time.Second); after > before+(held-before)/10 && time.Now().Before(deadline); {
		after = heap()
	}
	grew, left := int64(held)-int64(before), int64(after)-int64(before)
	t.Logf("heap: +%d KiB with %d views of distinct values, +%d KiB after they are dropped", grew>>10, n, left>>10)
	if grew < 10<<20 {
		t.Fatalf("views took only %d KiB; the test does not measure what it means to", grew>>10)
	}
	if left > grew/10 {
		t.Errorf("%d KiB of %d KiB stayed on the heap after every view was dropped: interned values are not reclaimed", left>>10, grew>>10)
	}
}

func TestKeyViewAllowedSources(t *testing.T) {
	rec := &KeyRecord{Key: Key{ID: "key_0123456789abcdefghij", OrgID: "o", UserID: "u"}}
	if v := NewKeyView(rec, ""); v.AllowedSources() != "" {
		t.Fatalf("AllowedSources = %q, want none", v.AllowedSources())
	}
	rec.Key.AllowedSources = []string{"10.0.0.0/8", "spiffe://example.org/*"}
	v := NewKeyView(rec, "")
	if got := v.AllowedSources(); got != "10.0.0.0/8,spiffe://example.org/*" {
		t.Fatalf("AllowedSources = %q", got)
	}
	if v.ID() != rec.Key.ID {
		t.Fatalf("ID = %q", v.ID())
	}
	long := strings.Repeat("k", 40)
	rec.Key.ID = long
	v = NewKeyView(rec, "")
	if v.ID() != long || v.AllowedSources() != "10.0.0.0/8,spiffe://example.org/*" {
		t.Fatalf("long id view: %q, %q", v.ID(), v.AllowedSources())
	}
	// Sources share the slot of a long id: a view is no larger for them.
	if n := unsafe.Sizeof(KeyView{}); n > 120 {
		t.Errorf("KeyView is %d bytes, want at most 120", n)
	}
}

func TestKeyView_NamedRateLimits(t *testing.T) {
	rec := &KeyRecord{Key: Key{ID: "key_0123456789abcdefghij", OrgID: "o", UserID: "u"}}
	plain := NewKeyView(rec, "")
	if _, ok := plain.NamedRateLimit("search"); ok {
		t.Fatal("a key without named limits has one")
	}
	base := plain.Size()
	rec.Key.RateLimits = []RateLimit{{"search", 10, 60}, {"search-2", 5, 1}, {"upload", 100, 86400}}
	rec.Key.AllowedSources = []string{"10.0.0.0/8"}
	v := NewKeyView(rec, "")
	for _, want := range rec.Key.RateLimits {
		if got, ok := v.NamedRateLimit(want.Name); !ok || got != want {
			t.Errorf("NamedRateLimit(%q) = %v, %v; want %v", want.Name, got, ok, want)
		}
	}
	for _, name := range []string{"", "searc", "search-", "uploads", "10", "60"} {
		if got, ok := v.NamedRateLimit(name); ok {
			t.Errorf("NamedRateLimit(%q) = %v, want none", name, got)
		}
	}
	if got := v.RateLimits(); !slices.Equal(got, rec.Key.RateLimits) {
		t.Errorf("RateLimits = %v", got)
	}
	if v.AllowedSources() != "10.0.0.0/8" {
		t.Errorf("AllowedSources = %q beside named limits", v.AllowedSources())
	}
	if v.Size() <= base {
		t.Errorf("Size = %d, not more than %d without limits", v.Size(), base)
	}
	if a := testing.AllocsPerRun(100, func() { v.NamedRateLimit("upload") }); a != 0 {
		t.Errorf("NamedRateLimit allocates %v times", a)
	}
}
