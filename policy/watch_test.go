package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const (
	policyA = "rules:\n  - {path: \"/v1/**\", scope: alpha}\n"
	policyB = "rules:\n  - {path: \"/v1/**\", scope: beta}\n"
	policyC = "rules:\n  - {path: \"/v1/**\", scope: gamma}\n"
	invalid = "rules:\n  - {path: \"/v1/**\", scope: Beta}\n"
)

// syncBuffer is a log sink the watcher goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type watchFixture struct {
	file string
	w    *Watcher
	reg  *prometheus.Registry
	logs *syncBuffer
	sig  chan os.Signal
}

func newWatchFixture(t *testing.T, content string) *watchFixture {
	t.Helper()
	f := &watchFixture{
		file: filepath.Join(t.TempDir(), "policy.yaml"),
		reg:  prometheus.NewPedanticRegistry(),
		logs: &syncBuffer{},
		sig:  make(chan os.Signal, 1),
	}
	write(t, f.file, content)
	w, err := NewWatcher(f.file, WatcherConfig{
		Logger:     slog.New(slog.NewTextHandler(f.logs, nil)),
		Registerer: f.reg,
		Signals:    f.sig,
		Debounce:   10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	return f
}

// run runs the watcher until the test ends, and waits for it.
func (f *watchFixture) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	// A change made before Run watches the directory would go unseen.
	select {
	case <-f.w.watching:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not start watching")
	}
}

func (f *watchFixture) scope(t *testing.T) string {
	t.Helper()
	r, err := f.w.Policy().Resolve("GET", "/v1/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	return r.Scope
}

// eventually polls cond for up to 5 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func write(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatcher_ReloadAppliesAValidChange(t *testing.T) {
	f := newWatchFixture(t, policyA)
	if got := f.scope(t); got != "alpha" {
		t.Fatalf("scope = %q, want alpha", got)
	}
	write(t, f.file, policyB)
	if err := f.w.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := f.scope(t); got != "beta" {
		t.Errorf("after Reload scope = %q, want beta", got)
	}
	if diff := cmp.Diff(map[string]float64{"ok": 1, "error": 0}, reloads(t, f.reg)); diff != "" {
		t.Errorf("keygate_policy_reloads_total (-want +got):\n%s", diff)
	}
}

func TestWatcher_InvalidChangeKeepsThePreviousPolicy(t *testing.T) {
	f := newWatchFixture(t, policyA)
	write(t, f.file, invalid)
	err := f.w.Reload()
	if want := f.file + `:2: rules[0].scope: "Beta" is not a valid scope`; err == nil || err.Error() != want {
		t.Fatalf("Reload = %v, want %s", err, want)
	}
	if got := f.scope(t); got != "alpha" {
		t.Errorf("scope = %q, want the previous policy's alpha", got)
	}
	if got := value(t, f.w.fail); got != 1 {
		t.Errorf("error reloads = %v, want 1", got)
	}
	if got := value(t, f.w.ok); got != 0 {
		t.Errorf("ok reloads = %v, want 0", got)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "policy reload failed; keeping the previous policy") ||
		!strings.Contains(logs, `is not a valid scope`) {
		t.Errorf("logs lack the failed reload:\n%s", logs)
	}

	// A removed file is an error too, and keeps the policy.
	if err := os.Remove(f.file); err != nil {
		t.Fatal(err)
	}
	if err := f.w.Reload(); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Reload of a removed file = %v, want not-exist", err)
	}
	if got := f.scope(t); got != "alpha" {
		t.Errorf("scope = %q, want alpha", got)
	}
}

// reloads gathers keygate_policy_reloads_total by result from reg.
func reloads(t *testing.T, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "keygate_policy_reloads_total" || mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return got
}

// value reads one counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

func TestWatcher_SignalReloads(t *testing.T) {
	f := newWatchFixture(t, policyA)
	// Changed before Run watches, so only the signal can load it.
	write(t, f.file, policyB)
	f.run(t)
	f.sig <- syscall.SIGHUP
	eventually(t, "the signalled reload", func() bool { return f.scope(t) == "beta" })
}

func TestWatcher_FileChangesAreReloadedWithoutRestart(t *testing.T) {
	f := newWatchFixture(t, policyA)
	f.run(t)

	write(t, f.file, policyB) // in place: truncate and write
	eventually(t, "an in-place write", func() bool { return f.scope(t) == "beta" })

	tmp := filepath.Join(filepath.Dir(f.file), ".policy.yaml.tmp")
	write(t, tmp, policyC)
	if err := os.Rename(tmp, f.file); err != nil { // how editors save
		t.Fatal(err)
	}
	eventually(t, "a rename over the file", func() bool { return f.scope(t) == "gamma" })

	write(t, f.file, invalid)
	eventually(t, "the failed reload", func() bool { return value(t, f.w.fail) == 1 })
	if got := f.scope(t); got != "gamma" {
		t.Errorf("after an invalid write scope = %q, want the previous gamma", got)
	}
	if got := value(t, f.w.ok); got != 2 {
		t.Errorf("ok reloads = %v, want 2", got)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `\"Beta\" is not a valid scope`) {
		t.Errorf("logs lack the failed reload:\n%s", logs)
	}
}

// A Kubernetes ConfigMap volume holds policy.yaml -> ..data/policy.yaml and
// ..data -> ..<timestamp>/; an update writes a new timestamped directory
// and renames a new ..data symlink over the old one.
func TestWatcher_ConfigMapSymlinkSwapIsReloaded(t *testing.T) {
	dir := t.TempDir()
	mustDo := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	version := func(name, content string) {
		mustDo(os.Mkdir(filepath.Join(dir, name), 0o755))
		write(t, filepath.Join(dir, name, "policy.yaml"), content)
	}
	version("..2026_01", policyA)
	mustDo(os.Symlink("..2026_01", filepath.Join(dir, "..data")))
	mustDo(os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")))

	reg := prometheus.NewPedanticRegistry()
	w, err := NewWatcher(filepath.Join(dir, "policy.yaml"), WatcherConfig{Registerer: reg, Debounce: 10 * time.Millisecond})
	mustDo(err)
	f := &watchFixture{file: filepath.Join(dir, "probe"), w: w}
	f.run(t)

	version("..2026_02", policyB)
	mustDo(os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp")))
	mustDo(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	mustDo(os.RemoveAll(filepath.Join(dir, "..2026_01")))
	eventually(t, "the ConfigMap swap", func() bool { return f.scope(t) == "beta" })
}

func TestWatcher_UnchangedContentIsNotReloaded(t *testing.T) {
	f := newWatchFixture(t, policyA)
	f.run(t)
	write(t, f.file, policyA)
	write(t, filepath.Join(filepath.Dir(f.file), "neighbour"), "x")
	time.Sleep(100 * time.Millisecond) // ten debounce periods: a reload would have happened
	if ok, fail := value(t, f.w.ok), value(t, f.w.fail); ok != 0 || fail != 0 {
		t.Errorf("reloads ok=%v error=%v, want none for unchanged content", ok, fail)
	}
}

func TestWatcher_RunEndsWithItsContext(t *testing.T) {
	f := newWatchFixture(t, policyA)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end with its context")
	}
}

func TestNewWatcher_InvalidFileIsAnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "policy.yaml")
	write(t, file, invalid)
	_, err := NewWatcher(file, WatcherConfig{})
	if want := file + `:2: rules[0].scope: "Beta" is not a valid scope`; err == nil || err.Error() != want {
		t.Errorf("NewWatcher = %v, want %s", err, want)
	}
}
