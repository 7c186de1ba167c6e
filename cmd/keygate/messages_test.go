package main

import (
	"strings"
	"testing"
)

// The messages below are for someone new to keygate: each says what is
// wrong in the terms of the command line, with no package or store prefix.

func TestKeysRevoke_UnknownIDSaysNoKeyInTheOrganization(t *testing.T) {
	e := backends[0].env(t)
	createKey(t, e, "--org", "acme", "--user", "alice", "--name", "CI")
	r := invoke(t, e, "keys", "revoke", "--org", "acme", "key_nope")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	oneLineNaming(t, r, "keygate: no key key_nope in organization acme")
	for _, leak := range []string{"sqlite", "postgres", "not_found", "resource"} {
		if strings.Contains(r.stderr, leak) {
			t.Errorf("stderr %q says %q", r.stderr, leak)
		}
	}
}

func TestKeysList_UnknownOrganizationSaysItDoesNotExist(t *testing.T) {
	e := backends[0].env(t)
	for _, args := range [][]string{
		{"keys", "list", "--org", "nosuchorg"},
		{"keys", "revoke", "--org", "nosuchorg", "key_x"},
	} {
		r := invoke(t, e, args...)
		if r.code != 1 {
			t.Errorf("%v: exit %d, want 1", args, r.code)
		}
		oneLineNaming(t, r, "keygate: organization nosuchorg does not exist")
		if r.stdout != "" {
			t.Errorf("%v: stdout %q, want nothing", args, r.stdout)
		}
	}
}

func TestCheck_HTTPPortSaysItIsTheHTTPPort(t *testing.T) {
	s := serve(t, backends[0].env(t))
	r := invoke(t, env{}, "check", "--addr", s.httpAddr, "--key", "sk_live_x")
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	oneLineNaming(t, r, "looks like keygate's HTTP port")
	oneLineNaming(t, r, "--grpc-addr, default :9001")
	// The gRPC port itself is not mistaken for it.
	if r := check(t, s, "sk_live_x"); strings.Contains(r.stderr, "HTTP port") {
		t.Errorf("check on the gRPC port: %q", r.stderr)
	}
}

func TestFlags_BadEnvironmentValueNamesTheVariable(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		args        []string
	}{
		{"KEYGATE_RATE_LIMIT", "abc", []string{"serve"}},
		{"KEYGATE_CACHE_TTL", "soon", []string{"serve"}},
		{"KEYGATE_CACHE_MAX_BYTES", "lots", []string{"serve"}},
		{"KEYGATE_CONSOLE", "maybe", []string{"serve"}},
		{"KEYGATE_LOG_FORMAT", "xml", []string{"keys", "list", "--org", "acme"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := invoke(t, env{tt.name: tt.value}, tt.args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2", r.code)
			}
			oneLineNaming(t, r, tt.name)
			oneLineNaming(t, r, "--"+strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(tt.name, "KEYGATE_")), "_", "-"))
		})
	}
}

func TestFlags_NegativeRateLimitMustBeAtLeastZero(t *testing.T) {
	create := []string{"keys", "create", "--org", "acme", "--user", "alice", "--name", "CI"}
	for _, args := range [][]string{
		{"serve", "--rate-limit", "-5"},
		{"serve", "--rate-limit=-5"},
		append(create, "--rate-limit", "-5"),
		append(create, "--rate-limit=-5"),
	} {
		r := invoke(t, env{}, args...)
		if r.code != 2 {
			t.Errorf("%v: exit %d, want 2", args, r.code)
		}
		oneLineNaming(t, r, "--rate-limit must be ≥ 0")
	}
	if r := invoke(t, env{"KEYGATE_RATE_LIMIT": "-5"}, "serve"); r.code != 2 || !strings.Contains(r.stderr, "--rate-limit must be ≥ 0") {
		t.Errorf("KEYGATE_RATE_LIMIT=-5: exit %d %q", r.code, r.stderr)
	}
}

func TestKeysCreate_EmptyScopesIsAnError(t *testing.T) {
	e := backends[0].env(t)
	for _, scopes := range []string{"", " "} {
		r := invoke(t, e, "keys", "create", "--org", "acme", "--user", "alice", "--name", "CI", "--scopes", scopes)
		if r.code != 2 {
			t.Errorf("--scopes %q: exit %d, want 2 (stdout %q)", scopes, r.code, r.stdout)
		}
		oneLineNaming(t, r, "--scopes")
		if r.stdout != "" {
			t.Errorf("--scopes %q printed %q: a key was made", scopes, r.stdout)
		}
	}
}
