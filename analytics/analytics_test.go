package analytics

import (
	"context"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// fakeWriter records every RecordUsage call.
type fakeWriter struct {
	mu    sync.Mutex
	calls [][]store.UsageCount
	fail  error
}

func (f *fakeWriter) RecordUsage(_ context.Context, c []store.UsageCount) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.calls = append(f.calls, append([]store.UsageCount(nil), c...))
	return nil
}

func (f *fakeWriter) rows() map[string]store.UsageCount {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]store.UsageCount{}
	for _, call := range f.calls {
		for _, r := range call {
			k := r.KeyID + "@" + r.Hour.Format(time.RFC3339)
			if _, dup := out[k]; dup {
				panic("a key's hour written twice")
			}
			out[k] = r
		}
	}
	return out
}

func idx(code string) int {
	for i, c := range store.UsageCodes {
		if c == code {
			return i
		}
	}
	panic(code)
}

var t0 = time.Date(2026, 12, 6, 10, 59, 59, 0, time.UTC)

// Thousands of uses of a few keys become one row per key and hour, in
// one write per flush: the request rate never drives the write rate.
func TestFlush_OneRowPerKeyAndHourWhateverTheRequestRate(t *testing.T) {
	w := &fakeWriter{}
	c, err := New(w, Config{Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 10_000 {
		c.Count("key_a", "acme", "", t0)
		c.Count("key_b", "acme", keygate.CodeRateLimited, t0)
	}
	c.Count("key_a", "acme", "usage_exceeded", t0)
	c.Count("key_a", "acme", keygate.CodeInvalidAPIKey, t0.Add(time.Second)) // the next hour
	for _, code := range []keygate.Code{keygate.CodeMissingAPIKey, keygate.CodeTooManyFailedAttempts,
		keygate.CodeServiceUnavailable, keygate.CodeInvalidRequest, keygate.CodeConflictingCredentials} {
		c.Count("key_a", "acme", code, t0) // never counted
	}
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(w.calls) != 1 {
		t.Fatalf("%d writes for one flush; want 1", len(w.calls))
	}
	h10 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	want := map[string]store.UsageCount{
		"key_a@2026-12-06T10:00:00Z": {KeyID: "key_a", OrgID: "acme", Hour: h10, Allowed: 10_000},
		"key_b@2026-12-06T10:00:00Z": {KeyID: "key_b", OrgID: "acme", Hour: h10},
		"key_a@2026-12-06T11:00:00Z": {KeyID: "key_a", OrgID: "acme", Hour: h10.Add(time.Hour)},
	}
	a := want["key_a@2026-12-06T10:00:00Z"]
	a.Denied[idx("usage_exceeded")] = 1
	want["key_a@2026-12-06T10:00:00Z"] = a
	b := want["key_b@2026-12-06T10:00:00Z"]
	b.Denied[idx("rate_limited")] = 10_000
	want["key_b@2026-12-06T10:00:00Z"] = b
	a11 := want["key_a@2026-12-06T11:00:00Z"]
	a11.Denied[idx("invalid_api_key")] = 1
	want["key_a@2026-12-06T11:00:00Z"] = a11
	if diff := cmp.Diff(want, w.rows()); diff != "" {
		t.Errorf("rows (-want +got)\n%s", diff)
	}
	// Nothing pending: no write at all.
	if err := c.Flush(t.Context()); err != nil || len(w.calls) != 1 {
		t.Fatalf("empty flush wrote: %d calls, %v", len(w.calls), err)
	}
}

// A failed write loses nothing: its counts are merged with those counted
// meanwhile and written at the next flush.
func TestFlush_FailedWriteIsRetriedWithNewCounts(t *testing.T) {
	w := &fakeWriter{fail: errors.New("database down")}
	c, _ := New(w, Config{Interval: time.Second, BatchSize: 1})
	c.Count("key_a", "acme", "", t0)
	c.Count("key_b", "acme", "", t0)
	if err := c.Flush(t.Context()); err == nil {
		t.Fatal("Flush hid the write error")
	}
	w.fail = nil
	c.Count("key_a", "acme", "", t0)
	if err := c.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := w.rows()
	if got["key_a@2026-12-06T10:00:00Z"].Allowed != 2 || got["key_b@2026-12-06T10:00:00Z"].Allowed != 1 {
		t.Fatalf("after retry: %+v", got)
	}
	if len(w.calls) != 2 {
		t.Fatalf("BatchSize 1, two rows: %d writes; want 2", len(w.calls))
	}
}

// Run's final flush writes what was counted after the last tick.
func TestRun_FlushesOnceMoreWhenStopped(t *testing.T) {
	w := &fakeWriter{}
	c, _ := New(w, Config{Interval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	c.Count("key_a", "acme", "", t0)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := w.rows(); got["key_a@2026-12-06T10:00:00Z"].Allowed != 1 {
		t.Fatalf("final flush wrote %+v", got)
	}
}

// Counting a key already pending allocates nothing (the cache-hit allow
// path of every Check).
func TestCount_NoAllocationForAPendingKey(t *testing.T) {
	c, _ := New(&fakeWriter{}, Config{Interval: time.Second})
	c.Count("key_a", "acme", "", t0)
	if n := testing.AllocsPerRun(1000, func() { c.Count("key_a", "acme", "", t0) }); n != 0 {
		t.Fatalf("Count allocates %v per call", n)
	}
}

func TestParseRange(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 30, 0, 0, time.UTC)
	h := func(s string) time.Time {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return t
	}
	for _, tc := range []struct {
		query     string
		want      Range
		wantParam string
	}{
		{"", Range{store.Hour, h("2026-12-05T11:00:00Z"), h("2026-12-06T11:00:00Z")}, ""},
		{"granularity=day", Range{store.Day, h("2026-11-07T00:00:00Z"), h("2026-12-07T00:00:00Z")}, ""},
		{"from=2026-12-06T08:15:00Z&to=2026-12-06T09:59:59Z", Range{store.Hour, h("2026-12-06T08:00:00Z"), h("2026-12-06T09:00:00Z")}, ""},
		{"from=2026-12-06T08:15:00%2B02:00", Range{store.Hour, h("2026-12-06T06:00:00Z"), h("2026-12-06T11:00:00Z")}, ""},
		{"granularity=day&from=2026-12-01T23:00:00Z&to=2026-12-03T01:00:00Z", Range{store.Day, h("2026-12-01T00:00:00Z"), h("2026-12-03T00:00:00Z")}, ""},
		{"from=2026-12-06T08:00:00Z&to=2026-12-06T08:59:00Z", Range{store.Hour, h("2026-12-06T08:00:00Z"), h("2026-12-06T08:00:00Z")}, ""},
		{"from=2026-11-05T00:00:00Z&to=2026-12-06T00:00:00Z", Range{store.Hour, h("2026-11-05T00:00:00Z"), h("2026-12-06T00:00:00Z")}, ""},
		{"from=2026-11-04T23:00:00Z&to=2026-12-06T00:00:00Z", Range{}, "from"},
		{"granularity=day&from=2025-11-01T00:00:00Z&to=2026-12-06T00:00:00Z", Range{store.Day, h("2025-11-01T00:00:00Z"), h("2026-12-06T00:00:00Z")}, ""},
		{"granularity=day&from=2025-10-31T00:00:00Z&to=2026-12-06T00:00:00Z", Range{}, "from"},
		{"from=0001-01-01T00:00:00Z&to=9999-12-31T00:00:00Z", Range{}, "from"},
		{"granularity=minute", Range{}, "granularity"},
		{"granularity=HOUR", Range{}, "granularity"},
		{"granularity=", Range{}, "granularity"},
		{"granularity=hour&granularity=day", Range{}, "granularity"},
		{"from=yesterday", Range{}, "from"},
		{"from=2026-12-06", Range{}, "from"},
		{"from=2026-12-06T08:00:00", Range{}, "from"},
		{"from=", Range{}, "from"},
		{"from=2026-12-06T08:00:00Z&from=2026-12-06T09:00:00Z", Range{}, "from"},
		{"to=1733479200", Range{}, "to"},
		{"to=", Range{}, "to"},
		{"to=2026-12-06T25:00:00Z", Range{}, "to"},
		{"from=2026-12-06T10:00:00Z&to=2026-12-06T08:00:00Z", Range{}, "from"},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseRange(q, now)
		if tc.wantParam != "" {
			var e *keygate.Error
			if !errors.As(err, &e) || e.Code != keygate.CodeInvalidRequest || e.Param != tc.wantParam {
				t.Errorf("%q: err = %v; want invalid_request on %s", tc.query, err, tc.wantParam)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.query, err)
			continue
		}
		if !got.From.Equal(tc.want.From) || !got.To.Equal(tc.want.To) || got.Granularity != tc.want.Granularity {
			t.Errorf("%q = %v %v..%v; want %v %v..%v", tc.query, got.Granularity, got.From, got.To, tc.want.Granularity, tc.want.From, tc.want.To)
		}
	}
}

// shutdownWriter is a store whose write of the first batch is in flight
// when serve stops: the statement reaches the database and commits, but,
// as pgx does when its context is cancelled mid-statement, the caller is
// told only that the context ended.
type shutdownWriter struct {
	mu      sync.Mutex
	allowed int64
	calls   int
	entered chan struct{}
	release chan struct{}
}

func (w *shutdownWriter) RecordUsage(ctx context.Context, c []store.UsageCount) error {
	w.mu.Lock()
	w.calls++
	first := w.calls == 1
	w.mu.Unlock()
	var err error
	if first {
		close(w.entered)
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-w.release:
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range c {
		w.allowed += r.Allowed // committed, whatever the caller hears
	}
	return err
}

// A periodic flush still in flight when Run is stopped must not be
// cancelled: its rows may be committed already, and a cancelled write
// looks failed, so its counts went back to pending and the final flush
// wrote them a second time.
func TestRun_FlushInFlightAtStopIsNotCountedTwice(t *testing.T) {
	w := &shutdownWriter{entered: make(chan struct{}), release: make(chan struct{})}
	c, _ := New(w, Config{Interval: 5 * time.Millisecond, FlushTimeout: 5 * time.Second})
	c.Count("key_a", "acme", "", t0)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	<-w.entered
	cancel() // SIGTERM while the tick's statement runs
	time.Sleep(20 * time.Millisecond)
	close(w.release) // the statement completes
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.allowed != 1 {
		t.Fatalf("one allowed Check was written as %d", w.allowed)
	}
}
