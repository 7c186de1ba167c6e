package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
)

// checkLoopback refuses an address (host:port) that is not on this machine's
// loopback: the harness floods what it targets and creates and drops
// databases, so it must never reach another machine by mistake.
func checkLoopback(hostport string) error {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return fmt.Errorf("%q: want host:port: %v", hostport, err)
	}
	return checkLoopbackHost(host)
}

func checkLoopbackHost(host string) error {
	if host == "localhost" {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil || !a.Unmap().IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8, ::1 or localhost): the harness only targets this machine", host)
	}
	return nil
}

// checkLoopbackURL refuses a database URL whose host is not loopback.
func checkLoopbackURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("database URL: %v", err)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("database URL %s: no host (a Unix socket or default host is not checked; name 127.0.0.1)", u.Redacted())
	}
	if err := checkLoopbackHost(host); err != nil {
		return fmt.Errorf("database URL %s: %w", u.Redacted(), err)
	}
	return nil
}
