package manage

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/keygate/keygate"
)

func TestParseTokenHash(t *testing.T) {
	sum := sha256.Sum256([]byte("legacy-token-0123456789"))
	good := FormatTokenHash(sum)
	if h, err := ParseTokenHash(good); err != nil || h != keygate.Hash(sum) {
		t.Fatalf("ParseTokenHash(%q) = %x, %v", good, h, err)
	}
	for _, bad := range []string{"", "sha256:", good[7:], "SHA256:" + good[7:], "sha256:" + strings.ToUpper(good[7:]),
		good[:len(good)-1], good + "0", good[:len(good)-1] + "g", "sha256: " + good[8:], "sha512:" + good[7:]} {
		if _, err := ParseTokenHash(bad); keygate.ErrorCode(err) != keygate.CodeInvalidRequest {
			t.Errorf("ParseTokenHash(%q) = %v, want invalid_request", bad, err)
		}
	}
}

func TestItemError_NamesTheItem(t *testing.T) {
	for _, tt := range []struct {
		err        error
		param, msg string
	}{
		{keygate.ParamErrorf("scopes", "bad scope."), "keys[3].scopes", "keys[3]: bad scope."},
		{keygate.ParamErrorf("allowed_sources[1]", "bad."), "keys[3].allowed_sources[1]", "keys[3]: bad."},
		{&keygate.Error{Code: keygate.CodeInsufficientPermissions}, "keys[3]", "keys[3]: " + keygate.CodeInsufficientPermissions.Message()},
	} {
		var e *keygate.Error
		if !errors.As(ItemError(3, tt.err), &e) || e.Param != tt.param || e.Message != tt.msg || e.Code != keygate.ErrorCode(tt.err) {
			t.Errorf("ItemError(3, %v) = %+v, want param %q message %q", tt.err, e, tt.param, tt.msg)
		}
	}
	other := errors.New("store down")
	if ItemError(3, other) != other {
		t.Error("ItemError changed an error without a code")
	}
}

// The CLI's import: every item is checked before the organization is
// created or anything is stored.
func TestImportKeys_CLIChecksEveryItemFirst(t *testing.T) {
	st := newFakeStore()
	s := newService(st)
	item := func(token string, mod func(*ImportItem)) ImportItem {
		user := "alice"
		it := ImportItem{CreateRequest: CreateRequest{Name: "legacy", UserID: &user},
			Hash: FormatTokenHash(sha256.Sum256([]byte(token))), Prefix: token[:6], Last4: token[len(token)-4:]}
		if mod != nil {
			mod(&it)
		}
		return it
	}
	bad := []ImportItem{item("legacy-token-aaaaaaaa", nil), item("legacy-token-bbbbbbbb", func(it *ImportItem) { it.UserID = nil })}
	_, err := s.ImportKeys(context.Background(), "acme", bad, keygate.Actor{})
	var e *keygate.Error
	if !errors.As(err, &e) || e.Param != "keys[1].user_id" {
		t.Fatalf("ImportKeys = %v, want keys[1].user_id", err)
	}
	if len(st.orgs) != 0 || len(st.created) != 0 {
		t.Fatalf("a refused import wrote %d organizations, %d keys", len(st.orgs), len(st.created))
	}
	keys, err := s.ImportKeys(context.Background(), "acme", bad[:1], keygate.Actor{})
	if err != nil || len(keys) != 1 || len(st.orgs) != 1 {
		t.Fatalf("ImportKeys = %v, %v", keys, err)
	}
	if got := st.created[0]; got.Token.Prefix != "legacy" || got.Type != keygate.Secret || got.Environment != keygate.Live ||
		strings.Join(got.Scopes, ",") != "read,write" || got.RateLimitPerMinute != nil {
		t.Errorf("stored %+v, want the keys create defaults", got)
	}
}

// Every optional member of an item reaches the stored key on the CLI's
// import too, which builds the key by hand rather than through
// createKeyAs: a member it forgot would be silently dropped.
func TestImportKeys_CLIKeepsEveryMember(t *testing.T) {
	st := newFakeStore()
	s := newService(st)
	user, token := "alice", "legacy-token-cccccccc"
	rem := int64(50)
	limits := []keygate.RateLimit{{Name: "search", Limit: 5, DurationSeconds: 60}}
	srcs := []string{"10.0.0.0/8"}
	it := ImportItem{CreateRequest: CreateRequest{Name: "legacy", UserID: &user,
		Remaining:      Nullable[int64]{Set: true, Value: rem},
		Refill:         Nullable[keygate.Refill]{Set: true, Value: keygate.Refill{Interval: keygate.RefillMonthly, Amount: 50}},
		RateLimits:     &limits,
		AllowedSources: &srcs,
	}, Hash: FormatTokenHash(sha256.Sum256([]byte(token))), Prefix: token[:6], Last4: token[len(token)-4:]}
	if _, err := s.ImportKeys(context.Background(), "acme", []ImportItem{it}, keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	got := st.created[0]
	if got.Remaining == nil || *got.Remaining != 50 || got.Refill == nil || got.Refill.Amount != 50 ||
		len(got.RateLimits) != 1 || got.RateLimits[0] != limits[0] || len(got.AllowedSources) != 1 {
		t.Errorf("stored %+v: an item member was dropped", got)
	}
}
