package main

import (
	"bufio"
	"context"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/tcpproxy"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store/postgres"
)

// replica is a `keygate serve` in the test with a gRPC client of its own.
type replica struct {
	*server
	client authv3.AuthorizationClient
}

func startReplica(t *testing.T, e env, args ...string) *replica {
	t.Helper()
	s := serve(t, e, args...)
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &replica{server: s, client: authv3.NewAuthorizationClient(conn)}
}

// decide asks the replica about tok: the HTTP status of its answer (200 on
// allow).
func (r *replica) decide(t *testing.T, tok string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := r.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things", Headers: map[string]string{"x-api-key": tok},
		}},
	}})
	if err != nil {
		t.Errorf("Check: %v", err)
		return 0
	}
	if resp.GetOkResponse() != nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// metric reads one sample of the replica's /metrics (the sum over labels).
func (r *replica) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + r.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// keyring creates keys straight through the store, as `keys create` does.
type keyring struct {
	t   *testing.T
	svc *manage.Service
	st  *postgres.Store
}

func newKeyring(t *testing.T, dbURL string) *keyring {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &keyring{t: t, svc: manage.New(st, apikey.DefaultFormat(), time.Now), st: st}
}

func (k *keyring) create() (keygate.Key, string) {
	k.t.Helper()
	ck, err := k.svc.CreateKey(context.Background(), manage.NewKey{
		OrgID: "acme", UserID: "alice", Name: "replica test", Role: "member", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		k.t.Fatal(err)
	}
	return ck.Key, ck.Token.String()
}

func (k *keyring) revoke(id string) {
	k.t.Helper()
	if _, err := k.svc.RevokeKey(context.Background(), "acme", id, keygate.Actor{}); err != nil {
		k.t.Fatal(err)
	}
}

// adminConn connects to the test server's admin database for one
// statement or query, bounded by ctx; done closes both at once.
func adminConn(t *testing.T) (ctx context.Context, conn *pgx.Conn, done func()) {
	t.Helper()
	admin := os.Getenv("KEYGATE_TEST_DATABASE_URL")
	if admin == "" {
		admin = pgtest.DefaultURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return ctx, conn, func() { conn.Close(context.Background()); cancel() }
}

// adminExec runs one statement on the test server's admin database.
func adminExec(t *testing.T, sql string, args ...any) {
	t.Helper()
	ctx, conn, done := adminConn(t)
	defer done()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
}

func dbName(t *testing.T, dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// withHost points a database URL at another host:port.
func withHost(t *testing.T, dbURL, hostport string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// TestRevocation_ReachesEveryReplicaWithinOneSecond revokes 200 keys warmed
// in two replicas' caches and fails if either still allows one a second
// after the revoke returned. Polling is off (--poll-interval 1h): only
// LISTEN/NOTIFY can carry the revocations. The measured propagation goes
// to the test log.
func TestRevocation_ReachesEveryReplicaWithinOneSecond(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	const n = 200
	ids, toks := make([]string, n), make([]string, n)
	for i := range ids {
		k, tok := ring.create()
		ids[i], toks[i] = k.ID, tok
	}
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	a := startReplica(t, e, "--poll-interval", "1h")
	b := startReplica(t, e, "--poll-interval", "1h")
	for _, r := range []*replica{a, b} {
		for _, tok := range toks {
			if got := r.decide(t, tok); got != 200 {
				t.Fatalf("warming: %d, want 200", got)
			}
		}
	}
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	for i := range ids {
		ring.revoke(ids[i])
		returned := time.Now()
		var wg sync.WaitGroup
		for _, r := range []*replica{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if r.decide(t, toks[i]) == 401 {
						break
					}
					if time.Since(returned) > time.Second {
						t.Errorf("key %d still allowed by a replica 1 s after its revocation returned", i)
						return
					}
				}
				d := time.Since(returned)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	if len(lat) > 0 {
		t.Logf("revocation propagation over %d (key, replica) pairs: p50 %v, p99 %v, max %v",
			len(lat), percentile(lat, .5), percentile(lat, .99), percentile(lat, 1))
	}
}

// TestRevocation_ReplayedAfterTheListenerBackendIsKilled terminates the
// listener's backend, revokes a key while it cannot reconnect, and checks
// that the replay after the reconnect denies it.
func TestRevocation_ReplayedAfterTheListenerBackendIsKilled(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	k, tok := ring.create()
	proxy := tcpproxy.Start(t, "127.0.0.1:5432")
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL, "KEYGATE_LISTEN_DATABASE_URL": withHost(t, dbURL, proxy.Addr())},
		"--poll-interval", "1h", "--heartbeat-interval", "200ms")
	if got := a.decide(t, tok); got != 200 {
		t.Fatalf("warming: %d", got)
	}
	if !eventually(5*time.Second, func() bool { return a.metric(t, "keygate_listener_connected") == 1 }) {
		t.Fatal("listener never connected")
	}

	proxy.RefuseNew() // the listener cannot come back until Restore
	adminExec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
		dbName(t, dbURL), postgres.ListenerApplicationName)
	if !eventually(5*time.Second, func() bool { return a.metric(t, "keygate_listener_connected") == 0 }) {
		t.Fatal("listener did not notice its backend was terminated")
	}
	ring.revoke(k.ID)
	if got := a.decide(t, tok); got != 200 {
		t.Logf("note: revoked key already denied while the listener was down (%d)", got)
	}
	proxy.Restore()
	start := time.Now()
	if !eventually(5*time.Second, func() bool { return a.decide(t, tok) == 401 }) {
		t.Fatal("revoked key still allowed 5 s after the listener could reconnect")
	}
	t.Logf("denied %v after the listener could reconnect", time.Since(start).Round(time.Millisecond))
	if got := a.metric(t, "keygate_listener_reconnects_total"); got != 1 {
		t.Errorf("keygate_listener_reconnects_total = %v, want 1", got)
	}
	if got := a.metric(t, "keygate_events_replays_total"); got != 1 {
		t.Errorf("keygate_events_replays_total = %v, want 1", got)
	}
}

// TestListener_SilentConnectionIsDetectedByHeartbeat blackholes the LISTEN
// connection, as a dead NAT entry would: no error ever arrives, and only
// the missing heartbeats tell. The listener must reconnect, and a key
// revoked meanwhile must be denied.
func TestListener_SilentConnectionIsDetectedByHeartbeat(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	k, tok := ring.create()
	proxy := tcpproxy.Start(t, "127.0.0.1:5432")
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL, "KEYGATE_LISTEN_DATABASE_URL": withHost(t, dbURL, proxy.Addr())},
		"--poll-interval", "1h", "--heartbeat-interval", "100ms")
	if got := a.decide(t, tok); got != 200 {
		t.Fatalf("warming: %d", got)
	}
	if !eventually(5*time.Second, func() bool { return a.metric(t, "keygate_listener_connected") == 1 }) {
		t.Fatal("listener never connected")
	}
	proxy.Blackhole()
	ring.revoke(k.ID) // its NOTIFY is lost in the hole
	if !eventually(5*time.Second, func() bool { return a.metric(t, "keygate_listener_heartbeat_timeouts_total") >= 1 }) {
		t.Fatal("two missed heartbeats went unnoticed")
	}
	proxy.Restore()
	if !eventually(5*time.Second, func() bool { return a.decide(t, tok) == 401 }) {
		t.Fatal("key revoked during the silent outage still allowed 5 s after the connection could come back")
	}
	if !eventually(5*time.Second, func() bool { return a.metric(t, "keygate_listener_connected") == 1 }) {
		t.Error("listener did not reconnect")
	}
}

// TestRevocation_DatabaseOutage cuts the database under a replica: cached
// keys keep working until --max-staleness, then every key gets 503; once
// the database is back, allows come back within 5 s.
func TestRevocation_DatabaseOutage(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	_, cached := ring.create()
	_, cold := ring.create()
	proxy := tcpproxy.Start(t, "127.0.0.1:5432")
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": withHost(t, dbURL, proxy.Addr())},
		"--poll-interval", "100ms", "--heartbeat-interval", "200ms", "--max-staleness", "2s",
		"--preload-keys", "0") // the cold key stays uncached
	if got := a.decide(t, cached); got != 200 {
		t.Fatalf("warming: %d", got)
	}
	proxy.Cut()
	cutAt := time.Now()
	if got := a.decide(t, cold); got != 503 {
		t.Errorf("uncached key with the database cut: %d, want 503", got)
	}
	if got := a.decide(t, cached); got != 200 && time.Since(cutAt) < 2*time.Second {
		t.Errorf("cached key within max staleness: %d, want 200", got)
	}
	if !eventually(5*time.Second, func() bool { return a.decide(t, cached) == 503 }) {
		t.Fatal("cached key still allowed 5 s into the outage with --max-staleness 2s")
	}
	// Staleness counts from the last sync that read the log to its end,
	// which was up to one --poll-interval (100ms) before the cut.
	if since := time.Since(cutAt); since < 2*time.Second-250*time.Millisecond {
		t.Errorf("cached key denied %v after the cut, before max staleness since the last sync", since)
	}
	proxy.Restore()
	restored := time.Now()
	if !eventually(5*time.Second, func() bool { return a.decide(t, cached) == 200 && a.decide(t, cold) == 200 }) {
		t.Fatal("allows did not come back within 5 s of the database")
	}
	t.Logf("allows back %v after the database", time.Since(restored).Round(time.Millisecond))
}

// TestRevocation_PrunedLogPurgesTheCache prunes the events log past a
// disconnected replica's position: when it is back it drops its cache and
// still decides right.
func TestRevocation_PrunedLogPurgesTheCache(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	revoked, revokedTok := ring.create()
	_, keptTok := ring.create()
	proxy := tcpproxy.Start(t, "127.0.0.1:5432")
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": withHost(t, dbURL, proxy.Addr())},
		"--poll-interval", "100ms", "--heartbeat-interval", "200ms", "--max-staleness", "1m")
	for _, tok := range []string{revokedTok, keptTok} {
		if got := a.decide(t, tok); got != 200 {
			t.Fatalf("warming: %d", got)
		}
	}
	proxy.Cut()
	ring.revoke(revoked.ID)
	if _, err := ring.st.PruneEvents(context.Background(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	// The bound is generous: the purge is the property here, not its
	// latency, and a loaded CI machine reconnects slowly.
	if !eventually(15*time.Second, func() bool { return a.metric(t, "keygate_events_log_purges_total") >= 1 }) {
		t.Fatal("no cache purge within 15 s after the log was pruned past the replica")
	}
	if got := a.metric(t, "keygate_events_log_purges_total"); got != 1 {
		t.Errorf("%v cache purges after one prune, want 1", got)
	}
	if got := a.decide(t, revokedTok); got != 401 {
		t.Errorf("revoked key after the purge: %d, want 401", got)
	}
	if got := a.decide(t, keptTok); got != 200 {
		t.Errorf("untouched key after the purge: %d, want 200", got)
	}
}

// tableUpdates is how many row updates PostgreSQL counted on api_keys.
func tableUpdates(t *testing.T, dbURL string) int64 {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLastUsed_WrittenBehindOncePerInterval runs 10 000 checks of one key:
// last_used_at is written once (at shutdown, with a long flush interval),
// never once per request.
func TestLastUsed_WrittenBehindOncePerInterval(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	k, tok := ring.create()
	before := tableUpdates(t, dbURL)
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--last-used-flush", "1h", "--rate-limit", "0")
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000/8; i++ {
				if got := a.decide(t, tok); got != 200 {
					t.Errorf("check: %d", got)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got, err := ring.st.GetKey(context.Background(), "acme", k.ID); err != nil || got.LastUsedAt != nil {
		t.Fatalf("last_used_at before any flush = %v (%v), want null", got.LastUsedAt, err)
	}
	if err := a.stop(); err != nil { // SIGTERM: flush what is pending
		t.Fatal(err)
	}
	got, err := ring.st.GetKey(context.Background(), "acme", k.ID)
	if err != nil || got.LastUsedAt == nil || got.LastUsedAt.Before(start.Add(-time.Second)) {
		t.Fatalf("last_used_at after shutdown = %v (%v), want a time after %v", got.LastUsedAt, err, start)
	}
	var updates int64
	eventually(5*time.Second, func() bool { updates = tableUpdates(t, dbURL) - before; return updates >= 1 })
	if updates != 1 {
		t.Errorf("api_keys row updates for 10 000 checks = %d, want 1", updates)
	}
}

func TestLastUsed_VisibleAfterAFlush(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	k, tok := ring.create()
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--last-used-flush", "200ms")
	if got := a.decide(t, tok); got != 200 {
		t.Fatal(got)
	}
	if !eventually(5*time.Second, func() bool {
		got, err := ring.st.GetKey(context.Background(), "acme", k.ID)
		return err == nil && got.LastUsedAt != nil
	}) {
		t.Fatal("last_used_at not written within 5 s with --last-used-flush 200ms")
	}
}

// TestRevocation_ThroughTheAPIUnderLoad revokes a key through replica A's
// management API while 50 goroutines hammer Check for it on A and B, both
// with cold caches: once the DELETE has returned A allows it no more, and
// B allows it no more a second later.
func TestRevocation_ThroughTheAPIUnderLoad(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	admin, err := ring.svc.CreateKey(context.Background(), manage.NewKey{
		OrgID: "acme", UserID: "root", Name: "admin", Role: "admin", CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	victim, tok := ring.create()
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	a := startReplica(t, e, "--rate-limit", "0")
	b := startReplica(t, e, "--rate-limit", "0")

	type verdict struct {
		replica string
		started time.Time
		status  int
	}
	verdicts := make(chan verdict, 1<<16)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		r, name := a, "A"
		if i%2 == 1 {
			r, name = b, "B"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				started := time.Now()
				select {
				case verdicts <- verdict{name, started, r.decide(t, tok)}:
				default:
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the caches warm under load

	req, _ := http.NewRequest(http.MethodDelete, "http://"+a.httpAddr+"/v1/api-keys/"+victim.ID, nil)
	req.Header.Set("Authorization", "Bearer "+admin.Token.String())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	returned := time.Now()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE through A = %d, want 200", resp.StatusCode)
	}
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(verdicts)
	var before, afterA, afterB, lateB int
	for v := range verdicts {
		switch {
		case v.started.Before(returned):
			before++
		case v.replica == "A" && v.status == 200:
			afterA++
		case v.replica == "B" && v.status == 200 && v.started.After(returned.Add(time.Second)):
			lateB++
		case v.replica == "B":
			afterB++
		}
	}
	t.Logf("%d checks before the DELETE returned, %d after on B", before, afterB)
	if before == 0 {
		t.Error("no check ran before the revocation: the test proves nothing")
	}
	if afterA != 0 {
		t.Errorf("replica A allowed the key %d times after its own DELETE returned", afterA)
	}
	if lateB != 0 {
		t.Errorf("replica B allowed the key %d times more than 1 s after the DELETE returned", lateB)
	}
}
