package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/dustin/go-humanize"
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
