package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/dustin/go-humanize"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/manage"
)

// byteSize is a flag of bytes that takes plain numbers and units, both
// SI and IEC (64MiB, 64MB, 67108864).
type byteSize int64

// Decode implements kong.MapperValue.
func (b *byteSize) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("size", &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return fmt.Errorf("expected a size such as 64MiB or 67108864 but got %q", s)
	}
	*b = byteSize(n)
	return nil
}

// days is a duration flag that also takes whole days (90d), the unit keys
// usually expire in. set tells an explicit 0 from an absent flag.
type days struct {
	d   time.Duration
	set bool
}

// Decode implements kong.MapperValue.
func (d *days) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("duration", &s); err != nil {
		return err
	}
	v, err := parseDays(s)
	if err != nil {
		return err
	}
	*d = days{d: v, set: true}
	return nil
}

func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if v, err := strconv.ParseInt(n, 10, 64); err == nil && v >= 0 && v <= 100*365 {
			return time.Duration(v) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("expected a duration such as 90d or 12h but got %q", s)
	}
	return v, nil
}

// number is an int flag that also takes a negative value as its own
// argument (--rate-limit -5), which kong would read as a short flag -5, so
// that the command's Validate can say what the flag accepts.
type number int

// Decode implements kong.MapperValue.
func (n *number) Decode(ctx *kong.DecodeContext) error {
	var s string
	if t := ctx.Scan.Peek(); t.Type == kong.UntypedToken && isNegativeNumber(t.Value) {
		s = ctx.Scan.Pop().Value.(string)
	} else if err := ctx.Scan.PopValueInto("number", &s); err != nil {
		return err
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("expected a whole number but got %q", s)
	}
	*n = number(v)
	return nil
}

func isNegativeNumber(v any) bool {
	s, ok := v.(string)
	if !ok || len(s) < 2 || s[0] != '-' {
		return false
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// scopeList is --scopes: comma-separated, repeatable. An empty value is
// an error rather than no flag at all, which would give the key a role's
// scopes instead.
type scopeList []string

// Decode implements kong.MapperValue.
func (l *scopeList) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("scopes", &s); err != nil {
		return err
	}
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("expected scopes, comma-separated (read,write), but got an empty value; for a role's scopes use --role")
	}
	*l = append(*l, strings.Split(s, ",")...)
	return nil
}

// namedLimit is one --limit of `keys create`: NAME=N/DURATION, a named
// rate limit (SPEC §9) of N requests per DURATION, a Go duration of whole
// seconds from 1s to 24h (10s, 1m, 1h30m, 24h).
type namedLimit keygate.RateLimit

// Decode implements kong.MapperValue.
func (l *namedLimit) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("limit", &s); err != nil {
		return err
	}
	v, err := parseNamedLimit(s)
	if err != nil {
		return err
	}
	*l = namedLimit(v)
	return nil
}

func parseNamedLimit(s string) (keygate.RateLimit, error) {
	name, rest, ok := strings.Cut(s, "=")
	n, per, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return keygate.RateLimit{}, fmt.Errorf("expected NAME=N/DURATION such as search=10/1m but got %q", s)
	}
	if !keygate.ValidRateLimitName(name) {
		return keygate.RateLimit{}, fmt.Errorf("%q: the name %q must match %s", s, name, keygate.RateLimitNamePattern)
	}
	limit, err := strconv.Atoi(n)
	if err != nil || limit < 1 || limit > manage.MaxRateLimit {
		return keygate.RateLimit{}, fmt.Errorf("%q: the limit %q must be a whole number from 1 to %d", s, n, manage.MaxRateLimit)
	}
	d, err := time.ParseDuration(per)
	max := time.Duration(keygate.MaxRateLimitDuration) * time.Second
	if err != nil || d < time.Second || d > max || d%time.Second != 0 {
		return keygate.RateLimit{}, fmt.Errorf("%q: the duration %q must be whole seconds from 1s to 24h (such as 10s, 1m, 1h)", s, per)
	}
	return keygate.RateLimit{Name: name, Limit: limit, DurationSeconds: int(d / time.Second)}, nil
}
