package doctor

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzCheck: no input makes Check panic, and every finding has a rule, a
// severity and a line.
func FuzzCheck(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*")
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("a: &x [*x]\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fs, err := Check([]Input{{Name: "fuzz.yaml", Data: data}}, Options{ClientIPHeader: "x-real-ip"})
		if err != nil {
			return
		}
		for _, f := range fs {
			if f.Rule == "" || (f.Severity != Error && f.Severity != Warning) || f.Line <= 0 {
				t.Fatalf("bad finding %+v", f)
			}
		}
	})
}
