package store

import "time"

// Replica is one `serve` process in the replica registry (SPEC §12). Only
// the PostgreSQL store has a registry: the embedded store serves one
// machine, and its replicas poll the shared file.
type Replica struct {
	ID         string // random per process
	Hostname   string
	Version    string
	StartedAt  time.Time
	LastSeenAt time.Time // the database's clock
	// AppliedSeq is the highest event sequence the replica has applied
	// with every event before it.
	AppliedSeq int64
}

// ReplicaStatus is a registered replica as the registry sees it now.
type ReplicaStatus struct {
	Replica
	// Live: last seen within the liveness window asked for (--max-staleness
	// plus one heartbeat), so it may still serve from its cache.
	Live bool
	// LagEvents is how many events were committed after AppliedSeq;
	// LagSeconds how long ago the first of them was (0 when none).
	LagEvents  int64
	LagSeconds float64
}
