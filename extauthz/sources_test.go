package extauthz

import (
	"context"
	"net/netip"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/sources"
)

var sourceDenied = denyWant{403, codes.PermissionDenied, keygate.CodeSourceNotAllowed, "", "", ""}

// checkPeer sends a Check from Envoy peer address source (none for "")
// with mTLS principal principal (none for "").
func (f *fixture) checkPeer(path, source, principal string, headers map[string]string) *authv3.CheckResponse {
	f.t.Helper()
	req := checkRequest("GET", path, headers)
	peer := &authv3.AttributeContext_Peer{Principal: principal}
	if source != "" {
		peer.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 50000}},
		}}
	}
	req.Attributes.Source = peer
	resp, err := f.srv.Check(context.Background(), req)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp
}

func boundKey(f *fixture, list ...string) string {
	f.t.Helper()
	canon, err := sources.Canonical(list)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.key(func(r *keygate.KeyRecord) { r.Key.AllowedSources = canon })
}

func TestCheck_AllowedSources(t *testing.T) {
	for _, throttle := range []bool{false, true} {
		var cfg Config
		if throttle {
			th, err := ratelimit.NewThrottle(ratelimit.ThrottleConfig{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			cfg.Throttle = th
		}
		f := newFixture(t, cfg)
		for _, tc := range []struct {
			name              string
			list              []string
			source, principal string
			allow             bool
		}{
			{"unbound", nil, "203.0.113.7", "", true},
			{"ipv4 cidr", []string{"203.0.113.0/24"}, "203.0.113.7", "", true},
			{"ipv4 cidr other", []string{"198.51.100.0/24"}, "203.0.113.7", "", false},
			{"ipv4 single", []string{"203.0.113.7"}, "203.0.113.7", "", true},
			{"ipv4 single other", []string{"203.0.113.8"}, "203.0.113.7", "", false},
			{"ipv4 /0", []string{"0.0.0.0/0"}, "203.0.113.7", "", true},
			{"ipv6 cidr", []string{"2001:db8::/32"}, "2001:db8:5::1", "", true},
			{"ipv6 cidr other", []string{"2001:db8::/32"}, "2001:db9::1", "", false},
			{"ipv6 single", []string{"2001:db8::1"}, "2001:db8::1", "", true},
			{"ipv6 /0", []string{"::/0"}, "2001:db8::1", "", true},
			{"ipv4 /0 is not ipv6", []string{"0.0.0.0/0"}, "2001:db8::1", "", false},
			{"no source address", []string{"0.0.0.0/0"}, "", "", false},
			{"spiffe exact", []string{"spiffe://mesh.local/ns/shop/sa/web"}, "203.0.113.7", "spiffe://mesh.local/ns/shop/sa/web", true},
			{"spiffe exact other", []string{"spiffe://mesh.local/ns/shop/sa/web"}, "203.0.113.7", "spiffe://mesh.local/ns/shop/sa/api", false},
			{"spiffe wildcard", []string{"spiffe://mesh.local/ns/shop/*"}, "203.0.113.7", "spiffe://mesh.local/ns/shop/sa/api", true},
			{"spiffe other trust domain", []string{"spiffe://mesh.local/ns/shop/*"}, "203.0.113.7", "spiffe://evil.local/ns/shop/sa/api", false},
			{"principal absent", []string{"spiffe://mesh.local/*"}, "203.0.113.7", "", false},
			{"either: principal", []string{"10.0.0.0/8", "spiffe://mesh.local/*"}, "203.0.113.7", "spiffe://mesh.local/x", true},
			{"loopback stands for a proxy", []string{"127.0.0.0/8"}, "127.0.0.1", "", false},
		} {
			tok := boundKey(f, tc.list...)
			resp := f.checkPeer("/v1/things", tc.source, tc.principal, map[string]string{"x-api-key": tok})
			if tc.allow {
				if resp.GetOkResponse() == nil {
					t.Errorf("throttle %v, %s: denied: %v", throttle, tc.name, resp.GetDeniedResponse().GetBody())
				}
			} else {
				t.Run(tc.name, func(t *testing.T) { assertDenied(t, resp, sourceDenied) })
			}
		}
	}
}

// source_not_allowed sits after the organization and before path
// normalization (SPEC §3).
func TestCheck_AllowedSourcesOrder(t *testing.T) {
	f := newFixture(t, Config{})
	disabled := f.key(func(r *keygate.KeyRecord) { r.OrgDisabled = true; r.Key.AllowedSources = []string{"10.0.0.0/8"} })
	assertDenied(t, f.checkPeer("/v1/things", "203.0.113.7", "", map[string]string{"x-api-key": disabled}),
		denyWant{403, codes.PermissionDenied, keygate.CodeOrganizationDisabled, "", "", ""})
	tok := boundKey(f, "10.0.0.0/8")
	assertDenied(t, f.checkPeer("/v1/../things", "203.0.113.7", "", map[string]string{"x-api-key": tok}), sourceDenied)
	assertDenied(t, f.checkPeer("/v1/../things", "10.1.1.1", "", map[string]string{"x-api-key": tok}),
		denyWant{400, codes.InvalidArgument, keygate.CodeInvalidRequest, "", "", ""})
}

// Behind a load balancer the client address comes from
// --client-ip-header; an address that stands for a trusted proxy never
// matches.
func TestCheck_AllowedSourcesClientIPHeader(t *testing.T) {
	f := newFixture(t, Config{ClientIPHeader: "x-forwarded-for", TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	tok := boundKey(f, "198.51.100.0/24", "10.0.0.0/8")
	for _, tc := range []struct {
		name, source, xff string
		allow             bool
	}{
		{"client from the header", "10.0.0.2", "198.51.100.9, 10.0.0.3", true},
		{"forged left-most entry", "10.0.0.2", "198.51.100.9, 203.0.113.5, 10.0.0.3", false},
		{"every entry a proxy", "10.0.0.2", "10.0.0.1, 10.0.0.3", false},
		{"no header: the peer is a proxy", "10.0.0.2", "", false},
		{"no header: the peer", "198.51.100.4", "", true},
	} {
		h := map[string]string{"x-api-key": tok}
		if tc.xff != "" {
			h["x-forwarded-for"] = tc.xff
		}
		resp := f.checkPeer("/v1/things", tc.source, "", h)
		if tc.allow {
			if resp.GetOkResponse() == nil {
				t.Errorf("%s: denied: %v", tc.name, resp.GetDeniedResponse().GetBody())
			}
		} else {
			t.Run(tc.name, func(t *testing.T) { assertDenied(t, resp, sourceDenied) })
		}
	}
}

// The HTTP authorizer's resolved client address is matched the same way.
func TestDecideHTTP_AllowedSources(t *testing.T) {
	f := newFixture(t, Config{})
	tok := boundKey(f, "198.51.100.0/24")
	req := func(addr string) HTTPRequest {
		return HTTPRequest{Method: "GET", Path: "/v1/things", Headers: []HTTPHeader{{"x-api-key", tok}}, ClientAddr: netip.MustParseAddr(addr)}
	}
	if a := f.srv.DecideHTTP(context.Background(), req("198.51.100.4")); a.Code != "" {
		t.Errorf("inside: %s", a.Code)
	}
	if a := f.srv.DecideHTTP(context.Background(), req("203.0.113.4")); a.Code != keygate.CodeSourceNotAllowed || a.Status != 403 {
		t.Errorf("outside: %d %s, want 403 source_not_allowed", a.Status, a.Code)
	}
}
