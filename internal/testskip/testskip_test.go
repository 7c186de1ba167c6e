package testskip

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// terminal is a fake /dev/tty.
type terminal struct{ bytes.Buffer }

func (t *terminal) Close() error { return nil }

func newNotifier(dir, run string, tty *terminal) *notifier {
	return &notifier{
		runID:    func() string { return run },
		dir:      dir,
		terminal: func() (io.WriteCloser, error) { return tty, nil },
		now:      time.Now,
	}
}

const msg = "pgtest: PostgreSQL at postgres://postgres@127.0.0.1:5432/postgres does not answer (connection refused)"

func TestWriteLine_IsOneLineNamingTheSkip(t *testing.T) {
	var b bytes.Buffer
	writeLine(&b, "console: no Chromium\n  (apt-get install -y chromium)")
	want := "keygate tests SKIPPED (go test -v names them): console: no Chromium (apt-get install -y chromium)\n"
	if b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}

func TestNote_OncePerRunForEachMessage(t *testing.T) {
	dir := t.TempDir()
	var tty terminal
	// Three test binaries of one run, the first skipping twice.
	a, b, c := newNotifier(dir, "100.5", &tty), newNotifier(dir, "100.5", &tty), newNotifier(dir, "100.5", &tty)
	a.note(msg)
	a.note(msg)
	b.note(msg)
	c.note("console: no Chromium")
	if got := strings.Count(tty.String(), "\n"); got != 2 {
		t.Errorf("%d lines, want one per message:\n%s", got, tty.String())
	}
	// A later run says it again.
	var later terminal
	newNotifier(dir, "200.9", &later).note(msg)
	if !strings.Contains(later.String(), msg) {
		t.Errorf("a later run wrote %q, want the message again", later.String())
	}
}

func TestNote_UnknownRunIsOncePerProcess(t *testing.T) {
	dir := t.TempDir()
	var tty terminal
	a, b := newNotifier(dir, "", &tty), newNotifier(dir, "", &tty)
	a.note(msg)
	a.note(msg)
	b.note(msg)
	if got := strings.Count(tty.String(), "\n"); got != 2 {
		t.Errorf("%d lines, want one per process when the run is unknown:\n%s", got, tty.String())
	}
}

func TestNote_NoTerminalWritesNothingAndLeavesNoMarker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "markers")
	n := newNotifier(dir, "100.5", nil)
	n.terminal = func() (io.WriteCloser, error) { return nil, errors.New("no tty") }
	n.note(msg)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker directory exists (%v): a CI run should leave nothing behind", err)
	}
}

func TestNote_PrunesOldMarkers(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "42.7-0011223344556677")
	if err := os.WriteFile(old, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-2 * markerLifetime)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	var tty terminal
	newNotifier(dir, "100.5", &tty).note(msg)
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a marker older than %v is still there", markerLifetime)
	}
}

func TestStartTime_CountsFieldsAfterTheCommandName(t *testing.T) {
	// A command name with a space and a parenthesis of its own.
	stat := "4242 (go (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 987654 1000 10 18446744073709551615"
	got, ok := startTime(stat)
	if !ok || got != "987654" {
		t.Errorf("startTime = %q, %v; want 987654", got, ok)
	}
	if _, ok := startTime("garbage"); ok {
		t.Error("startTime of garbage is ok")
	}
}

func TestRunID_IsTheParentsPIDAndStartTime(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc here: runID is empty and the line is written once per package")
	}
	id := runID()
	pid, start, ok := strings.Cut(id, ".")
	if !ok || pid != strconv.Itoa(os.Getppid()) || start == "" {
		t.Errorf("runID = %q, want %d.<start time>", id, os.Getppid())
	}
	if again := runID(); again != id {
		t.Errorf("runID changed from %q to %q", id, again)
	}
}
