package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/store/postgres"
)

// fleetMember is this serve's part in the replica registry (SPEC §12):
// only on PostgreSQL; nil on the embedded store.
type fleetMember struct {
	reporter *fleet.Reporter
	waiter   *fleet.Waiter
}

// joinFleet registers this replica in pg's registry, reporting the
// follower's applied position, and makes the waiter of ?wait=true.
func (s *serveCmd) joinFleet(pg *postgres.Store, follower *cache.Follower, logger *slog.Logger, reg prometheus.Registerer) (*fleetMember, error) {
	host, _ := os.Hostname()
	version, _, _ := buildVersion()
	live := fleet.LiveWithin(s.MaxStaleness, s.HeartbeatInterval)
	rep, err := fleet.NewReporter(fleet.ReporterConfig{Registry: pg, Applied: follower.LastSeq,
		Hostname: host, Version: version, Heartbeat: s.HeartbeatInterval, LiveWithin: live,
		Retention: s.EventsRetention, Logger: logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	logger.Info("replica registered", "replica_id", rep.ID())
	return &fleetMember{reporter: rep, waiter: fleet.NewWaiter(pg, pg.ListenReplicas, live, logger)}, nil
}

// propagator is what the API waits with; nil (no registry) when m is.
func (m *fleetMember) propagator() httpapi.Propagator {
	if m == nil {
		return nil
	}
	return m.waiter
}

// run reports until reportCtx ends (the follower's context: the replica
// keeps reporting while it drains) and hears reports until waitCtx ends.
func (m *fleetMember) run(reportCtx, waitCtx context.Context, goFn func(func() error)) {
	if m == nil {
		return
	}
	goFn(func() error { return m.reporter.Run(reportCtx) })
	goFn(func() error { return m.waiter.Run(waitCtx) })
}
