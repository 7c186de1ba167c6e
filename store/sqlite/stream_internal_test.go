package sqlite

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestRecentKeys_ReadsInIndexOrder pins that warm start reads keys in the
// order of index api_keys_recent, so it stops after the n it needs
// instead of sorting every key first: the plan uses the index and has no
// sort of its own.
func TestRecentKeys_ReadsInIndexOrder(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "keygate.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+recentKeysQuery, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(plan, "\n")
	if !strings.Contains(all, "api_keys_recent") || strings.Contains(all, "TEMP B-TREE") {
		t.Errorf("RecentKeys plan:\n%s\nwant a scan of api_keys_recent and no sort", all)
	}
}
