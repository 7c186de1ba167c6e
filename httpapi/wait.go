package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/store"
)

// Propagator waits until every live replica has applied an event
// (fleet.Waiter), for writes called with ?wait=true (SPEC §12).
type Propagator interface {
	Wait(ctx context.Context, seq int64, timeout time.Duration) (fleet.Propagation, error)
}

// Bounds of ?timeout= in seconds (SPEC §12).
const (
	defaultWaitTimeout = 5
	maxWaitTimeout     = 30
)

// waitQuery is what ?wait= and ?timeout= ask for; wait false: answer at
// once, as without them.
type waitQuery struct {
	wait    bool
	timeout time.Duration
}

// parseWait reads ?wait=true|false and ?timeout=SECONDS (1–30, default 5).
// It runs before the write, so a bad value changes nothing.
func parseWait(r *http.Request) (waitQuery, error) {
	q := r.URL.Query()
	wq := waitQuery{timeout: defaultWaitTimeout * time.Second}
	if v, ok := q["wait"]; ok {
		if len(v) != 1 || (v[0] != "true" && v[0] != "false") {
			return wq, keygate.ParamErrorf("wait", "wait must be true or false.")
		}
		wq.wait = v[0] == "true"
	}
	if v, ok := q["timeout"]; ok {
		n, err := strconv.Atoi(v[0])
		if len(v) != 1 || err != nil || n < 1 || n > maxWaitTimeout {
			return wq, keygate.ParamErrorf("timeout", "timeout must be a whole number of seconds from 1 to %d.", maxWaitTimeout)
		}
		wq.timeout = time.Duration(n) * time.Second
	}
	return wq, nil
}

// propagated waits, when asked to, until the fleet has applied the event
// the write recorded in seq, and returns the propagation to answer with
// (nil when not asked). The change is committed whatever happens here:
// only a registry that cannot be read at all makes the call fail, with
// service_unavailable, rather than answer with counts it does not know.
// On the embedded store there is no registry: the one replica is this one,
// which synced before (fleet.Local).
func (h *Handler) propagated(ctx context.Context, wq waitQuery, seq *store.EventSeq) (*fleet.Propagation, error) {
	if !wq.wait {
		return nil, nil
	}
	if h.cfg.Propagator == nil {
		p := fleet.Local()
		return &p, nil
	}
	p, err := h.cfg.Propagator.Wait(ctx, seq.Seq(), wq.timeout)
	if err != nil {
		return nil, &keygate.Error{Code: keygate.CodeServiceUnavailable,
			Message: "The change is saved, but the replica registry could not be read to wait for it.", Err: err}
	}
	return &p, nil
}
