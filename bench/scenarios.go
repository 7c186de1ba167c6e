package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store/postgres"
)

// env is what every scenario shares: where PostgreSQL is, the keygate
// binary, the tools, the run shape and where reports go.
type env struct {
	serverURL string
	keygate   string // built binary
	before    string // optional keygate binary to compare against ("" none)
	ghz       string // "" skips ghz
	work      string // scratch directory (tokens files, child logs)
	runs      int
	dur       time.Duration
	sweep     bool // million: sweep every key (cold at c=32, then memory and warm)
	out       io.Writer
	log       io.Writer
}

func allowed(_ *authv3.CheckRequest, r *authv3.CheckResponse) bool { return r.GetOkResponse() != nil }

// withSeed seeds n keys into a fresh database, runs f, and drops it.
func (e *env) withSeed(ctx context.Context, n int, f func(s seeded, keys []benchKey) error) error {
	s, err := seed(ctx, e.serverURL, n, filepath.Join(e.work, fmt.Sprintf("tokens-%d.txt", n)), e.log)
	if err != nil {
		return err
	}
	defer func() {
		if err := dropDatabase(e.serverURL, s.Name); err != nil {
			fmt.Fprintf(e.log, "dropping %s: %v\n", s.Name, err)
		}
		os.Remove(s.Tokens)
	}()
	keys, err := readTokens(s.Tokens)
	if err != nil {
		return err
	}
	return f(s, keys)
}

// cacheBytesFor is a --cache-max-bytes that holds n keys with room to
// spare: the cache counts about 440 bytes per seeded key, ristretto's
// bookkeeping included (TestCost_BoundsTheHeap). Not more: ristretto sizes
// its admission counters by the bound, allocated up front.
func cacheBytesFor(n int) int64 { return max(64<<20, int64(n)*500) }

// hits is the hit-path scenario over 1 000 cached keys: keygate and the
// null server, closed loop at c=1 and c=32, open loop at 2 000 rps, ghz at
// c=32, and 10 % unknown keys; every run measures each target in turn.
func (e *env) hits(ctx context.Context) error {
	return e.withSeed(ctx, 1000, func(s seeded, keys []benchKey) error {
		targets := []struct {
			name string
			c    *child
		}{}
		kg, err := startKeygate(ctx, e.keygate, "keygate", s.URL, cacheBytesFor(s.N), e.work)
		if err != nil {
			return err
		}
		defer kg.Stop()
		targets = append(targets, struct {
			name string
			c    *child
		}{"keygate", kg})
		if e.before != "" {
			b, err := startKeygate(ctx, e.before, "keygate-before", s.URL, cacheBytesFor(s.N), e.work)
			if err != nil {
				return err
			}
			defer b.Stop()
			targets = append(targets, struct {
				name string
				c    *child
			}{"keygate (before)", b})
		}
		null, err := startNull(ctx, "null", false, e.work)
		if err != nil {
			return err
		}
		defer null.Stop()
		targets = append(targets, struct {
			name string
			c    *child
		}{"null", null})
		shaped, err := startNull(ctx, "null-shaped", false, e.work, "-shaped")
		if err != nil {
			return err
		}
		defer shaped.Stop()
		targets = append(targets, struct {
			name string
			c    *child
		}{"null-shaped", shaped})

		reqs := make([]*authv3.CheckRequest, len(keys))
		for i, k := range keys {
			reqs[i] = checkRequest(k.Token)
		}
		unknown := make([]*authv3.CheckRequest, 1000)
		for i := range unknown {
			tok, _ := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
			unknown[i] = checkRequest(tok.String())
		}
		isUnknown := make(map[*authv3.CheckRequest]bool, len(unknown))
		for _, r := range unknown {
			isUnknown[r] = true
		}
		mixed := func(r *rand.Rand) *authv3.CheckRequest {
			if r.IntN(10) == 0 {
				return unknown[r.IntN(len(unknown))]
			}
			return reqs[r.IntN(len(reqs))]
		}
		wantMixed := func(req *authv3.CheckRequest, resp *authv3.CheckResponse) bool {
			return (resp.GetOkResponse() != nil) != isUnknown[req]
		}

		clients := map[string]*client{}
		for _, t := range targets {
			c, err := dial(t.c.GRPCAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			clients[t.name] = c
			if err := c.warmUp(ctx, append(slices.Clone(reqs), unknown...), 8); err != nil {
				return err
			}
		}
		// A second pass: ristretto may drop a first Set under contention.
		time.Sleep(100 * time.Millisecond)
		for _, t := range targets {
			_ = clients[t.name].warmUp(ctx, append(slices.Clone(reqs), unknown...), 8)
		}

		tb := newTable("Hits: 1 000 cached keys (keygate --rate-limit 0 --failed-auth-limit 0)")
		for run := range e.runs {
			fmt.Fprintf(e.log, "hits: run %d/%d\n", run+1, e.runs)
			for _, t := range targets {
				c := clients[t.name]
				want := wantFunc(allowed)
				if t.name == "null" || t.name == "null-shaped" {
					want = anyAnswer
				}
				tb.add(t.name+", c=1", c.closedLoop(ctx, 1, e.dur, 0, fixedPool(reqs), want))
				tb.add(t.name+", c=32", c.closedLoop(ctx, 32, e.dur, 0, fixedPool(reqs), want))
				tb.add(t.name+", open 2000 rps", c.openLoop(ctx, 2000, e.dur, fixedPool(reqs), want))
				if want != nil && t.name != "null" && t.name != "null-shaped" {
					tb.add(t.name+", 10 % unknown, c=32", c.closedLoop(ctx, 32, e.dur, 0, mixed, wantMixed))
				}
				if e.ghz != "" {
					sum, err := runGhz(ctx, e.ghz, t.c.GRPCAddr, reqs[0], 32, e.dur)
					if err != nil {
						return err
					}
					tb.add(t.name+", ghz c=32", sum)
				}
			}
		}
		tb.print(e.out)
		fmt.Fprintln(e.out)
		tb.ratio(e.out, "keygate/null throughput, c=1", "keygate, c=1", "null, c=1", rps)
		tb.ratio(e.out, "keygate/null throughput, c=32 (target ≥ 0.9)", "keygate, c=32", "null, c=32", rps)
		tb.ratio(e.out, "keygate/null p99, open 2000 rps (target ≤ 1.2)", "keygate, open 2000 rps", "null, open 2000 rps", p99)
		tb.ratio(e.out, "keygate/null p50, open 2000 rps", "keygate, open 2000 rps", "null, open 2000 rps", p50)
		tb.ratio(e.out, "keygate/null-shaped throughput, c=1", "keygate, c=1", "null-shaped, c=1", rps)
		tb.ratio(e.out, "keygate/null-shaped throughput, c=32", "keygate, c=32", "null-shaped, c=32", rps)
		tb.ratio(e.out, "keygate/null-shaped p99, open 2000 rps", "keygate, open 2000 rps", "null-shaped, open 2000 rps", p99)
		tb.ratio(e.out, "null-shaped/null throughput, c=32 (the cost of keygate's payload)", "null-shaped, c=32", "null, c=32", rps)
		if e.ghz != "" {
			tb.ratio(e.out, "keygate/null throughput, ghz c=32", "keygate, ghz c=32", "null, ghz c=32", rps)
		}
		if e.before != "" {
			tb.ratio(e.out, "keygate after/before throughput, c=32", "keygate, c=32", "keygate (before), c=32", rps)
			tb.ratio(e.out, "keygate after/before p99, open 2000 rps", "keygate, open 2000 rps", "keygate (before), open 2000 rps", p99)
		}
		return nil
	})
}

// options compares the null server with gRPC's default server options and
// with extauthz.ServerOptions in the same run.
func (e *env) options(ctx context.Context) error {
	def, err := startNull(ctx, "null-defaults", true, e.work)
	if err != nil {
		return err
	}
	defer def.Stop()
	tuned, err := startNull(ctx, "null-tuned", false, e.work)
	if err != nil {
		return err
	}
	defer tuned.Stop()
	req := checkRequest("sk_live_" + "00000000000000000000000000000000000000")
	tb := newTable("gRPC server options: the null server, gRPC defaults vs extauthz.ServerOptions")
	cd, err := dial(def.GRPCAddr)
	if err != nil {
		return err
	}
	defer cd.Close()
	ct, err := dial(tuned.GRPCAddr)
	if err != nil {
		return err
	}
	defer ct.Close()
	pool := fixedPool([]*authv3.CheckRequest{req})
	for run := range e.runs {
		fmt.Fprintf(e.log, "options: run %d/%d\n", run+1, e.runs)
		for _, t := range []struct {
			name string
			c    *client
		}{{"defaults", cd}, {"tuned", ct}} {
			t.c.closedLoop(ctx, 4, time.Second, 0, pool, anyAnswer) // warm the connection
			tb.add(t.name+", c=1", t.c.closedLoop(ctx, 1, e.dur, 0, pool, anyAnswer))
			tb.add(t.name+", c=32", t.c.closedLoop(ctx, 32, e.dur, 0, pool, anyAnswer))
			tb.add(t.name+", open 2000 rps", t.c.openLoop(ctx, 2000, e.dur, pool, anyAnswer))
		}
	}
	tb.print(e.out)
	fmt.Fprintln(e.out)
	tb.ratio(e.out, "tuned/defaults throughput, c=32", "tuned, c=32", "defaults, c=32", rps)
	tb.ratio(e.out, "tuned/defaults throughput, c=1", "tuned, c=1", "defaults, c=1", rps)
	tb.ratio(e.out, "tuned/defaults p99, open 2000 rps", "tuned, open 2000 rps", "defaults, open 2000 rps", p99)
	return nil
}

// million seeds 1 000 000 keys: a sweep of every key in random order (all
// misses: the cold cache, against PostgreSQL), then uniformly random keys
// (warm), then the memory of keygate with them all cached.
func (e *env) million(ctx context.Context, n int) error {
	return e.withSeed(ctx, n, func(s seeded, keys []benchKey) error {
		kg, err := startKeygate(ctx, e.keygate, "keygate-million", s.URL, cacheBytesFor(s.N), e.work)
		if err != nil {
			return err
		}
		defer kg.Stop()
		null, err := startNull(ctx, "null-million", false, e.work)
		if err != nil {
			return err
		}
		defer null.Stop()
		c, err := dial(kg.GRPCAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		cn, err := dial(null.GRPCAddr)
		if err != nil {
			return err
		}
		defer cn.Close()
		rss0, _ := kg.RSS()

		// Cold: every key once, in a random order, split in e.runs parts.
		perm := rand.Perm(len(keys))
		var next int
		var mu sync.Mutex
		sweep := func(*rand.Rand) *authv3.CheckRequest {
			mu.Lock()
			k := keys[perm[next%len(perm)]]
			next++
			mu.Unlock()
			return checkRequest(k.Token)
		}
		random := func(r *rand.Rand) *authv3.CheckRequest { return checkRequest(keys[r.IntN(len(keys))].Token) }
		tb := newTable(fmt.Sprintf("%d keys in PostgreSQL (keygate --cache-max-bytes %d)", n, cacheBytesFor(n)))
		// Misses one at a time, and at a modest fixed rate: the latency of
		// a miss itself, not of a queue of them.
		for run := range e.runs {
			fmt.Fprintf(e.log, "million: cold misses, run %d/%d\n", run+1, e.runs)
			tb.add("keygate, cold (misses), c=1", c.closedLoop(ctx, 1, e.dur, 0, sweep, allowed))
			tb.add("keygate, cold (misses), open 500 rps", c.openLoop(ctx, 500, e.dur, sweep, allowed))
		}
		if !e.sweep {
			tb.print(e.out)
			return nil
		}
		part := (len(keys) - next + e.runs - 1) / e.runs
		for run := range e.runs {
			fmt.Fprintf(e.log, "million: cold part %d/%d (%d keys)\n", run+1, e.runs, part)
			tb.add("keygate, cold sweep (every key once: misses), c=32", c.closedLoop(ctx, 32, time.Hour, part, sweep, allowed))
		}
		// ristretto may drop a Set under contention: the cost metric says
		// how much of the sweep stayed cached.
		time.Sleep(time.Second)
		rss, rerr := kg.RSS()
		costBytes, merr := kg.Metric("keygate_cache_cost_bytes")
		for run := range e.runs {
			fmt.Fprintf(e.log, "million: warm run %d/%d\n", run+1, e.runs)
			tb.add("keygate, warm (uniform random), c=32", c.closedLoop(ctx, 32, e.dur, 0, random, allowed))
			tb.add("keygate, warm (uniform random), open 2000 rps", c.openLoop(ctx, 2000, e.dur, random, allowed))
			tb.add("null, c=32", cn.closedLoop(ctx, 32, e.dur, 0, random, anyAnswer))
			tb.add("null, open 2000 rps", cn.openLoop(ctx, 2000, e.dur, random, anyAnswer))
		}
		tb.print(e.out)
		fmt.Fprintln(e.out)
		tb.ratio(e.out, "keygate warm/null throughput, c=32", "keygate, warm (uniform random), c=32", "null, c=32", rps)
		tb.ratio(e.out, "keygate warm/null p99, open 2000 rps", "keygate, warm (uniform random), open 2000 rps", "null, open 2000 rps", p99)
		fmt.Fprintf(e.out, "\nMemory with %d keys cached: RSS %.0f MiB (%.0f MiB at start)", n, float64(rss)/(1<<20), float64(rss0)/(1<<20))
		if rerr != nil {
			fmt.Fprintf(e.out, " [rss: %v]", rerr)
		}
		if merr != nil {
			fmt.Fprintf(e.out, "; keygate_cache_cost_bytes: %v\n", merr)
		} else {
			fmt.Fprintf(e.out, "; keygate_cache_cost_bytes %.0f MiB\n", costBytes/(1<<20))
		}
		return nil
	})
}

// revoke measures revocation propagation: two replicas on one database; a
// key is cached on both, revoked through the store (manage.Service, as the
// API and CLI do), and each replica is polled with Check until it denies,
// timed from the moment RevokeKey returned.
func (e *env) revoke(ctx context.Context, count int) error {
	return e.withSeed(ctx, 1000, func(s seeded, keys []benchKey) error {
		var reps []*client
		for i := range 2 {
			kg, err := startKeygate(ctx, e.keygate, fmt.Sprintf("keygate-replica-%d", i+1), s.URL, cacheBytesFor(s.N), e.work)
			if err != nil {
				return err
			}
			defer kg.Stop()
			c, err := dial(kg.GRPCAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			reps = append(reps, c)
		}
		st, err := postgres.Open(ctx, postgres.Config{URL: s.URL})
		if err != nil {
			return err
		}
		defer st.Close()
		svc := manage.New(st, apikey.DefaultFormat(), time.Now)
		count = min(count, len(keys))
		var lat []time.Duration
		timeouts := 0
		for i := range count {
			k := keys[i]
			req := checkRequest(k.Token)
			for _, c := range reps {
				for range 3 { // cached on both before the revoke
					resp, err := c.az.Check(ctx, req)
					if err != nil || resp.GetOkResponse() == nil {
						return fmt.Errorf("key %s not allowed before its revocation: %v %v", k.ID, err, resp.GetDeniedResponse().GetBody())
					}
				}
			}
			time.Sleep(20 * time.Millisecond) // let ristretto store the entry
			if _, err := svc.RevokeKey(ctx, k.Org, k.ID, keygate.Actor{}); err != nil {
				return fmt.Errorf("revoking %s: %w", k.ID, err)
			}
			t0 := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			for _, c := range reps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := pollUntilDenied(ctx, c, req, t0, 2*time.Second)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						timeouts++
						return
					}
					lat = append(lat, d)
				}()
			}
			wg.Wait()
		}
		sum := Summarize(lat, timeouts, 0)
		fmt.Fprintf(e.out, "\n### Revocation propagation across two replicas\n\n")
		fmt.Fprintf(e.out, "%d revocations × 2 replicas = %d samples, %d not denied within 2 s.\n\n", count, len(lat), timeouts)
		fmt.Fprintln(e.out, "| p50 | p90 | p99 | max |")
		fmt.Fprintln(e.out, "|---|---|---|---|")
		fmt.Fprintf(e.out, "| %s | %s | %s | %s |\n", durMS(sum.P50), durMS(sum.P90), durMS(sum.P99), durMS(sum.Max))
		return nil
	})
}

// pollUntilDenied checks req on c until it is denied, and returns how long
// after t0 the deny came.
func pollUntilDenied(ctx context.Context, c *client, req *authv3.CheckRequest, t0 time.Time, limit time.Duration) (time.Duration, error) {
	for time.Since(t0) < limit {
		resp, err := c.az.Check(ctx, req)
		if err == nil && resp.GetDeniedResponse() != nil {
			return time.Since(t0), nil
		}
	}
	return 0, errors.New("still allowed")
}
