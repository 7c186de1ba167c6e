package postgres_test

import (
	"bytes"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgbouncer"
	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/internal/tcpproxy"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/postgres"
	"github.com/keygate/keygate/store/storetest"
)

// TestConformance_ThroughPgBouncer runs the store's whole suite through a
// real PgBouncer in transaction mode, as the README configures it:
// default_query_exec_mode=exec (no named prepared statements, one round
// trip per statement) and migrations over the direct listen URL.
// (simple_protocol sends no server-side statement at all, and
// TestConformance_SimpleProtocol runs it.)
func TestConformance_ThroughPgBouncer(t *testing.T) {
	b := pgbouncer.Start(t, pgbouncer.Config{})
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		direct := pgtest.NewDatabase(t)
		s, err := postgres.Open(t.Context(), postgres.Config{URL: b.URL(t, direct, "exec"), ListenURL: direct, Now: now})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(s.Close)
		return s
	})
}

// TestOpen_WarnsOfExecModesAPoolerBreaks: a listen URL at another address
// than the database URL (the sign of a pooler in front of the latter) with
// an exec mode that a transaction-mode pooler breaks is worth a warning at
// start. A TCP proxy stands in for the pooler's address.
func TestOpen_WarnsOfExecModesAPoolerBreaks(t *testing.T) {
	direct := pgtest.NewDatabase(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = tcpproxy.Start(t, u.Host).Addr()
	elsewhere := u.String()
	for _, tc := range []struct {
		name, mode, listen string
		warn               bool
	}{
		{"default mode", "", direct, true}, // pgx's default, cache_statement
		{"describe_exec", "describe_exec", direct, true},
		{"exec", "exec", direct, false},
		{"simple_protocol", "simple_protocol", direct, false},
		{"cache_describe", "cache_describe", direct, false},
		{"listen at the same address", "", direct + "&application_name=listener", false},
		{"no listen url", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			url := elsewhere
			if tc.listen != direct {
				url = direct
			}
			if tc.mode != "" {
				url += "&default_query_exec_mode=" + tc.mode
			}
			s, err := postgres.Open(t.Context(), postgres.Config{URL: url, ListenURL: tc.listen,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
			if got := strings.Contains(logs.String(), "default_query_exec_mode=exec"); got != tc.warn {
				t.Errorf("warned %t, want %t; log:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
