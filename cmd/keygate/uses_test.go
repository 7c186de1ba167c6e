package main

import (
	"encoding/json"
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
