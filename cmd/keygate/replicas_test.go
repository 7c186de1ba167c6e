package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/tcpproxy"
	"github.com/keygate/keygate/manage"
)

// fleetEnv has short intervals, so a replica that stops reporting drops
// out of live within 3.2 s (--max-staleness plus one heartbeat); serve
// and the CLI read them alike. Events reach replicas only through
// notifications (--poll-interval 1h).
func fleetEnv(dbURL string) env {
	return env{"KEYGATE_DATABASE_URL": dbURL, "KEYGATE_HEARTBEAT_INTERVAL": "200ms", "KEYGATE_MAX_STALENESS": "3s",
		"KEYGATE_POLL_INTERVAL": "1h"}
}

// replicaID is the id the replica logged when it registered.
func (r *replica) replicaID(t *testing.T) string {
	t.Helper()
	for _, line := range strings.Split(r.stderr.String(), "\n") {
		var rec struct {
			Msg       string
			ReplicaID string `json:"replica_id"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "replica registered" {
			return rec.ReplicaID
		}
	}
	t.Fatalf("no replica id logged:\n%s", r.stderr.String())
	return ""
}

// listReplicas runs `keygate replicas --json`.
func listReplicas(t *testing.T, e env) map[string]fleet.ReplicaView {
	t.Helper()
	r := invoke(t, e, "replicas", "--json")
	if r.code != 0 {
		t.Fatalf("keygate replicas: exit %d: %s", r.code, r.stderr)
	}
	var out httpapi.List[fleet.ReplicaView]
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("keygate replicas --json: %v: %s", err, r.stdout)
	}
	m := map[string]fleet.ReplicaView{}
	for _, v := range out.Data {
		m[v.ID] = v
	}
	return m
}

// waitLive waits until exactly the replicas in ids are live.
func waitLive(t *testing.T, e env, ids ...string) {
	t.Helper()
	var got map[string]fleet.ReplicaView
	if !eventually(10*time.Second, func() bool {
		got = listReplicas(t, e)
		n := 0
		for _, v := range got {
			if v.Live {
				n++
			}
		}
		for _, id := range ids {
			if !got[id].Live {
				return false
			}
		}
		return n == len(ids)
	}) {
		t.Fatalf("live replicas: want exactly %v, registry holds %+v", ids, got)
	}
}

// ownerToken is a key that may revoke through the API.
func (k *keyring) ownerToken() string {
	k.t.Helper()
	ck, err := k.svc.CreateKey(context.Background(), manage.NewKey{
		OrgID: "acme", UserID: "root", Name: "owner", Role: "owner", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		k.t.Fatal(err)
	}
	return ck.Token.String()
}

// revokeWaiting revokes id through r's API with ?wait=true and the query
// given, and returns the propagation answered.
func revokeWaiting(t *testing.T, r *replica, owner, id, query string) fleet.Propagation {
	t.Helper()
	hr, err := http.NewRequest("DELETE", "http://"+r.httpAddr+"/v1/api-keys/"+id+"?wait=true"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+owner)
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body httpapi.Data[httpapi.APIKey]
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Data.Propagation == nil {
		t.Fatalf("DELETE ?wait=true: status %d, %v, %+v", resp.StatusCode, err, body)
	}
	if body.Data.Status != "revoked" || body.Data.ID != id {
		t.Errorf("answered key %+v", body.Data)
	}
	return *body.Data.Propagation
}

func TestReplicas_WaitedRevokeHasReachedEveryReplicaWhenItReturns(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	owner := ring.ownerToken()
	key, tok := ring.create()
	key2, tok2 := ring.create()
	e := fleetEnv(dbURL)
	var reps []*replica
	var ids []string
	for range 3 {
		r := startReplica(t, e)
		reps = append(reps, r)
		ids = append(ids, r.replicaID(t))
	}
	waitLive(t, e, ids...)
	for i, r := range reps {
		// Cached everywhere: only the events log can take it away.
		if got, got2 := r.decide(t, tok), r.decide(t, tok2); got != 200 || got2 != 200 {
			t.Fatalf("replica %d before the revoke: %d, %d", i, got, got2)
		}
	}

	p := revokeWaiting(t, reps[0], owner, key.ID, "")
	p.MS = 0
	if diff := cmp.Diff(fleet.Propagation{Replicas: 3, Applied: 3, Pending: []string{}, Complete: true}, p); diff != "" {
		t.Errorf("propagation (-want +got):\n%s", diff)
	}
	for i, r := range reps {
		if got := r.decide(t, tok); got == 200 {
			t.Errorf("replica %d allows the key after the waited revoke returned", i)
		}
	}
	for i, r := range reps {
		if got := r.metric(t, "keygate_replicas_live"); got != 3 && !eventually(2*time.Second, func() bool { return r.metric(t, "keygate_replicas_live") == 3 }) {
			t.Errorf("replica %d: keygate_replicas_live = %v, want 3", i, got)
		}
		seq := listReplicas(t, e)[ids[i]].AppliedSeq
		if got := r.metric(t, "keygate_events_applied_seq"); float64(seq) > got || got == 0 {
			t.Errorf("replica %d: keygate_events_applied_seq = %v, registry says %d", i, got, seq)
		}
	}

	// The CLI waits the same way, and exits 0 when complete.
	res := invoke(t, e, "keys", "revoke", "--org", "acme", "--wait", key2.ID)
	if res.code != 0 || !strings.Contains(res.stdout, "3 of 3 live replicas applied") || !strings.Contains(res.stdout, "(complete)") {
		t.Errorf("keys revoke --wait: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
	for i, r := range reps {
		if got := r.decide(t, tok2); got == 200 {
			t.Errorf("replica %d allows the key after keys revoke --wait returned", i)
		}
	}
	// The table lists every replica as live, with no lag.
	res = invoke(t, e, "replicas")
	for _, id := range ids {
		if !strings.Contains(res.stdout, id) {
			t.Errorf("keygate replicas lacks %s:\n%s", id, res.stdout)
		}
	}
	if res.code != 0 || !strings.Contains(res.stdout, "LAST SEEN") || strings.Count(res.stdout, " yes ") != 3 {
		t.Errorf("keygate replicas: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func TestReplicas_SilentReplicaIsPendingUntilItIsNoLongerLive(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	owner := ring.ownerToken()
	e := fleetEnv(dbURL)
	a := startReplica(t, e)
	b := startReplica(t, e)
	proxy := tcpproxy.Start(t, "127.0.0.1:5432")
	c := startReplica(t, fleetEnv(withHost(t, dbURL, proxy.Addr())))
	ida, idb, idc := a.replicaID(t), b.replicaID(t), c.replicaID(t)
	waitLive(t, e, ida, idb, idc)

	// c can neither read the events log nor report: it applies nothing.
	proxy.Cut()
	cutAt := time.Now()
	key, _ := ring.create()
	start := time.Now()
	p := revokeWaiting(t, a, owner, key.ID, "&timeout=1")
	took := time.Since(start)
	if took < time.Second || took > 3*time.Second {
		t.Errorf("the waited revoke took %v, want the 1 s timeout", took)
	}
	if p.Complete || p.Replicas != 3 || p.Applied != 2 || !cmp.Equal(p.Pending, []string{idc}) || p.MS < 1000 {
		t.Errorf("propagation %+v, want 2 of 3 applied, pending [%s], ms >= 1000", p, idc)
	}
	// The CLI exits 3 when incomplete.
	key2, _ := ring.create()
	res := invoke(t, e, "keys", "revoke", "--org", "acme", "--wait", "--timeout", "1s", key2.ID)
	if res.code != exitIncomplete || !strings.Contains(res.stdout, idc) || !strings.Contains(res.stdout, "incomplete") {
		t.Errorf("keys revoke --wait with a silent replica: exit %d, want 3\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}

	// After --max-staleness plus one heartbeat since its last report, c no
	// longer counts: it can no longer serve from its cache.
	waitLive(t, e, ida, idb)
	if since := time.Since(cutAt); since < 3*time.Second {
		t.Errorf("c dropped out of live %v after the cut, before --max-staleness (3s)", since)
	}
	key3, _ := ring.create()
	p = revokeWaiting(t, b, owner, key3.ID, "&timeout=5")
	if !p.Complete || p.Replicas != 2 || p.Applied != 2 {
		t.Errorf("propagation without c: %+v, want 2 of 2 complete", p)
	}
	if got := listReplicas(t, e)[idc]; got.ID == "" || got.Live || got.LagEvents < 3 {
		t.Errorf("c in the registry: %+v, want not live, 3 events behind", got)
	}
}

func TestReplicas_WaitNeedsPostgreSQL(t *testing.T) {
	e := migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()})
	for _, args := range [][]string{
		{"keys", "revoke", "--org", "acme", "--wait", "key_x"},
		{"replicas"},
	} {
		res := invoke(t, e, args...)
		if res.code != exitUsage || !strings.Contains(res.stderr, "PostgreSQL") {
			t.Errorf("%v on the embedded store: exit %d, want 2 naming PostgreSQL: %s", args, res.code, res.stderr)
		}
	}
	res := invoke(t, fleetEnv(pgtest.NewDatabase(t)), "keys", "revoke", "--org", "acme", "--wait", "--timeout", "31s", "key_x")
	if res.code != exitUsage || !strings.Contains(res.stderr, "--timeout") {
		t.Errorf("--timeout 31s: exit %d: %s", res.code, res.stderr)
	}

}
