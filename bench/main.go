// Command bench is keygate's load harness (BENCHMARKS.md): it seeds keys
// into PostgreSQL with COPY, runs keygate and a null ext_authz server as
// child processes on 127.0.0.1, and drives Check over gRPC with its own
// client (closed and open loop) and with ghz.
//
//	go run ./bench run [-scenario hits,options,million,revoke] [-runs 3] [-dur 5s]
//	go run ./bench seed -n 1000000 -tokens FILE   # keeps the database; prints it
//	go run ./bench drop -name keygate_bench_…
//	go run ./bench null -addr 127.0.0.1:9100       # the null server alone
//
// It only ever targets loopback addresses, and every request loop ends by
// itself (a duration or a count).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const defaultServer = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: bench run|seed|drop|null [flags]")
	}
	switch args[0] {
	case "null":
		return runNull(args[1:])
	case "seed":
		return runSeed(args[1:], stdout, stderr)
	case "drop":
		fs := flag.NewFlagSet("drop", flag.ContinueOnError)
		server := fs.String("db", defaultServer, "PostgreSQL server URL (loopback)")
		name := fs.String("name", "", "database to drop (keygate_bench_…)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := checkLoopbackURL(*server); err != nil {
			return err
		}
		return dropDatabase(*server, *name)
	case "run":
		return runScenarios(args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown subcommand %q", args[0])
}

func runSeed(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("seed", flag.ContinueOnError)
	server := fs.String("db", defaultServer, "PostgreSQL server URL (loopback); a fresh database is created on it")
	n := fs.Int("n", 1000, "number of keys")
	tokens := fs.String("tokens", "tokens.txt", "file for the generated tokens (key_id org_id token per line)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := seed(context.Background(), *server, *n, *tokens, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s\n", s.URL)
	fmt.Fprintf(stderr, "drop it with: go run ./bench drop -name %s\n", s.Name)
	return nil
}

func runScenarios(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	server := fs.String("db", defaultServer, "PostgreSQL server URL (loopback); each scenario creates and drops its own database")
	scenarios := fs.String("scenario", "hits,options,revoke,million", "comma-separated: hits, options, revoke, million")
	runs := fs.Int("runs", 3, "runs of every measurement (tables show the median, min and max)")
	dur := fs.Duration("dur", 5*time.Second, "length of one timed run")
	keys := fs.Int("keys", 1_000_000, "keys of the million scenario")
	sweep := fs.Bool("sweep", true, "million: after the cold misses, check every key (then warm runs and memory); false stops after the cold misses")
	revocations := fs.Int("revocations", 50, "keys revoked in the revoke scenario")
	ghz := fs.String("ghz", "", "ghz binary (default: ghz on PATH or in $(go env GOPATH)/bin; \"off\" skips it)")
	before := fs.String("before", "", "a keygate checkout to compare against in the hits scenario (built like this one)")
	work := fs.String("work", "", "scratch directory (default: a new temporary one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopbackURL(*server); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := *work
	if dir == "" {
		d, err := os.MkdirTemp("", "keygate-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	e := &env{serverURL: *server, work: dir, runs: *runs, dur: *dur, sweep: *sweep, out: stdout, log: stderr}
	e.ghz = findGhz(*ghz, stderr)

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	e.keygate = filepath.Join(dir, "keygate")
	if err := buildKeygate(ctx, root, e.keygate); err != nil {
		return err
	}
	if *before != "" {
		e.before = filepath.Join(dir, "keygate-before")
		if err := buildKeygate(ctx, *before, e.before); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "## keygate load harness, %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "Machine: %d CPUs (GOMAXPROCS %d), %s; load before the run: %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), loadAvg())
	fmt.Fprintf(stdout, "Command: go run ./bench run %s\n", strings.Join(args, " "))

	for _, sc := range strings.Split(*scenarios, ",") {
		start := time.Now()
		var err error
		switch strings.TrimSpace(sc) {
		case "hits":
			err = e.hits(ctx)
		case "options":
			err = e.options(ctx)
		case "revoke":
			err = e.revoke(ctx, *revocations)
		case "million":
			err = e.million(ctx, *keys)
		default:
			err = fmt.Errorf("unknown scenario %q", sc)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", sc, err)
		}
		fmt.Fprintf(stdout, "\n(%s took %s; load after: %s)\n", sc, time.Since(start).Round(time.Second), loadAvg())
	}
	return nil
}

func findGhz(flagValue string, log io.Writer) string {
	if flagValue == "off" {
		return ""
	}
	if flagValue != "" {
		return flagValue
	}
	if p, err := exec.LookPath("ghz"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "ghz")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	fmt.Fprintln(log, "ghz not found (go install github.com/bojand/ghz/cmd/ghz@latest); its rows are skipped")
	return ""
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the harness from inside the keygate module")
	}
	return filepath.Dir(mod), nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
