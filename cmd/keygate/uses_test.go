package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// --remaining and --refill make a usage-limited key (SPEC §9).
func TestKeysCreate_RemainingAndRefill(t *testing.T) {
	e := backends[0].env(t)
	for _, tt := range []struct {
		args      []string
		remaining int64
		interval  string
		amount    int64
	}{
		{[]string{"--remaining", "500", "--refill", "monthly:1000"}, 500, "monthly", 1000},
		{[]string{"--refill", "daily:20"}, 20, "daily", 20}, // starts full
		{[]string{"--remaining", "0"}, 0, "", 0},
	} {
		r := invoke(t, e, append([]string{"keys", "create", "--org", "acme", "--user", "alice", "--name", "metered", "--json"}, tt.args...)...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, r.code, r.stderr)
		}
		var out struct {
			Data struct {
				Remaining *int64 `json:"remaining"`
				Refill    *struct {
					Interval string `json:"interval"`
					Amount   int64  `json:"amount"`
				} `json:"refill"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
			t.Fatalf("%v: %s", err, r.stdout)
		}
		if out.Data.Remaining == nil || *out.Data.Remaining != tt.remaining {
			t.Errorf("%v: remaining %v, want %d", tt.args, out.Data.Remaining, tt.remaining)
		}
		switch {
		case tt.interval == "" && out.Data.Refill != nil:
			t.Errorf("%v: refill %+v, want null", tt.args, out.Data.Refill)
		case tt.interval != "" && (out.Data.Refill == nil || out.Data.Refill.Interval != tt.interval || out.Data.Refill.Amount != tt.amount):
			t.Errorf("%v: refill %+v, want %s:%d", tt.args, out.Data.Refill, tt.interval, tt.amount)
		}
	}
}

// A route's cost and named limit reach the decision through check --ext
// as through an Envoy route's context_extensions: a key created with
// --remaining and --limit spends and is limited only where the route says.
func TestCheck_ExtSelectsCostAndNamedLimit(t *testing.T) {
	e := backends[0].env(t)
	token := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "metered", "--remaining", "1", "--limit", "search=1/1m")
	s := serve(t, e)
	if r := check(t, s, token, "--path", "/v1/search", "--ext", "keygate.ratelimit=search"); r.code != 0 || !strings.Contains(r.stdout, "x-keygate-remaining: 0") {
		t.Fatalf("first check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := check(t, s, token, "--path", "/v1/search", "--ext", "keygate.ratelimit=search", "--ext", "keygate.cost=0"); r.code != 1 || !strings.Contains(r.stdout, "rate_limited") {
		t.Fatalf("second check on the search route: exit %d, want rate_limited\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := check(t, s, token, "--path", "/v1/things", "--ext", "keygate.cost=0"); r.code != 0 {
		t.Fatalf("a free route without the named limit: exit %d, want allowed\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := check(t, s, token, "--path", "/v1/things"); r.code != 1 || !strings.Contains(r.stdout, "usage_exceeded") {
		t.Fatalf("a route of cost 1 with no uses left: exit %d, want usage_exceeded\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// keys list shows the uses left of a usage-limited key and its refill,
// "-" for an unlimited one.
func TestKeysList_ShowsUsesLeft(t *testing.T) {
	e := backends[0].env(t)
	createKey(t, e, "--org", "acme", "--user", "alice", "--name", "metered", "--remaining", "500", "--refill", "monthly:1000")
	createKey(t, e, "--org", "acme", "--user", "alice", "--name", "free")
	r := invoke(t, e, "keys", "list", "--org", "acme")
	if r.code != 0 {
		t.Fatalf("keys list: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "USES LEFT") {
		t.Fatalf("keys list:\n%s", r.stdout)
	}
	for _, l := range lines[1:] {
		switch {
		case strings.Contains(l, "metered") && !strings.Contains(l, "  500 (monthly:1000)  "):
			t.Errorf("metered key's line %q does not show 500 uses left and its refill", l)
		case strings.Contains(l, "free") && !strings.Contains(l, "  -  "):
			t.Errorf("unlimited key's line %q does not show -", l)
		}
	}
}
