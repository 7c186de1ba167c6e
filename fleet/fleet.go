// Package fleet is the replica registry and acknowledged revocation (SPEC
// §12): a Reporter keeps this replica's row in the registry current (its
// applied event sequence within 50 ms of applying, and at every
// heartbeat), and a Waiter lets a write wait until every live replica has
// applied the event it committed.
//
// Only `serve` on PostgreSQL registers: the embedded store serves one
// machine and has no registry (see Local).
package fleet

import (
	"context"
	"time"

	"github.com/keygate/keygate/store"
)

// Registry is the part of the PostgreSQL store the fleet uses
// (store/postgres).
type Registry interface {
	ReportReplica(ctx context.Context, r store.Replica) error
	DeregisterReplica(ctx context.Context, id string) error
	ForgetReplicas(ctx context.Context, age time.Duration) (int64, error)
	Replicas(ctx context.Context, liveWithin time.Duration) ([]store.ReplicaStatus, error)
}

// LiveWithin is how long since its last report a replica counts as live:
// --max-staleness plus one heartbeat, since until then it may still serve
// from its cache.
func LiveWithin(maxStaleness, heartbeat time.Duration) time.Duration {
	return maxStaleness + heartbeat
}

// Propagation is how far a change has reached the fleet: the
// "propagation" object of a write called with ?wait=true.
type Propagation struct {
	// Replicas counts the live replicas, Applied those that applied the
	// change; Pending names the others.
	Replicas int      `json:"replicas"`
	Applied  int      `json:"applied"`
	Pending  []string `json:"pending"`
	Complete bool     `json:"complete"`
	// MS is how long the wait took, in milliseconds.
	MS int64 `json:"ms"`
}

// Propagation of seq over the replicas listed: live replicas count,
// applied when their applied_seq has reached seq.
func propagation(list []store.ReplicaStatus, seq int64) Propagation {
	p := Propagation{Pending: []string{}}
	for _, r := range list {
		if !r.Live {
			continue
		}
		p.Replicas++
		if r.AppliedSeq >= seq {
			p.Applied++
		} else {
			p.Pending = append(p.Pending, r.ID)
		}
	}
	p.Complete = len(p.Pending) == 0
	return p
}

// Local is the propagation on the embedded store, which has no registry:
// the one replica that served the call, which applied the change before
// answering (httpapi syncs its cache after every write).
func Local() Propagation {
	return Propagation{Replicas: 1, Applied: 1, Pending: []string{}, Complete: true}
}
