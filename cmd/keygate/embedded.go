package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/keygate/keygate/store"
	"github.com/keygate/keygate/store/sqlite"
)

// openEmbedded opens the embedded store's file.
func openEmbedded(ctx context.Context, path string, logger *slog.Logger) (store.Store, error) {
	return sqlite.Open(ctx, sqlite.Config{Path: path, Now: time.Now, Logger: logger})
}
