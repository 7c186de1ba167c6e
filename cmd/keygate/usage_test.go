package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/sqlite"
)

// openTestStore opens the store e names, as another process would.
func openTestStore(t *testing.T, e env) store.Store {
	t.Helper()
	var st store.Store
	var err error
	if u := e["KEYGATE_DATABASE_URL"]; u != "" {
		st, err = postgres.Open(context.Background(), postgres.Config{URL: u})
	} else {
		st, err = sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(e["KEYGATE_DATA_DIR"], "keygate.db")})
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// createUsageKey runs `keygate keys create --json` and returns its id and token.
func createUsageKey(t *testing.T, e env, args ...string) (id, token string) {
	t.Helper()
	r := invoke(t, e, append([]string{"keys", "create", "--org", "acme", "--user", "alice", "--name", "usage", "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("keys create: exit %d: %s", r.code, r.stderr)
	}
	var out httpapi.Data[httpapi.CreatedAPIKey]
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	return out.Data.ID, out.Data.Key
}

// `keygate keys usage` prints a key's buckets as a table (or the API's
// JSON), revoked keys included, and names the flag at fault.
func TestKeysUsage_TableJSONAndFlagErrors(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := migrated(t, b.env(t))
			id, _ := createUsageKey(t, e)
			h := time.Now().UTC().Truncate(time.Hour)
			var denied [len(store.UsageCodes)]int64
			denied[6] = 2 // rate_limited
			if store.UsageCodes[6] != "rate_limited" {
				t.Fatal("UsageCodes moved")
			}
			st := openTestStore(t, e)
			if err := st.RecordUsage(context.Background(), []store.UsageCount{
				{KeyID: id, OrgID: "acme", Hour: h, Allowed: 7, Denied: denied},
				{KeyID: id, OrgID: "acme", Hour: h.Add(-2 * time.Hour), Allowed: 1},
			}); err != nil {
				t.Fatal(err)
			}
			if r := invoke(t, e, "keys", "revoke", "--org", "acme", id); r.code != 0 {
				t.Fatalf("revoke: %s", r.stderr)
			}
			r := invoke(t, e, "keys", "usage", id)
			if r.code != 0 {
				t.Fatalf("keys usage: exit %d: %s", r.code, r.stderr)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 5 || !strings.HasPrefix(lines[1], "START") ||
				!strings.Contains(lines[3], h.Format("2006-01-02 15:04")) || !strings.Contains(lines[3], "rate_limited=2") ||
				strings.Join(strings.Fields(lines[4]), " ") != "total 8 2" {
				t.Errorf("table:\n%s", r.stdout)
			}
			r = invoke(t, e, "keys", "usage", id, "--granularity", "day", "--json", "--org", "acme")
			var out httpapi.Data[[]httpapi.UsageBucket]
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil {
				t.Fatalf("--json: exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
			var allowed int64
			for _, b := range out.Data {
				allowed += b.Allowed
			}
			if allowed != 8 || out.Data[len(out.Data)-1].ByCode["rate_limited"] != 2 {
				t.Errorf("--json by day: %s", r.stdout)
			}
			for _, tc := range []struct {
				args []string
				code int
				msg  string
			}{
				{[]string{"--granularity", "week"}, 2, "--granularity"},
				{[]string{"--from", "yesterday"}, 2, "--from"},
				{[]string{"--to", "2026-12-06"}, 2, "--to"},
				{[]string{"--from", "2026-12-06T10:00:00Z", "--to", "2026-12-05T10:00:00Z"}, 2, "--from"},
				{[]string{"--from", "2026-10-01T00:00:00Z", "--to", "2026-12-05T00:00:00Z"}, 2, "--from"},
				{[]string{"--org", "globex"}, 1, "no key " + id + " in organization globex"},
			} {
				r := invoke(t, e, append([]string{"keys", "usage", id}, tc.args...)...)
				if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
					t.Errorf("%v: exit %d, stderr %q; want %d naming %s", tc.args, r.code, r.stderr, tc.code, tc.msg)
				}
			}
			if r := invoke(t, e, "keys", "usage", "key_00000000000000000000"); r.code != 1 || !strings.Contains(r.stderr, "no key") {
				t.Errorf("unknown key: exit %d: %s", r.code, r.stderr)
			}
		})
	}
}

// Counts made since the last flush are not lost on SIGTERM: a real serve
// process, whose flush interval is far away, writes them as it stops.
func TestServe_SIGTERMFlushesUsage(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := migrated(t, b.env(t))
			id, tok := createUsageKey(t, e, "--role", "viewer")
			proc := startServeProcess(t, e, "--last-used-flush", "1h", "--rate-limit", "0")
			conn, err := grpc.NewClient(proc.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := authv3.NewAuthorizationClient(conn)
			send := func(method string) bool {
				resp, err := client.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
					Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
						SocketAddress: &corev3.SocketAddress{Address: "192.0.2.1"}}}},
					Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
						Method: method, Path: "/v1/things", Headers: map[string]string{"authorization": "Bearer " + tok}}},
				}})
				if err != nil {
					t.Fatal(err)
				}
				return resp.GetOkResponse() != nil
			}
			const allows, denies = 25, 4
			for range allows {
				if !send("GET") {
					t.Fatal("GET denied")
				}
			}
			for range denies {
				if send("POST") { // a viewer: insufficient_permissions
					t.Fatal("POST allowed")
				}
			}
			if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := proc.wait(); err != nil {
				t.Fatalf("serve after SIGTERM: %v\n%s", err, proc.log())
			}
			st := openTestStore(t, e)
			now := time.Now().UTC()
			got, err := st.Usage(context.Background(), store.UsageQuery{KeyID: id, Granularity: store.Day,
				From: store.Day.Truncate(now).Add(-24 * time.Hour), To: store.Day.Truncate(now).Add(24 * time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			var a, d int64
			for _, b := range got {
				a += b.Allowed
				d += b.ByCode["insufficient_permissions"]
			}
			if a != allows || d != denies {
				t.Fatalf("after SIGTERM the store holds %d allowed, %d insufficient_permissions; want %d, %d", a, d, allows, denies)
			}
		})
	}
}

// serve's prune removes hourly rows older than --usage-retention and
// daily rows older than 400 days, and keeps the rest.
func TestServePrune_UsageRetention(t *testing.T) {
	e := migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()})
	id, _ := createUsageKey(t, e)
	st := openTestStore(t, e)
	now := time.Now().UTC()
	old := now.Add(-100 * 24 * time.Hour)     // past a 90-day retention, inside 400 days
	ancient := now.Add(-401 * 24 * time.Hour) // past both
	recent := now.Add(-2 * time.Hour)
	if err := st.RecordUsage(context.Background(), []store.UsageCount{
		{KeyID: id, OrgID: "acme", Hour: ancient, Allowed: 1},
		{KeyID: id, OrgID: "acme", Hour: old, Allowed: 10},
		{KeyID: id, OrgID: "acme", Hour: recent, Allowed: 100},
	}); err != nil {
		t.Fatal(err)
	}
	s := &serveCmd{UsageRetention: 2160 * time.Hour}
	s.pruneUsage(context.Background(), st, slog.New(slog.DiscardHandler))
	sum := func(g store.Granularity, from time.Time) int64 {
		t.Helper()
		got, err := st.Usage(context.Background(), store.UsageQuery{KeyID: id, Granularity: g, From: g.Truncate(from), To: now.Add(48 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		for _, b := range got {
			n += b.Allowed
		}
		return n
	}
	if n := sum(store.Hour, ancient.Add(-time.Hour)); n != 100 {
		t.Errorf("hourly rows left: %d allowed; want 100 (only the recent hour)", n)
	}
	if n := sum(store.Day, ancient.Add(-48*time.Hour)); n != 110 {
		t.Errorf("daily rows left: %d allowed; want 110 (the 401-day-old day pruned)", n)
	}
}
