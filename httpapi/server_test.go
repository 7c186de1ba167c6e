package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate"
)

type pinger struct{ err error }

func (p pinger) Ping(ctx context.Context) error { return p.err }

// blockingPinger never answers before its context ends, like a store
// behind a dropped network.
type blockingPinger struct{}

func (blockingPinger) Ping(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Body)
	return rec.Code, string(body), rec.Header()
}

func TestHealthz_AlwaysOK(t *testing.T) {
	h := NewHandler(Config{Store: pinger{errors.New("down")}})
	code, body, hdr := get(t, h, "/healthz")
	if code != 200 || strings.TrimSpace(body) != `{"status":"ok"}` || hdr.Get("content-type") != "application/json" {
		t.Errorf("GET /healthz = %d %q %q", code, body, hdr.Get("content-type"))
	}
}

func TestReadyz_FollowsStorePing(t *testing.T) {
	tests := []struct {
		name     string
		store    Pinger
		wantCode int
		want     Readiness
	}{
		{"reachable", pinger{}, 200, Readiness{Status: "ready", Store: StoreState{Reachable: true}}},
		{"error", pinger{errors.New("connection refused")}, 503, Readiness{Status: "unavailable"}},
		{"timeout", blockingPinger{}, 503, Readiness{Status: "unavailable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(Config{Store: tt.store, ReadyTimeout: 50 * time.Millisecond})
			code, body, _ := get(t, h, "/readyz")
			var got Readiness
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			got.Store.LatencyMS = 0
			if code != tt.wantCode {
				t.Errorf("code = %d, want %d", code, tt.wantCode)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if strings.Contains(body, "refused") {
				t.Errorf("body leaks the cause: %s", body)
			}
		})
	}
}

func TestMetrics_ServesTheGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "keygate_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Inc()
	code, body, _ := get(t, NewHandler(Config{Store: pinger{}, Gatherer: reg}), "/metrics")
	if code != 200 || !strings.Contains(body, "keygate_test_total 1") {
		t.Errorf("GET /metrics = %d %q", code, body)
	}
}

func TestMetrics_HandlersOnOneRegistryShareTheirSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewHandler(Config{Store: pinger{}, Registerer: reg, Gatherer: reg})
	b := NewHandler(Config{Store: pinger{}, Registerer: reg, Gatherer: reg})
	get(t, a, "/healthz")
	get(t, b, "/healthz")
	// OPTIONS * is answered by ServeMux before any pattern matches.
	b.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodOptions, "*", nil))
	_, body, _ := get(t, a, "/metrics")
	for _, line := range []string{
		`keygate_http_requests_total{code="200",method="get",route="/healthz"} 2`,
		`keygate_http_requests_total{code="400",method="options",route="none"} 1`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", line, body)
		}
	}
}

func TestUnknownPath_IsNotFoundEnvelope(t *testing.T) {
	code, body, _ := get(t, NewHandler(Config{Store: pinger{}}), "/nope")
	var got ErrorBody
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if code != 404 || got.Error.Code != keygate.CodeNotFound {
		t.Errorf("GET /nope = %d %s", code, body)
	}
}

func TestNewAPIKey_WireShape(t *testing.T) {
	created := time.Date(2026, 11, 22, 10, 0, 0, 123456000, time.FixedZone("CET", 3600))
	rate := 0
	k := keygate.Key{
		ID: "key_abc", OrgID: "acme", UserID: "alice", Name: "CI Pipeline", Type: keygate.Secret,
		Environment: keygate.Live, Prefix: "sk_live_Ab3x", Last4: "9fZq", CreatedAt: created,
	}
	b, err := json.Marshal(NewAPIKey(k, created))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"key_abc","object":"api_key","name":"CI Pipeline","prefix":"sk_live_Ab3x","last4":"9fZq",` +
		`"type":"secret","environment":"live","org_id":"acme","user_id":"alice","scopes":[],"project_ids":[],` +
		`"rate_limit_per_minute":null,"metadata":{},"allowed_sources":[],"rate_limits":[],"status":"active","created_at":"2026-11-22T09:00:00Z",` +
		`"last_used_at":null,"expires_at":null,"remaining":null,"refill":null}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}

	exp := created.Add(time.Hour)
	k.ExpiresAt, k.RateLimitPerMinute, k.Metadata = &exp, &rate, json.RawMessage(`{"plan":"pro"}`)
	k.Scopes = []string{"read"}
	got := NewAPIKey(k, exp)
	if got.Status != "expired" || *got.RateLimitPerMinute != 0 || string(got.Metadata) != `{"plan":"pro"}` {
		t.Errorf("NewAPIKey = %+v", got)
	}
	var round CreatedAPIKey
	b, _ = json.Marshal(CreatedAPIKey{APIKey: got, Key: "sk_live_x"})
	if err := json.Unmarshal(b, &round); err != nil {
		t.Fatal(err)
	}
	if round.Key != "sk_live_x" || !time.Time(*round.ExpiresAt).Equal(exp.Truncate(time.Second)) {
		t.Errorf("round trip = %+v", round)
	}
}
