// Package testskip makes a test skipped for a missing dependency visible
// in a quiet run.
//
// `go test ./...` (package-list mode, no -v) prints only "ok pkg" for a
// package whose tests passed and drops their output, t.Skip messages
// included, so a run without PostgreSQL or Chromium looks the same as a
// full one. Skip therefore also writes the message to the controlling
// terminal, /dev/tty: that is where the person who started the run looks,
// and it leaves alone the output that go test captures, caches and parses
// (test2json). The line is written once per go test run for each distinct
// message, not once per package: test binaries of one run share their
// parent, the go command, and the first to skip for a reason leaves a
// marker that the others see. Without a terminal (CI, cron) nothing extra
// is written; CI sets KEYGATE_TEST_REQUIRE_POSTGRES and
// KEYGATE_TEST_REQUIRE_BROWSER so that nothing skips there at all. With
// -v the skip is in the output already and nothing extra is written.
package testskip

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Skip skips t with msg, which says what is missing and how to get it,
// and writes msg on the terminal too unless the run is verbose.
func Skip(t testing.TB, msg string) {
	t.Helper()
	if !testing.Verbose() {
		process.note(msg)
	}
	t.Skip(msg)
}

// Unless fails t with msg when the environment variable require is "1"
// (CI sets it, so a missing dependency can never pass as a skip), and
// otherwise skips it with msg, as Skip does.
func Unless(t testing.TB, require, msg string) {
	t.Helper()
	if os.Getenv(require) == "1" {
		t.Fatal(msg + " (" + require + "=1, so this fails instead of skipping)")
	}
	Skip(t, msg)
}

// process is the notifier of this test binary.
var process = &notifier{
	runID:    runID,
	dir:      filepath.Join(os.TempDir(), "keygate-test-skips-"+strconv.Itoa(os.Getuid())),
	terminal: func() (io.WriteCloser, error) { return os.OpenFile("/dev/tty", os.O_WRONLY, 0) },
	now:      time.Now,
}

// notifier writes each distinct message once: once per process, and once
// per run when the run can be identified.
type notifier struct {
	runID    func() string // "" when unknown: then once per process
	dir      string        // where the run markers live
	terminal func() (io.WriteCloser, error)
	now      func() time.Time

	mu   sync.Mutex
	seen map[string]bool
}

func (n *notifier) note(msg string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen[msg] {
		return
	}
	if n.seen == nil {
		n.seen = map[string]bool{}
	}
	n.seen[msg] = true
	w, err := n.terminal()
	if err != nil {
		return // no terminal: nobody to tell, and no marker to leave
	}
	defer w.Close()
	if id := n.runID(); id != "" && !n.claim(id, msg) {
		return
	}
	writeLine(w, msg)
}

// writeLine is the line a skip leaves on the terminal.
func writeLine(w io.Writer, msg string) {
	msg = strings.Join(strings.Fields(msg), " ")
	fmt.Fprintf(w, "keygate tests SKIPPED (go test -v names them): %s\n", msg)
}

// claim leaves the marker of msg for run id and tells whether this process
// was the first of the run to do so. When markers cannot be written it
// says yes: a line too many beats a skip nobody sees.
func (n *notifier) claim(id, msg string) bool {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return true
	}
	n.prune()
	sum := sha256.Sum256([]byte(msg))
	f, err := os.OpenFile(filepath.Join(n.dir, id+"-"+hex.EncodeToString(sum[:8])), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false
	}
	if err == nil {
		f.Close()
	}
	return true
}

// markerLifetime bounds how long the markers of finished runs stay.
const markerLifetime = 24 * time.Hour

func (n *notifier) prune() {
	entries, err := os.ReadDir(n.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && n.now().Sub(fi.ModTime()) > markerLifetime {
			_ = os.Remove(filepath.Join(n.dir, e.Name()))
		}
	}
}

// runID names the go test run this binary belongs to: its parent's pid
// and start time, which never repeat together. It is "" where the start
// time is unknown (no /proc): a pid alone is reused, and a line must never
// be lost to an old run's marker.
func runID() string {
	ppid := os.Getppid()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/stat")
	if err != nil {
		return ""
	}
	start, ok := startTime(string(b))
	if !ok {
		return ""
	}
	return strconv.Itoa(ppid) + "." + start
}

// startTime is field 22 of a /proc/PID/stat line, the process's start time
// in clock ticks since boot. The command name, field 2, is in parentheses
// and may hold spaces and parentheses itself, so fields are counted from
// its last ')'.
func startTime(stat string) (string, bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", false
	}
	fields := strings.Fields(stat[i+1:]) // field 3 onwards
	if len(fields) < 20 {
		return "", false
	}
	return fields[19], true
}
