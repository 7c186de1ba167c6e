package keygate

import "time"

// RefillInterval is how often a usage-limited key's remaining is set back
// to its refill amount (SPEC §9).
type RefillInterval string

// Refill intervals.
const (
	RefillDaily   RefillInterval = "daily"   // at 00:00 UTC
	RefillMonthly RefillInterval = "monthly" // at 00:00 UTC on the 1st
)

// Valid reports whether i is a known refill interval.
func (i RefillInterval) Valid() bool { return i == RefillDaily || i == RefillMonthly }

// Refill sets a key's remaining to Amount at the start of every Interval.
type Refill struct {
	Interval RefillInterval
	Amount   int64
}

// PeriodStart is the start of the refill period that holds now: 00:00 UTC
// of now's day (daily) or of the 1st of now's month (monthly).
func (i RefillInterval) PeriodStart(now time.Time) time.Time {
	y, m, d := now.UTC().Date()
	if i == RefillMonthly {
		d = 1
	}
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Next is the first refill strictly after now.
func (i RefillInterval) Next(now time.Time) time.Time {
	start := i.PeriodStart(now)
	if i == RefillMonthly {
		return start.AddDate(0, 1, 0) // from the 1st: never normalizes past a month
	}
	return start.AddDate(0, 0, 1)
}

// ApplyDueRefill sets, on a copy of the stored key, what a refill due at
// now makes of it: remaining the refill amount and a new usage epoch, as
// the next write or claim of the key will store. Reads (GET, list) show
// remaining after any due refill without writing it.
func (k *Key) ApplyDueRefill(now time.Time) {
	if k.Refill == nil || k.Remaining == nil {
		return
	}
	start := k.Refill.Interval.PeriodStart(now)
	if k.RefilledAt != nil && !k.RefilledAt.Before(start) {
		return
	}
	amount := k.Refill.Amount
	k.Remaining = &amount
	k.UsageEpoch++
	k.RefilledAt = &start
}
