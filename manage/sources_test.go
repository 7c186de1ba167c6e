package manage

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store/sqlite"
)

func sourcesService(t *testing.T) (*Service, context.Context) {
	t.Helper()
	return New(liteStore(t), apikey.DefaultFormat(), time.Now), context.Background()
}

// liteStore is a fresh, migrated embedded store, closed when the test ends.
func liteStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "keygate.db"), Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestCreateKey_AllowedSourcesValidated(t *testing.T) {
	svc, ctx := sourcesService(t)
	k, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "k", Role: "owner", CreateOrganization: true,
		AllowedSources: []string{"spiffe://mesh.local/ns/a/*", "10.0.0.0/8", "10.0.0.0/8", "::ffff:192.0.2.1"}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.0/8", "192.0.2.1", "spiffe://mesh.local/ns/a/*"}; !slices.Equal(k.Key.AllowedSources, want) {
		t.Errorf("AllowedSources = %v, want %v", k.Key.AllowedSources, want)
	}
	for _, tc := range []struct {
		list  []string
		param string
	}{
		{[]string{"10.0.0.0/8", "not-an-ip"}, "allowed_sources[1]"},
		{[]string{"10.0.0.1/8"}, "allowed_sources[0]"},
		{[]string{"spiffe://Mesh/x"}, "allowed_sources[0]"},
		{slices.Repeat([]string{"192.0.2.1"}, 33), "allowed_sources"},
	} {
		_, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "k", Role: "owner", AllowedSources: tc.list}, keygate.Actor{})
		var e *keygate.Error
		if !asError(err, &e) || e.Code != keygate.CodeInvalidRequest || e.Param != tc.param {
			t.Errorf("CreateKey(%v) = %v, want invalid_request on %s", tc.list, err, tc.param)
		}
	}
}

func asError(err error, e **keygate.Error) bool {
	x, ok := err.(*keygate.Error)
	*e = x
	return ok
}

// A constrained caller creates keys inside its own sources only, and by
// default with its own (SPEC §11); PATCH may not widen them (SPEC §5).
func TestAllowedSources_CallerBounds(t *testing.T) {
	svc, ctx := sourcesService(t)
	caller, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "ci", Role: "owner", CreateOrganization: true,
		AllowedSources: []string{"10.0.0.0/8", "spiffe://mesh.local/ns/a/*"}}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	c := Caller{Key: caller.Key}
	def, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(def.Key.AllowedSources, caller.Key.AllowedSources) {
		t.Errorf("default AllowedSources = %v, want the caller's %v", def.Key.AllowedSources, caller.Key.AllowedSources)
	}
	for _, ok := range [][]string{
		{"10.1.0.0/16"}, {"10.2.3.4"}, {"10.0.0.0/8"}, {"spiffe://mesh.local/ns/a/sa/web"}, {"spiffe://mesh.local/ns/a/*"},
		{"spiffe://mesh.local/ns/a/b/*", "10.9.0.0/16"},
	} {
		if _, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "inside", AllowedSources: &ok}); err != nil {
			t.Errorf("create with %v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{
		{}, {"0.0.0.0/0"}, {"10.0.0.0/7"}, {"11.0.0.1"}, {"::/0"}, {"spiffe://other.local/ns/a/x"},
		{"spiffe://mesh.local/*"}, {"spiffe://mesh.local/ns/b/x"}, {"10.1.0.0/16", "192.0.2.1"},
	} {
		_, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "outside", AllowedSources: &bad})
		if e, _ := err.(*keygate.Error); e == nil || e.Code != keygate.CodeInsufficientPermissions || e.Param != "allowed_sources" {
			t.Errorf("create with %v = %v, want insufficient_permissions on allowed_sources", bad, err)
		}
	}

	// PATCH of a key the caller created: narrowing is fine, widening
	// beyond the caller is refused, emptying is widening.
	narrow := []string{"10.1.0.0/16"}
	k, err := svc.CreateKeyAs(ctx, c, CreateRequest{Name: "narrow", AllowedSources: &narrow})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{}, {"0.0.0.0/0"}, {"spiffe://other.local/x"}} {
		_, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{AllowedSources: &bad})
		if keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
			t.Errorf("PATCH allowed_sources %v = %v, want insufficient_permissions", bad, err)
		}
	}
	wider := []string{"10.0.0.0/8"} // wider than the key, inside the caller
	got, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{AllowedSources: &wider})
	if err != nil || !slices.Equal(got.AllowedSources, wider) {
		t.Errorf("PATCH within the caller = %v, %v", got.AllowedSources, err)
	}
	narrower := []string{"10.1.2.0/24"}
	if got, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{AllowedSources: &narrower}); err != nil || !slices.Equal(got.AllowedSources, narrower) {
		t.Errorf("narrowing PATCH = %v, %v", got.AllowedSources, err)
	}
	bad := []string{"nope"}
	if _, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{AllowedSources: &bad}); keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
		t.Errorf("PATCH with a bad entry = %v, want invalid_request", err)
	}

	// A bound key whose caller is unbound: emptying is widening, which an
	// unbound owner may do; a bound member may not even touch a key bound
	// elsewhere.
	owner, err := svc.CreateKey(ctx, NewKey{OrgID: "acme", UserID: "alice", Name: "owner", Role: "owner"}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := svc.UpdateKeyAs(ctx, Caller{Key: owner.Key}, k.Key.ID, KeyChanges{AllowedSources: &[]string{}}); err != nil || len(got.AllowedSources) != 0 {
		t.Errorf("unbound owner emptying = %v, %v", got.AllowedSources, err)
	}
	if _, err := svc.UpdateKeyAs(ctx, c, k.Key.ID, KeyChanges{AllowedSources: &narrower}); err != nil {
		t.Errorf("bound caller narrowing an unbound key = %v", err)
	}
	// Rolling a key mints a credential: its sources must lie within the
	// caller's too.
	if _, err := svc.RollKeyAs(ctx, c, owner.Key.ID, 0); keygate.ErrorCode(err) != keygate.CodeInsufficientPermissions {
		t.Errorf("bound caller rolling an unbound key = %v, want insufficient_permissions", err)
	}
}
