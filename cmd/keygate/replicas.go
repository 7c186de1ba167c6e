package main

import (
	"context"
	"fmt"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
)

// exitIncomplete is `keys revoke --wait`'s status when the timeout passed
// before every live replica applied the revocation (SPEC §12).
const exitIncomplete = 3

// livenessFlags are serve's flags that decide when a replica is live; the
// CLI reads the same environment, so it agrees with the fleet.
type livenessFlags struct {
	HeartbeatInterval time.Duration `name:"heartbeat-interval" env:"KEYGATE_HEARTBEAT_INTERVAL" default:"5s" help:"The replicas' --heartbeat-interval."`
	MaxStaleness      time.Duration `name:"max-staleness" env:"KEYGATE_MAX_STALENESS" default:"30s" help:"The replicas' --max-staleness: a replica is live until its last report is older than this plus one heartbeat."`
}

func (l *livenessFlags) window() time.Duration {
	return fleet.LiveWithin(l.MaxStaleness, l.HeartbeatInterval)
}

// registry opens the store and returns its replica registry: PostgreSQL
// only, the embedded store has none (exit 2).
func registry(d *deps, c *connFlags, what string) (*postgres.Store, error) {
	if c.DatabaseURL == "" {
		return nil, usageErrorf("%s needs a PostgreSQL store (--database-url or KEYGATE_DATABASE_URL): the embedded store keeps no replica registry", what)
	}
	st, _, err := c.openMigrated(d.ctx, c.logger(d.stderr), existingStore)
	if err != nil {
		return nil, err
	}
	pg, ok := st.(*postgres.Store)
	if !ok {
		st.Close()
		return nil, usageErrorf("%s needs a PostgreSQL store", what)
	}
	return pg, nil
}

// replicasCmd is `keygate replicas`.
type replicasCmd struct {
	Conn     connFlags     `embed:""`
	Liveness livenessFlags `embed:""`
	JSON     bool          `name:"json" help:"Print {\"data\": [...]} instead of a table."`
}

// Run lists the registered replicas.
func (r *replicasCmd) Run(d *deps) error {
	pg, err := registry(d, &r.Conn, "keygate replicas")
	if err != nil {
		return err
	}
	defer pg.Close()
	list, err := pg.Replicas(d.ctx, r.Liveness.window())
	if err != nil {
		return err
	}
	if r.JSON {
		out := httpapi.List[fleet.ReplicaView]{Data: make([]fleet.ReplicaView, 0, len(list))}
		for _, x := range list {
			out.Data = append(out.Data, fleet.View(x))
		}
		return writeJSON(d, out)
	}
	return fleet.WriteTable(d.stdout, list)
}

// revokeAndWait revokes like `keys revoke`, then waits until every live
// replica has applied the revocation or timeout has passed.
func (k *keysRevokeCmd) revokeAndWait(d *deps) error {
	if k.Timeout < time.Second || k.Timeout > 30*time.Second {
		return usageErrorf("--timeout must be from 1s to 30s")
	}
	pg, err := registry(d, &k.Conn, "--wait")
	if err != nil {
		return err
	}
	defer pg.Close()
	if err := requireOrg(d.ctx, pg, k.Org); err != nil {
		return err
	}
	// Hear reports from before the revoke on, so none is missed.
	waiter := fleet.NewWaiter(pg, pg.ListenReplicas, k.Liveness.window(), nil)
	wctx, stop := context.WithCancel(d.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = waiter.Run(wctx) }()
	defer func() { stop(); <-done }()

	ctx, seq := store.WithEventSeq(d.ctx)
	key, err := manage.New(pg, k.Conn.format, time.Now).RevokeKey(ctx, k.Org, k.ID, keygate.Actor{})
	if err != nil {
		return k.revokeError(err)
	}
	p, err := waiter.Wait(d.ctx, seq.Seq(), k.Timeout)
	if err != nil {
		return fmt.Errorf("revoked %s, but the replica registry could not be read: %w", key.ID, err)
	}
	if k.JSON {
		out := httpapi.NewAPIKey(key, time.Now())
		out.Propagation = &p
		if err := writeJSON(d, httpapi.Data[httpapi.APIKey]{Data: out}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(d.stdout, "revoked %s\n%s\n", key.ID, p)
	}
	if !p.Complete {
		return &exitError{code: exitIncomplete}
	}
	return nil
}
