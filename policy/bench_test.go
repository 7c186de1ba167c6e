package policy

import (
	"fmt"
	"strings"
	"testing"
)

// fiftyRules is a 50-rule policy whose rule for DELETE /v1/svc47/items/*
// is the 49th: a request for it is tested against 48 rules first. Every
// fifth rule starts with a wildcard, so the literal-prefix shortcut cannot
// reject it and the segment matcher runs.
func fiftyRules(t testing.TB) *Policy {
	t.Helper()
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 48 {
		if i%5 == 0 {
			fmt.Fprintf(&b, "  - {methods: [GET, HEAD], path: \"/*/svc%d/**\", scope: svc%d.read}\n", i, i)
		} else {
			fmt.Fprintf(&b, "  - {methods: [GET, HEAD], path: \"/v1/svc%d/**\", scope: svc%d.read}\n", i, i)
		}
	}
	b.WriteString("  - {methods: [DELETE], path: \"/v1/svc47/items/*\", scope: svc47.delete}\n")
	b.WriteString("  - {path: \"/**\", scope: write}\n")
	p, err := Parse("fifty.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 50 {
		t.Fatalf("got %d rules, want 50", p.Len())
	}
	r, err := p.Resolve("DELETE", "/v1/svc47/items/42", nil)
	if err != nil || r.Scope != "svc47.delete" {
		t.Fatalf("Resolve = %+v, %v; want the 49th rule", r, err)
	}
	return p
}

func BenchmarkResolveDefault(b *testing.B) {
	p := Default()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Resolve("GET", "/v1/projects/p1/files/report.pdf?download=1", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolve50Rules(b *testing.B) {
	p := fiftyRules(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Resolve("DELETE", "/v1/svc47/items/42?force=true", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResolveExtensions(b *testing.B) {
	p := fiftyRules(b)
	ext := map[string]string{ExtScope: "files:read", ExtPublishable: "true", ExtProject: "/v2/p/{project}/**"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Resolve("GET", "/v2/p/p1/x", ext); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckPath(b *testing.B) {
	const path = "/v1/projects/p1/files/2026/reports/q3.pdf?download=1&x=%2e"
	b.ReportAllocs()
	b.SetBytes(int64(len(path)))
	for b.Loop() {
		if err := CheckPath(path); err != nil {
			b.Fatal(err)
		}
	}
}
