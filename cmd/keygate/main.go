// Command keygate is the keygate binary: the ext_authz server (serve), its
// migrations, key and organization management, a Check client and the
// container health probe. main only wires the process to run.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

func main() {
	ctx, hurry, stop := notifyShutdown(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := exitCode(run(ctx, hurry, os.Args[1:], os.Getenv, os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

// notifyShutdown is signal.NotifyContext that also sees a second signal:
// ctx ends at the first of sigs (serve starts draining), hurry is closed at
// the second (serve skips the rest of --shutdown-delay). After the second,
// the signals get their default action again, so a third one kills the
// process. stop releases the signals and waits for the watcher to end.
func notifyShutdown(parent context.Context, sigs ...os.Signal) (ctx context.Context, hurry <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, sigs...)
	h := make(chan struct{})
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		defer signal.Stop(ch)
		select {
		case <-ch:
			cancel()
		case <-done:
			return
		}
		select {
		case <-ch:
			close(h)
		case <-done:
		}
	}()
	var once sync.Once
	return ctx, h, func() {
		once.Do(func() {
			close(done)
			<-exited
			cancel()
		})
	}
}

// Exit codes. check uses 1 for a denied request, and every command 2 for a
// usage error, so a script can tell "no" from "wrong question".
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// exitError carries the exit status of a failed command. A nil err means
// the command has said everything already (a check that was denied).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageErrorf is a bad flag or argument: exit status 2.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// exitCode is the one place where an error becomes an exit status and a
// message: one line on stderr, so that a wrapper or a container log shows
// exactly what went wrong.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFail
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", " ")), " ")
	fmt.Fprintf(stderr, "keygate: %s\n", msg)
	return code
}
