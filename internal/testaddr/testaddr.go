// Package testaddr hands tests a loopback TCP address.
package testaddr

import (
	"net"
	"testing"
)

// Free is a 127.0.0.1 address that nothing listened on a moment ago: for a
// server a test starts, or to dial where nothing answers. Another process
// may take it in between; the tests that use it accept that small chance.
func Free(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
