package main

import (
	"fmt"
	"io"
	"math"
	"time"
)

// table collects the runs of each (scenario, target) row and prints them as
// Markdown: every figure the median of the runs, with min–max.
type table struct {
	title string
	order []string
	runs  map[string][]Summary
}

func newTable(title string) *table { return &table{title: title, runs: map[string][]Summary{}} }

func (t *table) add(row string, s Summary) {
	if _, ok := t.runs[row]; !ok {
		t.order = append(t.order, row)
	}
	t.runs[row] = append(t.runs[row], s)
}

func spreadOf(ss []Summary, f func(Summary) float64) Spread {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return SpreadOf(xs)
}

func (t *table) print(w io.Writer) {
	fmt.Fprintf(w, "\n### %s\n\n", t.title)
	fmt.Fprintln(w, "| scenario | runs | requests/run | errors | rps | p50 µs | p90 µs | p99 µs | p99.9 µs |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, row := range t.order {
		ss := t.runs[row]
		errs := 0
		for _, s := range ss {
			errs += s.Errors
		}
		p999 := spreadOf(ss, func(s Summary) float64 { return micros(s.P999) }).Format("%.0f")
		if spreadOf(ss, func(s Summary) float64 { return micros(s.P999) }).Max == 0 {
			p999 = "–"
		}
		fmt.Fprintf(w, "| %s | %d | %s | %d | %s | %s | %s | %s | %s |\n", row, len(ss),
			spreadOf(ss, func(s Summary) float64 { return float64(s.N) }).Format("%.0f"), errs,
			spreadOf(ss, Summary.RPS).Format("%.0f"),
			spreadOf(ss, func(s Summary) float64 { return micros(s.P50) }).Format("%.0f"),
			spreadOf(ss, func(s Summary) float64 { return micros(s.P90) }).Format("%.0f"),
			spreadOf(ss, func(s Summary) float64 { return micros(s.P99) }).Format("%.0f"),
			p999)
	}
}

// ratio prints, per run, a's figure over b's (rows of this table), as a
// spread: ratios are taken within a run, where both saw the same machine.
func (t *table) ratio(w io.Writer, label, a, b string, f func(Summary) float64) {
	ra, rb := t.runs[a], t.runs[b]
	n := min(len(ra), len(rb))
	xs := make([]float64, 0, n)
	for i := range n {
		if r := Ratio(f(ra[i]), f(rb[i])); !math.IsNaN(r) {
			xs = append(xs, r)
		}
	}
	fmt.Fprintf(w, "- %s: **%s** (median of %d runs, min–max)\n", label, SpreadOf(xs).Format("%.2f×"), len(xs))
}

func rps(s Summary) float64 { return s.RPS() }
func p99(s Summary) float64 { return float64(s.P99) }
func p50(s Summary) float64 { return float64(s.P50) }

func durMS(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}
