package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// usageCols are the count columns of usage_hourly and usage_daily, in the
// order of store.UsageCodes after allowed.
var usageCols = append([]string{"allowed"}, store.UsageCodes[:]...)

// recordUsageSQL adds a batch, passed as one array per column, to the
// hourly and the daily rows in one statement. Rows of one key and bucket
// are summed first: ON CONFLICT may touch a row once per statement.
var recordUsageSQL = func() string {
	var in, sums, set []string
	for i, c := range usageCols {
		in = append(in, fmt.Sprintf("$%d::bigint[]", i+4))
		sums = append(sums, "sum("+c+")")
		set = append(set, fmt.Sprintf("%s = t.%s + EXCLUDED.%s", c, c, c))
	}
	cols := strings.Join(usageCols, ", ")
	upsert := func(table string) string {
		return `ON CONFLICT (key_id, start) DO UPDATE SET ` + strings.ReplaceAll(strings.Join(set, ", "), "t.", table+".")
	}
	return `WITH input AS (
		SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], ` + strings.Join(in, ", ") + `)
			AS i(key_id, org_id, start, ` + cols + `)),
	hourly AS (
		INSERT INTO usage_hourly AS usage_hourly (key_id, org_id, start, ` + cols + `)
		SELECT key_id, min(org_id), start, ` + strings.Join(sums, ", ") + ` FROM input GROUP BY key_id, start
		` + upsert("usage_hourly") + `)
	INSERT INTO usage_daily AS usage_daily (key_id, org_id, start, ` + cols + `)
	SELECT key_id, min(org_id), date_trunc('day', start, 'UTC'), ` + strings.Join(sums, ", ") + `
	FROM input GROUP BY key_id, date_trunc('day', start, 'UTC')
	` + upsert("usage_daily")
}()

// RecordUsage implements store.UsageStore.
func (s *Store) RecordUsage(ctx context.Context, counts []store.UsageCount) error {
	if len(counts) == 0 {
		return nil
	}
	keys := make([]string, len(counts))
	orgs := make([]string, len(counts))
	starts := make([]time.Time, len(counts))
	cols := make([][]int64, len(usageCols))
	for i := range cols {
		cols[i] = make([]int64, len(counts))
	}
	for i, c := range counts {
		keys[i], orgs[i], starts[i] = c.KeyID, c.OrgID, store.Hour.Truncate(c.Hour)
		cols[0][i] = c.Allowed
		for j, n := range c.Denied {
			cols[j+1][i] = n
		}
	}
	args := []any{keys, orgs, starts}
	for _, c := range cols {
		args = append(args, c)
	}
	if _, err := s.pool.Exec(ctx, recordUsageSQL, args...); err != nil {
		return fmt.Errorf("postgres: record usage: %w", err)
	}
	return nil
}

// Usage implements store.UsageStore.
func (s *Store) Usage(ctx context.Context, q store.UsageQuery) ([]store.UsageBucket, error) {
	var sums []string
	for _, c := range usageCols {
		sums = append(sums, "sum("+c+")::bigint")
	}
	sel := `SELECT start, ` + strings.Join(sums, ", ") + ` FROM ` + q.Granularity.Table()
	var rows pgx.Rows
	var err error
	if q.KeyID != "" {
		var user string
		err := s.pool.QueryRow(ctx, `SELECT user_id FROM api_keys WHERE id = $1 AND ($2 = '' OR org_id = $2)`,
			q.KeyID, q.OrgID).Scan(&user)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && q.UserID != "" && user != q.UserID) {
			return nil, keygate.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
		rows, err = s.pool.Query(ctx, sel+` WHERE key_id = $1 AND start >= $2 AND start < $3 GROUP BY start ORDER BY start`,
			q.KeyID, q.From, q.To)
		if err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
	} else {
		rows, err = s.pool.Query(ctx, sel+` WHERE org_id = $1 AND start >= $2 AND start < $3 GROUP BY start ORDER BY start`,
			q.OrgID, q.From, q.To)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: usage: %w", err)
	}
	defer rows.Close()
	out := []store.UsageBucket{}
	n := make([]int64, len(usageCols))
	dest := make([]any, 0, len(usageCols)+1)
	var start time.Time
	dest = append(dest, &start)
	for i := range n {
		dest = append(dest, &n[i])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("postgres: usage: %w", err)
		}
		out = append(out, store.NewUsageBucket(start, n[0], n[1:]))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: usage: %w", err)
	}
	return out, nil
}

// TopKeys implements store.UsageStore.
func (s *Store) TopKeys(ctx context.Context, q store.UsageQuery, n int) ([]store.KeyAllowed, error) {
	rows, _ := s.pool.Query(ctx, `SELECT key_id, sum(allowed)::bigint AS a FROM `+q.Granularity.Table()+`
		WHERE org_id = $1 AND start >= $2 AND start < $3
		GROUP BY key_id HAVING sum(allowed) > 0 ORDER BY a DESC, key_id LIMIT $4`, q.OrgID, q.From, q.To, n)
	top, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.KeyAllowed, error) {
		var k store.KeyAllowed
		err := r.Scan(&k.KeyID, &k.Allowed)
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: top keys: %w", err)
	}
	if top == nil {
		top = []store.KeyAllowed{}
	}
	return top, nil
}

// PruneUsage implements store.UsageStore: each table loses at most limit
// rows per call, so a long backlog is pruned over several calls rather
// than by one long delete.
func (s *Store) PruneUsage(ctx context.Context, hourly, daily time.Time, limit int) (int64, error) {
	var n int64
	if err := s.pool.QueryRow(ctx, `WITH h AS (
			DELETE FROM usage_hourly WHERE ctid IN (SELECT ctid FROM usage_hourly WHERE start < $1 LIMIT $3) RETURNING 1),
		d AS (
			DELETE FROM usage_daily WHERE ctid IN (SELECT ctid FROM usage_daily WHERE start < $2 LIMIT $3) RETURNING 1)
		SELECT (SELECT count(*) FROM h) + (SELECT count(*) FROM d)`, hourly, daily, limit).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: prune usage: %w", err)
	}
	return n, nil
}
