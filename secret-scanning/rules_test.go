// Package secretscanning_test runs the scanner rules in this directory
// over the fixtures in testdata: gitleaks itself, as a Go module, and the
// regexes of the trufflehog detector and the GitHub custom pattern.
package secretscanning_test

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/viper"
	"github.com/zricethezav/gitleaks/v8/config"
	"github.com/zricethezav/gitleaks/v8/detect"
	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/apikey"
)

// fixtures returns the fixture files by name, and the native tokens they
// hold (testdata/native-tokens.txt), sorted.
func fixtures(t *testing.T) (map[string]string, []string) {
	t.Helper()
	files := map[string]string{}
	paths, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if filepath.Base(p) == "native-tokens.txt" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = string(b)
	}
	b, err := os.ReadFile("testdata/native-tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	native := strings.Fields(string(b))
	for _, tok := range native {
		if _, err := apikey.DefaultFormat().Parse(tok); err != nil {
			t.Fatalf("native-tokens.txt: %s…: %v", tok[:12], err)
		}
	}
	slices.Sort(native)
	return files, native
}

// native keeps the tokens whose checksum verifies, sorted and unique: what
// `keygate scan` does with a scanner's findings.
func native(found []string) []string {
	var out []string
	for _, tok := range found {
		if _, err := apikey.DefaultFormat().Parse(tok); err == nil {
			out = append(out, tok)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func gitleaksDetector(t *testing.T, toml string) *detect.Detector {
	t.Helper()
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(toml)); err != nil {
		t.Fatal(err)
	}
	var vc config.ViperConfig
	if err := v.Unmarshal(&vc); err != nil {
		t.Fatal(err)
	}
	cfg, err := vc.Translate()
	if err != nil {
		t.Fatal(err)
	}
	return detect.NewDetector(cfg)
}

func TestGitleaks_FindsEveryNativeToken(t *testing.T) {
	rule, err := os.ReadFile("gitleaks.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := gitleaksDetector(t, string(rule))
	files, want := fixtures(t)
	var found []string
	lookAlikes := 0
	for name, content := range files {
		for _, f := range d.DetectString(content) {
			if f.RuleID != "keygate-api-key" {
				t.Errorf("%s: rule %s", name, f.RuleID)
			}
			found = append(found, f.Secret)
			if _, err := apikey.DefaultFormat().Parse(f.Secret); err != nil {
				lookAlikes++
			}
		}
	}
	if diff := cmp.Diff(want, native(found)); diff != "" {
		t.Errorf("gitleaks findings with a valid checksum (-want +got):\n%s", diff)
	}
	// gitleaks cannot check the checksum: it reports the two look-alikes
	// too (and not the too-long or embedded shapes), which is why
	// `keygate scan` exists.
	if lookAlikes != 2 {
		t.Errorf("gitleaks reported %d look-alikes, want the 2 of lookalikes.txt", lookAlikes)
	}
}

// TestGitleaks_DefaultRulesAttributeSkLiveToStripe pins what README.md
// says: gitleaks' own rules report a default sk_live_ key as Stripe's.
func TestGitleaks_DefaultRulesAttributeSkLiveToStripe(t *testing.T) {
	d := gitleaksDetector(t, config.DefaultConfig)
	files, _ := fixtures(t)
	var rules []string
	for _, f := range d.DetectString(files[filepath.Join("testdata", "config.env")]) {
		if strings.HasPrefix(f.Secret, "sk_live_") {
			rules = append(rules, f.RuleID)
		}
	}
	if !slices.Contains(rules, "stripe-access-token") {
		t.Errorf("gitleaks' default rules on a sk_live_ key: %v, want stripe-access-token among them", rules)
	}
}

func TestTrufflehogAndGitHubPatterns_FindEveryNativeToken(t *testing.T) {
	var th struct {
		Detectors []struct {
			Name     string
			Keywords []string
			Regex    map[string]string
		}
	}
	b, err := os.ReadFile("trufflehog.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &th); err != nil || len(th.Detectors) != 1 {
		t.Fatalf("trufflehog.yaml: %v, %d detectors", err, len(th.Detectors))
	}
	var gh struct {
		SecretFormat string `yaml:"secret_format"`
		BeforeSecret string `yaml:"before_secret"`
		AfterSecret  string `yaml:"after_secret"`
		TestString   string `yaml:"test_string"`
	}
	if b, err = os.ReadFile("github-custom-pattern.yml"); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &gh); err != nil {
		t.Fatal(err)
	}
	// GitHub joins the three parts; Go's RE2 reads this subset of
	// Hyperscan the same way.
	ghRe := regexp.MustCompile(`(?m)(?:` + gh.BeforeSecret + `)(` + gh.SecretFormat + `)(?:` + gh.AfterSecret + `)`)
	thRe := regexp.MustCompile(th.Detectors[0].Regex["key"])

	files, want := fixtures(t)
	for name, re := range map[string]*regexp.Regexp{"trufflehog": thRe, "github": ghRe} {
		var found []string
		for _, content := range files {
			for _, line := range strings.Split(content, "\n") {
				for _, m := range re.FindAllStringSubmatch(line, -1) {
					found = append(found, m[1])
				}
			}
		}
		if diff := cmp.Diff(want, native(found)); diff != "" {
			t.Errorf("%s: findings with a valid checksum (-want +got):\n%s", name, diff)
		}
		for _, tok := range found {
			if !bytes.Contains([]byte(strings.Join(slices.Collect(maps.Values(files)), "\n")), []byte(tok)) {
				t.Errorf("%s: %s… is not in the fixtures", name, tok[:12])
			}
		}
	}
	if m := ghRe.FindStringSubmatch(gh.TestString); m == nil || !slices.Contains(want, m[1]) {
		t.Errorf("github: test_string does not match a native token")
	}
	for _, kw := range th.Detectors[0].Keywords {
		if !strings.Contains(th.Detectors[0].Regex["key"], strings.Split(kw, "_")[0]) {
			t.Errorf("trufflehog keyword %q is not a prefix of the regex", kw)
		}
	}
}
