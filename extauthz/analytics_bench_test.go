package extauthz

import (
	"context"
	"testing"
	"time"

	"github.com/keygate/keygate/analytics"
	"github.com/keygate/keygate/store"
)

type discardUsage struct{}

func (discardUsage) RecordUsage(context.Context, []store.UsageCount) error { return nil }

// BenchmarkCheckFromTheWireCounted is BenchmarkCheckFromTheWire with usage
// analytics on: counting a key already pending this hour allocates
// nothing, so a hit stays at the same allocations.
func BenchmarkCheckFromTheWireCounted(b *testing.B) {
	counter, err := analytics.New(discardUsage{}, analytics.Config{Interval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	benchCheckFromTheWire(b, func(c *Config) { c.Analytics = counter })
}
