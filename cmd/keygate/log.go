package main

import (
	"log"
	"log/slog"
)

// slogErrorLog routes net/http's internal errors (bad TLS handshakes,
// accept failures) into the structured log.
func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}
