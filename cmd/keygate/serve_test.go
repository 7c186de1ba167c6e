package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestServe_HTTPServerHasLimits pins the HTTP server's limits: a slow
// client cannot hold a connection for ever, and the write timeout outlasts
// the longest wait a request may ask for (30 s, SPEC §12) by 5 s or more.
func TestServe_HTTPServerHasLimits(t *testing.T) {
	web := newWebServer(slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		name string
		got  time.Duration
	}{
		{"ReadHeaderTimeout", web.ReadHeaderTimeout}, {"ReadTimeout", web.ReadTimeout},
		{"WriteTimeout", web.WriteTimeout}, {"IdleTimeout", web.IdleTimeout},
	} {
		if tt.got <= 0 {
			t.Errorf("%s is %v: unset", tt.name, tt.got)
		}
	}
	if web.WriteTimeout < 35*time.Second {
		t.Errorf("WriteTimeout %v: want at least 35 s (30 s wait + 5 s)", web.WriteTimeout)
	}
	if web.MaxHeaderBytes <= 0 || web.MaxHeaderBytes > 1<<20 {
		t.Errorf("MaxHeaderBytes %d: want a limit below net/http's 1 MiB default", web.MaxHeaderBytes)
	}
}

func TestServe_OversizeHeaderIs431(t *testing.T) {
	s := serve(t, backends[0].env(t))
	req, err := http.NewRequest("GET", "http://"+s.httpAddr+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("x-padding", strings.Repeat("a", 128<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET /healthz with a 128 KiB header = %d, want 431", resp.StatusCode)
	}
	// A header well inside the limit still gets through.
	req.Header.Set("x-padding", strings.Repeat("a", 32<<10))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz with a 32 KiB header = %d, want 200", resp.StatusCode)
	}
}

// grpcClient dials addr without TLS and closes the connection when the test ends.
func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func checkRequest(token string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Host: "api.example", Scheme: "http",
			Headers: map[string]string{":method": "GET", ":path": "/", ":authority": "api.example", "authorization": "Bearer " + token}},
	}}}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestServe_DrainsForTheShutdownDelay pins SPEC §6's shutdown: after the
// first signal keygate says it is not ready (gRPC health NOT_SERVING for
// every service, /readyz 503 shutting_down) but answers every Check, on
// open and on new connections, until --shutdown-delay has passed; then the
// listener closes and serve returns nil (exit 0).
func TestServe_DrainsForTheShutdownDelay(t *testing.T) {
	e := backends[0].env(t)
	token := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "drain")
	const delay = 2 * time.Second
	s := serve(t, e, "--shutdown-delay", delay.String())
	conn := grpcClient(t, s.grpcAddr)
	authz, hc := authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
	if resp, err := authz.Check(t.Context(), checkRequest(token)); err != nil || resp.GetStatus().GetCode() != 0 {
		t.Fatalf("check before the signal: %v %v", resp.GetStatus(), err)
	}

	signalled := time.Now()
	s.signal()
	for _, svc := range []string{"", authv3.Authorization_ServiceDesc.ServiceName} {
		if !eventually(time.Second, func() bool {
			resp, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
			return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING
		}) {
			t.Errorf("health of %q is not NOT_SERVING after the signal", svc)
		}
	}
	if code, body := httpGet(t, "http://"+s.httpAddr+"/readyz"); code != 503 || !strings.Contains(body, `"status":"shutting_down"`) {
		t.Errorf("/readyz during the delay = %d %s, want 503 shutting_down", code, body)
	}
	if code, _ := httpGet(t, "http://"+s.httpAddr+"/healthz"); code != 200 {
		t.Errorf("/healthz during the delay = %d, want 200", code)
	}
	// Checks during the delay are answered: on the open connection…
	for i := 0; i < 5; i++ {
		resp, err := authz.Check(t.Context(), checkRequest(token))
		if err != nil || resp.GetStatus().GetCode() != 0 {
			t.Fatalf("check %d during the delay: %v %v", i, resp.GetStatus(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// …and on a new one.
	if r := check(t, s, token); r.code != 0 {
		t.Errorf("check on a new connection during the delay: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if time.Since(signalled) > delay {
		t.Fatalf("the checks above took longer than the delay (%v); the test proves nothing", delay)
	}

	select {
	case <-s.done:
	case <-time.After(delay + 5*time.Second):
		t.Fatal("serve did not stop after the delay")
	}
	if took := time.Since(signalled); took < delay {
		t.Errorf("serve stopped %v after the signal, before the %v delay", took, delay)
	}
	if s.err != nil {
		t.Errorf("serve returned %v, want nil (exit 0)", s.err)
	}
	if c, err := net.DialTimeout("tcp", s.grpcAddr, time.Second); err == nil {
		c.Close()
		t.Errorf("the gRPC listener still accepts after the drain")
	}
}

// TestServe_SecondSignalSkipsTheDelay: an operator's second Ctrl-C (or a
// second SIGTERM) does not wait out --shutdown-delay.
func TestServe_SecondSignalSkipsTheDelay(t *testing.T) {
	s := serve(t, backends[0].env(t), "--shutdown-delay", "1m")
	s.signal()
	time.Sleep(200 * time.Millisecond)
	if code, _ := httpGet(t, "http://"+s.httpAddr+"/healthz"); code != 200 {
		t.Fatalf("/healthz during the delay = %d", code)
	}
	second := time.Now()
	s.signal()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("serve still running 5 s after the second signal, with a 1 m delay")
	}
	if s.err != nil {
		t.Errorf("serve returned %v, want nil", s.err)
	}
	t.Logf("stopped %v after the second signal", time.Since(second).Round(time.Millisecond))
}

// TestNotifyShutdown_SecondSignalClosesHurry drives the real signal path
// with SIGUSR2, which nothing else in the test binary listens for.
func TestNotifyShutdown_SecondSignalClosesHurry(t *testing.T) {
	ctx, hurry, stop := notifyShutdown(context.Background(), syscall.SIGUSR2)
	defer stop()
	raise := func() {
		if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
	}
	raise()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the first signal did not end the context")
	}
	select {
	case <-hurry:
		t.Fatal("hurry closed after one signal")
	case <-time.After(50 * time.Millisecond):
	}
	raise()
	select {
	case <-hurry:
	case <-time.After(5 * time.Second):
		t.Fatal("the second signal did not close hurry")
	}
}

// TestServe_MetricsHaveGRPCServerMetricsAndBuildInfo: /metrics shows the
// gRPC server metrics of every Check (count by code, handling-time
// histogram) and keygate_build_info, from serve's own registry.
func TestServe_MetricsHaveGRPCServerMetricsAndBuildInfo(t *testing.T) {
	e := backends[0].env(t)
	token := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "metrics")
	s := serve(t, e)
	if r := check(t, s, token); r.code != 0 {
		t.Fatalf("check: exit %d %s", r.code, r.stderr)
	}
	code, body := httpGet(t, "http://"+s.httpAddr+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	version, revision, goVersion := buildVersion()
	const check = `grpc_method="Check",grpc_service="envoy.service.auth.v3.Authorization",grpc_type="unary"`
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",` + check + `} 1`,
		`grpc_server_started_total{` + check + `} 1`,
		`grpc_server_handling_seconds_count{` + check + `} 1`,
		`grpc_server_handling_seconds_bucket{` + check + `,le="0.001"}`,
		// Registered at start, before any call.
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 0`,
		`keygate_build_info{goversion="` + goVersion + `",revision="` + revision + `",version="` + version + `"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no line with %s", want)
		}
	}
}

// BenchmarkGRPCMetricsInterceptor is what the metrics add to every Check.
func BenchmarkGRPCMetricsInterceptor(b *testing.B) {
	m := newGRPCMetrics()
	intercept := m.UnaryServerInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/envoy.service.auth.v3.Authorization/Check"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_, _ = intercept(ctx, nil, info, handler)
	}
}
