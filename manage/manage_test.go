package manage

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// fakeStore records what management writes; it is all the store the rules
// need.
type fakeStore struct {
	orgs     map[string]keygate.Organization
	created  []store.NewKey
	revoked  []string
	pages    []store.KeyPage
	listReqs []store.ListKeys
}

func newFakeStore() *fakeStore { return &fakeStore{orgs: map[string]keygate.Organization{}} }

func (f *fakeStore) CreateOrganization(_ context.Context, id string, _ keygate.Actor) (keygate.Organization, error) {
	if _, ok := f.orgs[id]; ok {
		return keygate.Organization{}, keygate.ErrConflict
	}
	f.orgs[id] = keygate.Organization{ID: id}
	return f.orgs[id], nil
}

func (f *fakeStore) EnsureOrganization(_ context.Context, id string, _ keygate.Actor) (keygate.Organization, error) {
	if _, ok := f.orgs[id]; !ok {
		f.orgs[id] = keygate.Organization{ID: id}
	}
	return f.orgs[id], nil
}

func (f *fakeStore) SetOrganizationDisabled(_ context.Context, id string, disabled bool, _ keygate.Actor) (keygate.Organization, error) {
	o, ok := f.orgs[id]
	if !ok {
		return o, keygate.ErrNotFound
	}
	o.DisabledAt = nil
	if disabled {
		t := time.Unix(1, 0)
		o.DisabledAt = &t
	}
	f.orgs[id] = o
	return o, nil
}

func (f *fakeStore) CreateKey(_ context.Context, k store.NewKey, _ keygate.Actor) (keygate.Key, error) {
	if _, ok := f.orgs[k.OrgID]; !ok {
		return keygate.Key{}, keygate.ErrNotFound
	}
	f.created = append(f.created, k)
	return keygate.Key{ID: k.ID, OrgID: k.OrgID, UserID: k.UserID, Name: k.Name, Type: k.Type, Environment: k.Environment,
		Scopes: k.Scopes, ProjectIDs: k.ProjectIDs, Metadata: k.Metadata, Prefix: k.Token.Prefix, Last4: k.Token.Last4}, nil
}

func (f *fakeStore) ImportKeys(ctx context.Context, ks []store.NewKey, by keygate.Actor) ([]keygate.Key, error) {
	keys := make([]keygate.Key, 0, len(ks))
	if len(ks) > 0 && ks[0].CreateOrganization {
		_, _ = f.EnsureOrganization(ctx, ks[0].OrgID, by)
	}
	for _, k := range ks {
		key, err := f.CreateKey(ctx, k, by)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

func (f *fakeStore) RevokeKey(_ context.Context, orgID, id string, _ keygate.Actor) (keygate.Key, error) {
	f.revoked = append(f.revoked, orgID+"/"+id)
	return keygate.Key{ID: id, OrgID: orgID}, nil
}

func (f *fakeStore) GetOrganization(_ context.Context, id string) (keygate.Organization, error) {
	o, ok := f.orgs[id]
	if !ok {
		return o, keygate.ErrNotFound
	}
	return o, nil
}

// The rules of the *As operations are tested against the real stores in
// httpapi; these only satisfy Store.
func (f *fakeStore) GetKey(context.Context, string, string) (keygate.Key, error) {
	return keygate.Key{}, keygate.ErrNotFound
}

func (f *fakeStore) UpdateKey(context.Context, string, string, store.KeyUpdate, keygate.Actor) (keygate.Key, error) {
	return keygate.Key{}, keygate.ErrNotFound
}

func (f *fakeStore) RollKey(context.Context, string, string, store.NewToken, time.Duration, keygate.Actor) (keygate.Key, error) {
	return keygate.Key{}, keygate.ErrNotFound
}

func (f *fakeStore) ListAuditEvents(context.Context, store.ListAuditEvents) (store.AuditPage, error) {
	return store.AuditPage{}, nil
}

func (f *fakeStore) ListKeys(_ context.Context, q store.ListKeys) (store.KeyPage, error) {
	f.listReqs = append(f.listReqs, q)
	p := f.pages[0]
	f.pages = f.pages[1:]
	return p, nil
}

var now = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newService(st Store) *Service {
	return New(st, apikey.DefaultFormat(), func() time.Time { return now })
}

func valid() NewKey {
	return NewKey{OrgID: "acme", UserID: "alice", Name: "CI Pipeline", Role: "member", CreateOrganization: true}
}

func ptr[T any](v T) *T { return &v }

func TestCreateKey_RejectsInvalidFields(t *testing.T) {
	past := now.Add(-time.Second)
	tests := []struct {
		name      string
		edit      func(*NewKey)
		wantParam string
	}{
		{"missing org", func(k *NewKey) { k.OrgID = "" }, "org_id"},
		{"org with space", func(k *NewKey) { k.OrgID = "ac me" }, "org_id"},
		{"org with comma", func(k *NewKey) { k.OrgID = "a,b" }, "org_id"},
		{"org too long", func(k *NewKey) { k.OrgID = strings.Repeat("a", 129) }, "org_id"},
		{"missing user", func(k *NewKey) { k.UserID = "" }, "user_id"},
		{"user with newline", func(k *NewKey) { k.UserID = "al\nice" }, "user_id"},
		{"empty name", func(k *NewKey) { k.Name = "" }, "name"},
		{"name of 201 characters", func(k *NewKey) { k.Name = strings.Repeat("é", 201) }, "name"},
		{"name with control character", func(k *NewKey) { k.Name = "CI\x07" }, "name"},
		{"name with newline", func(k *NewKey) { k.Name = "CI\nPipeline" }, "name"},
		{"name not UTF-8", func(k *NewKey) { k.Name = "CI\xff" }, "name"},
		{"role and scopes", func(k *NewKey) { k.Scopes = []string{"read"} }, "role"},
		{"unknown role", func(k *NewKey) { k.Role = "root" }, "role"},
		{"scope with upper case", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"Read"} }, "scopes"},
		{"scope starting with digit", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"1read"} }, "scopes"},
		{"empty scope", func(k *NewKey) { k.Role = ""; k.Scopes = []string{""} }, "scopes"},
		{"scope of 65 characters", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"a" + strings.Repeat("b", 64)} }, "scopes"},
		{"scope with space", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"read write"} }, "scopes"},
		{"too many scopes", func(k *NewKey) {
			k.Role = ""
			for i := range MaxScopes + 1 {
				k.Scopes = append(k.Scopes, "s"+strings.Repeat("x", i%60))
			}
		}, "scopes"},
		{"project with slash", func(k *NewKey) { k.ProjectIDs = []string{"a/b"} }, "project_ids"},
		{"empty project", func(k *NewKey) { k.ProjectIDs = []string{""} }, "project_ids"},
		{"too many projects", func(k *NewKey) { k.ProjectIDs = make([]string, MaxProjects+1) }, "project_ids"},
		{"unknown type", func(k *NewKey) { k.Type = "private" }, "type"},
		{"unknown environment", func(k *NewKey) { k.Environment = "prod" }, "environment"},
		{"expiry in the past", func(k *NewKey) { k.ExpiresAt = &past }, "expires_at"},
		{"expiry now", func(k *NewKey) { k.ExpiresAt = ptr(now) }, "expires_at"},
		{"negative rate limit", func(k *NewKey) { k.RateLimitPerMinute = ptr(-1) }, "rate_limit_per_minute"},
		{"metadata array", func(k *NewKey) { k.Metadata = json.RawMessage(`[1]`) }, "metadata"},
		{"metadata string", func(k *NewKey) { k.Metadata = json.RawMessage(`"plan"`) }, "metadata"},
		{"metadata not JSON", func(k *NewKey) { k.Metadata = json.RawMessage(`{plan:1}`) }, "metadata"},
		{"metadata over 4096 bytes", func(k *NewKey) {
			k.Metadata = json.RawMessage(`{"x":"` + strings.Repeat("a", 4096-7) + `"}`)
		}, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			nk := valid()
			tt.edit(&nk)
			_, err := newService(st).CreateKey(context.Background(), nk, keygate.Actor{})
			var e *keygate.Error
			if !errors.As(err, &e) {
				t.Fatalf("CreateKey: err = %v, want *keygate.Error", err)
			}
			if got, want := [2]string{string(e.Code), e.Param}, [2]string{string(keygate.CodeInvalidRequest), tt.wantParam}; got != want {
				t.Errorf("CreateKey: (code, param) = %v, want %v (%v)", got, want, err)
			}
			if len(st.created) != 0 || len(st.orgs) != 0 {
				t.Errorf("CreateKey wrote to the store before validating: %d keys, %d orgs", len(st.created), len(st.orgs))
			}
		})
	}
}

func TestCreateKey_AcceptsBoundaryValues(t *testing.T) {
	tests := []struct {
		name string
		edit func(*NewKey)
	}{
		{"name of 200 characters", func(k *NewKey) { k.Name = strings.Repeat("é", 200) }},
		{"name of one character", func(k *NewKey) { k.Name = "x" }},
		{"scope of 64 characters", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"a" + strings.Repeat("b", 63)} }},
		{"scope with punctuation", func(k *NewKey) { k.Role = ""; k.Scopes = []string{"billing:read", "a.b_c-d"} }},
		{"no scopes", func(k *NewKey) { k.Role = "" }},
		{"unlimited rate", func(k *NewKey) { k.RateLimitPerMinute = ptr(0) }},
		{"metadata of 4096 bytes", func(k *NewKey) {
			k.Metadata = json.RawMessage(`{"x":"` + strings.Repeat("a", 4096-8) + `"}`)
		}},
		{"metadata null", func(k *NewKey) { k.Metadata = json.RawMessage(`null`) }},
		{"publishable test key", func(k *NewKey) { k.Type = keygate.Publishable; k.Environment = keygate.Test }},
		{"email user", func(k *NewKey) { k.UserID = "alice@example.com" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nk := valid()
			tt.edit(&nk)
			if _, err := newService(newFakeStore()).CreateKey(context.Background(), nk, keygate.Actor{}); err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
		})
	}
}

func TestCreateKey_NormalizesAndStoresOnlyTheHash(t *testing.T) {
	st := newFakeStore()
	expires := now.Add(time.Hour)
	nk := NewKey{
		OrgID: "acme", UserID: "alice", Name: "CI",
		Scopes:     []string{"write", "read", "write"},
		ProjectIDs: []string{"p2", "p1", "p2"},
		ExpiresAt:  &expires, RateLimitPerMinute: ptr(10),
		Metadata:           json.RawMessage(`{ "plan" : "pro" }`),
		CreateOrganization: true,
	}
	got, err := newService(st).CreateKey(context.Background(), nk, keygate.Actor{})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if len(st.created) != 1 {
		t.Fatalf("store got %d keys, want 1", len(st.created))
	}
	stored := st.created[0]
	tok, err := apikey.DefaultFormat().Parse(got.Token.String())
	if err != nil {
		t.Fatalf("token %q does not parse: %v", got.Token.String(), err)
	}
	want := store.NewKey{
		ID: stored.ID, OrgID: "acme", UserID: "alice", Name: "CI",
		Type: keygate.Secret, Environment: keygate.Live,
		Scopes: []string{"read", "write"}, ProjectIDs: []string{"p1", "p2"},
		RateLimitPerMinute: ptr(10), Metadata: json.RawMessage(`{"plan":"pro"}`), ExpiresAt: &expires,
		Token: store.NewToken{Hash: sha256.Sum256([]byte(tok.String())), Prefix: tok.Prefix(), Last4: tok.Last4()},
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored key (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(stored.ID, "key_") || len(stored.ID) != 24 {
		t.Errorf("id = %q, want key_ and 20 characters", stored.ID)
	}
	if !strings.HasPrefix(tok.String(), "sk_live_") || len(tok.String()) != 46 {
		t.Errorf("token shape = %d characters starting %q", len(tok.String()), tok.Prefix())
	}
	if _, ok := st.orgs["acme"]; !ok {
		t.Error("organization acme was not created")
	}
}

// The CLI's --expires-in gives now+duration, with a fraction whenever now
// has one; the key must not end before it, and the stored instant must be
// the whole second that every transport shows (SPEC §2).
func TestCreateKey_ExpiryRoundsUpToAWholeSecond(t *testing.T) {
	for _, tt := range []struct {
		name      string
		expiresAt time.Time
		want      time.Time
	}{
		{"whole", now.Add(time.Hour), now.Add(time.Hour)},
		{"a nanosecond past", now.Add(time.Hour + time.Nanosecond), now.Add(time.Hour + time.Second)},
		{"a fraction past", now.Add(time.Hour + 700*time.Millisecond), now.Add(time.Hour + time.Second)},
		{"in another zone", now.Add(time.Hour + time.Millisecond).In(time.FixedZone("CET", 3600)), now.Add(time.Hour + time.Second)},
		{"less than a second ahead", now.Add(time.Millisecond), now.Add(time.Second)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			nk := valid()
			nk.ExpiresAt = &tt.expiresAt
			if _, err := newService(st).CreateKey(context.Background(), nk, keygate.Actor{}); err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			if got := st.created[0].ExpiresAt; got == nil || !got.Equal(tt.want) {
				t.Errorf("stored expires_at %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCreateKey_RoleGivesScopes(t *testing.T) {
	for role, want := range map[string][]string{
		"owner": {"admin", "read", "write"}, "admin": {"admin", "read", "write"},
		"member": {"read", "write"}, "viewer": {"read"},
	} {
		st := newFakeStore()
		nk := valid()
		nk.Role = role
		if _, err := newService(st).CreateKey(context.Background(), nk, keygate.Actor{}); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if diff := cmp.Diff(want, st.created[0].Scopes); diff != "" {
			t.Errorf("role %s scopes (-want +got):\n%s", role, diff)
		}
	}
}

func TestCreateKey_MissingOrganizationIsNotFoundWithoutCreate(t *testing.T) {
	nk := valid()
	nk.CreateOrganization = false
	_, err := newService(newFakeStore()).CreateKey(context.Background(), nk, keygate.Actor{})
	if got := keygate.ErrorCode(err); got != keygate.CodeNotFound {
		t.Errorf("code = %q, want not_found (%v)", got, err)
	}
}

func TestListKeys_ReadsEveryPage(t *testing.T) {
	st := newFakeStore()
	next := &store.Cursor{ID: "key_b"}
	st.pages = []store.KeyPage{
		{Keys: []keygate.Key{{ID: "key_a"}, {ID: "key_b"}}, Next: next},
		{Keys: []keygate.Key{{ID: "key_c"}}},
	}
	st.orgs["acme"] = keygate.Organization{ID: "acme"}
	keys, err := newService(st).ListKeys(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	if diff := cmp.Diff([]string{"key_a", "key_b", "key_c"}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
	if st.listReqs[1].After != next {
		t.Errorf("second page asked after %v, want %v", st.listReqs[1].After, next)
	}
}

func TestOrganizations_ValidateIDAndPassThrough(t *testing.T) {
	st := newFakeStore()
	svc := newService(st)
	ctx := context.Background()
	if _, err := svc.CreateOrganization(ctx, "bad id", keygate.Actor{}); keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
		t.Errorf("CreateOrganization(bad id) = %v, want invalid_request", err)
	}
	if _, err := svc.CreateOrganization(ctx, "acme", keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateOrganization(ctx, "acme", keygate.Actor{}); keygate.ErrorCode(err) != keygate.CodeConflict {
		t.Errorf("second CreateOrganization = %v, want conflict", err)
	}
	org, err := svc.DisableOrganization(ctx, "acme", keygate.Actor{})
	if err != nil || org.DisabledAt == nil {
		t.Errorf("DisableOrganization = %+v, %v", org, err)
	}
	org, err = svc.EnableOrganization(ctx, "acme", keygate.Actor{})
	if err != nil || org.DisabledAt != nil {
		t.Errorf("EnableOrganization = %+v, %v", org, err)
	}
	if _, err := svc.DisableOrganization(ctx, "nope", keygate.Actor{}); keygate.ErrorCode(err) != keygate.CodeNotFound {
		t.Errorf("DisableOrganization(nope) = %v, want not_found", err)
	}
}

func TestRevokeKey_RequiresID(t *testing.T) {
	st := newFakeStore()
	svc := newService(st)
	if _, err := svc.RevokeKey(context.Background(), "acme", "", keygate.Actor{}); keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
		t.Errorf("RevokeKey without id = %v, want invalid_request", err)
	}
	if _, err := svc.RevokeKey(context.Background(), "acme", "key_x", keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"acme/key_x"}, st.revoked); diff != "" {
		t.Errorf("revoked (-want +got):\n%s", diff)
	}
}
