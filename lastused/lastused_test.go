package lastused

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate/store"
)

// countingWriter records every statement it is asked to run.
type countingWriter struct {
	mu      sync.Mutex
	batches [][]store.LastUse
	fail    error
}

func (w *countingWriter) RecordLastUsed(_ context.Context, uses []store.LastUse) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return w.fail
	}
	w.batches = append(w.batches, append([]store.LastUse(nil), uses...))
	return nil
}

func (w *countingWriter) latest() map[string]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]time.Time{}
	for _, b := range w.batches {
		for _, u := range b {
			out[u.KeyID] = u.At
		}
	}
	return out
}

func TestFlush_WritesEachKeyOncePerIntervalWhateverTheRequestRate(t *testing.T) {
	w := &countingWriter{}
	tr, err := New(w, Config{Interval: time.Hour, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	// 10 000 allowed checks over 25 keys.
	for i := 0; i < 10000; i++ {
		tr.Record(fmt.Sprint("key_", i%25), base.Add(time.Duration(i)*time.Millisecond))
	}
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(w.batches); got != 3 {
		t.Errorf("statements = %d, want 3 (25 keys in batches of 10)", got)
	}
	got := w.latest()
	if len(got) != 25 {
		t.Fatalf("keys written = %d, want 25", len(got))
	}
	if want := base.Add(9999 * time.Millisecond); !got["key_24"].Equal(want) {
		t.Errorf("key_24 written as %v, want its latest use %v", got["key_24"], want)
	}
	// Nothing new: the next flush writes nothing.
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := len(w.batches); got != 3 {
		t.Errorf("statements after an idle flush = %d, want still 3", got)
	}
}

func TestRecord_NeverMovesBack(t *testing.T) {
	w := &countingWriter{}
	tr, _ := New(w, Config{Interval: time.Hour})
	t1 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tr.Record("k", t1.Add(time.Second))
	tr.Record("k", t1)
	_ = tr.Flush(context.Background())
	if diff := cmp.Diff(map[string]time.Time{"k": t1.Add(time.Second)}, w.latest()); diff != "" {
		t.Error(diff)
	}
}

func TestFlush_FailureKeepsUsesForTheNextFlush(t *testing.T) {
	w := &countingWriter{fail: errors.New("connection reset")}
	tr, _ := New(w, Config{Interval: time.Hour})
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tr.Record("k", at)
	if err := tr.Flush(context.Background()); err == nil {
		t.Fatal("Flush = nil, want the writer's error")
	}
	w.fail = nil
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]time.Time{"k": at}, w.latest()); diff != "" {
		t.Error(diff)
	}
}

func TestRun_FlushesOnShutdown(t *testing.T) {
	w := &countingWriter{}
	tr, _ := New(w, Config{Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tr.Run(ctx) }()
	tr.Record("k", time.Now())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, ok := w.latest()["k"]; !ok {
		t.Error("pending use not flushed at shutdown")
	}
}

func TestNew_RejectsZeroInterval(t *testing.T) {
	if _, err := New(&countingWriter{}, Config{}); err == nil {
		t.Error("New with a zero interval = nil error")
	}
}

func BenchmarkRecord(b *testing.B) {
	tr, _ := New(&countingWriter{}, Config{Interval: time.Hour})
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tr.Record("key_0123456789abcdefghij", now)
			i++
		}
	})
}
