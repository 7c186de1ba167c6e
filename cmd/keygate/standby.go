package main

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/cache"
	"github.com/keygate/keygate/store/postgres"
)

// useStandby sends the store's lookups to --read-database-url, when set,
// under the replica's own event position. The position is only as good as
// the notifications that move it: while the listener is down, or the
// events log has not been read for two heartbeats (a healthy listener's
// heartbeat makes the follower read it every interval), the store reads
// the primary only.
func useStandby(pg *postgres.Store, f *cache.Follower, l *postgres.Listener, heartbeat time.Duration, reg prometheus.Registerer) error {
	if !pg.HasStandby() {
		return nil
	}
	return pg.UseStandby(postgres.StandbyGate{
		Position:   f.Position,
		Healthy:    func() bool { return l.Connected() && f.SinceSync() <= 2*heartbeat },
		Registerer: reg,
	})
}
