// Package ratelimit keeps the two counters of SPEC §3 that bound how fast a
// caller may go: the per-key token bucket behind `rate_limited` (Limiter)
// and the per-address failed-authentication window behind
// `too_many_failed_attempts` (Throttle).
//
// Both live in this replica's memory only: with N replicas a key gets up to
// N times its limit (README.md says how to get an exact global limit from
// Envoy's rate-limit service). Both are sharded maps with a mutex per shard,
// so the Check path takes no global lock, and both are bounded: an entry
// that has decayed to nothing is indistinguishable from no entry and is
// swept, and a hard cap evicts the least valuable entry when a spray of new
// keys or addresses arrives faster than entries decay.
//
// Time is injected as in tailscale's tstime/rate: each exported method reads
// the clock once and calls an unexported method taking now, so the tests
// drive time without sleeping.
package ratelimit
