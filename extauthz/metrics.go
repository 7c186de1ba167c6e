package extauthz

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
)

type metrics struct {
	allowed prometheus.Counter
	byCode  map[keygate.Code]prometheus.Counter // denies
	latency prometheus.Histogram
	// wouldDeny counts the allows of report-only routes by the code the
	// decision would have denied with (SPEC §11).
	wouldDeny map[keygate.Code]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_checks_total",
		Help: "Check decisions, by decision (allow, deny) and code (empty on allow).",
	}, []string{"decision", "code"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keygate_check_duration_seconds",
		Help:    "Time to decide one Check, in process.",
		Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .2},
	})
	// Precomputed so the hot path does no label lookup, and an allow not
	// even a map lookup.
	wouldDeny := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_would_deny_total",
		Help: "Requests a report-only route allowed that an enforced one would deny, by the code of that deny.",
	}, []string{"code"})
	m := &metrics{allowed: checks.WithLabelValues("allow", ""), byCode: map[keygate.Code]prometheus.Counter{}, latency: latency,
		wouldDeny: map[keygate.Code]prometheus.Counter{}}
	for _, c := range denyCodes() {
		m.byCode[c] = checks.WithLabelValues("deny", string(c))
		if reportable(c) {
			m.wouldDeny[c] = wouldDeny.WithLabelValues(string(c))
		}
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{checks, latency, wouldDeny} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("extauthz: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(code keygate.Code, d time.Duration) {
	if code == "" {
		m.allowed.Inc()
	} else if c, ok := m.byCode[code]; ok {
		c.Inc()
	}
	m.latency.Observe(d.Seconds())
}

// reportable reports whether a report-only route turns a deny with code
// into an allow: every code but invalid_request, since a path that is not
// normalized might be another, enforced route to the upstream (SPEC §11).
func reportable(code keygate.Code) bool { return code != keygate.CodeInvalidRequest }

// denyCodes lists every code a Check can deny with (SPEC §3).
func denyCodes() []keygate.Code {
	return []keygate.Code{
		keygate.CodeMissingAPIKey, keygate.CodeInvalidAuthorizationFormat, keygate.CodeConflictingCredentials,
		keygate.CodeInvalidAPIKey, keygate.CodeAPIKeyInactive, keygate.CodeAPIKeyExpired,
		keygate.CodeOrganizationDisabled, keygate.CodeInsufficientPermissions, keygate.CodeForbidden,
		keygate.CodeInvalidRequest, keygate.CodeRateLimited, keygate.CodeTooManyFailedAttempts,
		keygate.CodeServiceUnavailable, keygate.CodeSourceNotAllowed,
		keygate.CodeUsageExceeded,
	}
}
