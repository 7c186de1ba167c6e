// Package flushloop runs the flush loop of a write-behind buffer: the
// last-used times and the usage analytics counts, each flushed every
// interval and once more at shutdown so that nothing is lost on SIGTERM.
package flushloop

import (
	"context"
	"log/slog"
	"time"
)

// Run calls flush every interval until ctx ends, then once more with its
// own finalTimeout (the graceful-shutdown flush), and returns nil. A
// failed flush is logged, naming what: flush keeps what it could not
// write for the next call; what the final flush could not write is lost.
func Run(ctx context.Context, interval, finalTimeout time.Duration, flush func(context.Context) error, log *slog.Logger, what string) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
			defer cancel()
			if err := flush(fctx); err != nil {
				log.Error(what+": final flush failed; what it held is lost", "err", err)
			}
			return nil
		case <-tick.C:
			// Not cancelled by ctx: a write in flight at shutdown may have
			// committed already, and cancelling it would make it look
			// failed, so that the final flush wrote it again. It gets
			// finalTimeout after ctx ends to finish.
			fctx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
			stop := context.AfterFunc(ctx, func() { time.AfterFunc(finalTimeout, cancelFlush) })
			err := flush(fctx)
			stop()
			cancelFlush()
			if err != nil && ctx.Err() == nil {
				log.Warn(what+": flush failed; retrying at the next interval", "err", err)
			}
		}
	}
}
