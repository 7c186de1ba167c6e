package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
)

// usageCols are the count columns of usage_hourly and usage_daily, in the
// order of store.UsageCodes after allowed.
var usageCols = append([]string{"allowed"}, store.UsageCodes[:]...)

// upsertUsageSQL adds a batch (a JSON array of {k, o, s, d, c}: key, org,
// hour start, day start, counts by usageCols) to table's rows, bucketed by
// the field bucket ("s" or "d"). Rows of one key and bucket are summed
// first: an upsert may touch a row once per statement.
func upsertUsageSQL(table, bucket string) string {
	var sums, set []string
	for i, c := range usageCols {
		sums = append(sums, fmt.Sprintf("sum(value ->> '$.c[%d]')", i))
		set = append(set, fmt.Sprintf("%s = %s.%s + excluded.%s", c, table, c, c))
	}
	cols := strings.Join(usageCols, ", ")
	return `INSERT INTO ` + table + ` (key_id, org_id, start, ` + cols + `)
		SELECT value ->> 'k', min(value ->> 'o'), value ->> '` + bucket + `', ` + strings.Join(sums, ", ") + `
		FROM json_each(?) WHERE true GROUP BY value ->> 'k', value ->> '` + bucket + `'
		ON CONFLICT (key_id, start) DO UPDATE SET ` + strings.Join(set, ", ")
}

var (
	upsertHourlySQL = upsertUsageSQL("usage_hourly", "s")
	upsertDailySQL  = upsertUsageSQL("usage_daily", "d")
)

// RecordUsage implements store.UsageStore: both upserts in one
// transaction, each one statement for the whole batch.
func (s *Store) RecordUsage(ctx context.Context, counts []store.UsageCount) error {
	if len(counts) == 0 {
		return nil
	}
	type row struct {
		K string  `json:"k"`
		O string  `json:"o"`
		S int64   `json:"s"`
		D int64   `json:"d"`
		C []int64 `json:"c"`
	}
	batch := make([]row, len(counts))
	for i, c := range counts {
		r := row{K: c.KeyID, O: c.OrgID, S: toUS(store.Hour.Truncate(c.Hour)), D: toUS(store.Day.Truncate(c.Hour)),
			C: append([]int64{c.Allowed}, c.Denied[:]...)}
		batch[i] = r
	}
	b, err := json.Marshal(batch)
	if err != nil {
		return fmt.Errorf("sqlite: record usage: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: record usage: %w", err)
	}
	defer tx.Rollback()
	for _, q := range []string{upsertHourlySQL, upsertDailySQL} {
		if _, err := tx.ExecContext(ctx, q, string(b)); err != nil {
			return fmt.Errorf("sqlite: record usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: record usage: %w", err)
	}
	return nil
}

// Usage implements store.UsageStore.
func (s *Store) Usage(ctx context.Context, q store.UsageQuery) ([]store.UsageBucket, error) {
	var sums []string
	for _, c := range usageCols {
		sums = append(sums, "sum("+c+")")
	}
	sel := `SELECT start, ` + strings.Join(sums, ", ") + ` FROM ` + q.Granularity.Table()
	var (
		rows *sql.Rows
		err  error
	)
	if q.KeyID != "" {
		var user string
		err := s.db.QueryRowContext(ctx, `SELECT user_id FROM api_keys WHERE id = ? AND (? = '' OR org_id = ?)`,
			q.KeyID, q.OrgID, q.OrgID).Scan(&user)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && q.UserID != "" && user != q.UserID) {
			return nil, keygate.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: usage: %w", err)
		}
		rows, err = s.db.QueryContext(ctx, sel+` WHERE key_id = ? AND start >= ? AND start < ? GROUP BY start ORDER BY start`,
			q.KeyID, toUS(q.From), toUS(q.To))
		if err != nil {
			return nil, fmt.Errorf("sqlite: usage: %w", err)
		}
	} else {
		rows, err = s.db.QueryContext(ctx, sel+` WHERE org_id = ? AND start >= ? AND start < ? GROUP BY start ORDER BY start`,
			q.OrgID, toUS(q.From), toUS(q.To))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: usage: %w", err)
	}
	defer rows.Close()
	out := []store.UsageBucket{}
	n := make([]int64, len(usageCols))
	var start int64
	dest := []any{&start}
	for i := range n {
		dest = append(dest, &n[i])
	}
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("sqlite: usage: %w", err)
		}
		out = append(out, store.NewUsageBucket(fromUS(start), n[0], n[1:]))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: usage: %w", err)
	}
	return out, nil
}

// TopKeys implements store.UsageStore.
func (s *Store) TopKeys(ctx context.Context, q store.UsageQuery, n int) ([]store.KeyAllowed, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key_id, sum(allowed) AS a FROM `+q.Granularity.Table()+`
		WHERE org_id = ? AND start >= ? AND start < ?
		GROUP BY key_id HAVING sum(allowed) > 0 ORDER BY a DESC, key_id LIMIT ?`, q.OrgID, toUS(q.From), toUS(q.To), n)
	if err != nil {
		return nil, fmt.Errorf("sqlite: top keys: %w", err)
	}
	defer rows.Close()
	top := []store.KeyAllowed{}
	for rows.Next() {
		var k store.KeyAllowed
		if err := rows.Scan(&k.KeyID, &k.Allowed); err != nil {
			return nil, fmt.Errorf("sqlite: top keys: %w", err)
		}
		top = append(top, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: top keys: %w", err)
	}
	return top, nil
}

// PruneUsage implements store.UsageStore: each table loses at most limit
// rows per call.
func (s *Store) PruneUsage(ctx context.Context, hourly, daily time.Time, limit int) (int64, error) {
	var total int64
	for _, d := range []struct {
		table  string
		before time.Time
	}{{"usage_hourly", hourly}, {"usage_daily", daily}} {
		res, err := s.db.ExecContext(ctx, `DELETE FROM `+d.table+` WHERE rowid IN (
			SELECT rowid FROM `+d.table+` WHERE start < ? LIMIT ?)`, toUS(d.before), limit)
		if err != nil {
			return total, fmt.Errorf("sqlite: prune usage: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
