package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/internal/pgtest"
)

// createKey runs `keys create` and returns the token from stdout's first line.
func createKey(t *testing.T, e env, args ...string) string {
	t.Helper()
	r := invoke(t, e, append([]string{"keys", "create"}, args...)...)
	if r.code != 0 {
		t.Fatalf("keys create %v: exit %d\nstderr: %s", args, r.code, r.stderr)
	}
	tok := firstLine(r.stdout)
	if _, err := apikey.DefaultFormat().Parse(tok); err != nil {
		t.Fatalf("keys create: first line %q is not a token: %v", tok, err)
	}
	return tok
}

func check(t *testing.T, s *server, token string, args ...string) result {
	t.Helper()
	return invoke(t, env{}, append([]string{"check", "--addr", s.grpcAddr, "--key", token}, args...)...)
}

// waitForDecision checks until the exit code and output match, for at
// most d, and fails with the last answer otherwise.
func waitForDecision(t *testing.T, s *server, token string, d time.Duration, wantCode int, wantOut string) {
	t.Helper()
	var last result
	start := time.Now()
	if !eventually(d, func() bool {
		last = check(t, s, token)
		return last.code == wantCode && strings.Contains(last.stdout, wantOut)
	}) {
		t.Fatalf("after %v: check exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", d, last.code, wantCode, wantOut, last.stdout, last.stderr)
	}
	t.Logf("decision %q after %v", wantOut, time.Since(start).Round(time.Millisecond))
}

func listKeys(t *testing.T, e env, org string) httpapi.List[httpapi.APIKey] {
	t.Helper()
	r := invoke(t, e, "keys", "list", "--org", org, "--json")
	if r.code != 0 {
		t.Fatalf("keys list: exit %d: %s", r.code, r.stderr)
	}
	var got httpapi.List[httpapi.APIKey]
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, r.stdout)
	}
	return got
}

// TestWalkthrough is the README's walkthrough on both stores: create a key,
// serve, check it, revoke it from another process and see the deny within
// a second, list keys, disable the organization.
func TestWalkthrough(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.env(t)
			token := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "CI Pipeline")
			other := createKey(t, e, "--org", "beta", "--user", "bob", "--name", "Beta", "--role", "viewer")

			s := serve(t, e)
			if b.name == "embedded" {
				// A fresh embedded store already has keys: no bootstrap.
				if strings.Contains(s.stdout.String(), "owner key") {
					t.Errorf("serve bootstrapped a store that has keys:\n%s", s.stdout.String())
				}
			}

			r := check(t, s, token, "--path", "/v1/things")
			if r.code != 0 || !strings.Contains(r.stdout, "allowed") || !strings.Contains(r.stdout, "x-keygate-org-id: acme") ||
				!strings.Contains(r.stdout, "remove    authorization") {
				t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if r := check(t, s, other, "--path", "/v1/things"); r.code != 0 || !strings.Contains(r.stdout, "x-keygate-scopes: read\n") {
				t.Fatalf("check other: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}

			list := listKeys(t, e, "acme")
			if len(list.Data) != 1 || list.NextCursor != nil {
				t.Fatalf("keys list = %+v, want one key and no cursor", list)
			}
			key := list.Data[0]
			want := httpapi.APIKey{
				Object: "api_key", Name: "CI Pipeline", Prefix: token[:12], Last4: token[len(token)-4:],
				Type: "secret", Environment: "live", OrgID: "acme", UserID: "alice",
				Scopes: []string{"read", "write"}, ProjectIDs: []string{}, Metadata: json.RawMessage("{}"), AllowedSources: []string{}, RateLimits: []keygate.RateLimit{}, Status: "active",
			}
			if diff := cmp.Diff(want, key, cmpopts.IgnoreFields(httpapi.APIKey{}, "ID", "CreatedAt", "LastUsedAt")); diff != "" {
				t.Errorf("listed key (-want +got):\n%s", diff)
			}
			if !strings.HasPrefix(key.ID, "key_") || time.Since(time.Time(key.CreatedAt)) > time.Minute {
				t.Errorf("listed key id %q created %v", key.ID, time.Time(key.CreatedAt))
			}

			if r := invoke(t, e, "keys", "revoke", "--org", "acme", key.ID); r.code != 0 {
				t.Fatalf("keys revoke: exit %d: %s", r.code, r.stderr)
			}
			waitForDecision(t, s, token, time.Second, 1, "denied 401 invalid_api_key")
			if got := listKeys(t, e, "acme"); len(got.Data) != 0 {
				t.Errorf("keys list after revoke = %+v, want none", got.Data)
			}
			if r := invoke(t, e, "keys", "revoke", "--org", "acme", key.ID); r.code != 1 || !strings.Contains(r.stderr, "no key "+key.ID+" in organization acme") {
				t.Errorf("second revoke: exit %d %q, want 1 and no key %s in organization acme", r.code, r.stderr, key.ID)
			}

			if r := invoke(t, e, "orgs", "disable", "beta"); r.code != 0 {
				t.Fatalf("orgs disable: exit %d: %s", r.code, r.stderr)
			}
			waitForDecision(t, s, other, time.Second, 1, "denied 403 organization_disabled")
			if r := invoke(t, e, "orgs", "enable", "beta"); r.code != 0 {
				t.Fatalf("orgs enable: exit %d: %s", r.code, r.stderr)
			}
			waitForDecision(t, s, other, time.Second, 0, "allowed")

			if err := s.stop(); err != nil {
				t.Fatalf("serve after cancel: %v", err)
			}
		})
	}
}

func TestKeysCreate_JSONIsTheAPIObject(t *testing.T) {
	e := backends[0].env(t)
	r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--scopes", "write,read,write",
		"--project", "p2", "--project", "p1", "--type", "publishable", "--env", "test", "--expires-in", "90d",
		"--rate-limit", "0", "--metadata", `{"plan": "pro"}`, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var raw map[string]map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	var fields []string
	for k := range raw["data"] {
		fields = append(fields, k)
	}
	slices.Sort(fields)
	wantFields := []string{"allowed_sources", "created_at", "environment", "expires_at", "id", "key", "last4", "last_used_at", "metadata", "name",
		"object", "org_id", "prefix", "project_ids", "rate_limit_per_minute", "rate_limits", "refill", "remaining", "scopes", "status", "type", "user_id"}
	if diff := cmp.Diff(wantFields, fields); diff != "" {
		t.Errorf("fields of data (-want +got):\n%s", diff)
	}
	var got httpapi.Data[httpapi.CreatedAPIKey]
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatal(err)
	}
	k := got.Data
	tok, err := apikey.DefaultFormat().Parse(k.Key)
	if err != nil {
		t.Fatalf("key %q: %v", k.Key, err)
	}
	want := httpapi.APIKey{
		Object: "api_key", Name: "CI", Prefix: tok.Prefix(), Last4: tok.Last4(), Type: "publishable", Environment: "test",
		OrgID: "acme", UserID: "alice", Scopes: []string{"read", "write"}, ProjectIDs: []string{"p1", "p2"},
		RateLimitPerMinute: new(int), Metadata: json.RawMessage(`{"plan":"pro"}`), AllowedSources: []string{}, RateLimits: []keygate.RateLimit{}, Status: "active",
	}
	if diff := cmp.Diff(want, k.APIKey, cmpopts.IgnoreFields(httpapi.APIKey{}, "ID", "CreatedAt", "ExpiresAt")); diff != "" {
		t.Errorf("key (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(k.Key, "pk_test_") {
		t.Errorf("token %q, want pk_test_", k.Key[:8])
	}
	if k.ExpiresAt == nil || time.Until(time.Time(*k.ExpiresAt)).Round(time.Hour) != 90*24*time.Hour {
		t.Errorf("expires_at = %v, want in 90 days", k.ExpiresAt)
	}
	if strings.Contains(r.stderr, k.Key) {
		t.Error("the token is on stderr")
	}
}

func TestServe_BootstrapsAnEmptyEmbeddedStoreOnce(t *testing.T) {
	e := backends[0].env(t)
	s := serve(t, e)
	out := s.stdout.String()
	head, tok, _ := strings.Cut(out, "\n")
	tok = strings.TrimSpace(tok)
	if !strings.Contains(head, "created owner key for organization default") {
		t.Fatalf("serve stdout = %q", out)
	}
	if r := check(t, s, tok, "--path", "/v1/admin/x"); r.code != 0 || !strings.Contains(r.stdout, "x-keygate-scopes: admin,read,write") ||
		!strings.Contains(r.stdout, "x-keygate-user-id: admin") {
		t.Fatalf("check with the owner key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(s.stderr.String(), tok) {
		t.Error("the bootstrap token is in the log")
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	again := serve(t, e)
	if strings.Contains(again.stdout.String(), "owner key") {
		t.Errorf("second serve bootstrapped again: %q", again.stdout.String())
	}
}

// TestServe_NoTokenInAnyLogLine captures the stderr of a whole session at
// debug level (serve, create, allowed and denied checks, revoke) and looks
// for every token and its secret part.
func TestServe_NoTokenInAnyLogLine(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.env(t).with("KEYGATE_LOG_LEVEL", "debug")
			var logs strings.Builder
			s := serve(t, e)
			var tokens []string
			if b.name == "embedded" {
				_, boot, _ := strings.Cut(s.stdout.String(), "\n")
				tokens = append(tokens, strings.TrimSpace(boot))
			}
			r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI")
			logs.WriteString(r.stderr)
			tok := firstLine(r.stdout)
			tokens = append(tokens, tok)
			r = invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--json")
			logs.WriteString(r.stderr)
			var created httpapi.Data[httpapi.CreatedAPIKey]
			if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
				t.Fatal(err)
			}
			tokens = append(tokens, created.Data.Key)
			for _, tk := range tokens {
				r := check(t, s, tk)
				logs.WriteString(r.stderr)
				if r.code != 0 {
					t.Fatalf("check: exit %d %s", r.code, r.stdout)
				}
			}
			r = invoke(t, e, "keys", "list", "--org", "acme")
			logs.WriteString(r.stderr)
			r = invoke(t, e, "keys", "revoke", "--org", "acme", created.Data.ID)
			logs.WriteString(r.stderr)
			waitForDecision(t, s, created.Data.Key, time.Second, 1, "invalid_api_key")
			// A token with a good checksum that was never issued, and one
			// with a bad checksum.
			unknown, _ := apikey.DefaultFormat().Generate("secret", "live")
			tokens = append(tokens, unknown.String(), tok[:len(tok)-1]+"x")
			for _, tk := range tokens[len(tokens)-2:] {
				logs.WriteString(check(t, s, tk).stderr)
			}
			if err := s.stop(); err != nil {
				t.Fatal(err)
			}
			logs.WriteString(s.stderr.String())
			all := logs.String()
			if !strings.Contains(all, `"level":"DEBUG"`) && !strings.Contains(all, "level=DEBUG") {
				t.Logf("no debug line was logged; the check still covers info and above")
			}
			for _, tk := range tokens {
				secret := tk[len("sk_live_"):]
				if strings.Contains(all, tk) || strings.Contains(all, secret) {
					t.Errorf("a log line holds token %s…:\n%s", tk[:12], all)
				}
			}
		})
	}
}

func TestServe_CancelReturnsNilPromptly(t *testing.T) {
	s := serve(t, backends[0].env(t), "--shutdown-timeout", "5s")
	// An open client connection must not hold the shutdown.
	r := check(t, s, "sk_live_x")
	if r.code != 1 {
		t.Fatalf("check: exit %d %s", r.code, r.stderr)
	}
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if !strings.Contains(s.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no stopped line in the log:\n%s", s.stderr.String())
	}
}

func TestServe_HTTPEndpoints(t *testing.T) {
	s := serve(t, backends[0].env(t))
	for _, tt := range []struct {
		path string
		want int
	}{{"/healthz", 200}, {"/readyz", 200}, {"/metrics", 200}, {"/nope", 404}} {
		resp, err := http.Get("http://" + s.httpAddr + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s = %d, want %d", tt.path, resp.StatusCode, tt.want)
		}
	}
	if r := invoke(t, env{}, "healthcheck", "--url", "http://"+s.httpAddr+"/healthz"); r.code != 0 {
		t.Errorf("healthcheck: exit %d %s", r.code, r.stderr)
	}
	if r := invoke(t, env{}, "healthcheck", "--url", "http://"+s.httpAddr+"/nope"); r.code != 1 {
		t.Errorf("healthcheck of a 404: exit %d, want 1", r.code)
	}
}

// TestServe_StoreGoneIsServiceUnavailable drops the PostgreSQL database
// under a running serve: a key that is not cached must be denied with
// service_unavailable, never allowed; /readyz stays ready while the cache
// is within --max-staleness (a blip must not pull every replica out of the
// load balancer) and says unavailable after it.
func TestServe_StoreGoneIsServiceUnavailable(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	e := env{"KEYGATE_DATABASE_URL": dbURL}
	first := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "first")
	second := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "second")
	s := serve(t, e, "--max-staleness", "1s", "--preload-keys", "0") // the second key stays uncached
	if r := check(t, s, first); r.code != 0 {
		t.Fatalf("check: exit %d %s", r.code, r.stdout)
	}

	adminExec(t, "DROP DATABASE "+dbName(t, dbURL)+" WITH (FORCE)")

	never, _ := apikey.DefaultFormat().Generate("secret", "live")
	for _, tok := range []string{second, never.String()} {
		r := check(t, s, tok)
		if r.code != 1 || !strings.Contains(r.stdout, "denied 503 service_unavailable") || !strings.Contains(r.stdout, "retry-after") {
			t.Errorf("check with the store gone: exit %d, want 1 and a 503\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	readyz := func() int {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Past max staleness the cached key is no longer served either.
	deadline := time.Now().Add(5 * time.Second)
	for readyz() != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatal("/readyz still ready 5 s after the store went away with --max-staleness 1s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := check(t, s, first); r.code != 1 || !strings.Contains(r.stdout, "denied 503 service_unavailable") {
		t.Errorf("cached key past max staleness with the store gone: exit %d, want a 503\n%s", r.code, r.stdout)
	}
}
