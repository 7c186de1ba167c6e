package envoy

import (
	"os"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	downstreamconnectionsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/keygate/keygate/policy"
)

const envoyConfigPath = "envoy.yaml"

// edge is envoy.yaml taken apart: the bootstrap, its one listener and that listener's
// HTTP connection manager.
type edge struct {
	bootstrap *bootstrapv3.Bootstrap
	hcm       *hcmv3.HttpConnectionManager
	port      uint32
}

func loadEdge(t *testing.T) edge {
	t.Helper()
	return loadEdgeFile(t, envoyConfigPath)
}

// loadEdgeFile is loadEdge for the bootstrap at path (envoy-http.yaml too).
func loadEdgeFile(t *testing.T, path string) edge {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadBootstrap(data)
	if err != nil {
		t.Fatalf("%s does not load as an Envoy v3 bootstrap:\n%v", path, err)
	}
	listeners := b.GetStaticResources().GetListeners()
	if len(listeners) != 1 {
		t.Fatalf("got %d listeners, want exactly 1 (the edge listener)", len(listeners))
	}
	l := listeners[0]
	var hcm *hcmv3.HttpConnectionManager
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if f.GetName() != "envoy.filters.network.http_connection_manager" {
				t.Errorf("listener %s: unexpected network filter %q", l.GetName(), f.GetName())
				continue
			}
			if hcm != nil {
				t.Fatalf("listener %s: more than one HTTP connection manager", l.GetName())
			}
			if hcm, err = unpack[hcmv3.HttpConnectionManager](f.GetTypedConfig()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if hcm == nil {
		t.Fatalf("listener %s has no HTTP connection manager", l.GetName())
	}
	return edge{bootstrap: b, hcm: hcm, port: l.GetAddress().GetSocketAddress().GetPortValue()}
}

func (e edge) httpFilter(t *testing.T, name string) *hcmv3.HttpFilter {
	t.Helper()
	for _, f := range e.hcm.GetHttpFilters() {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no HTTP filter %q", name)
	return nil
}

func (e edge) cluster(t *testing.T, name string) *clusterv3.Cluster {
	t.Helper()
	for _, c := range e.bootstrap.GetStaticResources().GetClusters() {
		if c.GetName() == name {
			return c
		}
	}
	t.Fatalf("no cluster %q", name)
	return nil
}

// clusterAddress is the one endpoint of a static cluster.
func clusterAddress(t *testing.T, c *clusterv3.Cluster) *corev3.SocketAddress {
	t.Helper()
	var addrs []*corev3.SocketAddress
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			addrs = append(addrs, lb.GetEndpoint().GetAddress().GetSocketAddress())
		}
	}
	if len(addrs) != 1 {
		t.Fatalf("cluster %s: got %d endpoints, want 1", c.GetName(), len(addrs))
	}
	return addrs[0]
}

func TestEnvoyConfig_LoadsStrictlyAsBootstrap(t *testing.T) {
	loadEdge(t)
}

// The loader is only worth something if it fails on the mistakes people make. Each
// case breaks a copy of envoy.yaml in one place.
func TestEnvoyConfig_LoaderRejectsMistakes(t *testing.T) {
	orig, err := os.ReadFile(envoyConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new string
	}{
		{"misspelt field inside a typed_config", "merge_slashes: true", "merge_slashez: true"},
		{"misspelt field outside any typed_config", "connect_timeout: 1s", "connect_timout: 1s"},
		{"unknown @type", "header_mutation.v3.HeaderMutation\n", "header_mutation.v3.HeaderMutations\n"},
		{"misspelt enum value", "headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: REJECT_REQEST"},
		{"value outside the proto's validate rules", "port_value: 9001", "port_value: 99001"},
		{"validate rule broken inside a typed_config", "stat_prefix: ingress", `stat_prefix: ""`},
		{"validate rule broken in a typed_config nested in one", `prefix: "x-keygate-"`, `prefix: ""`},
		{"malformed duration", "timeout: 0.2s", "timeout: 200ms"},
		{"key given twice", "merge_slashes: true", "merge_slashes: true\n                merge_slashes: false"},
		{"deprecated field", "dns_lookup_family: V4_PREFERRED\n", "dns_lookup_family: V4_PREFERRED\n      dns_refresh_rate: 5s\n"},
		{"unknown resource monitor @type", "fixed_heap.v3.FixedHeapConfig\n", "fixed_heap.v3.FixedHeapConfigs\n"},
		{"misspelt field in a resource monitor", "max_heap_size_bytes:", "max_heap_bytes:"},
		{"misspelt field in allowed_headers", "{exact: x-api-key, ignore_case: true}", "{exact: x-api-key, ignore_cases: true}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broken := strings.Replace(string(orig), tt.old, tt.new, 1)
			if broken == string(orig) {
				t.Fatalf("%q not found in %s: update this test case", tt.old, envoyConfigPath)
			}
			if _, err := loadBootstrap([]byte(broken)); err == nil {
				t.Errorf("loader accepted envoy.yaml with %s (%q -> %q)", tt.name, tt.old, tt.new)
			} else {
				t.Logf("rejected as expected: %v", err)
			}
		})
	}
}

func TestEnvoyConfig_EdgeHardening(t *testing.T) {
	hcm := loadEdge(t).hcm
	if !hcm.GetNormalizePath().GetValue() {
		t.Error("normalize_path is not true")
	}
	if !hcm.GetMergeSlashes() {
		t.Error("merge_slashes is not true")
	}
	switch a := hcm.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, hcmv3.HttpConnectionManager_REJECT_REQUEST:
	default:
		t.Errorf("path_with_escaped_slashes_action = %v, want UNESCAPE_AND_REDIRECT or REJECT_REQUEST", a)
	}
	if got := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_REJECT_REQUEST {
		t.Errorf("headers_with_underscores_action = %v, want REJECT_REQUEST", got)
	}
	if !hcm.GetUseRemoteAddress().GetValue() {
		t.Error("use_remote_address is not true: the edge would trust client-sent X-Forwarded-For")
	}
	if got := hcm.GetXffNumTrustedHops(); got != 0 {
		t.Errorf("xff_num_trusted_hops = %d, want 0 at the edge", got)
	}
}

// Envoy's defaults suit a mesh; at the edge every client connection needs a bound on
// its buffers, its streams and its time (the edge-proxy best practices).
func TestEnvoyConfig_EdgeLimitsAndTimeouts(t *testing.T) {
	e := loadEdge(t)
	const maxBuffer = 32 << 10
	l := e.bootstrap.GetStaticResources().GetListeners()[0]
	if got := l.GetPerConnectionBufferLimitBytes(); got == nil || got.GetValue() == 0 || got.GetValue() > maxBuffer {
		t.Errorf("listener per_connection_buffer_limit_bytes = %v, want set and at most %d", got, maxBuffer)
	}
	for _, c := range e.bootstrap.GetStaticResources().GetClusters() {
		if got := c.GetPerConnectionBufferLimitBytes(); got == nil || got.GetValue() == 0 || got.GetValue() > maxBuffer {
			t.Errorf("cluster %s per_connection_buffer_limit_bytes = %v, want set and at most %d", c.GetName(), got, maxBuffer)
		}
	}

	hcm := e.hcm
	timeouts := []struct {
		name string
		got  interface{ AsDuration() time.Duration }
		max  time.Duration
	}{
		{"request_headers_timeout", hcm.GetRequestHeadersTimeout(), time.Minute},
		{"stream_idle_timeout", hcm.GetStreamIdleTimeout(), 5 * time.Minute},
		{"request_timeout", hcm.GetRequestTimeout(), 5 * time.Minute},
		{"common_http_protocol_options.idle_timeout", hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(), time.Hour},
	}
	for _, tt := range timeouts {
		// A zero or unset duration disables the timeout (or leaves Envoy's default).
		if d := tt.got.AsDuration(); d <= 0 || d > tt.max {
			t.Errorf("%s = %v, want set and at most %v", tt.name, d, tt.max)
		}
	}

	h2 := hcm.GetHttp2ProtocolOptions()
	limits := []struct {
		name     string
		got, max uint32
	}{
		{"max_concurrent_streams", h2.GetMaxConcurrentStreams().GetValue(), 100},
		{"initial_stream_window_size", h2.GetInitialStreamWindowSize().GetValue(), 64 << 10},
		{"initial_connection_window_size", h2.GetInitialConnectionWindowSize().GetValue(), 1 << 20},
	}
	for _, tt := range limits {
		if tt.got == 0 || tt.got > tt.max {
			t.Errorf("http2_protocol_options.%s = %d, want set and at most %d", tt.name, tt.got, tt.max)
		}
	}
}

// The overload manager is what keeps a flood from OOM-killing the edge: past a heap
// threshold Envoy gives memory back, then answers new requests 503 itself.
func TestEnvoyConfig_OverloadManagerShedsLoadOnHeapPressure(t *testing.T) {
	e := loadEdge(t)
	om := e.bootstrap.GetOverloadManager()
	if om == nil {
		t.Fatal("no overload_manager")
	}
	monitors := map[string]*anypb.Any{}
	for _, m := range om.GetResourceMonitors() {
		monitors[m.GetName()] = m.GetTypedConfig()
	}
	heap, err := unpack[fixedheapv3.FixedHeapConfig](monitors[fixedHeap])
	if err != nil {
		t.Fatalf("resource monitor %s: %v", fixedHeap, err)
	}
	if heap.GetMaxHeapSizeBytes() == 0 {
		t.Errorf("%s max_heap_size_bytes is 0", fixedHeap)
	}
	conns, err := unpack[downstreamconnectionsv3.DownstreamConnectionsConfig](monitors["envoy.resource_monitors.global_downstream_max_connections"])
	if err != nil {
		t.Fatalf("no global downstream connection limit: %v", err)
	}
	if conns.GetMaxActiveDownstreamConnections() <= 0 {
		t.Error("max_active_downstream_connections is not positive")
	}
	if !e.bootstrap.GetAdmin().GetIgnoreGlobalConnLimit() {
		t.Error("admin does not ignore the global connection limit: stats would be unreachable when it is hit")
	}

	thresholds := map[string]float64{}
	for _, a := range om.GetActions() {
		for _, tr := range a.GetTriggers() {
			if tr.GetName() == fixedHeap && tr.GetThreshold() != nil {
				thresholds[a.GetName()] = tr.GetThreshold().GetValue()
			}
		}
	}
	shrink, okShrink := thresholds["envoy.overload_actions.shrink_heap"]
	stop, okStop := thresholds["envoy.overload_actions.stop_accepting_requests"]
	if !okShrink || !okStop {
		t.Fatalf("heap-triggered actions %v, want shrink_heap and stop_accepting_requests", thresholds)
	}
	if !(0 < shrink && shrink < stop && stop < 1) {
		t.Errorf("shrink_heap at %v, stop_accepting_requests at %v: want 0 < shrink < stop < 1", shrink, stop)
	}
}

// fixedHeap is the name of Envoy's heap resource monitor.
const fixedHeap = "envoy.resource_monitors.fixed_heap"

// minEnvoy is the oldest Envoy that loads envoy.yaml: header_mutation's remove_on_match
// (the x-keygate-* strip) arrived in 1.36.
const minEnvoy = "1.36"

func TestEnvoyConfig_StatesTheEnvoyVersionItNeeds(t *testing.T) {
	data, err := os.ReadFile(envoyConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Needs Envoy " + minEnvoy + " or later"; !strings.Contains(string(data), want) {
		t.Errorf("%s does not say %q", envoyConfigPath, want)
	}
}

func TestEnvoyConfig_FilterOrderCORSThenStripThenExtAuthzThenRouter(t *testing.T) {
	const prefix = "type.googleapis.com/envoy.extensions.filters.http."
	want := []string{
		"envoy.filters.http.cors " + prefix + "cors.v3.Cors",
		"envoy.filters.http.header_mutation " + prefix + "header_mutation.v3.HeaderMutation",
		"envoy.filters.http.ext_authz " + prefix + "ext_authz.v3.ExtAuthz",
		"envoy.filters.http.router " + prefix + "router.v3.Router",
	}
	var got []string
	for _, f := range loadEdge(t).hcm.GetHttpFilters() {
		got = append(got, f.GetName()+" "+f.GetTypedConfig().GetTypeUrl())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("http_filters (name and @type) mismatch (-want +got):\n%s", diff)
	}
}

func TestEnvoyConfig_ExtAuthzFailsClosedOverGRPCv3(t *testing.T) {
	e := loadEdge(t)
	authz, err := unpack[extauthzv3.ExtAuthz](e.httpFilter(t, extAuthzNamespace).GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := authz.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != "keygate" {
		t.Errorf("grpc_service.envoy_grpc.cluster_name = %q, want keygate", got)
	}
	timeout := authz.GetGrpcService().GetTimeout()
	if timeout == nil || timeout.AsDuration() <= 0 || timeout.AsDuration() > time.Second {
		t.Errorf("grpc_service.timeout = %v, want set and at most 1s", timeout.AsDuration())
	}
	if got := authz.GetTransportApiVersion(); got != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version = %v, want V3", got)
	}
	if authz.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: keygate being down would let every request in")
	}
	if got := authz.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error = %v, want ServiceUnavailable (503)", got)
	}
	if !authz.GetIncludePeerCertificate() {
		t.Error("include_peer_certificate is not true")
	}
	if authz.GetWithRequestBody() != nil {
		t.Error("with_request_body is set: keygate decides on headers, buffering bodies only adds latency")
	}
	if authz.GetFilterEnabled() != nil || authz.GetFilterEnabledMetadata() != nil || authz.GetDenyAtDisable() != nil {
		t.Error("ext_authz is switched by filter_enabled*/deny_at_disable: it must run on every route that does not disable it explicitly")
	}
}

func TestEnvoyConfig_ExtAuthzSendsOnlyTheHeadersKeygateReads(t *testing.T) {
	e := loadEdge(t)
	authz, err := unpack[extauthzv3.ExtAuthz](e.httpFilter(t, extAuthzNamespace).GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	checkAllowedHeaders(t, envoyConfigPath, authz)
}

func TestEnvoyConfig_HeaderMutationStripsEveryIdentityHeader(t *testing.T) {
	e := loadEdge(t)
	hm, err := unpack[headermutationv3.HeaderMutation](e.httpFilter(t, "envoy.filters.http.header_mutation").GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	mutations := hm.GetMutations().GetRequestMutations()
	for _, h := range identityHeaders {
		if !removesHeader(mutations, h) {
			t.Errorf("header_mutation does not remove client-sent %s", h)
		}
	}
	// Credentials must reach ext_authz, and request ids must reach keygate's logs.
	for _, h := range []string{"authorization", "x-api-key", "x-request-id", "x-keygate"} {
		if removesHeader(mutations, h) {
			t.Errorf("header_mutation removes %s, which keygate or the upstream needs", h)
		}
	}
	for i, m := range mutations {
		if m.GetAppend() != nil {
			t.Errorf("request_mutations[%d] adds a header: this filter only strips", i)
		}
	}
}

// routeFor picks the route Envoy would pick for (method, path): the first whose match
// accepts it. It understands the match features envoy.yaml uses and fails on others, so
// a new kind of match gets a matching change here instead of a silent pass.
func routeFor(t *testing.T, vh *routev3.VirtualHost, method, path string) *routev3.Route {
	t.Helper()
	for _, r := range vh.GetRoutes() {
		m := r.GetMatch()
		var pathOK bool
		switch m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_Prefix:
			pathOK = strings.HasPrefix(path, m.GetPrefix())
		case *routev3.RouteMatch_Path:
			pathOK = path == m.GetPath()
		case *routev3.RouteMatch_PathSeparatedPrefix:
			p := m.GetPathSeparatedPrefix()
			pathOK = path == p || strings.HasPrefix(path, p+"/")
		default:
			t.Fatalf("route %s: routeFor does not understand path match %T", r.GetName(), m.GetPathSpecifier())
		}
		if m.GetCaseSensitive() != nil || m.GetQueryParameters() != nil || m.GetRuntimeFraction() != nil || m.GetGrpc() != nil || m.GetTlsContext() != nil {
			t.Fatalf("route %s: routeFor does not understand its match options", r.GetName())
		}
		headersOK := true
		for _, h := range m.GetHeaders() {
			if h.GetName() != ":method" || h.GetStringMatch() == nil || h.GetInvertMatch() {
				t.Fatalf("route %s: routeFor only understands :method string_match header matchers", r.GetName())
			}
			headersOK = headersOK && stringMatches(h.GetStringMatch(), method)
		}
		if pathOK && headersOK {
			return r
		}
	}
	return nil
}

func TestEnvoyConfig_RoutesCarryKeygatePolicy(t *testing.T) {
	e := loadEdge(t)
	vhosts := e.hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhosts) != 1 {
		t.Fatalf("got %d virtual hosts, want 1", len(vhosts))
	}
	vh := vhosts[0]
	if _, ok := vh.GetTypedPerFilterConfig()[extAuthzNamespace]; ok {
		t.Errorf("virtual host %s overrides ext_authz for every route", vh.GetName())
	}
	read := map[string]string{"keygate.scope": "read", "keygate.project": "/v1/projects/{project}/**"}
	write := map[string]string{"keygate.scope": "write", "keygate.project": "/v1/projects/{project}/**"}
	search := map[string]string{"keygate.scope": "read", "keygate.ratelimit": "search", "keygate.cost": "5"}
	tests := []struct {
		method, path string
		wantRoute    string
		wantDisabled bool
		wantExt      map[string]string // nil: no per-route check settings, keygate's own policy applies
	}{
		{"GET", "/healthz", "healthz", true, nil},
		{"GET", "/v1/projects/demo/things", "projects-read", false, read},
		{"HEAD", "/v1/projects/demo", "projects-read", false, read},
		{"POST", "/v1/projects/demo/things", "projects-write", false, write},
		{"DELETE", "/v1/projects/demo/things/1", "projects-write", false, write},
		{"GET", "/v1/admin", "admin", false, map[string]string{"keygate.scope": "admin"}},
		{"POST", "/v1/admin/orgs", "admin", false, map[string]string{"keygate.scope": "admin"}},
		{"POST", "/v1/uploads", "uploads", false, map[string]string{"keygate.scope": "write", "keygate.publishable": "true"}},
		{"GET", "/v1/search", "search", false, search},
		{"POST", "/v1/search/advanced", "search", false, search},
		// Near misses go to the catch-all, which still asks keygate.
		{"GET", "/healthz/x", "default", false, nil},
		{"GET", "/v1/administrators", "default", false, nil},
		{"GET", "/v1/uploads", "default", false, nil},
		{"OPTIONS", "/v1/projects/demo", "default", false, nil},
		{"GET", "/v1/whoami", "default", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := routeFor(t, vh, tt.method, tt.path)
			if r == nil {
				t.Fatal("no route matches")
			}
			if r.GetName() != tt.wantRoute {
				t.Fatalf("route = %q, want %q", r.GetName(), tt.wantRoute)
			}
			if got := r.GetRoute().GetCluster(); got != "upstream" {
				t.Errorf("route %s goes to cluster %q, want upstream", r.GetName(), got)
			}
			var per *extauthzv3.ExtAuthzPerRoute
			if a, ok := r.GetTypedPerFilterConfig()[extAuthzNamespace]; ok {
				var err error
				if per, err = unpack[extauthzv3.ExtAuthzPerRoute](a); err != nil {
					t.Fatal(err)
				}
			}
			if got := per.GetDisabled(); got != tt.wantDisabled {
				t.Errorf("ext_authz disabled = %v, want %v", got, tt.wantDisabled)
			}
			ext := per.GetCheckSettings().GetContextExtensions()
			if diff := cmp.Diff(tt.wantExt, ext); diff != "" {
				t.Errorf("context_extensions mismatch (-want +got):\n%s", diff)
			}
			// keygate reads them as the shipped config means them: a typo
			// would deny every request of the route (forbidden).
			if _, err := policy.Default().Resolve(tt.method, tt.path, ext); err != nil {
				t.Errorf("keygate refuses the route's context_extensions: %v", err)
			}
		})
	}
}

func TestEnvoyConfig_CORSPolicyAnswersPreflights(t *testing.T) {
	e := loadEdge(t)
	vh := e.hcm.GetRouteConfig().GetVirtualHosts()[0]
	a, ok := vh.GetTypedPerFilterConfig()["envoy.filters.http.cors"]
	if !ok {
		t.Fatal("virtual host has no envoy.filters.http.cors CorsPolicy")
	}
	policy, err := unpack[corsv3.CorsPolicy](a)
	if err != nil {
		t.Fatal(err)
	}
	origins := policy.GetAllowOriginStringMatch()
	if len(origins) == 0 {
		t.Error("allow_origin_string_match is empty")
	}
	for _, o := range origins {
		if stringMatches(o, "https://evil.example") {
			t.Errorf("allowed origin %v matches any origin", o)
		}
	}
	headers := strings.Split(strings.ReplaceAll(policy.GetAllowHeaders(), " ", ""), ",")
	for _, h := range []string{"authorization", "x-api-key"} {
		if !contains(headers, h) {
			t.Errorf("allow_headers %q lacks %s: browsers could not send a key", policy.GetAllowHeaders(), h)
		}
	}
}

func TestEnvoyConfig_AccessLogShowsKeygateDecision(t *testing.T) {
	logs := loadEdge(t).hcm.GetAccessLog()
	if len(logs) == 0 {
		t.Fatal("no access_log")
	}
	var format string
	for _, l := range logs {
		stdout, err := unpack[streamv3.StdoutAccessLog](l.GetTypedConfig())
		if err != nil {
			t.Fatalf("access log %s: %v", l.GetName(), err)
		}
		js, err := protojson.Marshal(stdout.GetLogFormat())
		if err != nil {
			t.Fatal(err)
		}
		format += string(js)
	}
	for _, field := range []string{"key_id", "org_id", "user_id", "cache_age_ms"} {
		want := "%DYNAMIC_METADATA(" + extAuthzNamespace + ":" + field + ")%"
		if !strings.Contains(format, want) {
			t.Errorf("access log format lacks %s", want)
		}
	}
}

func TestEnvoyConfig_KeygateClusterSpeaksHTTP2(t *testing.T) {
	e := loadEdge(t)
	c := e.cluster(t, "keygate")
	if got := c.GetType(); got != clusterv3.Cluster_STRICT_DNS {
		t.Errorf("keygate cluster type = %v, want STRICT_DNS", got)
	}
	a, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if !ok {
		t.Fatal("keygate cluster has no HttpProtocolOptions: gRPC needs HTTP/2")
	}
	opts, err := unpack[upstreamhttpv3.HttpProtocolOptions](a)
	if err != nil {
		t.Fatal(err)
	}
	h2 := opts.GetExplicitHttpConfig().GetHttp2ProtocolOptions()
	if h2 == nil {
		t.Fatal("keygate cluster is not explicit HTTP/2")
	}
	if w := h2.GetInitialStreamWindowSize().GetValue(); w == 0 || w > 64<<10 {
		t.Errorf("keygate cluster initial_stream_window_size = %d, want set and at most 64 KiB", w)
	}
	if w := h2.GetInitialConnectionWindowSize().GetValue(); w == 0 || w > 1<<20 {
		t.Errorf("keygate cluster initial_connection_window_size = %d, want set and at most 1 MiB", w)
	}
	if c.GetConnectTimeout().AsDuration() <= 0 {
		t.Error("keygate cluster has no connect_timeout")
	}
}

func TestEnvoyConfig_AdminIsNotOnTheEdgeListener(t *testing.T) {
	e := loadEdge(t)
	admin := e.bootstrap.GetAdmin().GetAddress().GetSocketAddress()
	if admin == nil {
		t.Fatal("no admin address")
	}
	if admin.GetPortValue() == e.port {
		t.Errorf("admin shares port %d with the edge listener", e.port)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
