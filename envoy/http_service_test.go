package envoy

import (
	"slices"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// envoyHTTPConfigPath is the bootstrap asking keygate over HTTP (SPEC §16).
const envoyHTTPConfigPath = "envoy-http.yaml"

func httpServiceAuthz(t *testing.T) (edge, *extauthzv3.ExtAuthz) {
	t.Helper()
	e := loadEdgeFile(t, envoyHTTPConfigPath)
	authz, err := unpack[extauthzv3.ExtAuthz](e.httpFilter(t, extAuthzNamespace).GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	return e, authz
}

func TestEnvoyHTTPConfig_LoadsStrictlyAsBootstrap(t *testing.T) { loadEdgeFile(t, envoyHTTPConfigPath) }

func TestEnvoyHTTPConfig_ExtAuthzAsksKeygateOverHTTPAndFailsClosed(t *testing.T) {
	e, authz := httpServiceAuthz(t)
	hs := authz.GetHttpService()
	if hs == nil || authz.GetGrpcService() != nil {
		t.Fatal("ext_authz is not an http_service")
	}
	if got := hs.GetPathPrefix(); got != "/authz" {
		t.Errorf("path_prefix = %q, want /authz (keygate's endpoint)", got)
	}
	uri := hs.GetServerUri()
	if d := uri.GetTimeout().AsDuration(); d <= 0 || d > time.Second {
		t.Errorf("server_uri.timeout = %v, want set and at most 1s", d)
	}
	if got := clusterAddress(t, e.cluster(t, uri.GetCluster())).GetPortValue(); got != 9002 {
		t.Errorf("cluster %s port = %d, want 9002 (--authz-http-addr in the README)", uri.GetCluster(), got)
	}
	if authz.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: keygate being down would let every request in")
	}
	// Envoy answers status_on_error for a 5xx from an HTTP authorizer.
	if got := authz.GetStatusOnError().GetCode(); got != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error = %v, want ServiceUnavailable (503)", got)
	}
	if authz.GetWithRequestBody() != nil {
		t.Error("with_request_body is set: keygate decides on headers")
	}
}

func matches(ms []*matcherv3.StringMatcher, h string) bool {
	return slices.ContainsFunc(ms, func(m *matcherv3.StringMatcher) bool { return stringMatches(m, h) })
}

func TestEnvoyHTTPConfig_HeadersBothWays(t *testing.T) {
	e, authz := httpServiceAuthz(t)
	sent := authz.GetAllowedHeaders().GetPatterns()
	if len(sent) == 0 {
		t.Fatal("no allowed_headers: every header of every request, cookies included, goes to keygate")
	}
	// keygate reads the credentials, the request id, x-forwarded-for (SPEC §16's client
	// address) and client-sent identity headers (to remove them).
	for _, h := range append([]string{"authorization", "x-api-key", "x-request-id", "x-forwarded-for"}, identityHeaders...) {
		for _, spelling := range []string{h, strings.ToUpper(h)} {
			if !matches(sent, spelling) {
				t.Errorf("ext_authz does not send %s, which keygate reads", spelling)
			}
		}
	}
	for _, h := range []string{"cookie", "content-type", "user-agent", "proxy-authorization", "accept", "x-csrf-token"} {
		if matches(sent, h) {
			t.Errorf("ext_authz sends %s, which keygate does not read", h)
		}
	}
	resp := hsResponse(t, authz)
	for _, h := range identityHeaders {
		if !matches(resp.GetAllowedUpstreamHeaders().GetPatterns(), h) {
			t.Errorf("allowed_upstream_headers leaves out %s: the upstream would not get keygate's identity", h)
		}
	}
	for _, h := range []string{"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} {
		if !matches(resp.GetAllowedClientHeadersOnSuccess().GetPatterns(), h) {
			t.Errorf("allowed_client_headers_on_success leaves out %s", h)
		}
		if !matches(resp.GetAllowedClientHeaders().GetPatterns(), h) {
			t.Errorf("allowed_client_headers (denies) leaves out %s", h)
		}
	}
	for _, h := range []string{"content-type", "www-authenticate", "retry-after"} {
		if !matches(resp.GetAllowedClientHeaders().GetPatterns(), h) {
			t.Errorf("allowed_client_headers (denies) leaves out %s", h)
		}
	}
	if matches(resp.GetAllowedUpstreamHeaders().GetPatterns(), "authorization") {
		t.Error("allowed_upstream_headers lets the authorizer set authorization")
	}
	// Client-sent identity headers are stripped before ext_authz, as in envoy.yaml.
	hm, err := unpack[headermutationv3.HeaderMutation](e.httpFilter(t, "envoy.filters.http.header_mutation").GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range identityHeaders {
		if !removesHeader(hm.GetMutations().GetRequestMutations(), h) {
			t.Errorf("header_mutation does not remove client-sent %s", h)
		}
	}
	var order []string
	for _, f := range e.hcm.GetHttpFilters() {
		order = append(order, f.GetName())
	}
	if want := []string{"envoy.filters.http.header_mutation", extAuthzNamespace, "envoy.filters.http.router"}; !slices.Equal(order, want) {
		t.Errorf("http_filters %q, want %q", order, want)
	}
}

func hsResponse(t *testing.T, authz *extauthzv3.ExtAuthz) *extauthzv3.AuthorizationResponse {
	t.Helper()
	r := authz.GetHttpService().GetAuthorizationResponse()
	if r == nil {
		t.Fatal("http_service has no authorization_response: no identity header would reach the upstream")
	}
	return r
}
