package storetest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// importKey is newKey with a foreign token: its hash, a prefix and last4
// as another system showed them.
func importKey(t *testing.T, org, token string, mod ...func(*store.NewKey)) store.NewKey {
	t.Helper()
	nk := newKey(t, org, mod...)
	nk.Token = store.NewToken{Hash: apikey.HashString(token), Prefix: token[:6], Last4: token[len(token)-4:]}
	return nk
}

func testImportKeys(t *testing.T, e *env) {
	e.org(t, "acme")
	e.clock.Advance(time.Second)
	before := len(e.allEvents(t))
	exp := start.Add(time.Hour).Truncate(time.Second)
	ks := []store.NewKey{
		importKey(t, "acme", "legacy_token_number_one"),
		importKey(t, "acme", "legacy_token_number_two", func(nk *store.NewKey) {
			nk.UserID, nk.Name, nk.Type, nk.Environment = "bob", "Imported two", keygate.Publishable, keygate.Test
			nk.Scopes, nk.ProjectIDs, nk.RateLimitPerMinute = []string{"read"}, []string{"p1"}, ptr(7)
			nk.Metadata, nk.ExpiresAt, nk.AllowedSources = []byte(`{"plan":"pro"}`), &exp, []string{"10.0.0.0/8"}
		}),
	}
	by := keygate.Actor{KeyID: "key_admin", RequestID: "req_1"}
	got, err := e.s.ImportKeys(e.ctx, ks, by)
	if err != nil {
		t.Fatalf("ImportKeys: %v", err)
	}
	if len(got) != len(ks) {
		t.Fatalf("ImportKeys returned %d keys, want %d", len(got), len(ks))
	}
	for i, nk := range ks {
		want := keygate.Key{
			ID: nk.ID, OrgID: nk.OrgID, UserID: nk.UserID, Name: nk.Name, Type: nk.Type, Environment: nk.Environment,
			Scopes: nk.Scopes, ProjectIDs: nk.ProjectIDs, RateLimitPerMinute: nk.RateLimitPerMinute,
			Metadata: nk.Metadata, Prefix: nk.Token.Prefix, Last4: nk.Token.Last4,
			CreatedAt: us(e.clock.Now()), ExpiresAt: nk.ExpiresAt, AllowedSources: nk.AllowedSources,
		}
		if want.Metadata == nil {
			want.Metadata = []byte("{}")
		}
		if d := cmp.Diff(want, got[i], cmpOpts); d != "" {
			t.Errorf("imported key %d (-want +got):\n%s", i, d)
		}
		if d := cmp.Diff(got[i], e.lookup(t, nk.Token.Hash).Key, cmpOpts); d != "" {
			t.Errorf("lookup of imported key %d (-returned +looked up):\n%s", i, d)
		}
	}

	// One key.created event per key, naming its hash, so that caches and
	// membership filters learn it as they learn a created key.
	evs := e.allEvents(t)[before:]
	if len(evs) != len(ks) {
		t.Fatalf("%d key events, want %d", len(evs), len(ks))
	}
	for i, ev := range evs {
		if ev.Kind != keygate.EventKeyCreated || ev.KeyID != ks[i].ID || len(ev.Hashes) != 1 || ev.Hashes[0] != ks[i].Token.Hash {
			t.Errorf("event %d = %s key %s hashes %d, want key.created of %s with its hash", i, ev.Kind, ev.KeyID, len(ev.Hashes), ks[i].ID)
		}
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Errorf("event seqs not increasing: %d after %d", ev.Seq, evs[i-1].Seq)
		}
	}
	var live []keygate.Hash
	if err := e.s.LiveTokenHashes(e.ctx, e.clock.Now(), func(h keygate.Hash) error { live = append(live, h); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, nk := range ks {
		if !slices.Contains(live, nk.Token.Hash) {
			t.Errorf("LiveTokenHashes lacks the imported key %s", nk.ID)
		}
	}

	// One api_key.imported audit event per key, with the actor.
	audit := map[string]keygate.AuditEvent{}
	for _, a := range e.allAudit(t, "acme") {
		if a.Action == keygate.AuditKeyImported {
			audit[a.KeyID] = a
		}
	}
	if len(audit) != len(ks) {
		t.Fatalf("%d api_key.imported audit events, want %d: %v", len(audit), len(ks), audit)
	}
	for _, nk := range ks {
		a := audit[nk.ID]
		if a.ActorKeyID != by.KeyID || a.RequestID != by.RequestID || a.OrgID != "acme" {
			t.Errorf("audit of %s = %+v, want actor %s request %s", nk.ID, a, by.KeyID, by.RequestID)
		}
	}

	page, err := e.s.ListKeys(e.ctx, store.ListKeys{OrgID: "acme", Limit: 10})
	if err != nil || len(page.Keys) != 2 {
		t.Fatalf("ListKeys: %d keys, %v; want 2", len(page.Keys), err)
	}
}

func testImportConflict(t *testing.T, e *env) {
	e.org(t, "acme")
	e.org(t, "other")
	existingKey := importKey(t, "other", "token_of_another_org_1234")
	e.key(t, existingKey)
	before := len(e.allEvents(t))
	auditBefore := len(e.allAudit(t, "acme"))

	for _, tc := range []struct {
		name string
		ks   []store.NewKey
		want int
	}{
		{"hash of another organization's key", []store.NewKey{
			importKey(t, "acme", "fresh_token_aaaaaaaaaaaa"),
			importKey(t, "acme", "fresh_token_bbbbbbbbbbbb"),
			importKey(t, "acme", "token_of_another_org_1234"),
		}, 2},
		{"same hash twice in one call", []store.NewKey{
			importKey(t, "acme", "fresh_token_cccccccccccc"),
			importKey(t, "acme", "fresh_token_dddddddddddd"),
			importKey(t, "acme", "fresh_token_cccccccccccc"),
		}, 2},
	} {
		_, err := e.s.ImportKeys(e.ctx, tc.ks, cli)
		var ce *store.ImportItemError
		if !errors.As(err, &ce) || ce.Index != tc.want || !errors.Is(err, keygate.ErrConflict) {
			t.Errorf("%s: ImportKeys error %v, want an ImportItemError with ErrConflict at %d", tc.name, err, tc.want)
		}
		for _, nk := range tc.ks {
			if _, err := e.s.GetKey(e.ctx, "acme", nk.ID); !errors.Is(err, keygate.ErrNotFound) {
				t.Errorf("%s: key %s was written (GetKey: %v); want the whole call rolled back", tc.name, nk.ID, err)
			}
		}
	}
	if n := len(e.allEvents(t)); n != before {
		t.Errorf("%d key events after refused imports, want %d", n, before)
	}
	if n := len(e.allAudit(t, "acme")); n != auditBefore {
		t.Errorf("%d audit events after refused imports, want %d", n, auditBefore)
	}
	if rec := e.lookup(t, existingKey.Token.Hash); rec.Key.OrgID != "other" {
		t.Errorf("existing key now in %s", rec.Key.OrgID)
	}
}

// testImportThousand imports the most one call may hold and logs how long
// it took (measured, not asserted: SPEC §9 asks for one transaction).
func testImportThousand(t *testing.T, e *env) {
	e.org(t, "acme")
	ks := make([]store.NewKey, 1000)
	for i := range ks {
		ks[i] = newKey(t, "acme")
	}
	begin := time.Now()
	got, err := e.s.ImportKeys(e.ctx, ks, cli)
	took := time.Since(begin)
	if err != nil || len(got) != len(ks) {
		t.Fatalf("ImportKeys(1000): %d keys, %v", len(got), err)
	}
	t.Logf("ImportKeys of %d keys took %v", len(ks), took)
	if rec := e.lookup(t, ks[999].Token.Hash); rec.Key.ID != ks[999].ID {
		t.Errorf("last key looked up as %s", rec.Key.ID)
	}
	if n := len(e.allEvents(t)); n != 1000 {
		t.Errorf("%d key events, want 1000", n)
	}
}

// An import that asks for its organization (the CLI's) creates it, with
// its audit event, in the import's transaction: a refused import leaves
// no organization behind.
func testImportCreatesOrganization(t *testing.T, e *env) {
	e.org(t, "other")
	e.key(t, importKey(t, "other", "token_of_another_org_5678"))
	create := func(nk *store.NewKey) { nk.CreateOrganization = true }
	_, err := e.s.ImportKeys(e.ctx, []store.NewKey{
		importKey(t, "fresh", "fresh_token_eeeeeeeeeeee", create),
		importKey(t, "fresh", "token_of_another_org_5678", create),
	}, cli)
	if !errors.Is(err, keygate.ErrConflict) {
		t.Fatalf("ImportKeys = %v, want a conflict", err)
	}
	if _, err := e.s.GetOrganization(e.ctx, "fresh"); !errors.Is(err, keygate.ErrNotFound) {
		t.Fatalf("organization fresh after a refused import: %v; want not found", err)
	}
	got, err := e.s.ImportKeys(e.ctx, []store.NewKey{
		importKey(t, "fresh", "fresh_token_ffffffffffff", create),
		importKey(t, "fresh", "fresh_token_gggggggggggg", create),
	}, cli)
	if err != nil || len(got) != 2 {
		t.Fatalf("ImportKeys: %d keys, %v", len(got), err)
	}
	if _, err := e.s.GetOrganization(e.ctx, "fresh"); err != nil {
		t.Fatalf("organization fresh after the import: %v", err)
	}
	var created int
	for _, a := range e.allAudit(t, "fresh") {
		if a.Action == keygate.AuditOrgCreated {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d organization.created audit events, want 1", created)
	}
}
