package ratelimit

import (
	"net/netip"
	"strings"
)

// ClientAddrs finds the client address of a request (SPEC §3): the one
// address that the failed-authentication throttle counts and every other
// rule that needs one uses, whatever the transport.
type ClientAddrs struct {
	// Header is --client-ip-header: the header holding the client address
	// when Envoy sits behind a load balancer; "" for none.
	Header string
	// Trusted is --trusted-proxies: the proxies whose entries in a list
	// header are skipped, and the only peers whose Header an HTTP
	// transport believes.
	Trusted []netip.Prefix
}

// DefaultTrustedProxies is the default of --trusted-proxies: loopback only.
func DefaultTrustedProxies() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Envoy returns the client address of a Check: Header's value when it is
// present and holds an address (Envoy, the peer, passes it on), otherwise
// attributes.source.address. It returns false when nothing parses: no
// address, no throttle.
func (c *ClientAddrs) Envoy(sourceAddress, headerValue string) (netip.Addr, bool) {
	if c.Header != "" && headerValue != "" {
		if a, ok := c.fromList(headerValue); ok {
			return a, true
		}
	}
	return parseAddr(sourceAddress)
}

// Peer returns the client address of an HTTP request that arrived from
// remoteAddr (ip:port): Header's value only when that peer is a trusted
// proxy, since any direct caller can write the header; otherwise the
// peer's own address.
func (c *ClientAddrs) Peer(remoteAddr, headerValue string) (netip.Addr, bool) {
	peer, ok := parseAddr(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if c.Header != "" && headerValue != "" && c.trusted(peer) {
		if a, ok := c.fromList(headerValue); ok {
			return a, true
		}
	}
	return peer, true
}

// TrustedPeer reports whether the peer at remoteAddr (ip:port) is inside
// Trusted: the only peers whose forwarded headers a transport believes.
func (c *ClientAddrs) TrustedPeer(remoteAddr string) bool {
	peer, ok := parseAddr(remoteAddr)
	return ok && c.trusted(peer)
}

// fromList reads a header that holds one address or a comma-separated
// list (x-forwarded-for). Each proxy appends the address it received the
// request from, so the left-most entries are whatever the client wrote and
// only the right-most are vouched for: the client is the right-most entry
// not inside Trusted. When every entry is trusted, the left-most one is
// the client (it is inside a trusted network). An entry that does not
// parse ends the walk: nothing to its left can be believed, so the
// caller falls back to the peer.
func (c *ClientAddrs) fromList(v string) (netip.Addr, bool) {
	var last netip.Addr
	for v != "" {
		elem := v
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			elem, v = v[i+1:], v[:i]
		} else {
			v = ""
		}
		a, ok := parseAddr(elem)
		if !ok {
			return netip.Addr{}, false
		}
		if !c.trusted(a) {
			return a, true
		}
		last = a
	}
	return last, last.IsValid()
}

// trusted reports whether a lies inside Trusted; an IPv4-mapped IPv6
// address is compared as the IPv4 address it maps.
func (c *ClientAddrs) trusted(a netip.Addr) bool {
	u := a.Unmap()
	for _, p := range c.Trusted {
		if p.Contains(a) || p.Contains(u) {
			return true
		}
	}
	return false
}

// ParseTrustedProxies parses --trusted-proxies: CIDRs or single addresses.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, &badProxyError{s}
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

type badProxyError struct{ s string }

func (e *badProxyError) Error() string {
	return "--trusted-proxies: " + `"` + e.s + `"` + " is neither a CIDR (10.0.0.0/8) nor an IP address"
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
