package manage

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/store"
)

// Bounds of an import (SPEC §9).
const (
	MaxImportKeys   = 1000
	MaxImportPrefix = 16
	importLast4Len  = 4
	hashScheme      = "sha256:"
)

// ImportItem is one key of an import: a create body and its token as the
// other system keeps it, never the token itself.
type ImportItem struct {
	CreateRequest
	// Hash is "sha256:" and the 64 lower-case hex digits of the token's
	// SHA-256.
	Hash string
	// Prefix (1–16 characters) and Last4 (4) identify the token in lists.
	Prefix string
	Last4  string
}

// ImportKeysAs imports items into the caller's organization (SPEC §9), all
// or nothing, in one transaction. It needs admin, and holds every item to
// exactly the rules of a created key (createKeyAs): the errors name the
// item, keys[i].<field>. A token hash that exists already, in any
// organization, or twice in items, is conflict naming keys[i].hash.
//
// Order: the list and each item's hash, prefix and last4 (400), then the
// admin scope (403), then each item by create's rules, in order (400 or
// 403), then hashes given twice and hashes stored already (409).
func (s *Service) ImportKeysAs(ctx context.Context, c Caller, items []ImportItem) ([]keygate.Key, error) {
	tokens, err := importTokens(items)
	if err != nil {
		return nil, err
	}
	if err := c.require(ScopeAdmin); err != nil {
		return nil, err
	}
	nks := make([]store.NewKey, 0, len(items))
	for i := range items {
		_, err := s.createKeyAs(ctx, c, items[i].CreateRequest,
			func(_ context.Context, k store.NewKey, _ keygate.Actor) (CreatedKey, error) {
				nks = append(nks, k)
				return CreatedKey{}, nil
			})
		if err != nil {
			return nil, ItemError(i, err)
		}
	}
	return s.importKeys(ctx, nks, tokens, c.actor())
}

// ImportKeys imports items into organization orgID for the CLI, which
// acts with no key to be held to: each item is validated as `keygate keys
// create` validates its key (user_id is required; scopes default to the
// member role's; type secret, environment live), and the organization is
// created when missing, in the import's transaction, once every item has
// passed. All or nothing, like ImportKeysAs, with the same errors.
func (s *Service) ImportKeys(ctx context.Context, orgID string, items []ImportItem, by keygate.Actor) ([]keygate.Key, error) {
	if err := ValidateID("org_id", orgID); err != nil {
		return nil, err
	}
	tokens, err := importTokens(items)
	if err != nil {
		return nil, err
	}
	now := s.now()
	nks := make([]store.NewKey, len(items))
	for i := range items {
		r := &items[i].CreateRequest
		nk := NewKey{OrgID: orgID, Name: r.Name, Metadata: r.Metadata}
		if r.RateLimitPerMinute.Set {
			nk.RateLimitPerMinute = r.RateLimitPerMinute.ptr()
		}
		if r.UserID != nil {
			nk.UserID = *r.UserID
		}
		if r.Scopes != nil {
			nk.Scopes = *r.Scopes
		} else {
			nk.Role = DefaultRole
		}
		if r.ProjectIDs != nil {
			nk.ProjectIDs = *r.ProjectIDs
		}
		if r.Type != nil {
			nk.Type = *r.Type
		}
		if r.Environment != nil {
			nk.Environment = *r.Environment
		}
		switch {
		case r.ExpiresAt.Set && r.ExpiresIn != nil:
			return nil, ItemError(i, keygate.ParamErrorf("expires_in", "Give expires_at or expires_in, not both."))
		case r.ExpiresIn != nil:
			if *r.ExpiresIn <= 0 || *r.ExpiresIn > MaxExpiresIn {
				return nil, ItemError(i, keygate.ParamErrorf("expires_in", "expires_in must be 1 to %d seconds.", int64(MaxExpiresIn.Seconds())))
			}
			t := now.Add(*r.ExpiresIn)
			nk.ExpiresAt = &t
		case r.ExpiresAt.Set:
			nk.ExpiresAt = r.ExpiresAt.ptr()
		}
		if r.AllowedSources != nil {
			nk.AllowedSources = *r.AllowedSources
		}
		if r.RateLimits != nil {
			nk.RateLimits = *r.RateLimits
		}
		if r.Remaining.Set {
			nk.Remaining = r.Remaining.ptr()
		}
		if r.Refill.Set {
			nk.Refill = r.Refill.ptr()
		}
		if nks[i], err = normalize(nk, now); err != nil {
			return nil, ItemError(i, err)
		}
	}
	if i, j := firstRepeat(tokens); j >= 0 {
		return nil, repeatedHash(i, j)
	}
	// The organization is created in the import's own transaction, so
	// an import the store refuses (a hash that exists) leaves none.
	for i := range nks {
		nks[i].CreateOrganization = true
	}
	return s.importKeys(ctx, nks, tokens, by)
}

// importKeys gives each key an id and its token and stores them all.
func (s *Service) importKeys(ctx context.Context, nks []store.NewKey, tokens []store.NewToken, by keygate.Actor) ([]keygate.Key, error) {
	if i, j := firstRepeat(tokens); j >= 0 {
		return nil, repeatedHash(i, j)
	}
	for i := range nks {
		id, err := apikey.NewKeyID()
		if err != nil {
			return nil, err
		}
		nks[i].ID, nks[i].Token = id, tokens[i]
	}
	keys, err := s.store.ImportKeys(ctx, nks, by)
	var ie *store.ImportItemError
	switch {
	case !errors.As(err, &ie):
		return keys, err
	case errors.Is(ie.Err, keygate.ErrConflict):
		e := keygate.Errorf(keygate.CodeConflict, "keys[%d]: a key with this token hash exists already.", ie.Index)
		e.Param = fmt.Sprintf("keys[%d].hash", ie.Index)
		return nil, e
	}
	return nil, ItemError(ie.Index, ie.Err)
}

func repeatedHash(i, j int) error {
	e := keygate.Errorf(keygate.CodeConflict, "keys[%d]: the same token hash as keys[%d].", j, i)
	e.Param = fmt.Sprintf("keys[%d].hash", j)
	return e
}

// firstRepeat returns the first j whose hash an earlier item i has, or
// j = -1.
func firstRepeat(tokens []store.NewToken) (i, j int) {
	seen := make(map[keygate.Hash]int, len(tokens))
	for j, t := range tokens {
		if i, ok := seen[t.Hash]; ok {
			return i, j
		}
		seen[t.Hash] = j
	}
	return -1, -1
}

// importTokens checks the number of items and each item's hash, prefix
// and last4, and returns the tokens to store.
func importTokens(items []ImportItem) ([]store.NewToken, error) {
	if len(items) == 0 || len(items) > MaxImportKeys {
		return nil, keygate.ParamErrorf("keys", "keys must hold 1 to %d keys; it holds %d.", MaxImportKeys, len(items))
	}
	tokens := make([]store.NewToken, len(items))
	for i, it := range items {
		h, err := ParseTokenHash(it.Hash)
		if err != nil {
			return nil, ItemError(i, err)
		}
		if n := len(it.Prefix); n < 1 || n > MaxImportPrefix || !shownChars(it.Prefix) {
			return nil, ItemError(i, keygate.ParamErrorf("prefix",
				"prefix must be 1 to %d printable ASCII characters without spaces or commas.", MaxImportPrefix))
		}
		if len(it.Last4) != importLast4Len || !shownChars(it.Last4) {
			return nil, ItemError(i, keygate.ParamErrorf("last4",
				"last4 must be the token's last 4 characters (printable ASCII, no spaces or commas)."))
		}
		tokens[i] = store.NewToken{Hash: h, Prefix: it.Prefix, Last4: it.Last4}
	}
	return tokens, nil
}

// ParseTokenHash reads a token hash as an import gives it: "sha256:" and
// 64 lower-case hex digits. A bad one is invalid_request naming "hash".
func ParseTokenHash(s string) (keygate.Hash, error) {
	var h keygate.Hash
	hexPart, ok := strings.CutPrefix(s, hashScheme)
	if !ok || len(hexPart) != 2*len(h) || strings.ToLower(hexPart) != hexPart {
		return h, keygate.ParamErrorf("hash", `hash must be "sha256:" and the 64 lower-case hex digits of the token's SHA-256.`)
	}
	if _, err := hex.Decode(h[:], []byte(hexPart)); err != nil {
		return h, keygate.ParamErrorf("hash", `hash must be "sha256:" and the 64 lower-case hex digits of the token's SHA-256.`)
	}
	return h, nil
}

// FormatTokenHash is the form of h that ParseTokenHash reads.
func FormatTokenHash(h keygate.Hash) string { return hashScheme + hex.EncodeToString(h[:]) }

// shownChars reports whether s is printable ASCII with no space or comma,
// the characters a token may have (apikey.ParseForeign): prefix and last4
// are parts of one, and are shown in lists and terminals.
func shownChars(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == ',' {
			return false
		}
	}
	return true
}

// ItemError names item i of an import in err's param and message:
// "scopes" becomes "keys[3].scopes"; an error of no field names the item.
func ItemError(i int, err error) error {
	var e *keygate.Error
	if !errors.As(err, &e) {
		return err
	}
	out := *e
	item := fmt.Sprintf("keys[%d]", i)
	out.Param = item
	if e.Param != "" {
		out.Param += "." + e.Param
	}
	msg := e.Message
	if msg == "" {
		msg = e.Code.Message()
	}
	out.Message = item + ": " + msg
	return &out
}
