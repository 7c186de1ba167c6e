package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// checkRequest is the CheckRequest of an edge Envoy for a GET with token.
func checkRequest(token string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/things", Host: "api.example", Protocol: "HTTP/1.1", Scheme: "https",
			Headers: map[string]string{
				":authority": "api.example", ":method": "GET", ":path": "/v1/things",
				"x-api-key": token, "accept": "*/*", "user-agent": "curl/8.5.0",
				"x-forwarded-proto": "https", "x-request-id": "6f1c9a8e-0d5b-4c1e-9a51-3f1d2c7b8e90",
			},
		}},
	}}
}

// picker chooses the request a worker sends next; r is the worker's own
// random source.
type picker func(r *rand.Rand) *authv3.CheckRequest

// fixedPool picks uniformly from prebuilt requests.
func fixedPool(reqs []*authv3.CheckRequest) picker {
	return func(r *rand.Rand) *authv3.CheckRequest { return reqs[r.IntN(len(reqs))] }
}

// client is the harness's own Check client: one connection, as Envoy keeps
// few per upstream host.
type client struct {
	conn *grpc.ClientConn
	az   authv3.AuthorizationClient
}

func dial(addr string) (*client, error) {
	if err := checkLoopback(addr); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, az: authv3.NewAuthorizationClient(conn)}, nil
}

func (c *client) Close() { c.conn.Close() }

// wantAllow says whether a response is what the scenario expects: an allow
// for a known key, a deny for an unknown one. Unexpected answers count as
// errors.
type wantFunc func(req *authv3.CheckRequest, resp *authv3.CheckResponse) bool

func anyAnswer(*authv3.CheckRequest, *authv3.CheckResponse) bool { return true }

// requestTimeout bounds one Check of the harness.
const requestTimeout = 10 * time.Second

// closedLoop runs conc workers, each sending its next Check as soon as the
// last one answered, for d or until limit requests in all (0: no limit).
func (c *client) closedLoop(ctx context.Context, conc int, d time.Duration, limit int, pick picker, want wantFunc) Summary {
	// Workers stop starting requests at end; every request started is
	// waited for and counted (a per-request timeout bounds a stuck one).
	end := time.Now().Add(d)
	var (
		mu   sync.Mutex
		all  []time.Duration
		errs int
		wg   sync.WaitGroup
	)
	var sent int64
	var sentMu sync.Mutex
	take := func() bool {
		if limit <= 0 {
			return true
		}
		sentMu.Lock()
		defer sentMu.Unlock()
		if sent >= int64(limit) {
			return false
		}
		sent++
		return true
	}
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			lat := make([]time.Duration, 0, 1<<14)
			e := 0
			for ctx.Err() == nil && time.Now().Before(end) && take() {
				req := pick(r)
				t0 := time.Now()
				rctx, cancel := context.WithTimeout(ctx, requestTimeout)
				resp, err := c.az.Check(rctx, req)
				cancel()
				lat = append(lat, time.Since(t0))
				if err != nil || !want(req, resp) {
					if e == 0 {
						firstError(err, resp)
					}
					e++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			errs += e
			mu.Unlock()
		}()
	}
	wg.Wait()
	return Summarize(all, errs, time.Since(start))
}

// openLoop sends rate Checks per second for d on a fixed schedule, whatever
// the answers take, and measures each from its scheduled send time: a
// stall delays the requests behind it, and their waiting is counted
// (no coordinated omission). At most maxInFlight are outstanding; past
// that, sends wait, and the wait is counted too.
func (c *client) openLoop(ctx context.Context, rate int, d time.Duration, pick picker, want wantFunc) Summary {
	const maxInFlight = 4096
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	ok := make([]bool, n)
	done := make([]bool, n)
	sem := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	r := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	start := time.Now()
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		if w := time.Until(sched); w > 0 {
			time.Sleep(w)
		}
		if ctx.Err() != nil {
			break
		}
		req := pick(r)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			defer cancel()
			resp, err := c.az.Check(rctx, req)
			lat[i] = time.Since(sched)
			ok[i] = err == nil && want(req, resp)
			done[i] = true
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var got []time.Duration
	errs := 0
	for i := range n {
		if !done[i] {
			errs++
			continue
		}
		got = append(got, lat[i])
		if !ok[i] {
			errs++
		}
	}
	return Summarize(got, errs, elapsed)
}

// warmUp sends every request once, conc at a time, so their keys are cached.
func (c *client) warmUp(ctx context.Context, reqs []*authv3.CheckRequest, conc int) error {
	ch := make(chan *authv3.CheckRequest)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for req := range ch {
				if _, err := c.az.Check(ctx, req); err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
				}
			}
		}()
	}
	for _, r := range reqs {
		ch <- r
	}
	close(ch)
	wg.Wait()
	if first != nil {
		return fmt.Errorf("warm-up: %w", first)
	}
	return nil
}

// firstError notes the first unexpected answer of a worker on stderr, so
// that an error count in a table can be explained.
func firstError(err error, resp *authv3.CheckResponse) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "unexpected: %v\n", err)
		return
	}
	fmt.Fprintf(os.Stderr, "unexpected: status %d %s\n", resp.GetStatus().GetCode(), resp.GetDeniedResponse().GetBody())
}
