package doctor

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// at is a finding without its message: what the fixtures pin.
type at struct {
	Severity Severity
	File     string
	Line     int
	Rule     string
}

func check(t *testing.T, opts Options, files ...string) []Finding {
	t.Helper()
	var inputs []Input
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, Input{Name: f, Data: data})
	}
	fs, err := Check(inputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func strip(fs []Finding) []at {
	var out []at
	for _, f := range fs {
		out = append(out, at{f.Severity, filepath.Base(f.File), f.Line, f.Rule})
	}
	return out
}

// TestDoctor_EachRuleFiresAtTheOffendingLine runs every fixture in testdata:
// each breaks one rule (or a family), and the finding names the line of the
// offending key, or of the connection manager when a setting is absent.
func TestDoctor_EachRuleFiresAtTheOffendingLine(t *testing.T) {
	opts := Options{ClientIPHeader: "x-envoy-external-address"}
	tests := []struct {
		files []string
		want  []at
	}{
		{[]string{"clean.yaml"}, nil},
		{[]string{"lua-strip.yaml"}, nil},
		{[]string{"fail-open.yaml"}, []at{{Error, "fail-open.yaml", 39, "ext-authz-fail-open"}}},
		{[]string{"fail-open.json"}, []at{
			{Warning, "fail-open.json", 20, "ext-authz-timeout"},
			{Error, "fail-open.json", 21, "ext-authz-fail-open"},
		}},
		{[]string{"partially-enabled.yaml"}, []at{{Error, "partially-enabled.yaml", 40, "ext-authz-partially-enabled"}}},
		{[]string{"partially-enabled-deny.yaml"}, nil},
		{[]string{"http-service.yaml"}, []at{{Warning, "http-service.yaml", 33, "identity-headers-not-forwarded"}}},
		{[]string{"timeout.yaml"}, []at{{Warning, "timeout.yaml", 31, "ext-authz-timeout"}}},
		{[]string{"missing-credential.yaml"}, []at{{Error, "missing-credential.yaml", 33, "allowed-headers-missing-credential"}}},
		{[]string{"missing-context.yaml"}, []at{{Warning, "missing-context.yaml", 33, "allowed-headers-missing-context"}}},
		{[]string{"not-stripped.yaml"}, []at{
			{Error, "not-stripped.yaml", 19, "identity-headers-not-stripped"},
			{Error, "not-stripped.yaml", 49, "route-skips-ext-authz-unstripped"},
		}},
		{[]string{"strip-after.yaml"}, []at{
			{Error, "strip-after.yaml", 19, "identity-headers-not-stripped"},
			{Error, "strip-after.yaml", 56, "route-skips-ext-authz-unstripped"},
		}},
		{[]string{"path-settings.yaml"}, []at{
			{Warning, "path-settings.yaml", 11, "slashes-not-merged"},
			{Warning, "path-settings.yaml", 13, "path-not-normalized"},
			{Warning, "path-settings.yaml", 14, "escaped-slashes-kept"},
			{Warning, "path-settings.yaml", 16, "underscore-headers-allowed"},
		}},
		{[]string{"path-defaults.yaml"}, []at{
			{Warning, "path-defaults.yaml", 11, "escaped-slashes-kept"},
			{Warning, "path-defaults.yaml", 11, "path-not-normalized"},
			{Warning, "path-defaults.yaml", 11, "slashes-not-merged"},
			{Warning, "path-defaults.yaml", 11, "underscore-headers-allowed"},
		}},
		{[]string{"request-body.yaml"}, []at{{Warning, "request-body.yaml", 40, "request-body-sent"}}},
		{[]string{"context-extensions.yaml"}, []at{
			{Error, "context-extensions.yaml", 75, "invalid-context-extension"},
			{Warning, "context-extensions.yaml", 76, "unknown-context-extension"},
			{Error, "context-extensions.yaml", 77, "invalid-context-extension"},
		}},
		{[]string{"not-first.yaml"}, []at{{Warning, "not-first.yaml", 29, "ext-authz-not-first"}}},
		{[]string{"istio-mesh-fail-open.yaml"}, []at{
			{Warning, "istio-mesh-fail-open.yaml", 5, "istio-provider-no-timeout"},
			{Error, "istio-mesh-fail-open.yaml", 8, "istio-fail-open"},
		}},
		{[]string{"istio-operator-http.yaml"}, []at{
			{Warning, "istio-operator-http.yaml", 8, "identity-headers-not-forwarded"},
			{Warning, "istio-operator-http.yaml", 11, "ext-authz-timeout"},
			{Warning, "istio-operator-http.yaml", 12, "allowed-headers-missing-context"},
			{Warning, "istio-operator-http.yaml", 12, "allowed-headers-missing-context"},
			{Error, "istio-operator-http.yaml", 12, "allowed-headers-missing-credential"},
			{Warning, "istio-operator-http.yaml", 13, "request-body-sent"},
			// keygate-clean: x-request-* covers x-request-id; only the
			// client address header is missing.
			{Warning, "istio-operator-http.yaml", 20, "allowed-headers-missing-context"},
		}},
		{[]string{"istio-configmap.yaml"}, []at{
			{Warning, "istio-configmap.yaml", 14, "ext-authz-timeout"},
			{Error, "istio-configmap.yaml", 15, "istio-fail-open"},
		}},
		{[]string{"istio-list.yaml"}, []at{
			{Error, "istio-list.yaml", 10, "identity-headers-not-stripped"},
			{Error, "istio-list.yaml", 32, "istio-fail-open"},
			{Warning, "istio-list.yaml", 32, "istio-provider-no-timeout"},
		}},
		{[]string{"istio-policy.yaml"}, []at{
			{Error, "istio-policy.yaml", 8, "identity-headers-not-stripped"},
			{Error, "istio-policy.yaml", 11, "route-skips-ext-authz-unstripped"},
		}},
		{[]string{"istio-policy.yaml", "istio-filter-after.yaml"}, []at{
			{Error, "istio-policy.yaml", 8, "identity-headers-not-stripped"},
			{Error, "istio-policy.yaml", 11, "route-skips-ext-authz-unstripped"},
		}},
		{[]string{"istio-filter.yaml", "istio-policy.yaml"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.files[0], func(t *testing.T) {
			var paths []string
			for _, f := range tt.files {
				paths = append(paths, filepath.Join("testdata", f))
			}
			got := strip(check(t, opts, paths...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDoctor_HeaderPrefixIsKeygates: a strip of x-keygate-* does not cover
// another --header-prefix.
func TestDoctor_HeaderPrefixIsKeygates(t *testing.T) {
	got := strip(check(t, Options{HeaderPrefix: "x-auth-"}, "testdata/clean.yaml"))
	want := []at{
		{Error, "clean.yaml", 26, "identity-headers-not-stripped"},
		{Error, "clean.yaml", 56, "route-skips-ext-authz-unstripped"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
}

// TestDoctor_UnparsableFileIsAParseError: the CLI exits 2 on it.
func TestDoctor_UnparsableFileIsAParseError(t *testing.T) {
	data, err := os.ReadFile("testdata/unparsable.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Check([]Input{{Name: "unparsable.yaml", Data: data}}, Options{})
	var pe *ParseError
	if !errors.As(err, &pe) || pe.File != "unparsable.yaml" {
		t.Fatalf("Check = %v, want a ParseError naming the file", err)
	}
}

// TestDoctor_RepositoryConfigsHaveNoFinding: the Envoy and Istio files the
// repository ships pass keygate doctor, with keygate's defaults and with
// the --client-ip-header they document.
func TestDoctor_RepositoryConfigsHaveNoFinding(t *testing.T) {
	istio, err := filepath.Glob("../envoy/istio/*.yaml")
	if err != nil || len(istio) == 0 {
		t.Fatalf("no Istio files: %v", err)
	}
	all := append([]string{"../envoy/envoy.yaml", "../envoy/envoy-http.yaml"}, istio...)
	if got := check(t, Options{}, all...); len(got) != 0 {
		t.Errorf("findings on the repository's configs: %v", got)
	}
	edge := append([]string{"../envoy/envoy.yaml"}, istio...)
	if got := check(t, Options{ClientIPHeader: "x-envoy-external-address"}, edge...); len(got) != 0 {
		t.Errorf("findings with --client-ip-header x-envoy-external-address: %v", got)
	}
}
