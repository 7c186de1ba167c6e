package extauthz

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate"

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

// fakeCounter records what the decision counts.
type fakeCounter struct {
	got []string // "key org code"
}

func (f *fakeCounter) Count(id, org string, code keygate.Code, _ time.Time) {
	f.got = append(f.got, id+" "+org+" "+string(code))
}

// The HTTP authorizer's decisions are counted like Check's: they share
// decideProto.
func TestDecideHTTP_CountsForUsageAnalytics(t *testing.T) {
	c := &fakeCounter{}
	f := newFixture(t, Config{Analytics: c})
	tok := f.key(func(r *keygate.KeyRecord) { r.Key.Scopes = []string{"read"} })
	for _, m := range []string{"GET", "POST"} {
		f.srv.DecideHTTP(context.Background(), HTTPRequest{Method: m, Path: "/v1/things",
			Headers: []HTTPHeader{{"authorization", "Bearer " + tok}}})
	}
	f.srv.DecideHTTP(context.Background(), HTTPRequest{Method: "GET", Path: "/v1/things"}) // no key: not counted
	if len(c.got) != 2 || !strings.HasSuffix(c.got[0], " ") || !strings.HasSuffix(c.got[1], " insufficient_permissions") {
		t.Fatalf("counted %q; want an allow and an insufficient_permissions", c.got)
	}
}
