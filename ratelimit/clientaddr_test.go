package ratelimit

import (
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	const hdr = "x-envoy-external-address"
	tests := []struct {
		name                string
		source, header, val string
		want                string // "" for no address
	}{
		{"source only", "192.0.2.1", "", "", "192.0.2.1"},
		{"source IPv6", "2001:db8::1", "", "", "2001:db8::1"},
		{"source ip:port", "192.0.2.1:5555", "", "", "192.0.2.1"},
		{"source [v6]:port", "[2001:db8::1]:443", "", "", "2001:db8::1"},
		{"source [v6]", "[2001:db8::1]", "", "", "2001:db8::1"},
		{"source with spaces", " 192.0.2.1 ", "", "", "192.0.2.1"},
		{"source IPv6 with zone", "fe80::1%eth0", "", "", "fe80::1%eth0"},
		{"header wins when flag set", "10.0.0.1", hdr, "198.51.100.7", "198.51.100.7"},
		{"header ignored when flag unset", "10.0.0.1", "", "198.51.100.7", "10.0.0.1"},
		{"header absent falls back", "10.0.0.1", hdr, "", "10.0.0.1"},
		{"header invalid falls back", "10.0.0.1", hdr, "not-an-ip", "10.0.0.1"},
		{"header unspecified falls back", "10.0.0.1", hdr, "0.0.0.0", "10.0.0.1"},
		{"header list takes the first", "10.0.0.1", hdr, " 198.51.100.7 , 10.1.1.1", "198.51.100.7"},
		{"header list with garbage first falls back", "10.0.0.1", hdr, "unknown, 198.51.100.7", "10.0.0.1"},
		{"header IPv6", "10.0.0.1", hdr, "2001:db8::9", "2001:db8::9"},
		{"header [v6]:port", "10.0.0.1", hdr, "[2001:db8::9]:1234", "2001:db8::9"},
		{"header ip:port", "10.0.0.1", hdr, "198.51.100.7:80", "198.51.100.7"},
		{"header IPv4-mapped", "10.0.0.1", hdr, "::ffff:198.51.100.7", "::ffff:198.51.100.7"},
		{"nothing", "", "", "", ""},
		{"nothing parses", "pipe:/tmp/envoy.sock", hdr, "garbage", ""},
		{"unspecified source", "0.0.0.0", "", "", ""},
		{"empty brackets", "[]", "", "", ""},
		{"bracketed garbage", "[nope]:80", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ClientAddr(tt.source, tt.header, tt.val)
			if tt.want == "" {
				if ok {
					t.Errorf("ClientAddr(%q, %q, %q) = %v, true; want no address", tt.source, tt.header, tt.val, got)
				}
				return
			}
			if want := netip.MustParseAddr(tt.want); !ok || got != want {
				t.Errorf("ClientAddr(%q, %q, %q) = %v, %v; want %v, true", tt.source, tt.header, tt.val, got, ok, want)
			}
		})
	}
}

func TestClientAddr_DoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(1000, func() { ClientAddr("10.0.0.1", "x-envoy-external-address", "2001:db8::9") }); n != 0 {
		t.Errorf("ClientAddr allocates %v times", n)
	}
}
