package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/internal/testaddr"
)

// oneLineNaming fails unless stderr is exactly one line that names want.
func oneLineNaming(t *testing.T, r result, want string) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr is not one line: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("stderr %q does not name %s", r.stderr, want)
	}
}

func TestFlags_BadConfigurationIsOneLineNamingTheFlag(t *testing.T) {
	tests := []struct {
		name string
		env  env
		args []string
		flag string
	}{
		{"unknown flag", nil, []string{"serve", "--nope"}, "--nope"},
		{"unknown command", nil, []string{"frobnicate"}, "frobnicate"},
		{"mysql database url", nil, []string{"serve", "--database-url", "mysql://u:hunter2@db/keygate"}, "--database-url"},
		{"unparsable database url", nil, []string{"migrate", "--database-url", "postgres://u:hunter2@[::1"}, "--database-url"},
		{"database url without scheme", nil, []string{"keys", "list", "--org", "a", "--database-url", "db.example:5432"}, "--database-url"},
		{"listen url without database url", nil, []string{"serve", "--listen-database-url", "postgres://x/y"}, "--listen-database-url"},
		{"listen url of another kind", nil, []string{"serve", "--database-url", "postgres://x/y", "--listen-database-url", "http://x"}, "--listen-database-url"},
		{"zero cache ttl", nil, []string{"serve", "--cache-ttl", "0"}, "--cache-ttl"},
		{"negative cache ttl", nil, []string{"serve", "--cache-ttl", "-1s"}, "--cache-ttl"},
		{"unparsable cache ttl", nil, []string{"serve", "--cache-ttl", "soon"}, "--cache-ttl"},
		{"zero negative cache ttl", nil, []string{"serve", "--negative-cache-ttl", "0s"}, "--negative-cache-ttl"},
		{"zero poll interval", nil, []string{"serve", "--poll-interval", "0"}, "--poll-interval"},
		{"zero shutdown timeout", nil, []string{"serve", "--shutdown-timeout", "0"}, "--shutdown-timeout"},
		{"bad cache size", nil, []string{"serve", "--cache-max-bytes", "lots"}, "--cache-max-bytes"},
		{"zero cache size", nil, []string{"serve", "--cache-max-bytes", "0"}, "--cache-max-bytes"},
		{"upper-case secret prefix", nil, []string{"serve", "--secret-prefix", "SK"}, "--secret-prefix"},
		{"short secret prefix", nil, []string{"keys", "list", "--org", "a", "--secret-prefix", "s"}, "--secret-prefix"},
		{"long publishable prefix", nil, []string{"serve", "--publishable-prefix", "publishable"}, "--publishable-prefix"},
		{"equal prefixes", nil, []string{"serve", "--secret-prefix", "kk", "--publishable-prefix", "kk"}, "--publishable-prefix"},
		{"upper-case header prefix", nil, []string{"serve", "--header-prefix", "X-Keygate-"}, "--header-prefix"},
		{"header prefix without dash", nil, []string{"serve", "--header-prefix", "x-keygate"}, "--header-prefix"},
		{"bad grpc address", nil, []string{"serve", "--grpc-addr", "nonsense"}, "--grpc-addr"},
		{"bad http port", nil, []string{"serve", "--http-addr", ":99999"}, "--http-addr"},
		{"bad docs url", nil, []string{"serve", "--docs-url", "docs"}, "--docs-url"},
		{"bad log level", nil, []string{"serve", "--log-level", "loud"}, "--log-level"},
		{"bad trusted proxy", nil, []string{"serve", "--trusted-proxies", "10.0.0.0/8,gateway.internal"}, "--trusted-proxies"},
		{"bad trusted proxy prefix", nil, []string{"serve", "--trusted-proxies", "10.0.0.0/40"}, "--trusted-proxies"},
		{"bad log format", nil, []string{"serve", "--log-format", "xml"}, "--log-format"},
		{"bad strip credentials", nil, []string{"serve", "--strip-credentials=maybe"}, "--strip-credentials"},
		{"bad duration from env", env{"KEYGATE_CACHE_TTL": "0s"}, []string{"serve"}, "--cache-ttl"},
		{"bad database url from env", env{"KEYGATE_DATABASE_URL": "mysql://db"}, []string{"migrate"}, "--database-url"},
		{"bad prefix from env", env{"KEYGATE_SECRET_PREFIX": "S1"}, []string{"keys", "list", "--org", "a"}, "--secret-prefix"},
		{"missing org", nil, []string{"keys", "create", "--user", "u", "--name", "n"}, "--org"},
		{"role and scopes", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--role", "admin", "--scopes", "read"}, "--role"},
		{"unknown key type", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--type", "private"}, "--type"},
		{"unknown environment", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--env", "prod"}, "--env"},
		{"bad expiry", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--expires-in", "soon"}, "--expires-in"},
		{"zero expiry", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--expires-in", "0d"}, "--expires-in"},
		{"negative rate limit", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--rate-limit", "-1"}, "--rate-limit"},
		{"negative remaining", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--remaining", "-1"}, "--remaining"},
		{"remaining not a number", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--remaining", "lots"}, "--remaining"},
		{"refill without amount", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--refill", "monthly"}, "--refill"},
		{"refill weekly", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--refill", "weekly:5"}, "--refill"},
		{"refill negative", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--refill", "daily:-5"}, "--refill"},
		{"refill not a number", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--refill", "daily:5k"}, "--refill"},
		{"metadata not JSON", nil, []string{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--metadata", "{x"}, "--metadata"},
		{"check without addr", nil, []string{"check", "--key", "k"}, "--addr"},
		{"check with bad addr", nil, []string{"check", "--addr", "localhost", "--key", "k"}, "--addr"},
		{"check with malformed header", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "-H", "no colon"}, "-H"},
		{"check with empty header name", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "-H", ": v"}, "-H"},
		{"check with bad path", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "--path", "v1"}, "--path"},
		{"check with ext without =", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "--ext", "keygate.cost"}, "--ext"},
		{"check with ext without name", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "--ext", "=5"}, "--ext"},
		{"check with ext twice", nil, []string{"check", "--addr", "127.0.0.1:1", "--key", "k", "--ext", "keygate.cost=1", "--ext", "keygate.cost=2"}, "--ext"},
		{"healthcheck with bad url", nil, []string{"healthcheck", "--url", "localhost:8001"}, "--url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := invoke(t, tt.env, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			oneLineNaming(t, r, tt.flag)
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr repeats a password: %q", r.stderr)
			}
		})
	}
}

func TestFlags_ValidServeFlagsParse(t *testing.T) {
	// Parsing alone: a closed context makes nothing listen for long, but
	// every flag form below must get past validation.
	var c cli
	for _, args := range [][]string{
		{"serve", "--cache-max-bytes", "64MiB"},
		{"serve", "--cache-max-bytes", "1048576"},
		{"serve", "--cache-max-bytes", "1GB"},
		{"serve", "--strip-credentials=false"},
		{"serve", "--no-strip-credentials"},
		{"serve", "--trusted-proxies", "10.0.0.0/8,192.0.2.1,2001:db8::/32"},
		{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "[::1]:8001"},
		{"serve", "--database-url", "postgresql://u@h/db", "--listen-database-url", "postgres://u@h2/db"},
		{"keys", "create", "--org", "o", "--user", "u", "--name", "n", "--expires-in", "36h"},
	} {
		c = cli{}
		p, err := newTestParser(&c, env{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(args); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
}

func TestFlags_ServeDefaults(t *testing.T) {
	var c cli
	p, err := newTestParser(&c, env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"serve"}); err != nil {
		t.Fatal(err)
	}
	s := c.Serve
	got := []any{s.GRPCAddr, s.HTTPAddr, s.HeaderPrefix, s.StripCredentials, int64(s.CacheMaxBytes), s.CacheTTL.String(),
		s.NegativeCacheTTL.String(), s.PollInterval.String(), s.ShutdownTimeout.String(), s.Conn.DataDir, s.Conn.LogLevel,
		s.Conn.SecretPrefix, s.Conn.PublishablePrefix}
	want := []any{":9001", ":8001", "x-keygate-", true, int64(64 << 20), "5m0s", "10s", "500ms", "10s", ".", "info", "sk", "pk"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("serve defaults (-want +got):\n%s", diff)
	}
}

func TestFlags_EnvironmentAndPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  env
		args []string
		get  func(*cli) any
		want any
	}{
		{"env used when flag absent", env{"KEYGATE_CACHE_TTL": "7m"}, []string{"serve"}, func(c *cli) any { return c.Serve.CacheTTL.String() }, "7m0s"},
		{"flag wins over env", env{"KEYGATE_CACHE_TTL": "7m"}, []string{"serve", "--cache-ttl", "1m"}, func(c *cli) any { return c.Serve.CacheTTL.String() }, "1m0s"},
		{"bool from env", env{"KEYGATE_STRIP_CREDENTIALS": "false"}, []string{"serve"}, func(c *cli) any { return c.Serve.StripCredentials }, false},
		{"bool flag wins", env{"KEYGATE_STRIP_CREDENTIALS": "false"}, []string{"serve", "--strip-credentials"}, func(c *cli) any { return c.Serve.StripCredentials }, true},
		{"size from env", env{"KEYGATE_CACHE_MAX_BYTES": "1MiB"}, []string{"serve"}, func(c *cli) any { return int64(c.Serve.CacheMaxBytes) }, int64(1 << 20)},
		{"connection flag on keys", env{"KEYGATE_DATA_DIR": "/srv"}, []string{"keys", "list", "--org", "a"}, func(c *cli) any { return c.Keys.List.Conn.DataDir }, "/srv"},
		{"empty env is unset", env{"KEYGATE_GRPC_ADDR": ""}, []string{"serve"}, func(c *cli) any { return c.Serve.GRPCAddr }, ":9001"},
		{"per-key flags ignore env", env{"KEYGATE_ROLE": "owner", "KEYGATE_TYPE": "publishable", "KEYGATE_ENV": "test", "KEYGATE_RATE_LIMIT": "5", "KEYGATE_SCOPES": "admin"},
			[]string{"keys", "create", "--org", "o", "--user", "u", "--name", "n"},
			func(c *cli) any {
				k := c.Keys.Create
				return []any{k.Role, k.Type, k.Env, k.RateLimit == nil, len(k.Scopes)}
			}, []any{"", "secret", "live", true, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cli
			p, err := newTestParser(&c, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, tt.get(&c)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestKeysCreate_EnvironmentReachesConnectionFlagsOnly runs keys create
// end to end: the secret prefix comes from the environment unless the flag
// is given, and per-key variables change nothing.
func TestKeysCreate_EnvironmentReachesConnectionFlagsOnly(t *testing.T) {
	e := backends[0].env(t).with("KEYGATE_SECRET_PREFIX", "zz",
		"KEYGATE_ROLE", "owner", "KEYGATE_SCOPES", "admin", "KEYGATE_ORG", "evil", "KEYGATE_EXPIRES_IN", "1h", "KEYGATE_JSON", "true")
	r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI")
	if r.code != 0 || !strings.HasPrefix(firstLine(r.stdout), "zz_live_") {
		t.Fatalf("exit %d, token %.8q…, stderr %q", r.code, firstLine(r.stdout), r.stderr)
	}
	r = invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--secret-prefix", "yy")
	if r.code != 0 || !strings.HasPrefix(firstLine(r.stdout), "yy_live_") {
		t.Fatalf("exit %d, token %.8q…, stderr %q", r.code, firstLine(r.stdout), r.stderr)
	}
	r = invoke(t, e, "keys", "list", "--org", "acme", "--json")
	var list httpapi.List[httpapi.APIKey]
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	for _, k := range list.Data {
		if diff := cmp.Diff([]string{"read", "write"}, k.Scopes); diff != "" || k.ExpiresAt != nil || k.OrgID != "acme" {
			t.Errorf("key %s: scopes %v, expires %v, org %s: per-key env leaked in", k.ID, k.Scopes, k.ExpiresAt, k.OrgID)
		}
	}
}

func TestKeysCreate_InvalidFieldNamesTheFlag(t *testing.T) {
	e := backends[0].env(t)
	for _, tt := range []struct {
		args []string
		flag string
	}{
		{[]string{"--scopes", "Read"}, "--scopes"},
		{[]string{"--project", "a/b"}, "--project"},
		{[]string{"--role", "root"}, "--role"},
		{[]string{"--metadata", "[1]"}, "--metadata"},
		{[]string{"--allow-source", "10.0.0.0/8", "--allow-source", "10.0.0.1/8"}, "--allow-source"},
		{[]string{"--allow-source", "spiffe://Mesh/x"}, "--allow-source"},
	} {
		args := append([]string{"keys", "create", "--org", "acme", "--user", "alice", "--name", "CI"}, tt.args...)
		r := invoke(t, e, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2", tt.args, r.code)
		}
		oneLineNaming(t, r, tt.flag)
	}
	r := invoke(t, e, "keys", "create", "--org", "bad org", "--user", "alice", "--name", "CI")
	if r.code != 2 {
		t.Errorf("bad org: exit %d", r.code)
	}
	oneLineNaming(t, r, "--org")
}

func TestCheck_NothingListeningIsExit2(t *testing.T) {
	r := invoke(t, env{}, "check", "--addr", testaddr.Free(t), "--key", "sk_live_x", "--timeout", "2s")
	if r.code != 2 {
		t.Errorf("exit %d, want 2 (%q)", r.code, r.stderr)
	}
	oneLineNaming(t, r, "check")
}

func TestHealthcheck_NothingListeningIsExit1(t *testing.T) {
	r := invoke(t, env{}, "healthcheck", "--url", "http://"+testaddr.Free(t)+"/healthz")
	if r.code != 1 {
		t.Errorf("exit %d, want 1 (%q)", r.code, r.stderr)
	}
	oneLineNaming(t, r, "healthcheck")
}

func TestHelpAndVersionExit0(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"keys", "create", "--help"}, {"version"}} {
		r := invoke(t, env{}, args...)
		if r.code != 0 || r.stdout == "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, r.code, r.stdout, r.stderr)
		}
	}
	if r := invoke(t, env{}); r.code != 2 {
		t.Errorf("no command: exit %d, want 2", r.code)
	}
}

// --allow-source binds the created key (SPEC §11), repeatable.
func TestKeysCreate_AllowSource(t *testing.T) {
	e := backends[0].env(t)
	r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--json",
		"--allow-source", "spiffe://mesh.local/ns/ci/*", "--allow-source", "10.0.0.0/8", "--allow-source", "2001:db8::1")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var out struct {
		Data struct {
			AllowedSources []string `json:"allowed_sources"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	if want := []string{"10.0.0.0/8", "2001:db8::1", "spiffe://mesh.local/ns/ci/*"}; !slices.Equal(out.Data.AllowedSources, want) {
		t.Errorf("allowed_sources = %v, want %v", out.Data.AllowedSources, want)
	}
}

// --limit gives the created key named rate limits (SPEC §9), repeatable.
func TestKeysCreate_Limit(t *testing.T) {
	e := backends[0].env(t)
	r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--json",
		"--limit", "upload=100/24h", "--limit", "search=10/1m", "--limit", "burst_2=1/1s", "--limit", "x=3/1h30m")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var out struct {
		Data struct {
			RateLimits []keygate.RateLimit `json:"rate_limits"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v: %s", err, r.stdout)
	}
	want := []keygate.RateLimit{{Name: "burst_2", Limit: 1, DurationSeconds: 1}, {Name: "search", Limit: 10, DurationSeconds: 60},
		{Name: "upload", Limit: 100, DurationSeconds: 86400}, {Name: "x", Limit: 3, DurationSeconds: 5400}}
	if !slices.Equal(out.Data.RateLimits, want) {
		t.Errorf("rate_limits = %v, want %v", out.Data.RateLimits, want)
	}
}

func TestKeysCreate_BadLimitNamesTheFlag(t *testing.T) {
	e := backends[0].env(t)
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"--limit", "search"}, "NAME=N/DURATION"},
		{[]string{"--limit", "search=10"}, "NAME=N/DURATION"},
		{[]string{"--limit", "Search=10/1m"}, `the name "Search"`},
		{[]string{"--limit", "=10/1m"}, `the name ""`},
		{[]string{"--limit", "search=0/1m"}, `the limit "0"`},
		{[]string{"--limit", "search=-1/1m"}, `the limit "-1"`},
		{[]string{"--limit", "search=ten/1m"}, `the limit "ten"`},
		{[]string{"--limit", "search=10/25h"}, `the duration "25h"`},
		{[]string{"--limit", "search=10/1.5s"}, `the duration "1.5s"`},
		{[]string{"--limit", "search=10/500ms"}, `the duration "500ms"`},
		{[]string{"--limit", "search=10/60"}, `the duration "60"`},
		{[]string{"--limit", "search=10/0s"}, `the duration "0s"`},
		{[]string{"--limit", "a=1/1s", "--limit", "a=2/1s"}, "unique"},
		{[]string{"--limit", "a=1/1s", "--limit", "b=1/1s", "--limit", "c=1/1s", "--limit", "d=1/1s", "--limit", "e=1/1s",
			"--limit", "f=1/1s", "--limit", "g=1/1s", "--limit", "h=1/1s", "--limit", "i=1/1s"}, "at most 8"},
	} {
		args := append([]string{"keys", "create", "--org", "acme", "--user", "alice", "--name", "CI"}, tt.args...)
		r := invoke(t, e, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2", tt.args, r.code)
		}
		oneLineNaming(t, r, "--limit")
		if !strings.Contains(r.stderr, tt.says) {
			t.Errorf("%v: stderr %q does not say %q", tt.args, r.stderr, tt.says)
		}
	}
}
