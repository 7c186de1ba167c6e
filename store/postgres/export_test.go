package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
)

// SetBeforeCommit installs a hook that runs in every event-logging write
// after its key event is inserted and before it commits.
func (s *Store) SetBeforeCommit(f func(ctx context.Context, seq int64)) { s.beforeCommit = f }

// Pool exposes the store's pool to tests.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Migrations are the embedded migration files, for tests that count them.
var Migrations = migrations
