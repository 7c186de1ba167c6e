package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted
// durations: the smallest sample that at least p % of the samples do not
// exceed. Nearest rank never interpolates, so a reported p99.9 is a latency
// some request really had. Zero for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// The epsilon keeps 99.9 % of 1000 at rank 999: in floating point,
	// 99.9 / 100 * 1000 is 999.0000000000001.
	rank := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// Summary is one run of a load: how many requests completed in how long,
// and their latency percentiles.
type Summary struct {
	N, Errors                int
	Elapsed                  time.Duration
	P50, P90, P99, P999, Max time.Duration
}

// Summarize sorts lat in place and summarizes it.
func Summarize(lat []time.Duration, errors int, elapsed time.Duration) Summary {
	slices.Sort(lat)
	s := Summary{N: len(lat), Errors: errors, Elapsed: elapsed}
	s.P50, s.P90, s.P99, s.P999 = Percentile(lat, 50), Percentile(lat, 90), Percentile(lat, 99), Percentile(lat, 99.9)
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	return s
}

// RPS is the completed requests per second.
func (s Summary) RPS() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.N) / s.Elapsed.Seconds()
}

// Spread is the median, minimum and maximum of repeated measurements.
type Spread struct{ Median, Min, Max float64 }

// SpreadOf is the spread of xs (the median of an even count is the mean of
// the middle two).
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

// String is "median (min–max)" with the given format for each figure.
func (s Spread) Format(f string) string {
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
}

// Ratio is a/b, or NaN when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// micros is d in microseconds, for tables.
func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
