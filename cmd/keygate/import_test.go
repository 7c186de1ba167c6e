package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
)

// importLine is one JSON Lines item for token, with extra members.
func importLine(token, extra string) string {
	h := sha256.Sum256([]byte(token))
	line := fmt.Sprintf(`{"name":"imported","user_id":"alice","hash":"sha256:%s","prefix":%q,"last4":%q`,
		hex.EncodeToString(h[:]), token[:7], token[len(token)-4:])
	if extra != "" {
		line += "," + extra
	}
	return line + "}"
}

func writeImportFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys.jsonl")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func legacyToken() string { return "legacy-" + rand.Text() }

func TestKeysImport_MalformedFilesNameTheLineAndWriteNothing(t *testing.T) {
	e := migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()})
	good := func() string { return importLine(legacyToken(), "") }
	thousandOne := make([]string, 1001)
	for i := range thousandOne {
		thousandOne[i] = good()
	}
	for _, tt := range []struct {
		name, content, want string
		code                int // 0: 2, a usage error
	}{
		{"malformed JSON", good() + "\n" + good() + "\n" + `{"name": "x",` + "\n", ":3: ", 0},
		{"not an object", good() + "\n[1,2]\n", ":2: ", 0},
		{"two objects on a line", good() + " " + good() + "\n", ":1: ", 0},
		{"unknown member", good() + "\n" + importLine(legacyToken(), `"token":"x"`) + "\n", ":2: token", 0},
		{"hash malformed", strings.Replace(good(), "sha256:", "md5:", 1) + "\n", ":1: hash", 0},
		{"hash missing", `{"name":"x","prefix":"abc","last4":"abcd"}` + "\n", ":1: hash", 0},
		{"prefix too long", importLine(legacyToken(), "") + "\n" + strings.Replace(good(), `"prefix":"legacy-"`, `"prefix":"legacy-0123456789ab"`, 1) + "\n", ":2: prefix", 0},
		{"last4 too short", strings.Replace(good(), `"last4":"`, `"last4":"x`, 1) + "\n", ":1: last4", 0},
		{"bad scope after blank lines", "\n\n" + good() + "\n   \n" + importLine(legacyToken(), `"scopes":["Read"]`) + "\n", ":5: scopes", 0},
		{"user_id missing", `{"name":"x","hash":"sha256:` + strings.Repeat("a", 64) + `","prefix":"abc","last4":"abcd"}` + "\n", ":1: user_id", 0},
		{"same hash twice", good() + "\n" + strings.Repeat(importLine("legacy-the-same-token", "")+"\n", 2), ":3: hash: the same token hash as line 2.", 1},
		{"1001 keys", strings.Join(thousandOne, "\n") + "\n", ":1001: more than 1000 keys", 0},
		{"empty file", "", ": no keys", 0},
		{"blank lines only", "\n  \n\t\n", ": no keys", 0},
		{"line too long", good() + "\n" + `{"name":"` + strings.Repeat("x", maxImportLine) + `"}` + "\n", ":2: line longer", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := writeImportFile(t, tt.content)
			r := invoke(t, e, "keys", "import", "--org", "acme", file)
			if tt.code == 0 {
				tt.code = 2
			}
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			oneLineNaming(t, r, file+tt.want)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
	if r := invoke(t, e, "keys", "list", "--org", "acme"); r.code == 0 {
		t.Errorf("organization acme exists after refused imports: %s", r.stdout)
	}
}

// TestKeysImport_ImportedTokensWorkOverGRPC imports a foreign and a native
// token with the CLI, then asks a real serve over gRPC: the foreign token
// works only with --foreign-tokens (or KEYGATE_FOREIGN_TOKENS), the native
// one either way, and a native-shaped token with a wrong checksum never.
func TestKeysImport_ImportedTokensWorkOverGRPC(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			e := b.env(t)
			native, err := apikey.DefaultFormat().Generate(keygate.Secret, keygate.Live)
			if err != nil {
				t.Fatal(err)
			}
			foreign := legacyToken()
			badSum := native.String()[:len(native.String())-6] + "000000"
			file := writeImportFile(t, importLine(foreign, `"scopes":["read"]`)+"\n\n"+importLine(native.String(), "")+"\n"+importLine(badSum, "")+"\n")
			r := invoke(t, e, "keys", "import", "--org", "acme", file)
			if r.code != 0 {
				t.Fatalf("keys import: exit %d: %s", r.code, r.stderr)
			}
			ids := strings.Fields(r.stdout)
			if len(ids) != 3 || !strings.HasPrefix(ids[0], "key_") || !strings.Contains(r.stderr, "imported 3 keys") {
				t.Fatalf("stdout %q, stderr %q; want three key ids", r.stdout, r.stderr)
			}
			listed := listKeys(t, e, "acme").Data
			if len(listed) != 3 {
				t.Fatalf("%d keys listed, want 3", len(listed))
			}

			// The same file again: every hash exists, nothing more is written.
			again := invoke(t, e, "keys", "import", "--org", "acme", file)
			if again.code != 1 {
				t.Errorf("second import: exit %d, want 1; stderr %q", again.code, again.stderr)
			}
			oneLineNaming(t, again, file+":1: hash")
			if n := len(listKeys(t, e, "acme").Data); n != 3 {
				t.Errorf("%d keys after a refused import, want 3", n)
			}

			for _, mode := range []struct {
				name    string
				env     env
				args    []string
				foreign int
			}{
				{"without the flag", e, nil, 1},
				{"--foreign-tokens", e, []string{"--foreign-tokens"}, 0},
				{"KEYGATE_FOREIGN_TOKENS", e.with("KEYGATE_FOREIGN_TOKENS", "true"), nil, 0},
			} {
				t.Run(mode.name, func(t *testing.T) {
					s := serve(t, mode.env, mode.args...)
					for _, c := range []struct {
						name, token string
						code        int
						out         string
					}{
						{"foreign", foreign, mode.foreign, map[int]string{0: "allowed", 1: "invalid_api_key"}[mode.foreign]},
						{"foreign in both headers", foreign, mode.foreign, ""},
						{"native", native.String(), 0, "allowed"},
						{"native shape, bad checksum", badSum, 1, "invalid_api_key"},
						{"foreign, unknown", legacyToken(), 1, "invalid_api_key"},
					} {
						var args []string
						if c.name == "foreign in both headers" {
							args = []string{"-H", "x-api-key: " + c.token}
						}
						got := check(t, s, c.token, args...)
						if got.code != c.code || !strings.Contains(got.stdout, c.out) {
							t.Errorf("%s: check exit %d, stdout %q; want exit %d with %q (stderr %s)", c.name, got.code, got.stdout, c.code, c.out, got.stderr)
						}
					}
					if mode.foreign != 0 {
						return
					}
					// Imported through the API of the running serve: the
					// token works at once on this replica (its cache and
					// membership filter learn the hash before the answer),
					// even though it was asked about, and cached as
					// unknown, just before.
					admin := createKey(t, mode.env, "--org", "acme", "--user", "root", "--name", "admin", "--role", "owner")
					live := legacyToken()
					if got := check(t, s, live); got.code != 1 {
						t.Fatalf("before import: check exit %d: %s", got.code, got.stdout)
					}
					req, err := http.NewRequest("POST", "http://"+s.httpAddr+"/v1/api-keys/import",
						strings.NewReader(`{"keys":[`+importLine(live, "")+`]}`))
					if err != nil {
						t.Fatal(err)
					}
					req.Header.Set("Authorization", "Bearer "+admin)
					req.Header.Set("Content-Type", "application/json")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated || strings.Contains(string(body), `"key":`) {
						t.Fatalf("import: %d %s", resp.StatusCode, body)
					}
					if got := check(t, s, live); got.code != 0 {
						t.Errorf("right after the import: check exit %d: %s", got.code, got.stdout)
					}
				})
			}
		})
	}
}

// An import refused by the store (a hash that exists) writes nothing, the
// organization it would have created included: SPEC §9's all or nothing.
func TestKeysImport_RefusedImportCreatesNoOrganization(t *testing.T) {
	e := migrated(t, env{"KEYGATE_DATA_DIR": t.TempDir()})
	file := writeImportFile(t, importLine(legacyToken(), "")+"\n")
	if r := invoke(t, e, "keys", "import", "--org", "acme", file); r.code != 0 {
		t.Fatalf("keys import: exit %d: %s", r.code, r.stderr)
	}
	// The same tokens into an organization that does not exist yet.
	r := invoke(t, e, "keys", "import", "--org", "fresh", file)
	if r.code != 1 {
		t.Fatalf("second import: exit %d, want 1; stderr %q", r.code, r.stderr)
	}
	if r := invoke(t, e, "keys", "list", "--org", "fresh"); r.code == 0 {
		t.Errorf("organization fresh exists after a refused import: %s", r.stdout)
	}
}
