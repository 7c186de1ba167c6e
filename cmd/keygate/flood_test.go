package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/internal/pgtest"
)

// decideFrom asks the replica about tok for a client at source.
func (r *replica) decideFrom(ctx context.Context, source, tok string) (int, error) {
	resp, err := r.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things", Headers: map[string]string{"x-api-key": tok},
		}},
	}})
	if err != nil {
		return 0, err
	}
	if resp.GetOkResponse() != nil {
		return 200, nil
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

// A flood of forged tokens with valid checksums, from enough addresses to
// stay under the failed-auth throttle, must not become a flood of
// PostgreSQL queries (SPEC §10): at most --unknown-lookup-rate a second
// over the flood plus the filter's false positives. Real keys stay allowed
// throughout, and a key created elsewhere mid-flood works within 1 s.
func TestFlood_ForgedTokensDoNotReachPostgres(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ring := newKeyring(t, dbURL)
	_, legit := ring.create()
	a := startReplica(t, env{"KEYGATE_DATABASE_URL": dbURL}, "--rate-limit", "0")
	if got := a.decide(t, legit); got != 200 {
		t.Fatalf("legitimate key before the flood: %d", got)
	}
	lookupsBefore := a.metric(t, "keygate_store_lookup_seconds_count")

	const tokens, addresses, workers = 100_000, 10_000, 16
	format := apikey.DefaultFormat()
	forged := make([]string, tokens)
	for i := range forged {
		tok, err := format.Generate("secret", "live") // random secret, valid checksum
		if err != nil {
			t.Fatal(err)
		}
		forged[i] = tok.String()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		next     atomic.Int64
		notDeny  atomic.Int64
		legitBad atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= tokens {
					return
				}
				// 10 000 addresses, 10 tokens each: under the throttle's 60.
				source := fmt.Sprintf("10.%d.%d.%d", i%addresses/65536, i%addresses/256%256, i%addresses%256)
				code, err := a.decideFrom(ctx, source, forged[i])
				if err != nil || code != 401 {
					notDeny.Add(1)
				}
			}
		}()
	}
	// Legitimate traffic keeps being allowed while the flood runs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for next.Load() < tokens {
			if code, err := a.decideFrom(ctx, "192.0.2.1", legit); err != nil || code != 200 {
				legitBad.Add(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	// A key created on another replica mid-flood is honoured within 1 s.
	for next.Load() < tokens/2 {
		time.Sleep(5 * time.Millisecond)
	}
	_, fresh := ring.create()
	created := time.Now()
	for {
		code, err := a.decideFrom(ctx, "192.0.2.2", fresh)
		if err == nil && code == 200 {
			t.Logf("a key created mid-flood was allowed after %v", time.Since(created).Round(time.Millisecond))
			break
		}
		if time.Since(created) > time.Second {
			t.Errorf("a key created mid-flood still denied (%d, %v) 1 s after it was created", code, err)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	took := time.Since(start)

	lookups := a.metric(t, "keygate_store_lookup_seconds_count") - lookupsBefore
	const budget = 50 // --unknown-lookup-rate's default
	bound := budget*(took.Seconds()+1) + tokens/100
	t.Logf("%d forged tokens from %d addresses in %v: %.0f store lookups (bound %.0f), %.0f skipped",
		tokens, addresses, took.Round(time.Millisecond), lookups, bound, a.metric(t, `keygate_unknown_lookups_total{result="skipped"}`))
	if lookups > bound {
		t.Errorf("the flood made %.0f store lookups; want at most %.0f (the budget over %v plus 1 %% of the tokens)", lookups, bound, took)
	}
	if n := notDeny.Load(); n != 0 {
		t.Errorf("%d forged tokens were not answered 401", n)
	}
	if n := legitBad.Load(); n != 0 {
		t.Errorf("the legitimate key was not allowed %d times during the flood", n)
	}
}

// The embedded store gets the same filter, budget and warm start: forged
// tokens are skipped past the budget, and the key it created itself works
// at once.
func TestFlood_EmbeddedStoreSkipsForgedTokensToo(t *testing.T) {
	e := migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()})
	r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "before")
	if r.code != 0 {
		t.Fatalf("keys create: %s", r.stderr)
	}
	before := firstLine(r.stdout)
	a := startReplica(t, e, "--rate-limit", "0", "--unknown-lookup-rate", "5")
	if got := a.decide(t, before); got != 200 {
		t.Fatalf("a key made before serve started: %d, want 200", got)
	}
	format := apikey.DefaultFormat()
	for i := 0; i < 500; i++ {
		tok, _ := format.Generate("secret", "live")
		if code, err := a.decideFrom(context.Background(), fmt.Sprintf("10.0.%d.%d", i/256, i%256), tok.String()); err != nil || code != 401 {
			t.Fatalf("forged token: %d, %v", code, err)
		}
	}
	if skipped := a.metric(t, `keygate_unknown_lookups_total{result="skipped"}`); skipped < 400 {
		t.Errorf("skipped %v of 500 forged tokens with a budget of 5/s; want most", skipped)
	}
	r = invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "during")
	if r.code != 0 {
		t.Fatalf("keys create: %s", r.stderr)
	}
	during := firstLine(r.stdout)
	if !eventually(2*time.Second, func() bool { return a.decide(t, during) == 200 }) {
		t.Error("a key created by the CLI while the budget was spent was not allowed within 2 s")
	}
}
