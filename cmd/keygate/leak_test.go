package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/apikey"
)

func TestLeakFlags_BadConfigurationIsOneLineNamingTheFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		flag string
	}{
		{"notify without report keys", []string{"serve", "--leak-action", "notify"}, "--leak-report-keys"},
		{"unknown action", []string{"serve", "--leak-action", "delete"}, "--leak-action"},
		{"missing key file", []string{"serve", "--leak-report-keys", filepath.Join(t.TempDir(), "nope.pem")}, "--leak-report-keys"},
		{"key file without keys", []string{"serve", "--leak-report-keys", writeFile(t, "keys.pem", "# key-id: a\n")}, "--leak-report-keys"},
		{"scan prefix", []string{"scan", "--secret-prefix", "SK"}, "--secret-prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := invoke(t, nil, tc.args...)
			if r.code != exitUsage {
				t.Errorf("exit %d, want %d", r.code, exitUsage)
			}
			oneLineNaming(t, r, tc.flag)
		})
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServe_LeakedKeyReportRevokesTheKey is the wiring: serve answers
// POST /v1/leaked-keys, revokes the reported key in the store, and Check
// denies it afterwards.
func TestServe_LeakedKeyReportRevokesTheKey(t *testing.T) {
	e := backends[0].env(t)
	tok := createKey(t, e, "--org", "acme", "--user", "alice", "--name", "leaky")
	s := serve(t, e)
	if r := check(t, s, tok); r.code != 0 {
		t.Fatalf("check before the report: exit %d %s", r.code, r.stdout)
	}
	body := `[{"token":"` + tok + `","type":"keygate_api_key","url":"https://github.com/o/r/blob/main/.env","source":"content"}]`
	resp, err := http.Post("http://"+s.httpAddr+"/v1/leaked-keys", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var got []struct{ Label string }
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || len(got) != 1 || got[0].Label != "true_positive" {
		t.Fatalf("report: %d %s", resp.StatusCode, b)
	}
	if r := check(t, s, tok); r.code != exitFail || !strings.Contains(r.stdout, string(keygate.CodeInvalidAPIKey)) {
		t.Errorf("check after the report: exit %d %s, want denied invalid_api_key", r.code, r.stdout)
	}
	if strings.Contains(s.stderr.String(), tok) || strings.Contains(s.stdout.String(), tok) {
		t.Error("serve logged the reported token")
	}
}

// copyFixtures copies the secret-scanning fixtures into a temporary
// directory.
func copyFixtures(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	paths, err := filepath.Glob("../../secret-scanning/testdata/*")
	if err != nil || len(paths) == 0 {
		t.Fatalf("fixtures: %v", err)
	}
	for _, p := range paths {
		if filepath.Base(p) == "native-tokens.txt" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestScan_FindsNativeTokensAndRejectsLookAlikes(t *testing.T) {
	dir := copyFixtures(t)
	r := invoke(t, nil, "scan", dir)
	if r.code != exitFail {
		t.Fatalf("exit %d, want 1 (found); stderr %s", r.code, r.stderr)
	}
	b, err := os.ReadFile("../../secret-scanning/testdata/native-tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	natives := strings.Fields(string(b))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(natives) {
		t.Errorf("%d findings, want %d:\n%s", len(lines), len(natives), r.stdout)
	}
	for _, tok := range natives {
		parsed, _ := apikey.DefaultFormat().Parse(tok)
		shown := parsed.Prefix() + "…" + parsed.Last4()
		if !strings.Contains(r.stdout, shown) {
			t.Errorf("%s not reported:\n%s", shown, r.stdout)
		}
		if strings.Contains(r.stdout+r.stderr, tok) {
			t.Errorf("the whole token %s… is printed", tok[:12])
		}
	}
	// path:line, e.g. config.env's first token is on line 3.
	if !strings.Contains(r.stdout, filepath.Join(dir, "config.env")+":3: sk_live_QL6Z…nXEV (secret, live)") {
		t.Errorf("no path:line for config.env:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "lookalikes.txt") {
		t.Errorf("a look-alike is reported:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "2 look-alike(s) with a wrong checksum ignored") {
		t.Errorf("stderr %q does not count the look-alikes", r.stderr)
	}
}

func TestScan_ExitCodes(t *testing.T) {
	clean := writeFile(t, "clean.txt", "nothing here but sk_live_short\n")
	lookAlike := filepath.Join(copyFixtures(t), "lookalikes.txt")
	custom, err := apikey.NewFormat("acme", "acmepub")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := custom.Generate(keygate.Secret, keygate.Test)
	if err != nil {
		t.Fatal(err)
	}
	withCustom := writeFile(t, "custom.env", "KEY="+tok.String()+"\n")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"nothing found", []string{"scan", clean}, exitOK},
		{"only look-alikes", []string{"scan", lookAlike}, exitOK},
		{"missing path", []string{"scan", clean, filepath.Join(t.TempDir(), "nope")}, exitUsage},
		{"custom prefix, default flags", []string{"scan", withCustom}, exitOK},
		{"custom prefix", []string{"scan", "--secret-prefix", "acme", "--publishable-prefix", "acmepub", withCustom}, exitFail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r := invoke(t, nil, tc.args...); r.code != tc.want {
				t.Errorf("exit %d, want %d; stdout %s stderr %s", r.code, tc.want, r.stdout, r.stderr)
			}
		})
	}
}
