package sqlite_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/keygate/keygate"
	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/sqlite"
	"github.com/keygate/keygate/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: filepath.Join(t.TempDir(), "keygate.db"), Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestMigrate_ConcurrentOpenersOfOneFile stands in for `keygate serve` and
// CLI commands starting together on a fresh file.
func TestMigrate_ConcurrentOpenersOfOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.db")
	var g errgroup.Group
	for range 6 {
		g.Go(func() error {
			s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
			if err != nil {
				return err
			}
			defer s.Close()
			return s.Migrate(t.Context())
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("concurrent Migrate: %v", err)
	}
	s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateOrganization(t.Context(), "acme", keygate.Actor{}); err != nil {
		t.Errorf("store unusable after concurrent migrations: %v", err)
	}
}

// TestWrites_TwoStoresOnOneFile has two Stores (as two processes would)
// write the same file at once: immediate transactions and the busy
// timeout make both succeed, and every write is in the log once.
func TestWrites_TwoStoresOnOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keygate.db")
	var stores [2]*sqlite.Store
	for i := range stores {
		s, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	if _, err := stores[0].CreateOrganization(t.Context(), "acme", keygate.Actor{}); err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	for _, s := range stores {
		g.Go(func() error {
			for range 20 {
				for _, d := range []bool{true, false} {
					if _, err := s.SetOrganizationDisabled(t.Context(), "acme", d, keygate.Actor{}); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	evs, err := stores[1].Events(t.Context(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Fatalf("events out of order at %d: %d after %d", i, evs[i].Seq, evs[i-1].Seq)
		}
	}
	// Some toggles are no-ops when the other store got there first; each
	// event that was written flips the state.
	for i := 1; i < len(evs); i++ {
		if evs[i].Kind == evs[i-1].Kind {
			t.Fatalf("two %s events in a row at seq %d", evs[i].Kind, evs[i].Seq)
		}
	}
}

func TestOpen_NoPath(t *testing.T) {
	if _, err := sqlite.Open(t.Context(), sqlite.Config{}); err == nil {
		t.Error("Open without a path succeeded")
	}
}

// TestOpen_UnopenableFileSaysWhatToCheck: SQLite's own text, "unable to open
// database file (14)", names neither the file nor the cause. The error must
// name the path and say what to check.
func TestOpen_UnopenableFileSaysWhatToCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	path := filepath.Join(dir, "keygate.db")
	_, err := sqlite.Open(t.Context(), sqlite.Config{Path: path})
	if err == nil {
		t.Fatal("Open in a directory that does not exist succeeded")
	}
	for _, want := range []string{path, dir, "exists", "writable", fmt.Sprintf("uid %d", os.Getuid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}
