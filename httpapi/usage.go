package httpapi

import (
	"context"
	"net/http"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/analytics"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// UsageReader is the part of the store that usage analytics read (SPEC §9).
type UsageReader interface {
	Usage(ctx context.Context, q store.UsageQuery) ([]store.UsageBucket, error)
	TopKeys(ctx context.Context, q store.UsageQuery, n int) ([]store.KeyAllowed, error)
}

// UsageBucket is one bucket of a usage answer.
type UsageBucket struct {
	Start   Time             `json:"start"`
	Allowed int64            `json:"allowed"`
	Denied  int64            `json:"denied"`
	ByCode  map[string]int64 `json:"by_code"`
}

// KeyAllowed is one entry of top_keys.
type KeyAllowed struct {
	KeyID   string `json:"key_id"`
	Allowed int64  `json:"allowed"`
}

// OrgUsage is the answer of GET /v1/usage.
type OrgUsage struct {
	Data    []UsageBucket `json:"data"`
	TopKeys []KeyAllowed  `json:"top_keys"`
}

// topKeys is how many keys GET /v1/usage ranks.
const topKeys = 10

// maxKeyIDLen bounds a key id in a path before any query (as manage does).
const maxKeyIDLen = 128

// NewUsageBuckets is buckets on the wire.
func NewUsageBuckets(buckets []store.UsageBucket) []UsageBucket {
	out := make([]UsageBucket, 0, len(buckets))
	for _, b := range buckets {
		by := b.ByCode
		if by == nil {
			by = map[string]int64{}
		}
		out = append(out, UsageBucket{Start: Time(b.Start), Allowed: b.Allowed, Denied: b.Denied, ByCode: by})
	}
	return out
}

// routeUsage registers usage analytics (SPEC §9) when a reader is set.
func (h *Handler) routeUsage() {
	if h.cfg.Analytics == nil {
		return
	}
	h.route("/v1/api-keys/{id}/usage", map[string]http.HandlerFunc{http.MethodGet: h.api(h.keyUsage)})
	h.route("/v1/usage", map[string]http.HandlerFunc{http.MethodGet: h.api(h.orgUsage)})
}

// keyUsage is GET /v1/api-keys/{id}/usage: scope read, the visibility of
// GET of the key (its organization; non-admins their own user's keys),
// but a revoked key's usage stays readable.
func (h *Handler) keyUsage(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	rg, err := analytics.ParseRange(r.URL.Query(), h.cfg.Now())
	if err != nil {
		return err
	}
	if !c.Key.HasScope(manage.ScopeRead) {
		return keygate.Errorf(keygate.CodeInsufficientPermissions, "This call needs the %q scope.", manage.ScopeRead)
	}
	id := r.PathValue("id")
	if id == "" || len(id) > maxKeyIDLen {
		return keygate.ErrNotFound
	}
	q := store.UsageQuery{OrgID: c.Key.OrgID, KeyID: id, Granularity: rg.Granularity, From: rg.From, To: rg.To}
	if !c.Key.HasScope(manage.ScopeAdmin) {
		q.UserID = c.Key.UserID
	}
	buckets, err := h.cfg.Analytics.Usage(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Data[[]UsageBucket]{Data: NewUsageBuckets(buckets)})
	return nil
}

// orgUsage is GET /v1/usage: scope admin, the organization's totals per
// bucket and the keys with the most allowed Checks in the range.
func (h *Handler) orgUsage(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	rg, err := analytics.ParseRange(r.URL.Query(), h.cfg.Now())
	if err != nil {
		return err
	}
	if !c.Key.HasScope(manage.ScopeAdmin) {
		return keygate.Errorf(keygate.CodeInsufficientPermissions, "This call needs the %q scope.", manage.ScopeAdmin)
	}
	q := store.UsageQuery{OrgID: c.Key.OrgID, Granularity: rg.Granularity, From: rg.From, To: rg.To}
	buckets, err := h.cfg.Analytics.Usage(r.Context(), q)
	if err != nil {
		return err
	}
	top, err := h.cfg.Analytics.TopKeys(r.Context(), q, topKeys)
	if err != nil {
		return err
	}
	out := OrgUsage{Data: NewUsageBuckets(buckets), TopKeys: make([]KeyAllowed, 0, len(top))}
	for _, k := range top {
		out.TopKeys = append(out.TopKeys, KeyAllowed{KeyID: k.KeyID, Allowed: k.Allowed})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
