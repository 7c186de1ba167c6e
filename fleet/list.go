package fleet

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/store"
)

// ReplicaView is a replica as `keygate replicas --json` prints it.
type ReplicaView struct {
	ID         string  `json:"id"`
	Hostname   string  `json:"hostname"`
	Version    string  `json:"version"`
	StartedAt  string  `json:"started_at"`
	LastSeenAt string  `json:"last_seen_at"`
	Live       bool    `json:"live"`
	AppliedSeq int64   `json:"applied_seq"`
	LagEvents  int64   `json:"lag_events"`
	LagSeconds float64 `json:"lag_seconds"`
}

// View is r as `keygate replicas --json` prints it.
func View(r store.ReplicaStatus) ReplicaView {
	return ReplicaView{ID: r.ID, Hostname: r.Hostname, Version: r.Version,
		StartedAt: r.StartedAt.UTC().Format(time.RFC3339), LastSeenAt: r.LastSeenAt.UTC().Format(time.RFC3339Nano),
		Live: r.Live, AppliedSeq: r.AppliedSeq, LagEvents: r.LagEvents, LagSeconds: r.LagSeconds}
}

// WriteTable prints the replicas as `keygate replicas` does: one line each.
func WriteTable(w io.Writer, list []store.ReplicaStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tVERSION\tSTARTED\tLAST SEEN\tLIVE\tLAG EVENTS\tLAG SECONDS")
	for _, r := range list {
		live := "no"
		if r.Live {
			live = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%.3f\n", r.ID, r.Hostname, r.Version,
			r.StartedAt.UTC().Format(time.RFC3339), r.LastSeenAt.UTC().Format(time.RFC3339), live, r.LagEvents, r.LagSeconds)
	}
	return tw.Flush()
}

// String is the propagation in one line, as `keygate keys revoke --wait`
// prints it.
func (p Propagation) String() string {
	s := fmt.Sprintf("propagation: %d of %d live replicas applied in %d ms", p.Applied, p.Replicas, p.MS)
	if p.Complete {
		return s + " (complete)"
	}
	return s + fmt.Sprintf(" (incomplete; pending: %v)", p.Pending)
}
