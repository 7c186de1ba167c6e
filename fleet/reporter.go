package fleet

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/store"
)

// Report pacing (SPEC §12): applied events are reported within
// reportDelay, and never more often than once per reportDelay (20 a
// second); the applied position is checked every checkEvery, an atomic
// read with no database access.
const (
	reportDelay = 50 * time.Millisecond
	checkEvery  = 10 * time.Millisecond
)

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	Registry Registry
	// Applied is the highest sequence applied with every event before it
	// (cache.Follower.LastSeq).
	Applied           func() int64
	Hostname, Version string
	// Heartbeat (--heartbeat-interval) is how often the replica reports
	// even with nothing applied, and refreshes keygate_replicas_live.
	Heartbeat time.Duration
	// LiveWithin is LiveWithin(--max-staleness, --heartbeat-interval).
	LiveWithin time.Duration
	// Retention (--events-retention): replicas not seen for longer are
	// deleted from the registry.
	Retention  time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Reporter keeps one replica's row in the registry current.
type Reporter struct {
	cfg     ReporterConfig
	self    store.Replica
	live    prometheus.Gauge
	reports prometheus.Counter
	now     func() time.Time
}

// NewReporter returns a reporter with a new random replica id; Run starts
// it.
func NewReporter(cfg ReporterConfig) (*Reporter, error) {
	if cfg.Registry == nil || cfg.Applied == nil {
		return nil, errors.New("fleet: reporter needs a registry and the applied position")
	}
	if cfg.Heartbeat <= 0 {
		return nil, errors.New("fleet: heartbeat interval must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return nil, err
	}
	r := &Reporter{
		cfg: cfg, now: time.Now,
		self: store.Replica{ID: "rep_" + hex.EncodeToString(b[:]), Hostname: cfg.Hostname, Version: cfg.Version,
			StartedAt: time.Now().UTC()},
		live: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_replicas_live",
			Help: "Live replicas in the registry (seen within --max-staleness plus one heartbeat), as of the last heartbeat.",
		}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_replica_reports_total",
			Help: "Reports of this replica's applied event sequence to the registry.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.live, r.reports,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "keygate_events_applied_seq",
				Help: "Highest key event sequence this replica has applied with every event before it.",
			}, func() float64 { return float64(cfg.Applied()) }),
		} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// ID is this replica's id in the registry.
func (r *Reporter) ID() string { return r.self.ID }

// Run registers the replica and reports until ctx ends; then it removes
// the replica from the registry (it serves no more) and returns nil. A
// failed report is logged and retried at the next change or heartbeat.
func (r *Reporter) Run(ctx context.Context) error {
	defer r.deregister(ctx)
	reported := int64(-1)
	var last time.Time
	report := func() {
		seq := r.cfg.Applied()
		self := r.self
		self.AppliedSeq = seq
		last = r.now()
		// A database that stopped answering must not stall the reports
		// that follow: each may take one heartbeat at most.
		rctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
		err := r.cfg.Registry.ReportReplica(rctx, self)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.cfg.Logger.Warn("replica registry: report failed", "err", err, "replica_id", r.self.ID)
			}
			return
		}
		r.reports.Inc()
		reported = seq
	}
	report()
	r.heartbeat(ctx)
	check := time.NewTicker(checkEvery)
	defer check.Stop()
	beat := time.NewTicker(r.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			report()
			r.heartbeat(ctx)
		case <-check.C:
			if r.cfg.Applied() > reported && r.now().Sub(last) >= reportDelay {
				report()
			}
		}
	}
}

// heartbeat refreshes keygate_replicas_live and forgets replicas gone for
// longer than the retention.
func (r *Reporter) heartbeat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Heartbeat)
	defer cancel()
	list, err := r.cfg.Registry.Replicas(ctx, r.cfg.LiveWithin)
	if err == nil {
		r.live.Set(float64(propagation(list, 0).Replicas))
	}
	if r.cfg.Retention > 0 {
		if _, err := r.cfg.Registry.ForgetReplicas(ctx, r.cfg.Retention); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("replica registry: pruning failed", "err", err)
		}
	}
}

func (r *Reporter) deregister(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.cfg.Registry.DeregisterReplica(dctx, r.self.ID); err != nil {
		r.cfg.Logger.Warn("replica registry: deregistering failed", "err", err, "replica_id", r.self.ID)
	}
}
