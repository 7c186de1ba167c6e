package extauthz

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/store"
	keyusage "github.com/keygate/keygate/usage"
)

// memUses is an in-memory usage store of one key's remaining: what
// store.ClaimUses does, without a database.
type memUses struct {
	mu        sync.Mutex
	remaining int64
	epoch     int64
	refill    *keygate.Refill
	claims    int
}

func (m *memUses) ClaimUses(_ context.Context, _ string, want int64, _ time.Time) (store.UsageClaim, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claims++
	n := min(want, m.remaining)
	m.remaining -= n
	return store.UsageClaim{Limited: true, Granted: n, Epoch: m.epoch, Remaining: m.remaining, Refill: m.refill}, nil
}

func (m *memUses) ReturnUses(_ context.Context, _ string, epoch, n int64) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if epoch != m.epoch {
		return false, nil
	}
	m.remaining += n
	return true, nil
}

// usageFixture is a fixture whose key has remaining uses in mem.
func usageFixture(t *testing.T, cfg Config, remaining int64, refill *keygate.Refill) (*fixture, string, *memUses) {
	t.Helper()
	mem := &memUses{remaining: remaining, refill: refill}
	cfg.Uses = keyusage.New(keyusage.Config{Store: mem})
	cfg.StripCredentials = true
	f := newFixture(t, cfg)
	tok := f.key(func(r *keygate.KeyRecord) {
		r.Key.Remaining, r.Key.Refill = &remaining, refill
	})
	return f, tok, mem
}

func TestCheck_UsageLimitedAllowCarriesRemaining(t *testing.T) {
	f, tok, _ := usageFixture(t, Config{}, 3, nil)
	for _, want := range []string{"2", "1", "0"} {
		resp := f.check("GET", map[string]string{"x-api-key": tok, "x-keygate-remaining": "999"})
		allowed(t, resp)
		ok := resp.GetOkResponse()
		if got := hdr(ok.GetHeaders(), "x-keygate-remaining"); got != want {
			t.Errorf("x-keygate-remaining = %q, want %q", got, want)
		}
		for _, name := range ok.GetHeadersToRemove() {
			if name == "x-keygate-remaining" {
				t.Errorf("x-keygate-remaining is both set and removed: Envoy would remove keygate's own")
			}
		}
		if got := resp.GetDynamicMetadata().GetFields()["remaining"].GetNumberValue(); got != float64(want[0]-'0') {
			t.Errorf("dynamic metadata remaining = %v, want %s", got, want)
		}
		// The wire encoder writes the same message.
		var wire authv3.CheckResponse
		if err := proto.Unmarshal(appendAllow(nil, allowOutFromProto(t, resp)), &wire); err != nil {
			t.Fatal(err)
		}
	}
	resp := f.check("GET", map[string]string{"x-api-key": tok})
	deniedWith(t, resp, 429, codes.ResourceExhausted, keygate.CodeUsageExceeded)
	if got := hdr(resp.GetDeniedResponse().GetHeaders(), "retry-after"); got != "" {
		t.Errorf("retry-after %q on a key without refill, want none", got)
	}
}

// hdr is the value of header name in hs, "" when absent.
func hdr(hs []*corev3.HeaderValueOption, name string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// deniedWith fails unless resp denies with code at httpStatus and grpcCode.
func deniedWith(t *testing.T, resp *authv3.CheckResponse, httpStatus int, grpcCode codes.Code, code keygate.Code) {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("allowed, want %s", code)
	}
	if got := codes.Code(resp.GetStatus().GetCode()); got != grpcCode {
		t.Errorf("status.code = %v, want %v", got, grpcCode)
	}
	if got := int(d.GetStatus().GetCode()); got != httpStatus {
		t.Errorf("HTTP status = %d, want %d", got, httpStatus)
	}
	if !strings.Contains(d.GetBody(), `"code":"`+string(code)+`"`) {
		t.Errorf("body %s, want code %s", d.GetBody(), code)
	}
}

// allowOutFromProto is allowOutOf with remaining read back.
func allowOutFromProto(t *testing.T, resp *authv3.CheckResponse) *allowOut {
	a := allowOutOf(t, resp)
	if v, ok := resp.GetDynamicMetadata().GetFields()["remaining"]; ok {
		a.meta.remaining, a.meta.hasRemaining = int64(v.GetNumberValue()), true
	}
	return a
}

func TestCheck_UnlimitedKeyRemovesAClientSentRemaining(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true})
	tok := f.key(nil)
	resp := f.check("GET", map[string]string{"x-api-key": tok, "x-keygate-remaining": "999"})
	allowed(t, resp)
	ok := resp.GetOkResponse()
	if got := hdr(ok.GetHeaders(), "x-keygate-remaining"); got != "" {
		t.Errorf("x-keygate-remaining = %q on an unlimited key, want unset", got)
	}
	found := false
	for _, name := range ok.GetHeadersToRemove() {
		found = found || name == "x-keygate-remaining"
	}
	if !found {
		t.Errorf("a client-sent x-keygate-remaining is not removed: %v", ok.GetHeadersToRemove())
	}
	if _, ok := resp.GetDynamicMetadata().GetFields()["remaining"]; ok {
		t.Errorf("dynamic metadata has remaining for an unlimited key")
	}
}

func TestCheck_UsageExceededRetryAfterIsTheNextRefill(t *testing.T) {
	// testNow is 2026-11-22 10:00 UTC: 14 h to the daily refill, 8 days
	// and 14 h to the monthly one.
	for _, tt := range []struct {
		interval keygate.RefillInterval
		want     string
	}{
		{keygate.RefillDaily, "50400"},
		{keygate.RefillMonthly, "741600"},
	} {
		f, tok, _ := usageFixture(t, Config{}, 0, &keygate.Refill{Interval: tt.interval, Amount: 10})
		resp := f.check("GET", map[string]string{"x-api-key": tok})
		deniedWith(t, resp, 429, codes.ResourceExhausted, keygate.CodeUsageExceeded)
		if got := hdr(resp.GetDeniedResponse().GetHeaders(), "retry-after"); got != tt.want {
			t.Errorf("%s refill: retry-after %q, want %q", tt.interval, got, tt.want)
		}
	}
}

func TestCheck_CostFromTheRouteExtension(t *testing.T) {
	f, tok, _ := usageFixture(t, Config{}, 10, nil)
	h := map[string]string{"x-api-key": tok}
	resp := f.checkAt("GET", "/v1/search", h, map[string]string{"keygate.cost": "7"})
	allowed(t, resp)
	if got := hdr(resp.GetOkResponse().GetHeaders(), "x-keygate-remaining"); got != "3" {
		t.Errorf("after cost 7 of 10: remaining %q, want 3", got)
	}
	deniedWith(t, f.checkAt("GET", "/v1/search", h, map[string]string{"keygate.cost": "4"}), 429, codes.ResourceExhausted, keygate.CodeUsageExceeded)
	resp = f.checkAt("GET", "/v1/free", h, map[string]string{"keygate.cost": "0"})
	allowed(t, resp)
	if got := hdr(resp.GetOkResponse().GetHeaders(), "x-keygate-remaining"); got != "3" {
		t.Errorf("after cost 0: remaining %q, want 3 (a deny spent nothing)", got)
	}
	// A malformed cost is denied like any malformed extension.
	deniedWith(t, f.checkAt("GET", "/v1/search", h, map[string]string{"keygate.cost": "-1"}), 403, codes.PermissionDenied, keygate.CodeForbidden)
}

func TestCheck_RateLimitedRequestSpendsNoUse(t *testing.T) {
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f, tok, _ := usageFixture(t, Config{Limiter: lim, DefaultRateLimit: 2}, 100, nil)
	h := map[string]string{"x-api-key": tok}
	allowed(t, f.check("GET", h))
	allowed(t, f.check("GET", h))
	for range 5 {
		deniedWith(t, f.check("GET", h), 429, codes.ResourceExhausted, keygate.CodeRateLimited)
	}
	// Scope denies before the usage step; nothing spent either.
	deniedWith(t, f.checkAt("GET", "/v1/admin", h, map[string]string{"keygate.scope": "admin"}), 403, codes.PermissionDenied, keygate.CodeInsufficientPermissions)
	if got := f.srv.cfg.Uses.(*keyusage.Manager).Held("key_0123456789abcdefghij"); got+2 > 100 {
		t.Fatalf("held %d", got)
	}
	lim2, _ := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	f.srv.cfg.Limiter = lim2
	resp := f.check("GET", h)
	allowed(t, resp)
	if got := hdr(resp.GetOkResponse().GetHeaders(), "x-keygate-remaining"); got != "97" {
		t.Errorf("remaining %q after 2 allows, 5 rate-limited and 1 forbidden, then 1 allow; want 97", got)
	}
}

// usage_exceeded is the last step (SPEC §3: rate limit → named rate
// limit → usage_exceeded): a key both spent and rate-limited is
// rate_limited, and a request usage_exceeded denies gives back the
// tokens the rate limits took for it, main and named.
func TestCheck_UsageDenialSpendsNoRateLimitToken(t *testing.T) {
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f, tok, _ := usageFixture(t, Config{Limiter: lim, DefaultRateLimit: 3}, 1, nil)
	f.srv.cfg.Now = func() time.Time { return time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC) } // buckets do not refill meanwhile
	h := map[string]string{"x-api-key": tok}
	allowed(t, f.check("GET", h)) // the one use, and 1 of 3 tokens
	for range 5 {
		deniedWith(t, f.check("GET", h), 429, codes.ResourceExhausted, keygate.CodeUsageExceeded)
	}
	// The five denials took no token: two are left for routes that cost
	// nothing, then the limit denies, ahead of usage_exceeded.
	free := map[string]string{"keygate.cost": "0"}
	for _, want := range []string{"1", "0"} {
		resp := f.checkAt("GET", "/v1/free", h, free)
		allowed(t, resp)
		if got := hdr(resp.GetOkResponse().GetResponseHeadersToAdd(), "ratelimit-remaining"); got != want {
			t.Errorf("ratelimit-remaining = %q, want %q: a usage_exceeded deny took a token", got, want)
		}
	}
	deniedWith(t, f.check("GET", h), 429, codes.ResourceExhausted, keygate.CodeRateLimited)
}

// BenchmarkCheckFromTheWireUsageLimited is BenchmarkCheckFromTheWire for
// a usage-limited key (remaining far beyond the run, no refill): the same
// request, plus the usage step spending from this replica's lease (its
// claims go to an in-memory store: a claim is one database round trip per
// lease in serve, amortized over up to 1000 uses).
func BenchmarkCheckFromTheWireUsageLimited(b *testing.B) {
	benchWireKind(b, 1<<50, "1")
}

// BenchmarkCheckFromTheWireUsageLimitedSmall is the usage-limited key
// with fewer than 4096 uses left, whose x-keygate-remaining comes from the
// table of small numbers (no allocation): the route costs 0, so the run
// never spends it down.
func BenchmarkCheckFromTheWireUsageLimitedSmall(b *testing.B) {
	benchWireKind(b, 1000, "0")
}

// BenchmarkCheckFromTheWireUnlimited is the same harness with a key
// without remaining: the baseline for the usage-limited figure.
func BenchmarkCheckFromTheWireUnlimited(b *testing.B) {
	benchWireKind(b, -1, "1")
}

// benchWireKind benchmarks a key with remaining uses (-1: unlimited) on a
// route of the given keygate.cost.
func benchWireKind(b *testing.B, remaining int64, cost string) {
	limited := remaining >= 0
	f := newFixture(&testing.T{}, Config{StripCredentials: true})
	tok := f.key(func(r *keygate.KeyRecord) {
		r.LoadedAt = time.Now()
		unlimited := 0
		r.Key.RateLimitPerMinute = &unlimited
		if limited {
			r.Key.Remaining = &remaining
		}
	})
	lim, err := ratelimit.NewLimiter(ratelimit.LimiterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	mem := &memUses{remaining: remaining}
	srv := benchServer(b, f, Config{Limiter: lim, DefaultRateLimit: 100, Uses: keyusage.New(keyusage.Config{Store: mem})})
	runWire(b, srv, wireRequest(b, srv, tok, map[string]string{"keygate.cost": cost}))
	b.StopTimer()
	if limited {
		b.ReportMetric(float64(mem.claims)/float64(b.N), "claims/op")
	}
}

// TestWire_UsageLimitedAllowAsCheckAnswersIt: serve's wire path answers a
// usage-limited key as the protobuf Check does, x-keygate-remaining and
// the remaining metadata included (one use fewer: the second call spent
// one more). A spent key's deny is the same too.
func TestWire_UsageLimitedAllowAsCheckAnswersIt(t *testing.T) {
	f, tok, _ := usageFixture(t, Config{}, 3, &keygate.Refill{Interval: keygate.RefillDaily, Amount: 3})
	client := authv3.NewAuthorizationClient(startWireServer(t, f.srv.checkWire))
	req := checkRequest("GET", "/v1/things", map[string]string{"x-api-key": tok, "x-request-id": "r1"})
	want, err := f.srv.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if want.GetOkResponse() == nil || got.GetOkResponse() == nil {
		t.Fatalf("want two allows: %v / %v", want, got)
	}
	if v := hdr(want.GetOkResponse().GetHeaders(), "x-keygate-remaining"); v != "2" {
		t.Errorf("Check remaining %q, want 2", v)
	}
	if v := hdr(got.GetOkResponse().GetHeaders(), "x-keygate-remaining"); v != "1" {
		t.Errorf("wire remaining %q, want 1", v)
	}
	if m := got.GetDynamicMetadata().GetFields()["remaining"].GetNumberValue(); m != 1 {
		t.Errorf("wire metadata remaining %v, want 1", m)
	}
	// The same message apart from the numbers of this use.
	if diff := cmp.Diff(want, got, protocmp.Transform(), protocmp.IgnoreFields(&structpb.Value{}, "number_value"),
		protocmp.IgnoreFields(&corev3.HeaderValue{}, "value")); diff != "" {
		t.Errorf("wire allow differs from Check's (-check +wire):\n%s", diff)
	}
	if r, _ := f.srv.Check(context.Background(), req); r.GetOkResponse() == nil { // the last use
		t.Fatal("the third use was denied")
	}
	want, _ = f.srv.Check(context.Background(), req)
	got, err = client.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("usage_exceeded over the wire differs from Check (-check +wire):\n%s", diff)
	}
	if hdr(got.GetDeniedResponse().GetHeaders(), "retry-after") != "50400" {
		t.Errorf("wire deny headers %v, want retry-after 50400", got.GetDeniedResponse().GetHeaders())
	}
}

// nowUnlimited is a usage store whose key was made unlimited by a PATCH
// the cached view has not heard of yet.
type nowUnlimited struct{}

func (nowUnlimited) ClaimUses(context.Context, string, int64, time.Time) (store.UsageClaim, error) {
	return store.UsageClaim{}, nil
}

func (nowUnlimited) ReturnUses(context.Context, string, int64, int64) (bool, error) {
	return false, nil
}

// TestCheck_KeyUnlimitedSinceItsViewRemovesAClientSentRemaining: the view
// says usage-limited, the store says unlimited now, so the allow sets no
// x-keygate-remaining; a client's own must then be removed, not left for
// the upstream to read as keygate's.
func TestCheck_KeyUnlimitedSinceItsViewRemovesAClientSentRemaining(t *testing.T) {
	f := newFixture(t, Config{StripCredentials: true, Uses: keyusage.New(keyusage.Config{Store: nowUnlimited{}})})
	tok := f.key(func(r *keygate.KeyRecord) {
		n := int64(5)
		r.Key.Remaining = &n
	})
	resp := f.check("GET", map[string]string{"x-api-key": tok, "x-keygate-remaining": "999"})
	allowed(t, resp)
	ok := resp.GetOkResponse()
	if got := hdr(ok.GetHeaders(), "x-keygate-remaining"); got != "" {
		t.Fatalf("x-keygate-remaining = %q, want unset", got)
	}
	found := false
	for _, name := range ok.GetHeadersToRemove() {
		found = found || name == "x-keygate-remaining"
	}
	if !found {
		t.Errorf("a client-sent x-keygate-remaining reaches the upstream: removed only %v", ok.GetHeadersToRemove())
	}
}
