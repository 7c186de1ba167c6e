package httpapi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/fleet"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
)

// waitCall is one write that takes ?wait=.
type waitCall struct {
	name, method, suffix, body string
	status                     int
}

var waitCalls = []waitCall{
	{"revoke", "DELETE", "", "", http.StatusOK},
	{"patch", "PATCH", "", `{"name":"renamed"}`, http.StatusOK},
	{"roll", "POST", "/roll", "", http.StatusCreated},
}

func TestWait_BadWaitOrTimeoutIs400AndChangesNothing(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		for _, c := range waitCalls {
			for _, tc := range []struct{ query, param string }{
				{"wait=yes", "wait"},
				{"wait=1", "wait"},
				{"wait=", "wait"},
				{"wait=true&wait=false", "wait"},
				{"wait=true&timeout=0", "timeout"},
				{"wait=true&timeout=31", "timeout"},
				{"wait=true&timeout=1.5", "timeout"},
				{"wait=true&timeout=5s", "timeout"},
				{"wait=true&timeout=", "timeout"},
			} {
				k, _ := e.key(manage.NewKey{Name: "target"})
				r := e.do(req{method: c.method, path: "/v1/api-keys/" + k.ID + c.suffix + "?" + tc.query, token: owner, body: c.body})
				wantError(t, r, http.StatusBadRequest, keygate.CodeInvalidRequest, tc.param)
				got, err := e.cli.ListKeys(context.Background(), "acme")
				if err != nil {
					t.Fatal(err)
				}
				for _, g := range got {
					if g.ID == k.ID && (g.Name != "target" || g.Prefix != k.Prefix || g.Last4 != k.Last4) {
						t.Errorf("%s ?%s: the key changed: %+v", c.name, tc.query, g)
					}
				}
			}
		}
	})
}

// fakePropagator records what it is asked and answers p or err.
type fakePropagator struct {
	mu       sync.Mutex
	seqs     []int64
	timeouts []time.Duration
	p        fleet.Propagation
	err      error
}

func (f *fakePropagator) Wait(_ context.Context, seq int64, timeout time.Duration) (fleet.Propagation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seqs = append(f.seqs, seq)
	f.timeouts = append(f.timeouts, timeout)
	return f.p, f.err
}

func TestWait_WaitsForTheWritesOwnEventAndAnswersThePropagation(t *testing.T) {
	fake := &fakePropagator{p: fleet.Propagation{Replicas: 3, Applied: 2, Pending: []string{"rep_x"}, MS: 5000}}
	eachStoreWith(t, options{propagator: fake}, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		for _, c := range waitCalls {
			k, _ := e.key(manage.NewKey{})
			r := e.do(req{method: c.method, path: "/v1/api-keys/" + k.ID + c.suffix + "?wait=true&timeout=7", token: owner, body: c.body})
			want(t, r, c.status)
			got := decode[httpapi.Data[httpapi.CreatedAPIKey]](t, r).Data // roll adds "key"
			if got.ID != k.ID || got.Propagation == nil {
				t.Fatalf("%s: answer %s", c.name, r.Body)
			}
			if diff := cmp.Diff(fake.p, *got.Propagation); diff != "" {
				t.Errorf("%s: propagation (-want +got):\n%s", c.name, diff)
			}
			seq, err := e.st.LatestEventSeq(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			fake.mu.Lock()
			gotSeq, gotTimeout := fake.seqs[len(fake.seqs)-1], fake.timeouts[len(fake.timeouts)-1]
			fake.mu.Unlock()
			if gotSeq != seq || gotTimeout != 7*time.Second {
				t.Errorf("%s: waited for seq %d for %v, want seq %d for 7s", c.name, gotSeq, gotTimeout, seq)
			}
			// Without wait, nothing is waited for and no propagation shown.
			k2, _ := e.key(manage.NewKey{})
			r = e.do(req{method: c.method, path: "/v1/api-keys/" + k2.ID + c.suffix, token: owner, body: c.body})
			want(t, r, c.status)
			if strings.Contains(string(r.Body), "propagation") {
				t.Errorf("%s without wait: %s", c.name, r.Body)
			}
		}
	})
}

func TestWait_UnreadableRegistryIs503ButTheRevokeStands(t *testing.T) {
	fake := &fakePropagator{err: errors.New("registry down")}
	eachStoreWith(t, options{propagator: fake}, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		k, tok := e.key(manage.NewKey{})
		r := e.do(req{method: "DELETE", path: "/v1/api-keys/" + k.ID + "?wait=true", token: owner})
		wantError(t, r, http.StatusServiceUnavailable, keygate.CodeServiceUnavailable, "")
		if code := e.check(tok, "10.0.0.1"); code != keygate.CodeInvalidAPIKey {
			t.Errorf("check after revoke = %q, want %s", code, keygate.CodeInvalidAPIKey)
		}
	})
}

func TestWait_WithoutARegistryThePropagationIsThisReplica(t *testing.T) {
	eachStore(t, func(t *testing.T, e *env) {
		_, owner := e.key(manage.NewKey{})
		k, _ := e.key(manage.NewKey{})
		r := e.do(req{method: "DELETE", path: "/v1/api-keys/" + k.ID + "?wait=true", token: owner})
		want(t, r, http.StatusOK)
		got := decode[httpapi.Data[httpapi.APIKey]](t, r).Data
		if got.Propagation == nil || !cmp.Equal(*got.Propagation, fleet.Local()) {
			t.Errorf("propagation %+v, want %+v", got.Propagation, fleet.Local())
		}
	})
}
