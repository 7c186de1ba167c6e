package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// usageNow is the frozen clock of the usage tests.
var usageNow = time.Date(2026, 12, 6, 10, 30, 0, 0, time.UTC)

func (e *env) recordUsage(counts ...store.UsageCount) {
	e.t.Helper()
	if err := e.st.RecordUsage(context.Background(), counts); err != nil {
		e.t.Fatal(err)
	}
}

func rateLimited(n int64) [len(store.UsageCodes)]int64 {
	var d [len(store.UsageCodes)]int64
	for i, c := range store.UsageCodes {
		if c == "rate_limited" {
			d[i] = n
		}
	}
	return d
}

// timeEq compares wire times by instant.
var timeEq = cmp.Comparer(func(a, b httpapi.Time) bool { return time.Time(a).Equal(time.Time(b)) })

func usageBuckets(t *testing.T, r response) []httpapi.UsageBucket {
	t.Helper()
	want(t, r, http.StatusOK)
	return decode[httpapi.Data[[]httpapi.UsageBucket]](t, r).Data
}

func bucket(start string, allowed, denied int64, by map[string]int64) httpapi.UsageBucket {
	ts, err := time.Parse(time.RFC3339, start)
	if err != nil {
		panic(err)
	}
	if by == nil {
		by = map[string]int64{}
	}
	return httpapi.UsageBucket{Start: httpapi.Time(ts), Allowed: allowed, Denied: denied, ByCode: by}
}

// A key's usage comes back by hour (the last 24 h by default) or by day,
// oldest first, with the buckets that saw no traffic left out.
func TestKeyUsage_BucketsOldestFirstEmptyOnesOmitted(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		e.clock.freeze(usageNow)
		k, tok := e.key(manage.NewKey{Role: "member"})
		h := usageNow.Truncate(time.Hour)
		e.recordUsage(
			store.UsageCount{KeyID: k.ID, OrgID: "acme", Hour: h, Allowed: 3, Denied: rateLimited(2)},
			store.UsageCount{KeyID: k.ID, OrgID: "acme", Hour: h.Add(-3 * time.Hour), Allowed: 1},
			store.UsageCount{KeyID: k.ID, OrgID: "acme", Hour: h.Add(-30 * time.Hour), Allowed: 5},
		)
		path := "/v1/api-keys/" + k.ID + "/usage"
		got := usageBuckets(t, e.get(path, tok))
		wantB := []httpapi.UsageBucket{
			bucket("2026-12-06T07:00:00Z", 1, 0, nil),
			bucket("2026-12-06T10:00:00Z", 3, 2, map[string]int64{"rate_limited": 2}),
		}
		if diff := cmp.Diff(wantB, got, timeEq); diff != "" {
			t.Errorf("default (last 24 h by hour): (-want +got)\n%s", diff)
		}
		got = usageBuckets(t, e.get(path+"?granularity=day", tok))
		wantB = []httpapi.UsageBucket{
			bucket("2026-12-05T00:00:00Z", 5, 0, nil),
			bucket("2026-12-06T00:00:00Z", 4, 2, map[string]int64{"rate_limited": 2}),
		}
		if diff := cmp.Diff(wantB, got, timeEq); diff != "" {
			t.Errorf("by day: (-want +got)\n%s", diff)
		}
		// [from, to) after rounding both down: 07:59 is the 07:00 bucket,
		// and to=10:45 ends before the 10:00 bucket.
		got = usageBuckets(t, e.get(path+"?from=2026-12-06T07:59:00Z&to=2026-12-06T10:45:00Z", tok))
		if diff := cmp.Diff([]httpapi.UsageBucket{bucket("2026-12-06T07:00:00Z", 1, 0, nil)}, got, timeEq); diff != "" {
			t.Errorf("[from, to): (-want +got)\n%s", diff)
		}
		// The wire shape: data is a list even when empty.
		r := e.get(path+"?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", tok)
		want(t, r, http.StatusOK)
		if string(r.Body) != `{"data":[]}`+"\n" && string(r.Body) != `{"data":[]}` {
			t.Errorf("empty range body = %s", r.Body)
		}
	})
}

// Every malformed query parameter is a 400 invalid_request naming it.
func TestKeyUsage_MalformedParametersNameTheParam(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		e.clock.freeze(usageNow)
		k, tok := e.key(manage.NewKey{})
		for _, tc := range []struct{ query, param string }{
			{"granularity=minute", "granularity"},
			{"granularity=Hour", "granularity"},
			{"granularity=", "granularity"},
			{"granularity=hour&granularity=hour", "granularity"},
			{"from=yesterday", "from"},
			{"from=2026-12-06", "from"},
			{"from=2026-12-06T10:00:00", "from"},
			{"from=", "from"},
			{"from=2026-12-06T10:00:00Z&from=2026-12-06T11:00:00Z", "from"},
			{"to=1765015200", "to"},
			{"to=2026-13-01T00:00:00Z", "to"},
			{"to=", "to"},
			{"from=2026-12-06T10:00:00Z&to=2026-12-06T09:00:00Z", "from"},                 // from after to
			{"from=2026-11-04T00:00:00Z&to=2026-12-06T00:00:00Z", "from"},                 // 32 days by hour
			{"granularity=day&from=2025-10-01T00:00:00Z&to=2026-12-06T00:00:00Z", "from"}, // 431 days
		} {
			for _, path := range []string{"/v1/api-keys/" + k.ID + "/usage", "/v1/usage"} {
				t.Run(tc.query+" "+path, func(t *testing.T) {
					wantError(t, e.get(path+"?"+tc.query, tok), http.StatusBadRequest, keygate.CodeInvalidRequest, tc.param)
				})
			}
		}
		// The longest ranges allowed are allowed.
		for _, q := range []string{
			"from=2026-11-05T00:00:00Z&to=2026-12-06T00:00:00Z",
			"granularity=day&from=" + url.QueryEscape("2025-11-01T00:00:00+00:00") + "&to=2026-12-06T00:00:00Z",
		} {
			want(t, e.get("/v1/api-keys/"+k.ID+"/usage?"+q, tok), http.StatusOK)
		}
	})
}

// Usage has the visibility of GET of the key: another organization's key
// and, for a non-admin, another user's key are 404; a revoked key's usage
// stays readable.
func TestKeyUsage_VisibilityAndRevokedKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		e.clock.freeze(usageNow)
		_, admin := e.key(manage.NewKey{})
		_, member := e.key(manage.NewKey{Role: "member"})
		mine, _ := e.key(manage.NewKey{Role: "member"}) // alice's too
		bobs, _ := e.key(manage.NewKey{UserID: "bob", Role: "member"})
		other, otherTok := e.key(manage.NewKey{OrgID: "globex"})
		_, noRead := e.key(manage.NewKey{Scopes: []string{"write"}})
		e.recordUsage(store.UsageCount{KeyID: mine.ID, OrgID: "acme", Hour: usageNow, Allowed: 2},
			store.UsageCount{KeyID: other.ID, OrgID: "globex", Hour: usageNow, Allowed: 9})
		path := func(id string) string { return "/v1/api-keys/" + id + "/usage" }
		wantError(t, e.get(path(other.ID), admin), http.StatusNotFound, keygate.CodeNotFound, "")
		wantError(t, e.get(path(mine.ID), otherTok), http.StatusNotFound, keygate.CodeNotFound, "")
		wantError(t, e.get(path(bobs.ID), member), http.StatusNotFound, keygate.CodeNotFound, "")
		wantError(t, e.get(path("key_00000000000000000000"), admin), http.StatusNotFound, keygate.CodeNotFound, "")
		wantError(t, e.get(path(mine.ID), noRead), http.StatusForbidden, keygate.CodeInsufficientPermissions, "")
		want(t, e.get(path(bobs.ID), admin), http.StatusOK)

		want(t, e.do(req{method: "DELETE", path: "/v1/api-keys/" + mine.ID, token: admin}), http.StatusOK)
		wantError(t, e.get("/v1/api-keys/"+mine.ID, member), http.StatusNotFound, keygate.CodeNotFound, "")
		for _, tok := range []string{admin, member} {
			got := usageBuckets(t, e.get(path(mine.ID), tok))
			if len(got) != 1 || got[0].Allowed != 2 {
				t.Errorf("revoked key's usage = %+v; want one bucket of 2", got)
			}
		}
		wantError(t, e.get(path(mine.ID), otherTok), http.StatusNotFound, keygate.CodeNotFound, "")
	})
}

// GET /v1/usage (admin) sums the organization's keys per bucket and ranks
// the ten with the most allowed Checks; other organizations never count.
func TestOrgUsage_TotalsAndTopKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		e.clock.freeze(usageNow)
		_, admin := e.key(manage.NewKey{})
		_, member := e.key(manage.NewKey{Role: "member"})
		h := usageNow.Truncate(time.Hour)
		var counts []store.UsageCount
		var wantTop []httpapi.KeyAllowed
		for i := range 12 {
			id := fmt.Sprintf("key_%020d", i)
			counts = append(counts, store.UsageCount{KeyID: id, OrgID: "acme", Hour: h, Allowed: int64(100 + i)})
			if i >= 2 {
				wantTop = append([]httpapi.KeyAllowed{{KeyID: id, Allowed: int64(100 + i)}}, wantTop...)
			}
		}
		counts = append(counts,
			store.UsageCount{KeyID: "key_00000000000000000000", OrgID: "acme", Hour: h.Add(-time.Hour), Denied: rateLimited(4)},
			store.UsageCount{KeyID: "key_globex", OrgID: "globex", Hour: h, Allowed: 100_000})
		e.recordUsage(counts...)
		r := e.get("/v1/usage", admin)
		want(t, r, http.StatusOK)
		got := decode[httpapi.OrgUsage](t, r)
		wantData := []httpapi.UsageBucket{
			bucket("2026-12-06T09:00:00Z", 0, 4, map[string]int64{"rate_limited": 4}),
			bucket("2026-12-06T10:00:00Z", 12*100+66, 0, nil),
		}
		if diff := cmp.Diff(wantData, got.Data, timeEq); diff != "" {
			t.Errorf("data (-want +got)\n%s", diff)
		}
		if diff := cmp.Diff(wantTop, got.TopKeys, timeEq); diff != "" {
			t.Errorf("top_keys (-want +got)\n%s", diff)
		}
		wantError(t, e.get("/v1/usage", member), http.StatusForbidden, keygate.CodeInsufficientPermissions, "")
		r = e.get("/v1/usage?granularity=day&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", admin)
		want(t, r, http.StatusOK)
		if got := decode[httpapi.OrgUsage](t, r); got.Data == nil || got.TopKeys == nil || len(got.Data)+len(got.TopKeys) != 0 {
			t.Errorf("empty range = %s; want empty lists", r.Body)
		}
	})
}
