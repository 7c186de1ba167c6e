package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestResolve_CostFromExtensionThenRuleThenDefault(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(file, []byte("rules:\n  - {path: \"/v1/search\", cost: 5}\n  - {path: \"/v1/free\", cost: 0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		path string
		ext  map[string]string
		want int
	}{
		{"/v1/other", nil, DefaultCost},
		{"/v1/search", nil, 5},
		{"/v1/free", nil, 0},
		{"/v1/search", map[string]string{ExtCost: "7"}, 7},
		{"/v1/search", map[string]string{ExtCost: "0"}, 0},
		{"/v1/other", map[string]string{ExtCost: "1000"}, 1000},
	} {
		r, err := p.Resolve("GET", tt.path, tt.ext)
		if err != nil {
			t.Fatalf("Resolve(%s, %v): %v", tt.path, tt.ext, err)
		}
		if got := r.Uses(); got != tt.want {
			t.Errorf("Resolve(%s, %v).Uses() = %d, want %d", tt.path, tt.ext, got, tt.want)
		}
	}
}

func TestResolve_MalformedCostIsAnInvalidExtension(t *testing.T) {
	for _, v := range []string{"", "-1", "+1", "1001", "1.5", " 1", "1e3", "abc", "00001"} {
		_, err := Default().Resolve("GET", "/v1/x", map[string]string{ExtCost: v})
		if !errors.Is(err, ErrInvalidExtension) {
			t.Errorf("keygate.cost %q: error %v, want ErrInvalidExtension", v, err)
		}
	}
}
