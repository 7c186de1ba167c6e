package main

import (
	"math"
	"testing"
	"time"
)

func ms(n ...int) []time.Duration {
	out := make([]time.Duration, len(n))
	for i, v := range n {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentile_NearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	thousand := make([]time.Duration, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample is every percentile", ms(7), 99.9, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 99.9, 100 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"p99.9 of 1..1000", thousand, 99.9, 999 * time.Microsecond},
		{"p50 of four rounds up", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p51 of four", ms(1, 2, 3, 4), 51, 3 * time.Millisecond},
		{"tiny p is the min", ms(1, 2, 3, 4), 0.001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize_SortsAndCounts(t *testing.T) {
	lat := ms(5, 1, 4, 2, 3)
	s := Summarize(lat, 2, time.Second)
	if s.N != 5 || s.Errors != 2 || s.P50 != 3*time.Millisecond || s.Max != 5*time.Millisecond || s.P999 != 5*time.Millisecond {
		t.Errorf("Summarize = %+v", s)
	}
	if got := s.RPS(); got != 5 {
		t.Errorf("RPS = %v, want 5", got)
	}
	if got := (Summary{N: 3}).RPS(); got != 0 {
		t.Errorf("RPS without elapsed time = %v, want 0", got)
	}
}

func TestSpreadOf_MedianMinMax(t *testing.T) {
	tests := []struct {
		xs   []float64
		want Spread
	}{
		{nil, Spread{}},
		{[]float64{3, 1, 2}, Spread{2, 1, 3}},
		{[]float64{4, 1, 3, 2}, Spread{2.5, 1, 4}},
		{[]float64{9}, Spread{9, 9, 9}},
	}
	for _, tt := range tests {
		if got := SpreadOf(tt.xs); got != tt.want {
			t.Errorf("SpreadOf(%v) = %+v, want %+v", tt.xs, got, tt.want)
		}
	}
	xs := []float64{3, 1, 2}
	SpreadOf(xs)
	if xs[0] != 3 {
		t.Error("SpreadOf reordered its argument")
	}
	if !math.IsNaN(Ratio(1, 0)) || Ratio(3, 2) != 1.5 {
		t.Error("Ratio")
	}
}
