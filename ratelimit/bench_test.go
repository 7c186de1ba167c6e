package ratelimit

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// A limit high enough that every request is allowed: the write path.
const benchLimit = 1 << 30

func BenchmarkLimiterAllow(b *testing.B) {
	b.Run("one_key", func(b *testing.B) {
		l, _ := newLimiter(b, LimiterConfig{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("key_0123456789abcdefghij", benchLimit)
			}
		})
	})
	b.Run("many_keys", func(b *testing.B) {
		l, _ := newLimiter(b, LimiterConfig{})
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = fmt.Sprintf("key_%020d", i)
			l.Allow(keys[i], benchLimit)
		}
		var next atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919))
			for pb.Next() {
				l.Allow(keys[i%len(keys)], benchLimit)
				i++
			}
		})
	})
	b.Run("unlimited", func(b *testing.B) {
		l, _ := newLimiter(b, LimiterConfig{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("key_0123456789abcdefghij", 0)
			}
		})
	})
}

func BenchmarkThrottleBlocked(b *testing.B) {
	b.Run("untracked", func(b *testing.B) { // the common case: no failures
		th, _ := newThrottle(b, ThrottleConfig{Limit: 60})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				th.Blocked(client)
			}
		})
	})
	b.Run("tracked", func(b *testing.B) { // failures, under the limit
		th, _ := newThrottle(b, ThrottleConfig{Limit: 60})
		th.Failed(client)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				th.Blocked(client)
			}
		})
	})
	b.Run("many_addresses", func(b *testing.B) {
		th, _ := newThrottle(b, ThrottleConfig{Limit: 60})
		for i := range 50_000 {
			th.Failed(v6(uint64(i)))
		}
		var next atomic.Uint32
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := uint64(next.Add(7919))
			for pb.Next() {
				th.Blocked(v6(i % 100_000)) // half tracked, half not
				i++
			}
		})
	})
}

func BenchmarkThrottleFailed(b *testing.B) {
	th, _ := newThrottle(b, ThrottleConfig{Limit: 60})
	var next atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1 << 20)
		for pb.Next() {
			th.Failed(v4(i)) // a spray: every failure a new client
			i++
		}
	})
}
