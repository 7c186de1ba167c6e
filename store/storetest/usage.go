package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// denied is a UsageCount's denials from code → count.
func denied(t *testing.T, by map[string]int64) [len(store.UsageCodes)]int64 {
	t.Helper()
	var d [len(store.UsageCodes)]int64
	for code, n := range by {
		i := -1
		for j, c := range store.UsageCodes {
			if c == code {
				i = j
			}
		}
		if i < 0 {
			t.Fatalf("%q is not a counted code", code)
		}
		d[i] = n
	}
	return d
}

// Counts are added to the rows they fall in, batch after batch and within
// one batch, hourly and daily; a key's buckets and the organization's
// totals read them back oldest first, empty buckets left out.
func testUsageAddsUp(t *testing.T, e *env) {
	e.org(t, "acme")
	e.org(t, "other")
	a := e.key(t, newKey(t, "acme"))
	b := e.key(t, newKey(t, "acme"))
	o := e.key(t, newKey(t, "other"))
	h0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	h1 := h0.Add(time.Hour)
	next := h0.Add(24 * time.Hour)
	batches := [][]store.UsageCount{
		{
			{KeyID: a.ID, OrgID: "acme", Hour: h0, Allowed: 5, Denied: denied(t, map[string]int64{"rate_limited": 2})},
			{KeyID: b.ID, OrgID: "acme", Hour: h0, Allowed: 1},
			{KeyID: o.ID, OrgID: "other", Hour: h0, Allowed: 100},
		},
		{
			// Another replica's counts for the same hour, twice in one
			// batch, and the next hour and the next day.
			{KeyID: a.ID, OrgID: "acme", Hour: h0.Add(59 * time.Minute), Allowed: 1, Denied: denied(t, map[string]int64{"rate_limited": 1, "usage_exceeded": 3})},
			{KeyID: a.ID, OrgID: "acme", Hour: h0, Allowed: 1},
			{KeyID: a.ID, OrgID: "acme", Hour: h1, Denied: denied(t, map[string]int64{"invalid_api_key": 4})},
			{KeyID: a.ID, OrgID: "acme", Hour: next, Allowed: 7},
		},
		nil,
	}
	for _, batch := range batches {
		if err := e.s.RecordUsage(e.ctx, batch); err != nil {
			t.Fatalf("RecordUsage: %v", err)
		}
	}
	query := func(q store.UsageQuery) []store.UsageBucket {
		t.Helper()
		got, err := e.s.Usage(e.ctx, q)
		if err != nil {
			t.Fatalf("Usage(%+v): %v", q, err)
		}
		return got
	}
	bucket := func(start time.Time, allowed int64, by map[string]int64) store.UsageBucket {
		b := store.UsageBucket{Start: start, Allowed: allowed, ByCode: map[string]int64{}}
		for c, n := range by {
			b.ByCode[c] = n
			b.Denied += n
		}
		return b
	}
	day0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		q    store.UsageQuery
		want []store.UsageBucket
	}{
		{"key by hour", store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Hour, From: h0, To: next.Add(time.Hour)},
			[]store.UsageBucket{
				bucket(h0, 7, map[string]int64{"rate_limited": 3, "usage_exceeded": 3}),
				bucket(h1, 0, map[string]int64{"invalid_api_key": 4}),
				bucket(next, 7, nil),
			}},
		{"key by hour, [from, to)", store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Hour, From: h1, To: next},
			[]store.UsageBucket{bucket(h1, 0, map[string]int64{"invalid_api_key": 4})}},
		{"key by day", store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Day, From: day0, To: day0.Add(48 * time.Hour)},
			[]store.UsageBucket{
				bucket(day0, 7, map[string]int64{"rate_limited": 3, "usage_exceeded": 3, "invalid_api_key": 4}),
				bucket(day0.Add(24*time.Hour), 7, nil),
			}},
		{"key of any organization (operator)", store.UsageQuery{KeyID: b.ID, Granularity: store.Hour, From: h0, To: h1},
			[]store.UsageBucket{bucket(h0, 1, nil)}},
		{"organization by hour", store.UsageQuery{OrgID: "acme", Granularity: store.Hour, From: h0, To: h1},
			[]store.UsageBucket{bucket(h0, 8, map[string]int64{"rate_limited": 3, "usage_exceeded": 3})}},
		{"nothing in range", store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Hour, From: h0.Add(-48 * time.Hour), To: h0},
			[]store.UsageBucket{}},
	} {
		if diff := cmp.Diff(tc.want, query(tc.q), cmpOpts); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", tc.name, diff)
		}
	}
	top, err := e.s.TopKeys(e.ctx, store.UsageQuery{OrgID: "acme", Granularity: store.Hour, From: h0, To: next.Add(time.Hour)}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.KeyAllowed{{KeyID: a.ID, Allowed: 14}, {KeyID: b.ID, Allowed: 1}}, top); diff != "" {
		t.Errorf("TopKeys: (-want +got)\n%s", diff)
	}
	top, err = e.s.TopKeys(e.ctx, store.UsageQuery{OrgID: "acme", Granularity: store.Day, From: day0, To: day0.Add(24 * time.Hour)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]store.KeyAllowed{{KeyID: a.ID, Allowed: 7}}, top); diff != "" {
		t.Errorf("TopKeys(n=1): (-want +got)\n%s", diff)
	}
}

// A key's usage is found in its own organization only, for its own user
// when one is named, and still after it is revoked.
func testUsageVisibility(t *testing.T, e *env) {
	e.org(t, "acme")
	e.org(t, "other")
	a := e.key(t, newKey(t, "acme"))
	h0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	if err := e.s.RecordUsage(e.ctx, []store.UsageCount{{KeyID: a.ID, OrgID: "acme", Hour: h0, Allowed: 2}}); err != nil {
		t.Fatal(err)
	}
	q := store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Hour, From: h0, To: h0.Add(time.Hour)}
	for _, tc := range []struct {
		name string
		mod  func(*store.UsageQuery)
	}{
		{"another organization", func(q *store.UsageQuery) { q.OrgID = "other" }},
		{"another user", func(q *store.UsageQuery) { q.UserID = "bob" }},
		{"unknown key", func(q *store.UsageQuery) { q.KeyID = "key_00000000000000000000" }},
	} {
		q := q
		tc.mod(&q)
		if _, err := e.s.Usage(e.ctx, q); keygate.ErrorCode(err) != keygate.CodeNotFound {
			t.Errorf("%s: err = %v, want not_found", tc.name, err)
		}
	}
	if _, err := e.s.RevokeKey(e.ctx, "acme", a.ID, cli); err != nil {
		t.Fatal(err)
	}
	q.UserID = "alice"
	got, err := e.s.Usage(e.ctx, q)
	if err != nil || len(got) != 1 || got[0].Allowed != 2 {
		t.Fatalf("revoked key's usage = %+v, %v; want one bucket of 2", got, err)
	}
}

// Pruning removes hourly and daily rows before their cut-offs, at most
// limit rows of each per call.
func testUsagePrune(t *testing.T, e *env) {
	e.org(t, "acme")
	a := e.key(t, newKey(t, "acme"))
	h0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var batch []store.UsageCount
	for i := range 5 {
		batch = append(batch, store.UsageCount{KeyID: a.ID, OrgID: "acme", Hour: h0.Add(time.Duration(i) * time.Hour), Allowed: 1})
	}
	if err := e.s.RecordUsage(e.ctx, batch); err != nil {
		t.Fatal(err)
	}
	cut := h0.Add(3 * time.Hour) // hours 0, 1, 2 go
	longAgo := h0.Add(-400 * 24 * time.Hour)
	n, err := e.s.PruneUsage(e.ctx, cut, longAgo, 2)
	if err != nil || n != 2 {
		t.Fatalf("PruneUsage(limit 2) = %d, %v; want 2", n, err)
	}
	if n, err = e.s.PruneUsage(e.ctx, cut, longAgo, 2); err != nil || n != 1 {
		t.Fatalf("second PruneUsage = %d, %v; want 1", n, err)
	}
	got, err := e.s.Usage(e.ctx, store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Hour, From: h0, To: h0.Add(24 * time.Hour)})
	if err != nil || len(got) != 2 || !got[0].Start.Equal(cut) {
		t.Fatalf("after prune: %+v, %v; want hours 3 and 4", got, err)
	}
	day := store.UsageQuery{OrgID: "acme", KeyID: a.ID, Granularity: store.Day, From: h0.Add(-24 * time.Hour), To: h0.Add(24 * time.Hour)}
	if got, _ := e.s.Usage(e.ctx, day); len(got) != 1 || got[0].Allowed != 5 {
		t.Fatalf("daily row before its cut-off = %+v; want 5 allowed kept", got)
	}
	if n, err := e.s.PruneUsage(e.ctx, cut, h0.Add(24*time.Hour), 100); err != nil || n != 1 {
		t.Fatalf("daily prune = %d, %v; want 1", n, err)
	}
	if got, _ := e.s.Usage(e.ctx, day); len(got) != 0 {
		t.Fatalf("daily rows after prune = %+v; want none", got)
	}
}
