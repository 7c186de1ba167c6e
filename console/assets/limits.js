// A key's usage limit and named rate limits (SPEC §9) in the console's
// words: "123 uses left", "daily to 1000", "search: 10 per 60 s". The key
// object carries remaining (null: unlimited), refill (null: none) and
// rate_limits ([] for none).

// NNBSP groups digits: a narrow no-break space, so "50 000" never breaks.
const NNBSP = '\u202f';

// count writes n with its digits grouped by three from five digits on,
// as print does: 1000, 50 000, 1 250 000.
export function count(n) {
  const s = String(n);
  if (!/^\d{5,}$/.test(s)) {
    return s;
  }
  return s.replace(/\B(?=(\d{3})+(?!\d))/g, NNBSP);
}

// usageLimited reports whether k has a usage limit (remaining set).
export function usageLimited(k) {
  return k.remaining !== null && k.remaining !== undefined;
}

// usesLeft is k's remaining uses in words: "unlimited", "1 use left",
// "50 000 uses left".
export function usesLeft(k) {
  if (!usageLimited(k)) {
    return 'unlimited';
  }
  return count(k.remaining) + (k.remaining === 1 ? ' use left' : ' uses left');
}

// refillText is a refill in words: "daily to 1000", "monthly to 50 000",
// or "none".
export function refillText(refill) {
  if (refill === null || refill === undefined) {
    return 'none';
  }
  return refill.interval + ' to ' + count(refill.amount);
}

// duration writes a limit's window: whole hours in hours ("24 h"),
// anything else in seconds ("60 s", "90 s").
function duration(seconds) {
  if (seconds >= 3600 && seconds % 3600 === 0) {
    return count(seconds / 3600) + ' h';
  }
  return count(seconds) + ' s';
}

// rateLimitText is a named rate limit in words: "search: 10 per 60 s".
export function rateLimitText(l) {
  return l.name + ': ' + count(l.limit) + ' per ' + duration(l.duration_seconds);
}
