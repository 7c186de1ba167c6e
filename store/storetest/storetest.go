// Package storetest is the conformance suite of store.Store: one set of
// behaviours that the PostgreSQL and the embedded store both pass, so the
// rest of keygate can rely on either without knowing which it has.
package storetest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/sync/errgroup"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Run runs the suite. open returns a new store on an empty database whose
// clock is now; Run migrates it. Each subtest opens its own store and runs
// in parallel with the others.
func Run(t *testing.T, open func(t *testing.T, now func() time.Time) store.Store) {
	for _, tc := range []struct {
		name string
		test func(t *testing.T, e *env)
	}{
		{"MigrateIsIdempotent", testMigrateIsIdempotent},
		{"CreateKeyRoundTrips", testCreateKeyRoundTrips},
		{"TimesAreTruncatedToMicroseconds", testTimesTruncated},
		{"LookupReturnsKeyAndLoadedAt", testLookupReturnsKey},
		{"LookupUnknownHashIsNotFound", testLookupUnknown},
		{"LookupReturnsOrgDisabled", testLookupOrgDisabled},
		{"RevokedKeyGoneFromListButLookupSeesIt", testRevokedKey},
		{"OtherOrgOrRevokedKeyIsNotFound", testNotFound},
		{"OrganizationErrors", testOrganizationErrors},
		{"DuplicateKeyIDOrHashConflicts", testDuplicateKey},
		{"UpdateKeyAppliesSetFields", testUpdateKey},
		{"UpdateKeyAllowedSeesTheLockedKeyAndCanRefuse", testUpdateKeyAllowed},
		{"RollKeepsOldTokenUntilGrace", testRollGrace},
		{"RollWithoutGraceDropsOldTokens", testRollNoGrace},
		{"PaginationWalksEveryKeyOnce", testPagination},
		{"ListFiltersByUserAndStatus", testListFilters},
		{"AuditPaginationWalksEveryEventOnce", testAuditPagination},
		{"EveryWriteLogsOneEventAndOneAudit", testEveryWriteLogs},
		{"NoopOrganizationWriteLogsNothing", testNoopOrgWrite},
		{"AuditNeverHoldsHashes", testAuditNeverHoldsHashes},
		{"RecordLastUsedNeverMovesBack", testRecordLastUsed},
		{"EventsPagedInSeqOrder", testEventsPaged},
		{"EventsPrunedReported", testEventsPruned},
		{"ConcurrentWritersNeverSkipAnEvent", testConcurrentWriters},
		{"LiveTokenHashesHoldsEveryTokenALookupCouldAllow", testLiveTokenHashes},
		{"RecentKeysMostRecentlyUsedFirstAsLookupReturnsThem", testRecentKeys},
		{"RecentKeysNBoundsTheTokens", testRecentKeysLimit},
		{"WalksStopAtFnErrorAndReleaseTheStore", testWalksStop},
		{"ReportLeakDoesItsActionWithOneLeakedAudit", testReportLeak},
		{"WritesRecordTheirEventSeq", testWritesRecordEventSeq},
		{"UsageAddsUpHourlyAndDaily", testUsageAddsUp},
		{"UsageVisibleInItsOrgEvenRevoked", testUsageVisibility},
		{"UsagePruneIsBounded", testUsagePrune},
		{"ImportKeysStoresEachAsCreateDoesWithImportedAudit", testImportKeys},
		{"ImportKeysConflictingHashWritesNothing", testImportConflict},
		{"ImportKeysThousandInOneCall", testImportThousand},
		{"ImportKeysCreatesTheOrganizationInItsTransaction", testImportCreatesOrganization},
		{"UsageClaimTakesAtMostRemaining", testUsageClaimTakesAtMostRemaining},
		{"UsageConcurrentClaimsNeverOverdraw", testUsageConcurrentClaimsNeverOverdraw},
		{"UsageRefillOncePerPeriod", testUsageRefillOncePerPeriod},
		{"UsageConcurrentClaimsRefillOnce", testUsageConcurrentClaimsRefillOnce},
		{"UsageReturnOnlyInTheSameEpoch", testUsageReturnOnlyInTheSameEpoch},
		{"UsageDebitInCreate", testUsageDebitInCreate},
		{"UsageClaimsRacingPatchesStayWithinEachEpoch", testUsageClaimsRacingPatchesStayWithinEachEpoch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newEnv(t, open))
		})
	}
}

// start is the suite's clock at the start of every test. Its nanoseconds
// check that stores truncate to microseconds.
var start = time.Date(2026, 11, 22, 10, 0, 0, 123_456_789, time.UTC)

// env is one test's store and clock.
type env struct {
	s     store.Store
	clock *clock
	ctx   context.Context
}

func newEnv(t *testing.T, open func(t *testing.T, now func() time.Time) store.Store) *env {
	t.Helper()
	c := &clock{t: start}
	s := open(t, c.Now)
	t.Cleanup(s.Close)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return &env{s: s, clock: c, ctx: t.Context()}
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// us is t as the stores keep it.
func us(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func ptr[T any](v T) *T { return &v }

// cmpOpts compare metadata as JSON values (PostgreSQL's jsonb does not
// keep the bytes), times by instant, and nil and empty slices as equal.
var cmpOpts = cmp.Options{
	cmp.Comparer(func(a, b json.RawMessage) bool {
		var x, y any
		if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
			return string(a) == string(b)
		}
		return reflect.DeepEqual(x, y)
	}),
	cmpopts.EquateEmpty(),
}

var cli = keygate.Actor{}

func (e *env) org(t *testing.T, id string) keygate.Organization {
	t.Helper()
	o, err := e.s.CreateOrganization(e.ctx, id, cli)
	if err != nil {
		t.Fatalf("CreateOrganization(%q): %v", id, err)
	}
	return o
}

// newKey returns a NewKey for org with a fresh id and token; mod adjusts it.
func newKey(t *testing.T, org string, mod ...func(*store.NewKey)) store.NewKey {
	t.Helper()
	id, err := apikey.NewKeyID()
	if err != nil {
		t.Fatal(err)
	}
	nk := store.NewKey{
		ID: id, OrgID: org, UserID: "alice", Name: "CI Pipeline",
		Type: keygate.Secret, Environment: keygate.Live,
		Scopes: []string{"read", "write"}, ProjectIDs: []string{},
		Token: newToken(t),
	}
	for _, m := range mod {
		m(&nk)
	}
	return nk
}

func newToken(t *testing.T) store.NewToken {
	t.Helper()
	tok, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
	if err != nil {
		t.Fatal(err)
	}
	return store.NewToken{Hash: tok.Hash(), Prefix: tok.Prefix(), Last4: tok.Last4()}
}

func (e *env) key(t *testing.T, nk store.NewKey) keygate.Key {
	t.Helper()
	k, err := e.s.CreateKey(e.ctx, nk, cli)
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return k
}

func (e *env) lookup(t *testing.T, h keygate.Hash) *keygate.KeyRecord {
	t.Helper()
	rec, err := e.s.LookupKey(e.ctx, h)
	if err != nil {
		t.Fatalf("LookupKey: %v", err)
	}
	return rec
}

func (e *env) allEvents(t *testing.T) []keygate.Event {
	t.Helper()
	evs, err := e.s.Events(e.ctx, 0, 10_000)
	if err != nil {
		t.Fatalf("Events: %v", err)
	}
	return evs
}

func (e *env) allAudit(t *testing.T, org string) []keygate.AuditEvent {
	t.Helper()
	page, err := e.s.ListAuditEvents(e.ctx, store.ListAuditEvents{OrgID: org, Limit: 1000})
	if err != nil {
		t.Fatalf("ListAuditEvents: %v", err)
	}
	return page.Events
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", what, err, want)
	}
}

func testMigrateIsIdempotent(t *testing.T, e *env) {
	for range 2 {
		if err := e.s.Migrate(e.ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
	}
	if err := e.s.Ping(e.ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testCreateKeyRoundTrips(t *testing.T, e *env) {
	e.org(t, "acme")
	exp := start.Add(90 * 24 * time.Hour)
	nk := newKey(t, "acme", func(nk *store.NewKey) {
		nk.Type = keygate.Publishable
		nk.Environment = keygate.Test
		nk.Scopes = []string{"admin", "read"}
		nk.ProjectIDs = []string{"p1", "p2"}
		nk.RateLimitPerMinute = ptr(0)
		nk.Metadata = json.RawMessage(`{"plan": "pro", "customer": {"id": 42}}`)
		nk.ExpiresAt = &exp
		nk.AllowedSources = []string{"10.0.0.0/8", "2001:db8::/32", "spiffe://example.org/ns/a/*"}
		nk.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}}
	})
	got := e.key(t, nk)
	want := keygate.Key{
		ID: nk.ID, OrgID: "acme", UserID: "alice", Name: "CI Pipeline",
		Type: keygate.Publishable, Environment: keygate.Test,
		Scopes: []string{"admin", "read"}, ProjectIDs: []string{"p1", "p2"},
		RateLimitPerMinute: ptr(0), Metadata: json.RawMessage(`{"customer":{"id":42},"plan":"pro"}`),
		Prefix: nk.Token.Prefix, Last4: nk.Token.Last4,
		CreatedAt: us(start), ExpiresAt: ptr(us(exp)),
		AllowedSources: []string{"10.0.0.0/8", "2001:db8::/32", "spiffe://example.org/ns/a/*"},
		RateLimits:     []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}},
	}
	if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
		t.Errorf("CreateKey (-want +got):\n%s", diff)
	}
	if rec := e.lookup(t, nk.Token.Hash); !slices.Equal(rec.Key.AllowedSources, want.AllowedSources) {
		t.Errorf("LookupKey: AllowedSources = %v, want %v", rec.Key.AllowedSources, want.AllowedSources)
	}
	if rec := e.lookup(t, nk.Token.Hash); !slices.Equal(rec.Key.RateLimits, want.RateLimits) {
		t.Errorf("LookupKey: RateLimits = %v, want %v", rec.Key.RateLimits, want.RateLimits)
	}
	fetched, err := e.s.GetKey(e.ctx, "acme", nk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, fetched, cmpOpts); diff != "" {
		t.Errorf("GetKey differs from CreateKey (-create +get):\n%s", diff)
	}

	// A key without metadata or rate limit stores {} and null.
	plain := e.key(t, newKey(t, "acme"))
	if string(plain.Metadata) != "{}" || plain.RateLimitPerMinute != nil {
		t.Errorf("defaults: metadata %s, rate limit %v; want {} and nil", plain.Metadata, plain.RateLimitPerMinute)
	}
	if plain.AllowedSources == nil || len(plain.AllowedSources) != 0 {
		t.Errorf("defaults: allowed sources %#v, want []", plain.AllowedSources)
	}
	if plain.RateLimits == nil || len(plain.RateLimits) != 0 {
		t.Errorf("defaults: rate limits %#v, want []", plain.RateLimits)
	}

}

func testTimesTruncated(t *testing.T, e *env) {
	org := e.org(t, "acme")
	k := e.key(t, newKey(t, "acme", func(nk *store.NewKey) { nk.ExpiresAt = ptr(start.Add(time.Hour)) }))
	for name, got := range map[string]time.Time{
		"organization created_at": org.CreatedAt,
		"key created_at":          k.CreatedAt,
		"key expires_at":          *k.ExpiresAt,
	} {
		if got.Nanosecond()%1000 != 0 || got.Location() != time.UTC {
			t.Errorf("%s = %v, want whole microseconds in UTC", name, got)
		}
	}
	if !k.CreatedAt.Equal(us(start)) {
		t.Errorf("created_at = %v, want %v", k.CreatedAt, us(start))
	}
}

func testLookupReturnsKey(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	k := e.key(t, nk)
	e.clock.Advance(time.Minute)
	rec := e.lookup(t, nk.Token.Hash)
	want := &keygate.KeyRecord{Key: k, LoadedAt: start.Add(time.Minute)}
	if diff := cmp.Diff(want, rec, cmpOpts); diff != "" {
		t.Errorf("LookupKey (-want +got):\n%s", diff)
	}
}

func testLookupUnknown(t *testing.T, e *env) {
	_, err := e.s.LookupKey(e.ctx, keygate.Hash{1, 2, 3})
	wantErr(t, "LookupKey(unknown)", err, keygate.ErrNotFound)
}

func testLookupOrgDisabled(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	e.key(t, nk)
	for _, disabled := range []bool{true, false, true} {
		org, err := e.s.SetOrganizationDisabled(e.ctx, "acme", disabled, cli)
		if err != nil {
			t.Fatal(err)
		}
		if (org.DisabledAt != nil) != disabled {
			t.Errorf("SetOrganizationDisabled(%t) returned DisabledAt %v", disabled, org.DisabledAt)
		}
		if got := e.lookup(t, nk.Token.Hash).OrgDisabled; got != disabled {
			t.Errorf("after SetOrganizationDisabled(%t): OrgDisabled = %t", disabled, got)
		}
	}
}

func testRevokedKey(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	e.key(t, nk)
	keep := e.key(t, newKey(t, "acme"))
	e.clock.Advance(time.Second)
	revoked, err := e.s.RevokeKey(e.ctx, "acme", nk.ID, cli)
	if err != nil {
		t.Fatal(err)
	}
	if revoked.RevokedAt == nil || !revoked.RevokedAt.Equal(us(start.Add(time.Second))) {
		t.Errorf("RevokeKey: RevokedAt = %v, want %v", revoked.RevokedAt, us(start.Add(time.Second)))
	}
	if got := revoked.Status(e.clock.Now()); got != keygate.StatusRevoked {
		t.Errorf("status %s, want revoked", got)
	}
	_, err = e.s.GetKey(e.ctx, "acme", nk.ID)
	wantErr(t, "GetKey(revoked)", err, keygate.ErrNotFound)
	page, err := e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]keygate.Key{keep}, page.Keys, cmpOpts); diff != "" {
		t.Errorf("ListKeys after revoke (-want +got):\n%s", diff)
	}
	rec := e.lookup(t, nk.Token.Hash)
	if diff := cmp.Diff(revoked, rec.Key, cmpOpts); diff != "" {
		t.Errorf("LookupKey(revoked) (-want +got):\n%s", diff)
	}
	_, err = e.s.RevokeKey(e.ctx, "acme", nk.ID, cli)
	wantErr(t, "RevokeKey twice", err, keygate.ErrNotFound)
}

func testNotFound(t *testing.T, e *env) {
	e.org(t, "acme")
	e.org(t, "other")
	live := e.key(t, newKey(t, "acme"))
	gone := e.key(t, newKey(t, "acme"))
	if _, err := e.s.RevokeKey(e.ctx, "acme", gone.ID, cli); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ org, id, why string }{
		{"other", live.ID, "another organization's key"},
		{"acme", gone.ID, "a revoked key"},
		{"acme", "key_doesnotexist000000", "an unknown id"},
	} {
		ops := map[string]func() error{
			"GetKey": func() error { _, err := e.s.GetKey(e.ctx, c.org, c.id); return err },
			"UpdateKey": func() error {
				_, err := e.s.UpdateKey(e.ctx, c.org, c.id, store.KeyUpdate{Name: ptr("x")}, cli)
				return err
			},
			"RevokeKey": func() error { _, err := e.s.RevokeKey(e.ctx, c.org, c.id, cli); return err },
			"RollKey": func() error {
				_, err := e.s.RollKey(e.ctx, c.org, c.id, newToken(t), time.Hour, cli)
				return err
			},
		}
		for name, op := range ops {
			wantErr(t, name+" on "+c.why, op(), keygate.ErrNotFound)
		}
	}
	if got := len(e.allEvents(t)); got != 3 { // two creates, one revoke
		t.Errorf("failed writes logged events: %d events, want 3", got)
	}
}

func testOrganizationErrors(t *testing.T, e *env) {
	created := e.org(t, "acme")
	_, err := e.s.CreateOrganization(e.ctx, "acme", cli)
	wantErr(t, "CreateOrganization(existing)", err, keygate.ErrConflict)
	_, err = e.s.GetOrganization(e.ctx, "nope")
	wantErr(t, "GetOrganization(missing)", err, keygate.ErrNotFound)
	_, err = e.s.SetOrganizationDisabled(e.ctx, "nope", true, cli)
	wantErr(t, "SetOrganizationDisabled(missing)", err, keygate.ErrNotFound)
	_, err = e.s.CreateKey(e.ctx, newKey(t, "nope"), cli)
	wantErr(t, "CreateKey(missing org)", err, keygate.ErrNotFound)

	e.clock.Advance(time.Hour)
	ensured, err := e.s.EnsureOrganization(e.ctx, "acme", cli)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created, ensured); diff != "" {
		t.Errorf("EnsureOrganization(existing) (-created +ensured):\n%s", diff)
	}
	fresh, err := e.s.EnsureOrganization(e.ctx, "beta", cli)
	if err != nil {
		t.Fatal(err)
	}
	want := keygate.Organization{ID: "beta", CreatedAt: us(start.Add(time.Hour))}
	if diff := cmp.Diff(want, fresh); diff != "" {
		t.Errorf("EnsureOrganization(new) (-want +got):\n%s", diff)
	}
	for org, want := range map[string]int{"acme": 1, "beta": 1} {
		if got := len(e.allAudit(t, org)); got != want {
			t.Errorf("%s: %d audit events, want %d (EnsureOrganization audits only when it creates)", org, got, want)
		}
	}
}

func testDuplicateKey(t *testing.T, e *env) {
	e.org(t, "acme")
	first := newKey(t, "acme")
	e.key(t, first)
	sameID := newKey(t, "acme", func(nk *store.NewKey) { nk.ID = first.ID })
	_, err := e.s.CreateKey(e.ctx, sameID, cli)
	wantErr(t, "CreateKey(duplicate id)", err, keygate.ErrConflict)
	sameHash := newKey(t, "acme", func(nk *store.NewKey) { nk.Token = first.Token })
	_, err = e.s.CreateKey(e.ctx, sameHash, cli)
	wantErr(t, "CreateKey(duplicate hash)", err, keygate.ErrConflict)
	other := e.key(t, newKey(t, "acme"))
	_, err = e.s.RollKey(e.ctx, "acme", other.ID, first.Token, 0, cli)
	wantErr(t, "RollKey(to a used hash)", err, keygate.ErrConflict)
	if got := len(e.allEvents(t)); got != 2 {
		t.Errorf("%d events after failed writes, want 2", got)
	}
}

// A rule judged on an earlier read is judged again on the locked key: a
// refusal writes nothing, neither the change nor an event.
func testUpdateKeyAllowed(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme"))
	if _, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(false)}, cli); err != nil {
		t.Fatal(err)
	}
	events := len(e.allEvents(t))
	refused := errors.New("refused")
	var seen keygate.Key
	_, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(true), Allowed: func(cur keygate.Key) error {
		seen = cur
		return refused
	}}, cli)
	if !errors.Is(err, refused) {
		t.Fatalf("UpdateKey = %v, want the Allowed error", err)
	}
	if seen.ID != k.ID || seen.DisabledAt == nil {
		t.Errorf("Allowed saw %+v, want the key as it is now (inactive)", seen)
	}
	got, err := e.s.GetKey(e.ctx, "acme", k.ID)
	if err != nil || got.DisabledAt == nil {
		t.Errorf("after a refused update: %+v, %v; want the key still inactive", got, err)
	}
	if n := len(e.allEvents(t)); n != events {
		t.Errorf("a refused update logged %d events", n-events)
	}
	if _, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(true), Allowed: func(keygate.Key) error { return nil }}, cli); err != nil {
		t.Errorf("UpdateKey with Allowed nil error = %v", err)
	}
}

func testUpdateKey(t *testing.T, e *env) {
	e.org(t, "acme")
	exp := start.Add(48 * time.Hour)
	later := start.Add(72 * time.Hour)
	for _, tc := range []struct {
		name   string
		create func(*store.NewKey)
		update store.KeyUpdate
		want   func(k *keygate.Key, now time.Time)
	}{
		{"name", nil, store.KeyUpdate{Name: ptr("renamed")},
			func(k *keygate.Key, _ time.Time) { k.Name = "renamed" }},
		{"deactivate", nil, store.KeyUpdate{Active: ptr(false)},
			func(k *keygate.Key, now time.Time) { k.DisabledAt = ptr(us(now)) }},
		{"activate", nil, store.KeyUpdate{Active: ptr(true)},
			func(*keygate.Key, time.Time) {}},
		{"set rate limit", nil, store.KeyUpdate{RateLimitPerMinute: ptr(10)},
			func(k *keygate.Key, _ time.Time) { k.RateLimitPerMinute = ptr(10) }},
		{"clear rate limit", func(nk *store.NewKey) { nk.RateLimitPerMinute = ptr(5) }, store.KeyUpdate{ClearRateLimit: true},
			func(k *keygate.Key, _ time.Time) { k.RateLimitPerMinute = nil }},
		{"set expiry", func(nk *store.NewKey) { nk.ExpiresAt = &exp }, store.KeyUpdate{ExpiresAt: &later},
			func(k *keygate.Key, _ time.Time) { k.ExpiresAt = ptr(us(later)) }},
		{"clear expiry", func(nk *store.NewKey) { nk.ExpiresAt = &exp }, store.KeyUpdate{ClearExpiresAt: true},
			func(k *keygate.Key, _ time.Time) { k.ExpiresAt = nil }},
		{"replace metadata", func(nk *store.NewKey) { nk.Metadata = json.RawMessage(`{"a":1,"b":2}`) },
			store.KeyUpdate{Metadata: json.RawMessage(`{"c":3}`)},
			func(k *keygate.Key, _ time.Time) { k.Metadata = json.RawMessage(`{"c":3}`) }},
		{"set allowed sources", nil, store.KeyUpdate{AllowedSources: &[]string{"192.0.2.7", "spiffe://example.org/a"}},
			func(k *keygate.Key, _ time.Time) { k.AllowedSources = []string{"192.0.2.7", "spiffe://example.org/a"} }},
		{"clear allowed sources", func(nk *store.NewKey) { nk.AllowedSources = []string{"10.0.0.0/8"} },
			store.KeyUpdate{AllowedSources: &[]string{}},
			func(k *keygate.Key, _ time.Time) { k.AllowedSources = []string{} }},
		{"set named rate limits", nil, store.KeyUpdate{RateLimits: &[]keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}}},
			func(k *keygate.Key, _ time.Time) {
				k.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}}
			}},
		{"replace named rate limits", func(nk *store.NewKey) {
			nk.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}}
		},
			store.KeyUpdate{RateLimits: &[]keygate.RateLimit{{Name: "search", Limit: 5, DurationSeconds: 1}}},
			func(k *keygate.Key, _ time.Time) {
				k.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 5, DurationSeconds: 1}}
			}},
		{"clear named rate limits", func(nk *store.NewKey) {
			nk.RateLimits = []keygate.RateLimit{{Name: "search", Limit: 10, DurationSeconds: 60}, {Name: "upload", Limit: 100, DurationSeconds: 86400}}
		},
			store.KeyUpdate{RateLimits: &[]keygate.RateLimit{}},
			func(k *keygate.Key, _ time.Time) { k.RateLimits = []keygate.RateLimit{} }},
		{"nothing set", nil, store.KeyUpdate{},
			func(*keygate.Key, time.Time) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*store.NewKey)
			if tc.create != nil {
				mods = append(mods, tc.create)
			}
			k := e.key(t, newKey(t, "acme", mods...))
			got, err := e.s.UpdateKey(e.ctx, "acme", k.ID, tc.update, cli)
			if err != nil {
				t.Fatal(err)
			}
			want := k
			tc.want(&want, e.clock.Now())
			if diff := cmp.Diff(want, got, cmpOpts); diff != "" {
				t.Errorf("UpdateKey (-want +got):\n%s", diff)
			}
			fetched, err := e.s.GetKey(e.ctx, "acme", k.ID)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, fetched, cmpOpts); diff != "" {
				t.Errorf("GetKey after UpdateKey (-update +get):\n%s", diff)
			}
		})
	}

	// Deactivating twice keeps the first time.
	k := e.key(t, newKey(t, "acme"))
	first, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(false)}, cli)
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	second, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(false)}, cli)
	if err != nil {
		t.Fatal(err)
	}
	if !second.DisabledAt.Equal(*first.DisabledAt) {
		t.Errorf("second deactivation moved DisabledAt from %v to %v", first.DisabledAt, second.DisabledAt)
	}
}

func testRollGrace(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	k := e.key(t, nk)
	e.clock.Advance(time.Minute)
	next := newToken(t)
	rolled, err := e.s.RollKey(e.ctx, "acme", k.ID, next, time.Hour, cli)
	if err != nil {
		t.Fatal(err)
	}
	want := k
	want.Prefix, want.Last4 = next.Prefix, next.Last4
	if diff := cmp.Diff(want, rolled, cmpOpts); diff != "" {
		t.Errorf("RollKey (-want +got):\n%s", diff)
	}
	graceEnd := us(start.Add(time.Minute + time.Hour))
	old := e.lookup(t, nk.Token.Hash)
	if old.TokenExpiresAt == nil || !old.TokenExpiresAt.Equal(graceEnd) {
		t.Errorf("old token: TokenExpiresAt = %v, want %v", old.TokenExpiresAt, graceEnd)
	}
	if diff := cmp.Diff(rolled, old.Key, cmpOpts); diff != "" {
		t.Errorf("old token's key (-want +got):\n%s", diff)
	}
	if cur := e.lookup(t, next.Hash); cur.TokenExpiresAt != nil {
		t.Errorf("new token: TokenExpiresAt = %v, want nil", cur.TokenExpiresAt)
	}

	// A second roll with a longer grace does not extend the first token's;
	// one past its grace is gone (or, before that roll, marked expired).
	e.clock.Advance(2 * time.Hour)
	if rec, err := e.s.LookupKey(e.ctx, nk.Token.Hash); err == nil && rec.TokenExpiresAt.After(e.clock.Now()) {
		t.Errorf("token past its grace still valid until %v", rec.TokenExpiresAt)
	}
	third := newToken(t)
	if _, err := e.s.RollKey(e.ctx, "acme", k.ID, third, 24*time.Hour, cli); err != nil {
		t.Fatal(err)
	}
	if rec, err := e.s.LookupKey(e.ctx, nk.Token.Hash); err == nil && rec.TokenExpiresAt.After(e.clock.Now()) {
		t.Errorf("second roll revived the first token until %v", rec.TokenExpiresAt)
	}
	second := e.lookup(t, next.Hash)
	if want := us(e.clock.Now().Add(24 * time.Hour)); second.TokenExpiresAt == nil || !second.TokenExpiresAt.Equal(want) {
		t.Errorf("second token: TokenExpiresAt = %v, want %v", second.TokenExpiresAt, want)
	}

	// The roll's event names every token of the key, old and new.
	evs := e.allEvents(t)
	last := evs[len(evs)-1]
	if last.Kind != keygate.EventKeyRolled || !slices.Contains(last.Hashes, next.Hash) || !slices.Contains(last.Hashes, third.Hash) {
		t.Errorf("roll event %+v, want key.rolled naming the old and the new token", last)
	}
}

func testRollNoGrace(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	k := e.key(t, nk)
	mid := newToken(t)
	if _, err := e.s.RollKey(e.ctx, "acme", k.ID, mid, time.Hour, cli); err != nil {
		t.Fatal(err)
	}
	last := newToken(t)
	if _, err := e.s.RollKey(e.ctx, "acme", k.ID, last, 0, cli); err != nil {
		t.Fatal(err)
	}
	for name, h := range map[string]keygate.Hash{"first": nk.Token.Hash, "second": mid.Hash} {
		_, err := e.s.LookupKey(e.ctx, h)
		wantErr(t, "LookupKey("+name+" token after a roll without grace)", err, keygate.ErrNotFound)
	}
	if rec := e.lookup(t, last.Hash); rec.Key.Last4 != last.Last4 {
		t.Errorf("current token's key has last4 %q, want %q", rec.Key.Last4, last.Last4)
	}
}

// keysNewestFirst sorts keys as listings return them.
func keysNewestFirst(keys []keygate.Key) []string {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, func(a, b keygate.Key) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = k.ID
	}
	return ids
}

func testPagination(t *testing.T, e *env) {
	e.org(t, "acme")
	e.org(t, "other")
	var keys []keygate.Key
	for i := range 23 {
		if i%3 == 0 { // groups of keys share a created_at: the id breaks the tie
			e.clock.Advance(time.Second)
		}
		keys = append(keys, e.key(t, newKey(t, "acme")))
	}
	e.key(t, newKey(t, "other"))
	want := keysNewestFirst(keys)
	for _, limit := range []int{1, 5, 7, 23, 100} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			var got []string
			var after *store.Cursor
			for pages := 0; ; pages++ {
				if pages > len(keys)+1 {
					t.Fatal("pagination does not end")
				}
				page, err := e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme", After: after, Limit: limit})
				if err != nil {
					t.Fatal(err)
				}
				if len(page.Keys) > limit {
					t.Fatalf("page of %d keys, limit %d", len(page.Keys), limit)
				}
				for _, k := range page.Keys {
					got = append(got, k.ID)
				}
				if page.Next == nil {
					break
				}
				if len(page.Keys) != limit {
					t.Errorf("short page of %d with a next cursor", len(page.Keys))
				}
				after = page.Next
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("walk (-want +got):\n%s", diff)
			}
		})
	}
}

func testListFilters(t *testing.T, e *env) {
	e.org(t, "acme")
	soon := start.Add(time.Hour)
	active := e.key(t, newKey(t, "acme"))
	bobs := e.key(t, newKey(t, "acme", func(nk *store.NewKey) { nk.UserID = "bob" }))
	expiring := e.key(t, newKey(t, "acme", func(nk *store.NewKey) { nk.ExpiresAt = &soon }))
	inactive := e.key(t, newKey(t, "acme"))
	inactive, err := e.s.UpdateKey(e.ctx, "acme", inactive.ID, store.KeyUpdate{Active: ptr(false)}, cli)
	if err != nil {
		t.Fatal(err)
	}
	// Expired beats inactive.
	both := e.key(t, newKey(t, "acme", func(nk *store.NewKey) { nk.ExpiresAt = &soon }))
	both, err = e.s.UpdateKey(e.ctx, "acme", both.ID, store.KeyUpdate{Active: ptr(false)}, cli)
	if err != nil {
		t.Fatal(err)
	}
	revoked := e.key(t, newKey(t, "acme"))
	if _, err := e.s.RevokeKey(e.ctx, "acme", revoked.ID, cli); err != nil {
		t.Fatal(err)
	}
	later := start.Add(2 * time.Hour)
	for _, tc := range []struct {
		name string
		q    store.ListKeys
		want []keygate.Key
	}{
		{"all", store.ListKeys{}, []keygate.Key{active, bobs, expiring, inactive, both}},
		{"bob's", store.ListKeys{UserID: "bob"}, []keygate.Key{bobs}},
		{"active now", store.ListKeys{Status: keygate.StatusActive}, []keygate.Key{active, bobs, expiring}},
		{"active later", store.ListKeys{Status: keygate.StatusActive, Now: later}, []keygate.Key{active, bobs}},
		{"inactive now", store.ListKeys{Status: keygate.StatusInactive}, []keygate.Key{inactive, both}},
		{"inactive later", store.ListKeys{Status: keygate.StatusInactive, Now: later}, []keygate.Key{inactive}},
		{"expired now", store.ListKeys{Status: keygate.StatusExpired}, nil},
		{"expired later", store.ListKeys{Status: keygate.StatusExpired, Now: later}, []keygate.Key{expiring, both}},
		{"expired at the instant", store.ListKeys{Status: keygate.StatusExpired, Now: soon}, []keygate.Key{expiring, both}},
		{"bob's inactive", store.ListKeys{UserID: "bob", Status: keygate.StatusInactive}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.q.OrgID, tc.q.Limit = "acme", 100
			page, err := e.s.ListKeys(e.ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]string, len(page.Keys))
			for i, k := range page.Keys {
				got[i] = k.ID
			}
			if diff := cmp.Diff(keysNewestFirst(tc.want), got, cmpOpts); diff != "" {
				t.Errorf("ListKeys (-want +got):\n%s", diff)
			}
			if page.Next != nil {
				t.Errorf("Next = %+v on the only page", page.Next)
			}
		})
	}
	_, err = e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme", Status: "bogus", Limit: 10})
	if keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
		t.Errorf("ListKeys(status=bogus): %v, want invalid_request", err)
	}
}

func testAuditPagination(t *testing.T, e *env) {
	e.org(t, "acme")
	for i := range 11 {
		if i%2 == 0 {
			e.clock.Advance(time.Millisecond)
		}
		e.key(t, newKey(t, "acme"))
	}
	all := e.allAudit(t, "acme")
	if len(all) != 12 {
		t.Fatalf("%d audit events, want 12", len(all))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.CreatedAt.Before(b.CreatedAt) || (a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID) {
			t.Fatalf("audit events not newest first at %d: %+v before %+v", i, a, b)
		}
	}
	var got []keygate.AuditEvent
	var after *store.Cursor
	for {
		page, err := e.s.ListAuditEvents(e.ctx, store.ListAuditEvents{OrgID: "acme", After: after, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Events...)
		if page.Next == nil {
			break
		}
		after = page.Next
	}
	if diff := cmp.Diff(all, got); diff != "" {
		t.Errorf("paged audit walk (-all +paged):\n%s", diff)
	}
}

func testEveryWriteLogs(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	var k keygate.Key
	next := newToken(t)
	by := keygate.Actor{KeyID: "key_actor0000000000000", RequestID: "req_123"}
	for _, tc := range []struct {
		name   string
		write  func() error
		kind   keygate.EventKind // "" : no key event
		action string
		keyID  string
		hashes []keygate.Hash
		by     keygate.Actor
	}{
		{"create organization", func() error { _, err := e.s.CreateOrganization(e.ctx, "beta", by); return err },
			"", keygate.AuditOrgCreated, "", nil, by},
		{"ensure organization", func() error { _, err := e.s.EnsureOrganization(e.ctx, "gamma", cli); return err },
			"", keygate.AuditOrgCreated, "", nil, cli},
		{"create key", func() (err error) { k, err = e.s.CreateKey(e.ctx, nk, by); return err },
			keygate.EventKeyCreated, keygate.AuditKeyCreated, nk.ID, []keygate.Hash{nk.Token.Hash}, by},
		{"update key", func() error {
			_, err := e.s.UpdateKey(e.ctx, "acme", k.ID, store.KeyUpdate{Active: ptr(false)}, by)
			return err
		}, keygate.EventKeyUpdated, keygate.AuditKeyUpdated, nk.ID, []keygate.Hash{nk.Token.Hash}, by},
		{"roll key", func() error { _, err := e.s.RollKey(e.ctx, "acme", k.ID, next, time.Hour, cli); return err },
			keygate.EventKeyRolled, keygate.AuditKeyRolled, nk.ID, []keygate.Hash{nk.Token.Hash, next.Hash}, cli},
		{"revoke key", func() error { _, err := e.s.RevokeKey(e.ctx, "acme", k.ID, by); return err },
			keygate.EventKeyRevoked, keygate.AuditKeyRevoked, nk.ID, []keygate.Hash{nk.Token.Hash, next.Hash}, by},
		{"disable organization", func() error { _, err := e.s.SetOrganizationDisabled(e.ctx, "acme", true, by); return err },
			keygate.EventOrgDisabled, keygate.AuditOrgDisabled, "", nil, by},
		{"enable organization", func() error { _, err := e.s.SetOrganizationDisabled(e.ctx, "acme", false, cli); return err },
			keygate.EventOrgEnabled, keygate.AuditOrgEnabled, "", nil, cli},
	} {
		e.clock.Advance(time.Second)
		before := e.allEvents(t)
		org := "acme"
		if tc.name == "create organization" {
			org = "beta"
		} else if tc.name == "ensure organization" {
			org = "gamma"
		}
		auditBefore := e.allAudit(t, org)
		if err := tc.write(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		newEvents := e.allEvents(t)[len(before):]
		newAudit := e.allAudit(t, org)[:len(e.allAudit(t, org))-len(auditBefore)]

		var wantEvents []keygate.Event
		if tc.kind != "" {
			wantEvents = []keygate.Event{{Kind: tc.kind, OrgID: org, KeyID: tc.keyID, Hashes: tc.hashes, CreatedAt: us(e.clock.Now())}}
		}
		if diff := cmp.Diff(wantEvents, newEvents, cmpOpts,
			cmpopts.IgnoreFields(keygate.Event{}, "Seq"),
			cmpopts.SortSlices(func(a, b keygate.Hash) bool { return string(a[:]) < string(b[:]) })); diff != "" {
			t.Errorf("%s: key events (-want +got):\n%s", tc.name, diff)
		}
		for _, ev := range newEvents {
			if len(before) > 0 && ev.Seq <= before[len(before)-1].Seq {
				t.Errorf("%s: event seq %d not above %d", tc.name, ev.Seq, before[len(before)-1].Seq)
			}
		}
		wantAudit := []keygate.AuditEvent{{Action: tc.action, ActorKeyID: tc.by.KeyID, KeyID: tc.keyID,
			OrgID: org, RequestID: tc.by.RequestID, CreatedAt: us(e.clock.Now())}}
		if diff := cmp.Diff(wantAudit, newAudit, cmpopts.IgnoreFields(keygate.AuditEvent{}, "ID")); diff != "" {
			t.Errorf("%s: audit events (-want +got):\n%s", tc.name, diff)
		}
		for _, a := range newAudit {
			if !strings.HasPrefix(a.ID, "aud_") {
				t.Errorf("%s: audit id %q, want aud_…", tc.name, a.ID)
			}
		}
	}
	// Last use is not a change: no event, no audit.
	before, auditBefore := len(e.allEvents(t)), len(e.allAudit(t, "acme"))
	if err := e.s.RecordLastUsed(e.ctx, []store.LastUse{{KeyID: k.ID, At: e.clock.Now()}}); err != nil {
		t.Fatal(err)
	}
	if after, auditAfter := len(e.allEvents(t)), len(e.allAudit(t, "acme")); after != before || auditAfter != auditBefore {
		t.Errorf("RecordLastUsed logged %d events and %d audit events, want none", after-before, auditAfter-auditBefore)
	}
}

func testNoopOrgWrite(t *testing.T, e *env) {
	e.org(t, "acme")
	for _, disabled := range []bool{false, true, true} {
		if _, err := e.s.SetOrganizationDisabled(e.ctx, "acme", disabled, cli); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(e.allEvents(t)); got != 1 {
		t.Errorf("%d events, want 1 (enabling an enabled and disabling a disabled organization write nothing)", got)
	}
	if got := len(e.allAudit(t, "acme")); got != 2 {
		t.Errorf("%d audit events, want 2 (created, disabled)", got)
	}
}

func testAuditNeverHoldsHashes(t *testing.T, e *env) {
	e.org(t, "acme")
	nk := newKey(t, "acme")
	k := e.key(t, nk)
	next := newToken(t)
	by := keygate.Actor{KeyID: "key_actor0000000000000", RequestID: "req_1"}
	if _, err := e.s.RollKey(e.ctx, "acme", k.ID, next, time.Hour, by); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.RevokeKey(e.ctx, "acme", k.ID, by); err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		hex.EncodeToString(nk.Token.Hash[:]), hex.EncodeToString(next.Hash[:]),
		string(nk.Token.Hash[:]), string(next.Hash[:]),
		nk.Token.Prefix, nk.Token.Last4, next.Prefix, next.Last4,
	}
	for _, a := range e.allAudit(t, "acme") {
		for _, field := range []string{a.ID, a.Action, a.ActorKeyID, a.KeyID, a.OrgID, a.RequestID} {
			for _, s := range secrets {
				if strings.Contains(field, s) {
					t.Errorf("audit event %+v holds token material %q", a, s)
				}
			}
		}
	}
}

func testRecordLastUsed(t *testing.T, e *env) {
	e.org(t, "acme")
	a := e.key(t, newKey(t, "acme"))
	b := e.key(t, newKey(t, "acme"))
	unused := e.key(t, newKey(t, "acme"))
	t1 := start.Add(time.Minute)
	t2 := start.Add(2 * time.Minute)
	for _, tc := range []struct {
		name  string
		uses  []store.LastUse
		wantA *time.Time
		wantB *time.Time
	}{
		{"first use", []store.LastUse{{KeyID: a.ID, At: t1}, {KeyID: b.ID, At: t2}}, ptr(us(t1)), ptr(us(t2))},
		{"later use moves forward", []store.LastUse{{KeyID: a.ID, At: t2}}, ptr(us(t2)), ptr(us(t2))},
		{"earlier use never moves back", []store.LastUse{{KeyID: a.ID, At: t1}, {KeyID: b.ID, At: t1}}, ptr(us(t2)), ptr(us(t2))},
		{"one batch, one key twice: the latest wins", []store.LastUse{{KeyID: a.ID, At: t2.Add(time.Second)}, {KeyID: a.ID, At: t1}}, ptr(us(t2.Add(time.Second))), ptr(us(t2))},
		{"unknown keys are ignored", []store.LastUse{{KeyID: "key_gone00000000000000", At: t2}}, ptr(us(t2.Add(time.Second))), ptr(us(t2))},
		{"empty batch", nil, ptr(us(t2.Add(time.Second))), ptr(us(t2))},
	} {
		if err := e.s.RecordLastUsed(e.ctx, tc.uses); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for _, c := range []struct {
			id   string
			want *time.Time
		}{{a.ID, tc.wantA}, {b.ID, tc.wantB}, {unused.ID, nil}} {
			k, err := e.s.GetKey(e.ctx, "acme", c.id)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, k.LastUsedAt); diff != "" {
				t.Errorf("%s: key %s last_used_at (-want +got):\n%s", tc.name, c.id, diff)
			}
		}
	}
}

func testEventsPaged(t *testing.T, e *env) {
	e.org(t, "acme")
	for range 7 {
		e.key(t, newKey(t, "acme"))
	}
	all := e.allEvents(t)
	if len(all) != 7 {
		t.Fatalf("%d events, want 7", len(all))
	}
	var got []keygate.Event
	var after int64
	for {
		evs, err := e.s.Events(e.ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 3 {
			t.Fatalf("Events(limit 3) returned %d", len(evs))
		}
		if len(evs) == 0 {
			break
		}
		got = append(got, evs...)
		after = evs[len(evs)-1].Seq
	}
	if diff := cmp.Diff(all, got, cmpOpts); diff != "" {
		t.Errorf("paged events (-all +paged):\n%s", diff)
	}
	latest, err := e.s.LatestEventSeq(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if latest != all[len(all)-1].Seq {
		t.Errorf("LatestEventSeq = %d, want %d", latest, all[len(all)-1].Seq)
	}
}

func testEventsPruned(t *testing.T, e *env) {
	if latest, err := e.s.LatestEventSeq(e.ctx); err != nil || latest != 0 {
		t.Fatalf("LatestEventSeq on an empty log = %d, %v; want 0", latest, err)
	}
	e.org(t, "acme")
	for range 3 {
		e.key(t, newKey(t, "acme"))
	}
	cut := e.clock.Now().Add(time.Second)
	e.clock.Advance(time.Hour)
	for range 2 {
		e.key(t, newKey(t, "acme"))
	}
	all := e.allEvents(t)
	n, err := e.s.PruneEvents(e.ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("PruneEvents deleted %d, want 3", n)
	}
	mark := all[2].Seq
	for _, after := range []int64{0, mark - 1} {
		_, err := e.s.Events(e.ctx, after, 100)
		wantErr(t, fmt.Sprintf("Events(after %d) past the pruned mark %d", after, mark), err, store.ErrEventsPruned)
	}
	got, err := e.s.Events(e.ctx, mark, 100)
	if err != nil {
		t.Fatalf("Events(after the mark): %v", err)
	}
	if diff := cmp.Diff(all[3:], got, cmpOpts); diff != "" {
		t.Errorf("events after the mark (-want +got):\n%s", diff)
	}

	// Pruning everything keeps LatestEventSeq where it was, so a new
	// follower starts after the pruned events, not at 0.
	if _, err := e.s.PruneEvents(e.ctx, e.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	latest, err := e.s.LatestEventSeq(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := all[len(all)-1].Seq; latest != want {
		t.Errorf("LatestEventSeq after pruning all = %d, want %d", latest, want)
	}
	if evs, err := e.s.Events(e.ctx, latest, 100); err != nil || len(evs) != 0 {
		t.Errorf("Events(latest) after pruning all = %v, %v; want none, no error", evs, err)
	}
	_, err = e.s.Events(e.ctx, latest-1, 100)
	wantErr(t, "Events(latest-1) after pruning all", err, store.ErrEventsPruned)

	// Pruning with nothing old enough changes nothing.
	if n, err := e.s.PruneEvents(e.ctx, start); err != nil || n != 0 {
		t.Errorf("PruneEvents(nothing old) = %d, %v; want 0, nil", n, err)
	}
}

// testConcurrentWriters has writers race while a follower replays the log
// the way a replica does (Seq > last seen): the follower must see every
// event exactly once, in increasing order.
func testConcurrentWriters(t *testing.T, e *env) {
	e.org(t, "acme")
	const writers, writes = 6, 8
	keys := make([]keygate.Key, writers)
	for i := range keys {
		keys[i] = e.key(t, newKey(t, "acme"))
	}
	base, err := e.s.LatestEventSeq(e.ctx)
	if err != nil {
		t.Fatal(err)
	}

	done := make(chan struct{})
	var seen []int64
	follower := make(chan error, 1)
	go func() {
		last := base
		for {
			// Read done before the query: once writers are done, one more
			// empty read means the follower has caught up.
			finished := false
			select {
			case <-done:
				finished = true
			default:
			}
			evs, err := e.s.Events(e.ctx, last, 100)
			if err != nil {
				follower <- err
				return
			}
			for _, ev := range evs {
				seen = append(seen, ev.Seq)
				last = ev.Seq
			}
			if finished && len(evs) == 0 {
				follower <- nil
				return
			}
		}
	}()

	var g errgroup.Group
	for i := range writers {
		g.Go(func() error {
			for j := range writes {
				if _, err := e.s.UpdateKey(e.ctx, "acme", keys[i].ID, store.KeyUpdate{Name: ptr(fmt.Sprint("n", j))}, cli); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	close(done)
	if err := <-follower; err != nil {
		t.Fatal(err)
	}

	evs, err := e.s.Events(e.ctx, base, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]int64, len(evs))
	for i, ev := range evs {
		want[i] = ev.Seq
	}
	if len(want) != writers*writes {
		t.Errorf("%d events, want %d", len(want), writers*writes)
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("the follower skipped or repeated events (-log +seen):\n%s", diff)
	}
}

// liveTokens runs LiveTokenHashes at now and returns the names of the
// hashes it reported, sorted (a hash reported twice shows twice).
func (e *env) liveTokens(t *testing.T, now time.Time, names map[keygate.Hash]string) []string {
	t.Helper()
	var got []string
	err := e.s.LiveTokenHashes(e.ctx, now, func(h keygate.Hash) error {
		name, ok := names[h]
		if !ok {
			name = "unknown " + hex.EncodeToString(h[:])
		}
		got = append(got, name)
		return nil
	})
	if err != nil {
		t.Fatalf("LiveTokenHashes: %v", err)
	}
	slices.Sort(got)
	return got
}

// The membership filter is built from LiveTokenHashes: a token missing
// from it would be refused without a lookup, so every token a lookup could
// find as a key that is not revoked is there, whatever the key's state or
// organization; revoked keys and tokens past their grace are not.
func testLiveTokenHashes(t *testing.T, e *env) {
	for _, org := range []string{"acme", "other", "off"} {
		e.org(t, org)
	}
	names := map[keygate.Hash]string{}
	mk := func(name, org string, mod ...func(*store.NewKey)) keygate.Key {
		nk := newKey(t, org, mod...)
		names[nk.Token.Hash] = name
		return e.key(t, nk)
	}
	roll := func(name string, k keygate.Key, grace time.Duration) {
		tok := newToken(t)
		names[tok.Hash] = name
		if _, err := e.s.RollKey(e.ctx, k.OrgID, k.ID, tok, grace, cli); err != nil {
			t.Fatal(err)
		}
	}
	mk("active", "acme")
	inactive := mk("inactive", "acme")
	if _, err := e.s.UpdateKey(e.ctx, "acme", inactive.ID, store.KeyUpdate{Active: ptr(false)}, cli); err != nil {
		t.Fatal(err)
	}
	mk("expired", "acme", func(nk *store.NewKey) { nk.ExpiresAt = ptr(start.Add(time.Minute)) })
	mk("other org", "other")
	mk("disabled org", "off")
	if _, err := e.s.SetOrganizationDisabled(e.ctx, "off", true, cli); err != nil {
		t.Fatal(err)
	}
	revoked := mk("revoked", "acme")
	if _, err := e.s.RevokeKey(e.ctx, "acme", revoked.ID, cli); err != nil {
		t.Fatal(err)
	}
	roll("rolled: new", mk("rolled: old", "acme"), time.Hour)
	roll("rolled without grace: new", mk("rolled without grace: old", "acme"), 0)
	rolledRevoked := mk("rolled then revoked: old", "acme")
	roll("rolled then revoked: new", rolledRevoked, time.Hour)
	if _, err := e.s.RevokeKey(e.ctx, "acme", rolledRevoked.ID, cli); err != nil {
		t.Fatal(err)
	}

	graceEnd := us(start).Add(time.Hour)
	always := []string{"active", "disabled org", "expired", "inactive", "other org",
		"rolled without grace: new", "rolled: new"}
	for _, tc := range []struct {
		name string
		now  time.Time
		want []string
	}{
		{"in grace", start.Add(2 * time.Minute), append(slices.Clone(always), "rolled: old")},
		{"last microsecond of grace", graceEnd.Add(-time.Microsecond), append(slices.Clone(always), "rolled: old")},
		{"grace over", graceEnd, always},
		{"long after", graceEnd.Add(24 * time.Hour), always},
	} {
		slices.Sort(tc.want)
		if diff := cmp.Diff(tc.want, e.liveTokens(t, tc.now, names)); diff != "" {
			t.Errorf("%s: LiveTokenHashes(%v) (-want +got):\n%s", tc.name, tc.now, diff)
		}
	}
}

// recentFixture creates keys over three organizations (one disabled), uses
// some of them, and returns the key names in the order RecentKeys must
// report their decidable tokens at e.clock.Now(), a name per token (a key
// with a token in its grace appears twice), with the names of keys and
// tokens.
func recentFixture(t *testing.T, e *env) (want []string, keyNames map[string]string, tokenNames map[keygate.Hash]string) {
	for _, org := range []string{"acme", "other", "off"} {
		e.org(t, org)
	}
	keyNames = map[string]string{}
	tokenNames = map[keygate.Hash]string{}
	keys := map[string]keygate.Key{}
	mk := func(name, org string, mod ...func(*store.NewKey)) keygate.Key {
		e.clock.Advance(time.Second) // created_at orders the keys never used
		nk := newKey(t, org, mod...)
		k := e.key(t, nk)
		keyNames[k.ID], tokenNames[nk.Token.Hash], keys[name] = name, name, k
		return k
	}
	roll := func(k keygate.Key, grace time.Duration) {
		tok := newToken(t)
		tokenNames[tok.Hash] = keyNames[k.ID] + ": new"
		if _, err := e.s.RollKey(e.ctx, k.OrgID, k.ID, tok, grace, cli); err != nil {
			t.Fatal(err)
		}
	}
	mk("old unused", "acme")
	mk("used early", "acme")
	inactive := mk("inactive, used early too", "acme")
	if _, err := e.s.UpdateKey(e.ctx, "acme", inactive.ID, store.KeyUpdate{Active: ptr(false)}, cli); err != nil {
		t.Fatal(err)
	}
	mk("other org", "other")
	mk("expired unused", "acme", func(nk *store.NewKey) { nk.ExpiresAt = ptr(e.clock.Now().Add(time.Second)) })
	mk("disabled org", "off")
	if _, err := e.s.SetOrganizationDisabled(e.ctx, "off", true, cli); err != nil {
		t.Fatal(err)
	}
	revoked := mk("revoked", "acme")
	roll(mk("rolled", "acme"), time.Hour)
	roll(mk("rolled past grace", "acme"), time.Minute)
	mk("new unused", "acme")

	t0 := e.clock.Now()
	var uses []store.LastUse
	for name, after := range map[string]time.Duration{
		"used early":               time.Minute,
		"inactive, used early too": time.Minute, // a tie: created later comes first
		"rolled":                   3 * time.Minute,
		"other org":                4 * time.Minute,
		"disabled org":             5 * time.Minute,
		"rolled past grace":        6 * time.Minute,
		"revoked":                  10 * time.Minute,
	} {
		uses = append(uses, store.LastUse{KeyID: keys[name].ID, At: t0.Add(after)})
	}
	if err := e.s.RecordLastUsed(e.ctx, uses); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.RevokeKey(e.ctx, "acme", revoked.ID, cli); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute) // past the grace of "rolled past grace"
	return []string{"rolled past grace", "disabled org", "other org", "rolled", "rolled",
		"inactive, used early too", "used early", "new unused", "expired unused", "old unused"}, keyNames, tokenNames
}

// Warm start loads RecentKeys into the cache in place of lookups, so each
// record is exactly what LookupKey returns for its hash, and the keys come
// most recently used first, never-used ones after them newest first.
func testRecentKeys(t *testing.T, e *env) {
	want, keyNames, tokenNames := recentFixture(t, e)
	var got, gotTokens []string
	err := e.s.RecentKeys(e.ctx, 100, e.clock.Now(), func(h keygate.Hash, rec *keygate.KeyRecord) error {
		got = append(got, keyNames[rec.Key.ID])
		gotTokens = append(gotTokens, tokenNames[h])
		// The store answers during the walk (the caller may look up).
		lookedUp := e.lookup(t, h)
		if diff := cmp.Diff(lookedUp, rec, cmpOpts, cmpopts.IgnoreFields(keygate.KeyRecord{}, "LoadedAt")); diff != "" {
			t.Errorf("token %q: RecentKeys record differs from LookupKey's (-lookup +recent):\n%s", tokenNames[h], diff)
		}
		if !rec.LoadedAt.Equal(e.clock.Now()) {
			t.Errorf("token %q: LoadedAt %v, want the store's clock %v", tokenNames[h], rec.LoadedAt, e.clock.Now())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("RecentKeys: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RecentKeys order by key (-want +got):\n%s", diff)
	}
	wantTokens := []string{"rolled past grace: new", "disabled org", "other org", "rolled", "rolled: new",
		"inactive, used early too", "used early", "new unused", "expired unused", "old unused"}
	slices.Sort(wantTokens)
	slices.Sort(gotTokens)
	if diff := cmp.Diff(wantTokens, gotTokens); diff != "" {
		t.Errorf("RecentKeys tokens (-want +got):\n%s", diff)
	}
}

func testRecentKeysLimit(t *testing.T, e *env) {
	all, keyNames, _ := recentFixture(t, e)
	for _, n := range []int{-1, 0, 1, 3, 4, len(all) - 1, len(all), len(all) + 1} {
		var got []string
		err := e.s.RecentKeys(e.ctx, n, e.clock.Now(), func(_ keygate.Hash, rec *keygate.KeyRecord) error {
			got = append(got, keyNames[rec.Key.ID])
			return nil
		})
		if err != nil {
			t.Fatalf("RecentKeys(n=%d): %v", n, err)
		}
		want := all[:min(max(n, 0), len(all))]
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("RecentKeys(n=%d) (-want +got):\n%s", n, diff)
		}
	}
}

// An error from fn ends the walk at once and is returned as is; the walk
// gives back what it held, so walks stopped early, more of them than a
// pool has connections, leave the store answering.
func testWalksStop(t *testing.T, e *env) {
	e.org(t, "acme")
	var hash keygate.Hash
	for range 3 {
		nk := newKey(t, "acme")
		e.key(t, nk)
		hash = nk.Token.Hash
	}
	stop := errors.New("stop")
	// A walk that kept its connection would leave the next ones waiting
	// for the pool: bounded, so that shows as a failure, not a hang.
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	for i := range 20 {
		calls := 0
		err := e.s.LiveTokenHashes(ctx, e.clock.Now(), func(keygate.Hash) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("walk %d: LiveTokenHashes = %v after %d calls, want fn's error after 1", i, err, calls)
		}
		calls = 0
		err = e.s.RecentKeys(ctx, 10, e.clock.Now(), func(keygate.Hash, *keygate.KeyRecord) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("walk %d: RecentKeys = %v after %d calls, want fn's error after 1", i, err, calls)
		}
	}
	if _, err := e.s.LookupKey(ctx, hash); err != nil {
		t.Errorf("LookupKey after walks stopped early: %v", err)
	}
}

func testReportLeak(t *testing.T, e *env) {
	e.org(t, "acme")
	by := keygate.Actor{RequestID: "req_leak"}
	for _, tc := range []struct {
		action      store.LeakAction
		kind        keygate.EventKind // empty: no key event
		revoked     bool
		deactivated bool
	}{
		{store.LeakRevoke, keygate.EventKeyRevoked, true, false},
		{store.LeakDeactivate, keygate.EventKeyUpdated, false, true},
		{store.LeakNotify, "", false, false},
	} {
		t.Run(string(tc.action), func(t *testing.T) {
			nk := newKey(t, "acme")
			e.key(t, nk)
			before := e.allEvents(t)
			e.clock.Advance(time.Second)
			k, err := e.s.ReportLeak(e.ctx, "acme", nk.ID, store.LeakReport{Action: tc.action,
				URL: "https://github.com/o/r/blob/main/x.env", Source: "content"}, by)
			if err != nil {
				t.Fatalf("ReportLeak: %v", err)
			}
			if got := k.RevokedAt != nil; got != tc.revoked {
				t.Errorf("revoked_at set %v, want %v", got, tc.revoked)
			}
			if got := k.DisabledAt != nil; got != tc.deactivated {
				t.Errorf("disabled_at set %v, want %v", got, tc.deactivated)
			}
			rec := e.lookup(t, nk.Token.Hash)
			if got := rec.Key.RevokedAt != nil; got != tc.revoked {
				t.Errorf("lookup: revoked_at set %v, want %v", got, tc.revoked)
			}
			evs := e.allEvents(t)[len(before):]
			switch {
			case tc.kind == "" && len(evs) != 0:
				t.Errorf("key events %v, want none for notify", evs)
			case tc.kind != "" && (len(evs) != 1 || evs[0].Kind != tc.kind || evs[0].KeyID != nk.ID ||
				len(evs[0].Hashes) != 1 || evs[0].Hashes[0] != nk.Token.Hash):
				t.Errorf("key events %+v, want one %s of %s with its hash", evs, tc.kind, nk.ID)
			}
			audit := e.allAudit(t, "acme")[0]
			want := keygate.AuditEvent{ID: audit.ID, Action: keygate.AuditKeyLeaked, KeyID: nk.ID, OrgID: "acme",
				RequestID: "req_leak", CreatedAt: audit.CreatedAt,
				URL: "https://github.com/o/r/blob/main/x.env", Source: "content"}
			if diff := cmp.Diff(want, audit); diff != "" {
				t.Errorf("audit event (-want +got):\n%s", diff)
			}
		})
	}
	// A revoked key is not live: nothing to report.
	nk := newKey(t, "acme")
	e.key(t, nk)
	if _, err := e.s.RevokeKey(e.ctx, "acme", nk.ID, cli); err != nil {
		t.Fatal(err)
	}
	_, err := e.s.ReportLeak(e.ctx, "acme", nk.ID, store.LeakReport{Action: store.LeakRevoke}, cli)
	wantErr(t, "ReportLeak(revoked)", err, keygate.ErrNotFound)
	// Other audit events carry no url or source.
	for _, a := range e.allAudit(t, "acme") {
		if a.Action != keygate.AuditKeyLeaked && (a.URL != "" || a.Source != "") {
			t.Errorf("%s audit event has url %q source %q", a.Action, a.URL, a.Source)
		}
	}
}

// testWritesRecordEventSeq pins store.WithEventSeq: each key write records
// the sequence of the event it committed, even when another write commits
// after it, and a failed write records nothing.
func testWritesRecordEventSeq(t *testing.T, e *env) {
	e.org(t, "acme")
	k := e.key(t, newKey(t, "acme"))
	other := e.key(t, newKey(t, "acme"))
	writes := []struct {
		name  string
		write func(ctx context.Context) error
	}{
		{"update", func(ctx context.Context) error {
			_, err := e.s.UpdateKey(ctx, "acme", k.ID, store.KeyUpdate{Name: ptr("renamed")}, cli)
			return err
		}},
		{"roll", func(ctx context.Context) error {
			_, err := e.s.RollKey(ctx, "acme", k.ID, newToken(t), 0, cli)
			return err
		}},
		{"revoke", func(ctx context.Context) error {
			_, err := e.s.RevokeKey(ctx, "acme", k.ID, cli)
			return err
		}},
	}
	for _, w := range writes {
		ctx, got := store.WithEventSeq(e.ctx)
		if err := w.write(ctx); err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		// A later write, made without the recorder, must not change it.
		if _, err := e.s.UpdateKey(e.ctx, "acme", other.ID, store.KeyUpdate{Name: ptr(w.name)}, cli); err != nil {
			t.Fatal(err)
		}
		evs := e.allEvents(t)
		want := evs[len(evs)-2]
		if got.Seq() != want.Seq || want.KeyID != k.ID {
			t.Errorf("%s: recorded seq %d, want %d (event %s of key %s)", w.name, got.Seq(), want.Seq, want.Kind, want.KeyID)
		}
	}
	ctx, got := store.WithEventSeq(e.ctx)
	if _, err := e.s.RevokeKey(ctx, "acme", k.ID, cli); err == nil {
		t.Fatal("second revoke succeeded")
	}
	if got.Seq() != 0 {
		t.Errorf("failed write recorded seq %d, want 0", got.Seq())
	}
}
