package ratelimit

import (
	"net/netip"
	"strings"
)

// ClientAddr returns the address whose failed authentications are counted:
// the value of the header named by --client-ip-header (header; "" when the
// flag is unset) when that header is present and holds an address,
// otherwise Envoy's attributes.source.address (sourceAddress, the socket
// address's IP). x-envoy-external-address holds one address; a header
// holding a comma-separated list counts its first element. Spaces around
// it are ignored, and either value may also be ip:port or [ipv6]:port,
// defensively. It returns false when nothing parses: no address, no
// throttle. The unspecified address (0.0.0.0, ::) names no client, so it
// is treated as unparsable.
func ClientAddr(sourceAddress string, header string, headerValue string) (netip.Addr, bool) {
	if header != "" && headerValue != "" {
		first, _, _ := strings.Cut(headerValue, ",")
		if a, ok := parseAddr(first); ok {
			return a, true
		}
	}
	return parseAddr(sourceAddress)
}

func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	if a.IsUnspecified() {
		return netip.Addr{}, false
	}
	return a, true
}
