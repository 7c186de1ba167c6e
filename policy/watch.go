package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDebounce is how long a Watcher waits after the last change in the
// file's directory before it reads the file: an editor or a ConfigMap
// update changes several entries, and a file read half-written would be
// loaded as a (valid) shorter policy.
const DefaultDebounce = 100 * time.Millisecond

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	Logger     *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // nil: metrics are not registered
	// Signals reloads the file on every value received; cmd/keygate
	// connects SIGHUP to it (signal.Notify). Nil: no signal reloads.
	Signals  <-chan os.Signal
	Debounce time.Duration // 0: DefaultDebounce
}

// Watcher holds the current policy of a file and reloads it on a signal
// and when the file changes. A new file that is not valid is logged and
// counted, and the previous policy stays in force, so a bad edit never
// opens (or closes) routes.
type Watcher struct {
	file     string
	log      *slog.Logger
	signals  <-chan os.Signal
	debounce time.Duration
	ok, fail prometheus.Counter

	cur atomic.Pointer[Policy]
	// watching is closed once Run watches the directory (or gave up on
	// it), so tests know a change from then on is seen.
	watching chan struct{}

	mu       sync.Mutex // serializes reloads
	lastSum  [sha256.Size]byte
	lastRead error // the last read error, so one missing file is reported once
}

// NewWatcher loads file; an invalid file is an error, since there is no
// previous policy to keep.
func NewWatcher(file string, cfg WatcherConfig) (*Watcher, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_policy_reloads_total",
		Help: "Reloads of the policy file, by result (ok, error: the previous policy stays in force).",
	}, []string{"result"})
	w := &Watcher{
		file:     file,
		log:      cfg.Logger,
		signals:  cfg.Signals,
		debounce: cfg.Debounce,
		ok:       reloads.WithLabelValues("ok"),
		fail:     reloads.WithLabelValues("error"),
		watching: make(chan struct{}),
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	p, err := Parse(file, data)
	if err != nil {
		return nil, err
	}
	w.cur.Store(p)
	w.lastSum = sha256.Sum256(data)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(reloads); err != nil {
			return nil, fmt.Errorf("policy: registering metrics: %w", err)
		}
	}
	return w, nil
}

// Policy returns the policy in force. It is never nil.
func (w *Watcher) Policy() *Policy { return w.cur.Load() }

// Reload reads the file again and, when it is valid, puts it in force. The
// error says why the file was not loaded; the previous policy then stays.
func (w *Watcher) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := os.ReadFile(w.file)
	w.lastRead = err
	if err != nil {
		return w.failed(fmt.Errorf("policy: %w", err))
	}
	return w.load(data)
}

// reloadIfChanged reloads after a change in the directory, unless the file
// still holds what was last read: a directory sees many events that do not
// touch the file.
func (w *Watcher) reloadIfChanged() {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, err := os.ReadFile(w.file)
	if err != nil {
		if w.lastRead == nil || w.lastRead.Error() != err.Error() {
			w.lastRead = err
			_ = w.failed(fmt.Errorf("policy: %w", err))
		}
		return
	}
	w.lastRead = nil
	if sha256.Sum256(data) == w.lastSum {
		return
	}
	_ = w.load(data)
}

// load parses data and puts it in force. w.mu is held.
func (w *Watcher) load(data []byte) error {
	w.lastSum = sha256.Sum256(data)
	p, err := Parse(w.file, data)
	if err != nil {
		return w.failed(err)
	}
	w.cur.Store(p)
	w.ok.Inc()
	w.log.Info("policy reloaded", "file", w.file, "rules", p.Len())
	return nil
}

func (w *Watcher) failed(err error) error {
	w.fail.Inc()
	w.log.Error("policy reload failed; keeping the previous policy", "file", w.file, "err", err)
	return err
}

// Run reloads on signals and file changes until ctx ends; then it returns
// nil. It watches the file's directory rather than the file, because
// editors and Kubernetes ConfigMaps replace a file by rename or symlink
// swap, which ends a watch on the file itself. When the directory cannot be
// watched (e.g. the inotify limit), Run logs it and reloads on signals
// only.
func (w *Watcher) Run(ctx context.Context) error {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if fw, err := fsnotify.NewWatcher(); err != nil {
		w.log.Warn("policy: cannot watch for changes; reloading on SIGHUP only", "file", w.file, "err", err)
	} else {
		defer fw.Close()
		if err := fw.Add(filepath.Dir(w.file)); err != nil {
			w.log.Warn("policy: cannot watch for changes; reloading on SIGHUP only", "file", w.file, "err", err)
		} else {
			events, errs = fw.Events, fw.Errors
		}
	}
	close(w.watching)
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	signals := w.signals
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-signals:
			if !ok {
				signals = nil
				continue
			}
			_ = w.Reload() // logged and counted
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			settle.Reset(w.debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			// An overflow loses events: look at the file anyway.
			w.log.Warn("policy: watching for changes", "file", w.file, "err", err)
			settle.Reset(w.debounce)
		case <-settle.C:
			w.reloadIfChanged()
		}
	}
}
