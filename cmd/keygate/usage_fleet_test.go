package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

func storeUpdateRemaining(n int64) store.KeyUpdate { return store.KeyUpdate{Remaining: &n} }

// meteredKey creates, in the database at dbURL, a key with remaining uses.
func meteredKey(t *testing.T, dbURL string, remaining int64) (keygate.Key, string) {
	t.Helper()
	ring := newKeyring(t, dbURL)
	ck, err := ring.svc.CreateKey(t.Context(), manage.NewKey{
		OrgID: "acme", UserID: "alice", Name: "metered", Role: "member", Remaining: &remaining, CreateOrganization: true,
	}, keygate.Actor{})
	if err != nil {
		t.Fatal(err)
	}
	return ck.Key, ck.Token.String()
}

// spendCheck asks a replica about tok: 200 on allow, else the deny's HTTP
// status, and the deny's code.
func spendCheck(c authv3.AuthorizationClient, tok string) (int, keygate.Code, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things", Headers: map[string]string{"x-api-key": tok},
		}},
	}})
	if err != nil {
		return 0, "", err
	}
	if resp.GetOkResponse() != nil {
		return 200, "", nil
	}
	var body struct {
		Error struct {
			Code keygate.Code `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &body)
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), body.Error.Code, nil
}

// spendAll sends callers×perCaller checks of tok round-robin over the
// clients, and counts allows, usage_exceeded denies and errors (a killed
// replica). kill, when set, runs once a quarter of the checks are sent;
// from then on the last client gets no more checks.
func spendAll(t *testing.T, clients []authv3.AuthorizationClient, tok string, callers, perCaller int, kill func()) (allowed, exceeded, failed int64) {
	t.Helper()
	var (
		a, x, f, sent atomic.Int64
		dead          atomic.Bool
		once          sync.Once
		wg            sync.WaitGroup
	)
	total := int64(callers * perCaller)
	for c := range callers {
		wg.Go(func() {
			for i := range perCaller {
				if kill != nil && sent.Add(1) == total/4 {
					once.Do(func() { kill(); dead.Store(true) })
				}
				n := len(clients)
				if dead.Load() {
					n--
				}
				status, code, err := spendCheck(clients[(c+i)%n], tok)
				switch {
				case err != nil:
					f.Add(1)
				case status == 200:
					a.Add(1)
				case code == keygate.CodeUsageExceeded:
					x.Add(1)
				default:
					t.Errorf("check: %d %s", status, code)
				}
			}
		})
	}
	wg.Wait()
	return a.Load(), x.Load(), f.Load()
}

// TestUsage_TwoServeReplicasAllowExactlyRemaining is SPEC §9's exactness
// test: two `keygate serve` replicas on one PostgreSQL database, 64
// concurrent callers, a key with remaining 500: exactly 500 allows in
// total, every other check usage_exceeded.
func TestUsage_TwoServeReplicasAllowExactlyRemaining(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	k, tok := meteredKey(t, dbURL, 500)
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	a := startReplica(t, e, "--rate-limit", "0")
	b := startReplica(t, e, "--rate-limit", "0")
	allowed, exceeded, failed := spendAll(t, []authv3.AuthorizationClient{a.client, b.client}, tok, 64, 20, nil)
	if allowed != 500 || exceeded != 64*20-500 || failed != 0 {
		t.Errorf("allowed %d, usage_exceeded %d, errors %d; want exactly 500, %d, 0", allowed, exceeded, failed, 64*20-500)
	}
	ring := newKeyring(t, dbURL)
	got, err := ring.st.GetKey(t.Context(), "acme", k.ID)
	if err != nil || *got.Remaining != 0 {
		t.Errorf("remaining in the store %v, %v; want 0", got.Remaining, err)
	}
}

// TestUsage_SIGKILLedReplicaNeverGrantsExtraUses: a replica killed with
// SIGKILL mid-run loses the uses of its lease; the total never passes
// remaining. The killed replica is a real process (this test binary,
// re-run as TestHelperServeProcess).
func TestUsage_SIGKILLedReplicaNeverGrantsExtraUses(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	_, tok := meteredKey(t, dbURL, 500)
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--rate-limit", "0")
	child := startServeProcess(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--rate-limit", "0")
	conn, err := grpc.NewClient(child.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	killed := false
	allowed, exceeded, failed := spendAll(t, []authv3.AuthorizationClient{a.client, authv3.NewAuthorizationClient(conn)}, tok, 64, 20, func() {
		if err := child.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Error(err)
		}
		killed = true
	})
	if !killed {
		t.Fatal("the replica was never killed")
	}
	if allowed > 500 {
		t.Fatalf("allowed %d uses of 500 with a replica SIGKILLed mid-run", allowed)
	}
	t.Logf("allowed %d of 500 (%d lost with the killed replica's lease), usage_exceeded %d, errors %d", allowed, 500-allowed, exceeded, failed)
}

// TestUsage_GracefulStopGivesTheLeaseBack: a replica stopped by SIGTERM
// returns its unspent uses; the store then holds remaining minus exactly
// the allows.
func TestUsage_GracefulStopGivesTheLeaseBack(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	k, tok := meteredKey(t, dbURL, 1000)
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--rate-limit", "0")
	allowed, _, _ := spendAll(t, []authv3.AuthorizationClient{a.client}, tok, 8, 25, nil)
	ring := newKeyring(t, dbURL)
	before, _ := ring.st.GetKey(t.Context(), "acme", k.ID)
	if *before.Remaining >= 1000-allowed {
		t.Fatalf("the replica holds no lease (store %d, allowed %d): nothing to give back", *before.Remaining, allowed)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	after, err := ring.st.GetKey(t.Context(), "acme", k.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *after.Remaining != 1000-allowed {
		t.Errorf("remaining %d after a graceful stop (%d while running), want %d: the unspent lease given back", *after.Remaining, *before.Remaining, 1000-allowed)
	}
}

// TestUsage_PatchOfRemainingVoidsAnotherReplicasLease: replica a holds a
// lease of the old epoch when remaining is PATCHed to 5; once the key
// event has reached it (within the 1 s revocation bound), the uses of the
// new epoch across both replicas are never more than 5.
func TestUsage_PatchOfRemainingVoidsAnotherReplicasLease(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	k, tok := meteredKey(t, dbURL, 1000)
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	a := startReplica(t, e, "--rate-limit", "0")
	b := startReplica(t, e, "--rate-limit", "0")
	spendAll(t, []authv3.AuthorizationClient{a.client}, tok, 8, 25, nil) // a's lease grows
	ring := newKeyring(t, dbURL)
	held, _ := ring.st.GetKey(t.Context(), "acme", k.ID)
	five := int64(5)
	if _, err := ring.st.UpdateKey(t.Context(), "acme", k.ID, storeUpdateRemaining(five), keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the key event reaches both replicas
	allowed, _, _ := spendAll(t, []authv3.AuthorizationClient{a.client, b.client}, tok, 8, 10, nil)
	if allowed != 5 {
		t.Errorf("allowed %d after PATCH remaining 5 (replica a held about %d uses of the old epoch), want 5", allowed, 1000-200-*held.Remaining)
	}
}

// TestUsage_PatchWithWaitIsInForceWhenItAnswers: a PATCH of remaining
// with ?wait=true answers once every live replica has applied the new
// epoch, so from then on the two replicas together allow at most the new
// value, however much of the old epoch's leases they held (SPEC §9, §12).
// The replicas are hammered throughout, across the PATCH.
func TestUsage_PatchWithWaitIsInForceWhenItAnswers(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	k, tok := meteredKey(t, dbURL, 1_000_000)
	ring := newKeyring(t, dbURL)
	owner := ring.ownerToken()
	e := fleetEnv(dbURL)
	a := startReplica(t, e, "--rate-limit", "0")
	b := startReplica(t, e, "--rate-limit", "0")
	waitLive(t, e, a.replicaID(t), b.replicaID(t))

	var (
		after    atomic.Int64 // allows of requests sent after the PATCH answered
		answered atomic.Int64 // unix nanos when it answered; 0 before
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for c := range 8 {
		client := []authv3.AuthorizationClient{a.client, b.client}[c%2]
		wg.Go(func() {
			for !stop.Load() {
				sent := time.Now().UnixNano()
				status, _, err := spendCheck(client, tok)
				if err == nil && status == 200 {
					if at := answered.Load(); at != 0 && sent > at {
						after.Add(1)
					}
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // both replicas' leases grow

	hr, err := http.NewRequest("PATCH", "http://"+a.httpAddr+"/v1/api-keys/"+k.ID+"?wait=true", strings.NewReader(`{"remaining": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Authorization", "Bearer "+owner)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	answered.Store(time.Now().UnixNano())
	var body httpapi.Data[httpapi.APIKey]
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Data.Propagation == nil || !body.Data.Propagation.Complete {
		t.Fatalf("PATCH ?wait=true: status %d, %v, %+v", resp.StatusCode, err, body.Data.Propagation)
	}
	resp.Body.Close()
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	if got := after.Load(); got > 5 {
		t.Errorf("%d allows of requests sent after PATCH remaining 5 answered, want at most 5", got)
	}
	t.Logf("allows after the waited PATCH: %d of 5", after.Load())
}
