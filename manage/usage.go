package manage

import (
	"fmt"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// MaxRemaining bounds remaining and a refill's amount: 2^53, the largest
// integer that dynamic metadata (a JSON/protobuf number) carries exactly.
const MaxRemaining = 1 << 53

// ValidateRemaining checks a key's remaining (nil: unlimited).
func ValidateRemaining(r *int64) error {
	if r != nil && (*r < 0 || *r > MaxRemaining) {
		return keygate.ParamErrorf("remaining", "remaining must be an integer from 0 to %d, or null for unlimited uses.", int64(MaxRemaining))
	}
	return nil
}

// ValidateRefill checks a key's refill (nil: none).
func ValidateRefill(r *keygate.Refill) error {
	if r == nil {
		return nil
	}
	if !r.Interval.Valid() {
		return keygate.ParamErrorf("refill.interval", "refill.interval must be %q or %q.", keygate.RefillDaily, keygate.RefillMonthly)
	}
	if r.Amount < 0 || r.Amount > MaxRemaining {
		return keygate.ParamErrorf("refill.amount", "refill.amount must be an integer from 0 to %d.", int64(MaxRemaining))
	}
	return nil
}

// ParseRefill parses the CLI's form of a refill, "daily:N" or
// "monthly:N".
func ParseRefill(s string) (keygate.Refill, error) {
	var r keygate.Refill
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			r.Interval = keygate.RefillInterval(s[:i])
			n, err := parseCount(s[i+1:])
			if err != nil || !r.Interval.Valid() {
				break
			}
			r.Amount = n
			return r, ValidateRefill(&r)
		}
	}
	return keygate.Refill{}, fmt.Errorf("%q is not daily:N or monthly:N", s)
}

func parseCount(s string) (int64, error) {
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("not a count")
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a count")
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, nil
}

// frequency orders refill intervals: a daily refill is more frequent
// than a monthly one.
func frequency(i keygate.RefillInterval) int {
	if i == keygate.RefillDaily {
		return 2
	}
	return 1
}

// usageWithin reports an insufficient_permissions error when a key with
// remaining and refill would have more uses than a usage-limited caller
// may hand out (SPEC §9): a usage-limited caller gives only usage-limited
// keys, with a refill no larger and no more frequent than its own. How
// many uses it may give is settled by the debit (store.Debit), in the
// transaction that creates the key. A caller without remaining is not
// bounded.
func usageWithin(c *Caller, remaining *int64, refill *keygate.Refill, why string) error {
	ck := &c.Key
	if ck.Remaining == nil {
		return nil
	}
	deny := func(param, format string, args ...any) error {
		return escalation(param, "%s: %s.", why, fmt.Sprintf(format, args...))
	}
	if remaining == nil {
		return deny("remaining", "unlimited uses are beyond the calling key's remaining (%d)", *ck.Remaining)
	}
	if refill == nil {
		return nil
	}
	have := ck.Refill
	switch {
	case have == nil:
		return deny("refill", "a refill is beyond the calling key's, which has none")
	case frequency(refill.Interval) > frequency(have.Interval):
		return deny("refill", "a %s refill is more frequent than the calling key's (%s)", refill.Interval, have.Interval)
	case refill.Amount > have.Amount:
		return deny("refill", "a refill of %d is larger than the calling key's (%d)", refill.Amount, have.Amount)
	}
	return nil
}

// debitFor is what a usage-limited caller pays for a key it creates with
// remaining: every one of its uses (SPEC §9: a caller with 100 uses
// cannot mint ten keys of 100). Nil for a caller without remaining.
func debitFor(c *Caller, k *store.NewKey) *store.Debit {
	if c.Key.Remaining == nil {
		return nil
	}
	n := int64(0)
	if k.Remaining != nil {
		n = *k.Remaining
	} else if k.Refill != nil {
		n = k.Refill.Amount // a refill without remaining starts full
	}
	return &store.Debit{KeyID: c.Key.ID, Uses: n}
}

// usageWidens reports whether ch gives key k more uses: a higher
// remaining or null (unlimited) in place of one, or a refill added,
// larger or more frequent.
func usageWidens(k keygate.Key, ch KeyChanges) bool {
	if r := ch.Remaining; r.Set && k.Remaining != nil && (r.Null || r.Value > *k.Remaining) {
		return true
	}
	if r := ch.Refill; r.Set && !r.Null {
		have := k.Refill
		return have == nil || frequency(r.Value.Interval) > frequency(have.Interval) || r.Value.Amount > have.Amount
	}
	return false
}

// usageUpdate fills u's usage fields from ch, validated.
func usageUpdate(u *store.KeyUpdate, ch KeyChanges) error {
	if ch.Remaining.Set {
		u.Remaining = ch.Remaining.ptr()
		u.ClearRemaining = ch.Remaining.Null
		if err := ValidateRemaining(u.Remaining); err != nil {
			return err
		}
	}
	if ch.Refill.Set {
		u.Refill = ch.Refill.ptr()
		u.ClearRefill = ch.Refill.Null
		if err := ValidateRefill(u.Refill); err != nil {
			return err
		}
	}
	return nil
}

// patchUsageWithin judges a widening PATCH of a key's uses by a
// usage-limited caller: it may not raise remaining (that would mint uses
// without paying for them) and gives a refill only within its own.
func patchUsageWithin(c *Caller, k keygate.Key, ch KeyChanges) error {
	if c.Key.Remaining == nil || !usageWidens(k, ch) {
		return nil
	}
	if r := ch.Remaining; r.Set && (r.Null || k.Remaining == nil || r.Value > *k.Remaining) {
		return escalation("remaining", "%s: a usage-limited key cannot raise a key's remaining uses.", whyPatch)
	}
	after := k.Refill
	if ch.Refill.Set {
		after = ch.Refill.ptr()
	}
	return usageWithin(c, k.Remaining, after, whyPatch)
}
