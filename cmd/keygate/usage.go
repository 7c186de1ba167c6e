package main

import (
	"cmp"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/analytics"
	"github.com/keygate/keygate/httpapi"
	"github.com/keygate/keygate/manage"
	"github.com/keygate/keygate/store"
)

// keysUsageCmd is `keygate keys usage`: a key's usage analytics (SPEC §9),
// revoked keys included, as GET /v1/api-keys/{id}/usage answers them.
type keysUsageCmd struct {
	Conn        connFlags `embed:""`
	ID          string    `arg:"" name:"ID" help:"Key id (key_…)."`
	Org         string    `help:"Organization of the key (default: whichever holds it)."`
	Granularity string    `default:"hour" placeholder:"hour|day" help:"Bucket width: hour or day."`
	From        string    `placeholder:"RFC3339" help:"Start of the range, rounded down to its bucket (default: 24 hours, or 30 days by day, before --to)."`
	To          string    `placeholder:"RFC3339" help:"End of the range, exclusive, rounded down to its bucket (default: the end of the current bucket)."`
	JSON        bool      `name:"json" help:"Print the API's JSON answer: {\"data\": [...]}."`
}

// Run prints the key's buckets that saw traffic, oldest first.
func (k *keysUsageCmd) Run(d *deps) error {
	q := url.Values{"granularity": {k.Granularity}}
	if k.From != "" {
		q.Set("from", k.From)
	}
	if k.To != "" {
		q.Set("to", k.To)
	}
	rg, err := analytics.ParseRange(q, time.Now())
	if err != nil {
		var e *keygate.Error
		if errors.As(err, &e) && e.Param != "" {
			return usageErrorf("--%s: %s", e.Param, keygate.ErrorMessage(err))
		}
		return err
	}
	if k.Org != "" {
		if err := manage.ValidateID("org_id", k.Org); err != nil {
			return cliError(err, map[string]string{"org_id": "--org"})
		}
	}
	st, _, err := k.Conn.openMigrated(d.ctx, k.Conn.logger(d.stderr), existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	buckets, err := st.Usage(d.ctx, store.UsageQuery{OrgID: k.Org, KeyID: k.ID, Granularity: rg.Granularity, From: rg.From, To: rg.To})
	if keygate.ErrorCode(err) == keygate.CodeNotFound {
		if k.Org != "" {
			return fmt.Errorf("no key %s in organization %s", k.ID, k.Org)
		}
		return fmt.Errorf("no key %s", k.ID)
	}
	if err != nil {
		return err
	}
	if k.JSON {
		return writeJSON(d, httpapi.Data[[]httpapi.UsageBucket]{Data: httpapi.NewUsageBuckets(buckets)})
	}
	layout := "2006-01-02 15:04"
	if rg.Granularity == store.Day {
		layout = "2006-01-02"
	}
	fmt.Fprintf(d.stdout, "usage of %s by %s, %s to %s (UTC, end exclusive)\n", k.ID, rg.Granularity,
		rg.From.Format(layout), rg.To.Format(layout))
	if len(buckets) == 0 {
		fmt.Fprintln(d.stdout, "no traffic in this range")
		return nil
	}
	tw := tabwriter.NewWriter(d.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "START\tALLOWED\tDENIED\tBY CODE")
	var allowed, denied int64
	for _, b := range buckets {
		allowed += b.Allowed
		denied += b.Denied
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", b.Start.Format(layout), b.Allowed, b.Denied, byCode(b.ByCode))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t\n", allowed, denied)
	return tw.Flush()
}

// byCode is "code=n" for each code, most first, or "-".
func byCode(by map[string]int64) string {
	codes := make([]string, 0, len(by))
	for c := range by {
		codes = append(codes, c)
	}
	slices.SortFunc(codes, func(a, b string) int {
		if c := cmp.Compare(by[b], by[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s=%d", c, by[c])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
