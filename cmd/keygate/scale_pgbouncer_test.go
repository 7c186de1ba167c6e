package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgbouncer"
	"github.com/keygate/keygate/internal/pgtest"
)

// TestPgBouncer_ReplicasAndCLIThroughATransactionPooler runs the CLI and
// two replicas with --database-url through a real PgBouncer in
// transaction mode (default_query_exec_mode=exec, as the README says) and
// --listen-database-url straight to PostgreSQL: keys created, rolled and
// revoked through one replica's API or the CLI are decided right by the
// other within a second, carried by NOTIFY alone (--poll-interval 1h).
func TestPgBouncer_ReplicasAndCLIThroughATransactionPooler(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	bouncer := pgbouncer.Start(t, pgbouncer.Config{PoolSize: 4})
	e := env{"KEYGATE_DATABASE_URL": bouncer.URL(t, dbURL, "exec"), "KEYGATE_LISTEN_DATABASE_URL": dbURL}

	// The CLI on a fresh database: migrations take their lock over the
	// direct URL, the key is written through the pooler.
	res := invoke(t, e, "keys", "create", "--org", "acme", "--user", "root", "--name", "admin", "--role", "admin")
	if res.code != 0 {
		t.Fatalf("keys create through pgbouncer: exit %d\n%s\npgbouncer:\n%s", res.code, res.stderr, bouncer.Log())
	}
	adminTok := firstLine(res.stdout)

	args := []string{"--poll-interval", "1h", "--rate-limit", "0", "--failed-auth-limit", "0"}
	a, b := startReplica(t, e, args...), startReplica(t, e, args...)
	waitListening(t, a, b)
	others := []*replica{b}

	id, tok := a.apiCreate(t, adminTok)
	created := time.Now()
	if got := a.decide(t, tok); got != 200 {
		t.Fatalf("replica A right after creating a key through its API: %d, want 200", got)
	}
	within(t, others, tok, 200, created, time.Second, 0)

	var rolled struct{ Key string }
	a.api(t, adminTok, http.MethodPost, "/v1/api-keys/"+id+"/roll", map[string]any{"grace_seconds": 0}, http.StatusCreated, &rolled)
	changed := time.Now()
	within(t, others, tok, 401, changed, time.Second, 0)
	within(t, others, rolled.Key, 200, changed, time.Second, 0)

	a.apiRevoke(t, adminTok, id)
	revoked := time.Now()
	if got := a.decide(t, rolled.Key); got != 401 {
		t.Errorf("replica A right after revoking through its API: %d, want 401", got)
	}
	took := within(t, others, rolled.Key, 401, revoked, time.Second, 200*time.Millisecond)
	t.Logf("revocation through A reached B after %s", fmtDurations(took))

	// The CLI's revoke, through the pooler too, reaches both replicas.
	res = invoke(t, e, "keys", "create", "--org", "acme", "--user", "bob", "--name", "cli", "--json")
	if res.code != 0 {
		t.Fatalf("keys create: exit %d: %s", res.code, res.stderr)
	}
	var cli struct {
		Data struct{ ID, Key string }
	}
	if err := json.Unmarshal([]byte(res.stdout), &cli); err != nil {
		t.Fatalf("keys create --json: %v: %s", err, res.stdout)
	}
	for _, r := range []*replica{a, b} {
		if !eventually(time.Second, func() bool { return r.decide(t, cli.Data.Key) == 200 }) {
			t.Fatalf("key created by the CLI not allowed within 1 s")
		}
	}
	if res := invoke(t, e, "keys", "revoke", "--org", "acme", cli.Data.ID); res.code != 0 {
		t.Fatalf("keys revoke: exit %d: %s", res.code, res.stderr)
	}
	within(t, []*replica{a, b}, cli.Data.Key, 401, time.Now(), time.Second, 0)

	if n := bouncer.Clients(t, dbName(t, dbURL)); n == 0 {
		t.Errorf("pgbouncer holds no client of %s: the replicas' pools do not go through it", dbName(t, dbURL))
	}
	if log := bouncer.Log(); strings.Contains(log, "ERROR") {
		t.Logf("pgbouncer logged errors:\n%s", log)
	}
}
