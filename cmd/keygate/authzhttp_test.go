package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/testaddr"
)

// --authz-http-addr serves the decision over HTTP (SPEC §16) next to gRPC.
func TestServe_AuthzHTTPAddr(t *testing.T) {
	e := backends[0].env(t)
	addr := testaddr.Free(t)
	serve(t, e, "--authz-http-addr", addr)
	client := &http.Client{Timeout: 5 * time.Second}
	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"/authz/v1/things", 401, "missing_api_key"},
		{"/forward-auth", 400, "invalid_request"}, // no original method or URI
	} {
		resp, err := client.Get("http://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error struct{ Code string } }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || body.Error.Code != tc.code {
			t.Errorf("%s: %d %q (%v), want %d %s", tc.path, resp.StatusCode, body.Error.Code, err, tc.status, tc.code)
		}
	}
}

func TestServe_AuthzHTTPAddrIsValidated(t *testing.T) {
	r := invoke(t, env{"KEYGATE_DATA_DIR": t.TempDir()}, "serve", "--authz-http-addr", "nowhere")
	if r.code == 0 || !strings.Contains(r.stderr, "--authz-http-addr") {
		t.Fatalf("exit %d, stderr %q: want an error naming --authz-http-addr", r.code, r.stderr)
	}
}
