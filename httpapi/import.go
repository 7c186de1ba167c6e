package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/ratelimit"
)

// MaxImportBodyBytes bounds the body of an import: 1 MiB (SPEC §9).
const MaxImportBodyBytes = 1 << 20

// importItemMembers are the members of an import item: a create body's and
// the token's hash, prefix and last4.
var importItemMembers = append(append([]string{}, createMembers...), "hash", "prefix", "last4")

// importKeys serves POST /v1/api-keys/import (SPEC §9). A refusal for a
// token hash that exists (or is given twice) counts one failed
// authentication of the caller's address: otherwise an admin key could
// test guessed tokens by the thousand, unthrottled.
//
// The caller's own key is known to this replica, so the throttle would
// still let it through from a blocked address (SPEC §3): import asks the
// throttle itself, and refuses a blocked address before reading a hash.
func (h *Handler) importKeys(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	addr := h.cfg.Auth.ClientAddr(r)
	if d, blocked := h.cfg.Auth.Throttled(addr); blocked {
		w.Header().Set("retry-after", ratelimit.FormatRetryAfter(d))
		return &keygate.Error{Code: keygate.CodeTooManyFailedAttempts}
	}
	items, err := parseImport(w, r)
	if err != nil {
		return err
	}
	keys, err := h.cfg.Manage.ImportKeysAs(r.Context(), c, items)
	if keygate.ErrorCode(err) == keygate.CodeConflict {
		h.cfg.Auth.FailedAuthentication(addr)
	}
	if err != nil {
		return err
	}
	if err := h.synced(r.Context()); err != nil {
		return err
	}
	out := Data[[]APIKey]{Data: make([]APIKey, 0, len(keys))}
	for _, k := range keys {
		out.Data = append(out.Data, h.key(k))
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func parseImport(w http.ResponseWriter, r *http.Request) ([]manage.ImportItem, error) {
	o, err := readObjectLimit(w, r, MaxImportBodyBytes, "keys")
	if err != nil {
		return nil, err
	}
	raw, ok := o["keys"]
	if !ok {
		return nil, keygate.ParamErrorf("keys", "keys is required: an array of 1 to %d keys.", manage.MaxImportKeys)
	}
	var list []json.RawMessage
	if isNull(raw) || json.Unmarshal(raw, &list) != nil {
		return nil, keygate.ParamErrorf("keys", "keys must be an array of 1 to %d keys.", manage.MaxImportKeys)
	}
	if len(list) == 0 || len(list) > manage.MaxImportKeys {
		return nil, keygate.ParamErrorf("keys", "keys must hold 1 to %d keys; it holds %d.", manage.MaxImportKeys, len(list))
	}
	items := make([]manage.ImportItem, len(list))
	for i, b := range list {
		if items[i], err = ParseImportItem(b); err != nil {
			return nil, manage.ItemError(i, err)
		}
	}
	return items, nil
}

// ParseImportItem parses one key of an import, a JSON object with the
// members of a create body and hash, prefix and last4 (SPEC §9), as the
// API reads each item of "keys" and `keygate keys import` each line. A
// bad member is an invalid_request naming it; which item it is, the
// caller says (manage.ItemError).
func ParseImportItem(b []byte) (manage.ImportItem, error) {
	o, err := parseObject(b, importItemMembers...)
	if errors.Is(err, errBodyNotJSON) {
		return manage.ImportItem{}, keygate.Errorf(keygate.CodeInvalidRequest, "Each key must be one JSON object.")
	}
	if err != nil {
		return manage.ImportItem{}, err
	}
	req, err := createRequest(o)
	if err != nil {
		return manage.ImportItem{}, err
	}
	it := manage.ImportItem{CreateRequest: req}
	f := fields{o: o}
	for _, m := range []struct {
		name string
		dst  *string
	}{{"hash", &it.Hash}, {"prefix", &it.Prefix}, {"last4", &it.Last4}} {
		if s := f.string(m.name); s != nil {
			*m.dst = *s
		} else if f.err == nil {
			f.err = keygate.ParamErrorf(m.name, "%s is required.", m.name)
		}
	}
	return it, f.err
}
