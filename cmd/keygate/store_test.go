package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStore_OnlyServeAndMigrateCreateTheEmbeddedStore: every command that
// reads or writes keys or organizations, run where there is no store,
// exits 2 with one line naming the file it looked for and the variable
// that may be missing, and leaves no keygate.db behind.
func TestStore_OnlyServeAndMigrateCreateTheEmbeddedStore(t *testing.T) {
	for _, args := range [][]string{
		{"keys", "create", "--org", "acme", "--user", "alice", "--name", "CI"},
		{"keys", "list", "--org", "acme"},
		{"keys", "revoke", "--org", "acme", "key_x"},
		{"orgs", "create", "acme"},
		{"orgs", "disable", "acme"},
		{"orgs", "enable", "acme"},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			dir := t.TempDir()
			r := invoke(t, env{"KEYGATE_DATA_DIR": dir}, args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			oneLineNaming(t, r, filepath.Join(dir, "keygate.db"))
			oneLineNaming(t, r, "KEYGATE_DATABASE_URL")
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing (no token for a store nobody reads)", r.stdout)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("%s holds %d entries afterwards, want none", dir, len(entries))
			}
		})
	}
	t.Run("migrate creates it", func(t *testing.T) {
		dir := t.TempDir()
		if r := invoke(t, env{"KEYGATE_DATA_DIR": dir}, "migrate"); r.code != 0 {
			t.Fatalf("migrate: exit %d: %s", r.code, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "keygate.db")); err != nil {
			t.Fatal(err)
		}
		if r := invoke(t, env{"KEYGATE_DATA_DIR": dir}, "keys", "list", "--org", "acme"); r.code == 2 {
			t.Errorf("keys list after migrate: exit 2: %s", r.stderr)
		}
	})
}

// TestStore_MissingDataDirIsAnErrorForEveryCommand: --data-dir is never
// created behind the operator's back, not even by serve or migrate.
func TestStore_MissingDataDirIsAnErrorForEveryCommand(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nonexistent")
	for _, args := range [][]string{
		{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"},
		{"migrate"},
		{"keys", "create", "--org", "acme", "--user", "alice", "--name", "CI"},
		{"keys", "list", "--org", "acme"},
		{"orgs", "create", "acme"},
	} {
		t.Run(args[0], func(t *testing.T) {
			r := invoke(t, env{}, append(args, "--data-dir", missing)...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", r.code, r.stderr)
			}
			oneLineNaming(t, r, "--data-dir "+missing+" does not exist")
			if _, err := os.Stat(missing); err == nil {
				t.Errorf("%s was created", missing)
			}
		})
	}
}
