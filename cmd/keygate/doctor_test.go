package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDoctor_ExitCodes: 0 with no error finding (warnings allowed), 1 with
// one, 2 for a file that cannot be read or parsed, and for a bad flag.
func TestDoctor_ExitCodes(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		want     int
		inStdout string
		inStderr string
	}{
		{"clean", []string{"../../doctor/testdata/clean.yaml"}, 0, "", ""},
		{"warnings only", []string{"../../doctor/testdata/timeout.yaml"}, 0,
			"warning ../../doctor/testdata/timeout.yaml:31: ext_authz timeout 2.5s is above 1s", ""},
		{"an error", []string{"../../doctor/testdata/clean.yaml", "../../doctor/testdata/fail-open.yaml"}, 1,
			"error ../../doctor/testdata/fail-open.yaml:39: failure_mode_allow: true", ""},
		{"no file", nil, 2, "", "file"},
		{"unparsable", []string{"../../doctor/testdata/unparsable.yaml"}, 2, "", "unparsable.yaml"},
		{"missing", []string{"../../doctor/testdata/no-such-file.yaml"}, 2, "", "no-such-file.yaml"},
		{"bad header prefix", []string{"--header-prefix", "X-Auth", "../../doctor/testdata/clean.yaml"}, 2, "", "--header-prefix"},
		{"other header prefix", []string{"--header-prefix", "x-auth-", "../../doctor/testdata/clean.yaml"}, 1,
			"[identity-headers-not-stripped]", ""},
		{"client ip header", []string{"--client-ip-header", "x-real-ip", "../../doctor/testdata/clean.yaml"}, 0,
			"leaves out x-real-ip (--client-ip-header)", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := invoke(t, env{}, append([]string{"doctor"}, tt.args...)...)
			if r.code != tt.want || !strings.Contains(r.stdout, tt.inStdout) || !strings.Contains(r.stderr, tt.inStderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					r.code, r.stdout, r.stderr, tt.want, tt.inStdout, tt.inStderr)
			}
		})
	}
}

// TestDoctor_JSON prints {"findings": [...]} with every field, and an empty
// list, not null, for a clean file.
func TestDoctor_JSON(t *testing.T) {
	r := invoke(t, env{}, "doctor", "--json", "../../doctor/testdata/fail-open.yaml")
	var got struct {
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 1 {
		t.Fatalf("exit %d, stdout %q: %v", r.code, r.stdout, err)
	}
	want := []map[string]any{{
		"severity": "error", "file": "../../doctor/testdata/fail-open.yaml", "line": float64(39),
		"rule":    "ext-authz-fail-open",
		"message": "failure_mode_allow: true lets every request through when keygate is down or slow; set it to false",
	}}
	if diff := cmp.Diff(want, got.Findings); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
	r = invoke(t, env{}, "doctor", "--json", "../../doctor/testdata/clean.yaml")
	if strings.Join(strings.Fields(r.stdout), "") != `{"findings":[]}` || r.code != 0 {
		t.Errorf("clean: exit %d, stdout %q", r.code, r.stdout)
	}
}
