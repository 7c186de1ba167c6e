package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"slices"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/leak"
	"github.com/keygate/keygate/ratelimit"
)

// LeakReporter handles leaked-key reports (leak.Service).
type LeakReporter interface {
	Report(ctx context.Context, r leak.Request) ([]leak.Result, error)
}

// reportLeaks is POST /v1/leaked-keys: no authentication (holding a token
// is what is reported), the body read raw because a signature covers its
// bytes. 413 past MaxBodyBytes, 415 for a body that is not JSON.
func (h *Handler) reportLeaks(w http.ResponseWriter, r *http.Request) {
	if err := h.leakReport(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

func (h *Handler) leakReport(w http.ResponseWriter, r *http.Request) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return &keygate.Error{Code: keygate.CodeRequestTooLarge}
	case err != nil:
		return keygate.Errorf(keygate.CodeInvalidRequest, "The request body could not be read.")
	}
	var addr netip.Addr
	if h.cfg.Auth != nil {
		addr = h.cfg.Auth.ClientAddr(r)
	}
	results, err := h.cfg.Leaks.Report(r.Context(), leak.Request{Body: body,
		KeyID: r.Header.Get("Github-Public-Key-Identifier"), Signature: r.Header.Get("Github-Public-Key-Signature"),
		Addr: addr, RequestID: requestID(r)})
	var blocked *leak.RetryAfterError
	if errors.As(err, &blocked) {
		w.Header().Set("retry-after", ratelimit.FormatRetryAfter(blocked.RetryAfter))
	}
	if err != nil {
		return err
	}
	// Once the answer says a key is revoked, this replica no longer allows
	// it (SPEC §4); other replicas follow the events log.
	if slices.ContainsFunc(results, func(r leak.Result) bool { return r.Label == leak.TruePositive }) {
		if err := h.synced(r.Context()); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, results)
	return nil
}
