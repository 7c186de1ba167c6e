package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/extauthz"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
)

// Authenticator authenticates a call with the steps of Check
// (extauthz.Server), so both transports share one implementation and one
// failed-auth throttle.
type Authenticator interface {
	Authenticate(ctx context.Context, h http.Header, addr netip.Addr) extauthz.Authentication
	ClientAddr(r *http.Request) netip.Addr
	// AllowedFrom reports whether a key bound to list (canonical,
	// comma-joined allowed_sources) may be used from addr with mTLS
	// principal principal (SPEC §11).
	AllowedFrom(list string, addr netip.Addr, principal string) bool
	// FailedAuthentication counts one failed authentication of addr in
	// the failed-auth throttle, as a Check with an unknown key does.
	FailedAuthentication(addr netip.Addr)
	// Throttled reports whether addr is blocked by the failed-auth
	// throttle now, and until when.
	Throttled(addr netip.Addr) (retryAfter time.Duration, blocked bool)
}

// Syncer applies the key-events log to this replica's cache up to now
// (cache.Follower).
type Syncer interface {
	Sync(ctx context.Context) error
}

// UsageRecorder notes authenticated uses of keys (lastused.Tracker).
type UsageRecorder interface {
	Record(keyID string, at time.Time)
}

// routeAPI registers the management API (SPEC §5).
func (h *Handler) routeAPI() {
	h.route("/v1/api-keys", map[string]http.HandlerFunc{
		http.MethodGet:  h.api(h.listKeys),
		http.MethodPost: h.api(h.createKey),
	})
	h.route("/v1/api-keys/{id}", map[string]http.HandlerFunc{
		http.MethodGet:    h.api(h.getKey),
		http.MethodPatch:  h.api(h.updateKey),
		http.MethodDelete: h.api(h.revokeKey),
	})
	// POST only, without route's 405 for other methods: that pattern
	// would overlap /v1/api-keys/{id}'s. Another method on this path is a
	// call on the key id "import", which does not exist.
	h.mux.HandleFunc("POST /v1/api-keys/import", h.api(h.importKeys))
	h.route("/v1/api-keys/{id}/roll", map[string]http.HandlerFunc{http.MethodPost: h.api(h.rollKey)})
	h.route("/v1/whoami", map[string]http.HandlerFunc{http.MethodGet: h.api(h.whoami)})
	h.route("/v1/audit-events", map[string]http.HandlerFunc{http.MethodGet: h.api(h.listAuditEvents)})
	h.routeUsage()
}

// apiFunc is one endpoint, called with the authenticated caller. It
// returns an error to answer with, or nil when it has answered.
type apiFunc func(w http.ResponseWriter, r *http.Request, c manage.Caller) error

func (h *Handler) api(fn apiFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := h.authenticate(w, r)
		if err == nil {
			err = fn(w, r, c)
		}
		if err != nil {
			h.writeError(w, r, err)
		}
	}
}

// authenticate runs Check's authentication for r. Publishable keys are
// meant for browsers and may not manage keys: forbidden.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (manage.Caller, error) {
	addr := h.cfg.Auth.ClientAddr(r)
	a := h.cfg.Auth.Authenticate(r.Context(), r.Header, addr)
	switch {
	case a.Code == keygate.CodeTooManyFailedAttempts:
		w.Header().Set("retry-after", ratelimit.FormatRetryAfter(a.RetryAfter))
		fallthrough
	case a.Code != "":
		return manage.Caller{}, &keygate.Error{Code: a.Code}
	}
	if a.View.Type() == keygate.Publishable {
		return manage.Caller{}, keygate.Errorf(keygate.CodeForbidden, "Publishable keys cannot use the management API.")
	}
	// The decision keeps only a compact view of the key; the rules of the
	// management API read the whole key, as the store has it now. A key
	// revoked since the view was read is gone from the store: invalid.
	k, err := h.cfg.Manage.CallerKey(r.Context(), a.View.OrgID(), a.View.ID())
	switch {
	case keygate.ErrorCode(err) == keygate.CodeNotFound:
		return manage.Caller{}, &keygate.Error{Code: keygate.CodeInvalidAPIKey}
	case err != nil:
		return manage.Caller{}, err
	}
	// A key deactivated or expired since the view was read is refused.
	if code := k.Status(h.cfg.Now()).DenyCode(); code != "" {
		return manage.Caller{}, &keygate.Error{Code: code}
	}
	// A key bound to sources (SPEC §11) is held to them here too, by the
	// caller's client address: the management API has no mTLS principal.
	if len(k.AllowedSources) > 0 && !h.cfg.Auth.AllowedFrom(strings.Join(k.AllowedSources, ","), addr, "") {
		return manage.Caller{}, &keygate.Error{Code: keygate.CodeSourceNotAllowed}
	}
	if h.cfg.Usage != nil {
		h.cfg.Usage.Record(k.ID, h.cfg.Now())
	}
	return manage.Caller{Key: k, RequestID: requestID(r)}, nil
}

// synced brings this replica's cache up to the write just made before the
// answer goes out. When that fails the write stands, but the call answers
// 503 rather than claim a guarantee it cannot keep.
func (h *Handler) synced(ctx context.Context) error {
	if h.cfg.Syncer == nil {
		return nil
	}
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return &keygate.Error{Code: keygate.CodeServiceUnavailable, Err: ctx.Err()}
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		if err = h.cfg.Syncer.Sync(ctx); err == nil {
			return nil
		}
	}
	return &keygate.Error{Code: keygate.CodeServiceUnavailable,
		Message: "The change is saved, but this replica could not apply it yet; it will shortly.", Err: err}
}

func (h *Handler) key(k keygate.Key) APIKey { return NewAPIKey(k, h.cfg.Now()) }

func (h *Handler) created(ck manage.CreatedKey) Data[CreatedAPIKey] {
	return Data[CreatedAPIKey]{Data: CreatedAPIKey{APIKey: h.key(ck.Key), Key: ck.Token.String()}}
}

func (h *Handler) createKey(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	req, err := parseCreate(w, r)
	if err != nil {
		return err
	}
	ck, err := h.cfg.Manage.CreateKeyAs(r.Context(), c, req)
	if err != nil {
		return err
	}
	if err := h.synced(r.Context()); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, h.created(ck))
	return nil
}

func (h *Handler) listKeys(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	q := r.URL.Query()
	var kq manage.KeyQuery
	var err error
	if kq.Limit, kq.After, err = pageQuery(q); err != nil {
		return err
	}
	if s, ok := q["status"]; ok {
		if len(s) != 1 || s[0] == "" {
			return keygate.ParamErrorf("status", "status must be active, inactive or expired.")
		}
		kq.Status = keygate.Status(s[0])
	}
	page, err := h.cfg.Manage.ListKeysAs(r.Context(), c, kq)
	if err != nil {
		return err
	}
	out := List[APIKey]{Data: make([]APIKey, 0, len(page.Keys)), NextCursor: encodeCursor(page.Next)}
	for _, k := range page.Keys {
		out.Data = append(out.Data, h.key(k))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (h *Handler) getKey(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	k, err := h.cfg.Manage.GetKeyAs(r.Context(), c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Data[APIKey]{Data: h.key(k)})
	return nil
}

func (h *Handler) updateKey(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	wq, err := parseWait(r)
	if err != nil {
		return err
	}
	ch, err := parseUpdate(w, r)
	if err != nil {
		return err
	}
	ctx, seq := store.WithEventSeq(r.Context())
	k, err := h.cfg.Manage.UpdateKeyAs(ctx, c, r.PathValue("id"), ch)
	if err != nil {
		return err
	}
	if err := h.synced(r.Context()); err != nil {
		return err
	}
	out := h.key(k)
	if out.Propagation, err = h.propagated(r.Context(), wq, seq); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Data[APIKey]{Data: out})
	return nil
}

func (h *Handler) revokeKey(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	wq, err := parseWait(r)
	if err != nil {
		return err
	}
	ctx, seq := store.WithEventSeq(r.Context())
	k, err := h.cfg.Manage.RevokeKeyAs(ctx, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := h.synced(r.Context()); err != nil {
		return err
	}
	out := h.key(k)
	if out.Propagation, err = h.propagated(r.Context(), wq, seq); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Data[APIKey]{Data: out})
	return nil
}

func (h *Handler) rollKey(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	wq, err := parseWait(r)
	if err != nil {
		return err
	}
	grace, err := parseRoll(w, r)
	if err != nil {
		return err
	}
	ctx, seq := store.WithEventSeq(r.Context())
	ck, err := h.cfg.Manage.RollKeyAs(ctx, c, r.PathValue("id"), grace)
	if err != nil {
		return err
	}
	if err := h.synced(r.Context()); err != nil {
		return err
	}
	out := h.created(ck)
	if out.Data.Propagation, err = h.propagated(r.Context(), wq, seq); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (h *Handler) whoami(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	k, err := h.cfg.Manage.Whoami(r.Context(), c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Data[APIKey]{Data: h.key(k)})
	return nil
}

func (h *Handler) listAuditEvents(w http.ResponseWriter, r *http.Request, c manage.Caller) error {
	var aq manage.AuditQuery
	var err error
	if aq.Limit, aq.After, err = pageQuery(r.URL.Query()); err != nil {
		return err
	}
	page, err := h.cfg.Manage.ListAuditEventsAs(r.Context(), c, aq)
	if err != nil {
		return err
	}
	out := List[AuditEvent]{Data: make([]AuditEvent, 0, len(page.Events)), NextCursor: encodeCursor(page.Next)}
	for _, e := range page.Events {
		out.Data = append(out.Data, NewAuditEvent(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pageQuery reads ?limit= and ?cursor=. An absent limit is 0, the default.
func pageQuery(q map[string][]string) (int, *store.Cursor, error) {
	var limit int
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if len(v) != 1 || err != nil || n < 1 || n > manage.MaxPageSize {
			return 0, nil, keygate.ParamErrorf("limit", "limit must be an integer from 1 to %d.", manage.MaxPageSize)
		}
		limit = n
	}
	var after *store.Cursor
	if v, ok := q["cursor"]; ok {
		c, err := decodeCursor(v[0])
		if len(v) != 1 || err != nil {
			return 0, nil, keygate.ParamErrorf("cursor", "cursor is not one this API returned as next_cursor.")
		}
		after = &c
	}
	return limit, after, nil
}
