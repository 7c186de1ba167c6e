package keygate

import (
	"testing"
	"time"
)

func TestRefillInterval_PeriodStartAndNextAreMidnightUTC(t *testing.T) {
	utc := func(y int, m time.Month, d, h, min, s int) time.Time {
		return time.Date(y, m, d, h, min, s, 0, time.UTC)
	}
	tokyo := time.FixedZone("JST", 9*3600)
	for _, tt := range []struct {
		interval    RefillInterval
		now         time.Time
		start, next time.Time
	}{
		{RefillDaily, utc(2026, 11, 22, 10, 0, 0), utc(2026, 11, 22, 0, 0, 0), utc(2026, 11, 23, 0, 0, 0)},
		{RefillDaily, utc(2026, 11, 22, 0, 0, 0), utc(2026, 11, 22, 0, 0, 0), utc(2026, 11, 23, 0, 0, 0)}, // the boundary is the new period
		{RefillDaily, utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 31, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)},
		{RefillDaily, time.Date(2026, 11, 23, 8, 0, 0, 0, tokyo), utc(2026, 11, 22, 0, 0, 0), utc(2026, 11, 23, 0, 0, 0)}, // 23:00 UTC the day before
		{RefillDaily, utc(2028, 2, 28, 12, 0, 0), utc(2028, 2, 28, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0)},                   // leap day
		{RefillMonthly, utc(2026, 11, 22, 10, 0, 0), utc(2026, 11, 1, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0)},
		{RefillMonthly, utc(2026, 12, 1, 0, 0, 0), utc(2026, 12, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0)},
		{RefillMonthly, utc(2027, 1, 31, 23, 59, 59), utc(2027, 1, 1, 0, 0, 0), utc(2027, 2, 1, 0, 0, 0)}, // not 3 March
		{RefillMonthly, utc(2027, 2, 28, 23, 59, 59), utc(2027, 2, 1, 0, 0, 0), utc(2027, 3, 1, 0, 0, 0)},
		{RefillMonthly, utc(2028, 2, 29, 12, 0, 0), utc(2028, 2, 1, 0, 0, 0), utc(2028, 3, 1, 0, 0, 0)},
		{RefillMonthly, utc(2028, 3, 31, 0, 0, 0), utc(2028, 3, 1, 0, 0, 0), utc(2028, 4, 1, 0, 0, 0)},
	} {
		if got := tt.interval.PeriodStart(tt.now); !got.Equal(tt.start) {
			t.Errorf("%s PeriodStart(%s) = %s, want %s", tt.interval, tt.now, got, tt.start)
		}
		if got := tt.interval.Next(tt.now); !got.Equal(tt.next) {
			t.Errorf("%s Next(%s) = %s, want %s", tt.interval, tt.now, got, tt.next)
		}
	}
}

func TestKey_ApplyDueRefillOncePerPeriod(t *testing.T) {
	n := int64(3)
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	k := Key{Remaining: &n, Refill: &Refill{Interval: RefillMonthly, Amount: 50}, RefilledAt: &start, UsageEpoch: 4}
	k.ApplyDueRefill(time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC))
	if *k.Remaining != 3 || k.UsageEpoch != 4 {
		t.Fatalf("before the boundary: remaining %d epoch %d, want 3 and 4", *k.Remaining, k.UsageEpoch)
	}
	k.ApplyDueRefill(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if *k.Remaining != 50 || k.UsageEpoch != 5 {
		t.Fatalf("at the boundary: remaining %d epoch %d, want 50 and 5", *k.Remaining, k.UsageEpoch)
	}
	*k.Remaining = 7
	k.ApplyDueRefill(time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC))
	if *k.Remaining != 7 || k.UsageEpoch != 5 {
		t.Fatalf("later the same month: remaining %d epoch %d, want no second refill", *k.Remaining, k.UsageEpoch)
	}
}
