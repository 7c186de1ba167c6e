package main

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/alecthomas/kong"
)

// cli is the whole command line. Flags with an env tag also read that
// variable, through getenv rather than the process environment, so tests
// control it; a flag on the command line wins.
type cli struct {
	Serve       serveCmd       `cmd:"" help:"Serve ext_authz over gRPC (--grpc-addr) and health, readiness and metrics over HTTP (--http-addr)."`
	Migrate     migrateCmd     `cmd:"" help:"Apply the database migrations and exit."`
	Orgs        orgsCmd        `cmd:"" help:"Create, disable or enable an organization."`
	Keys        keysCmd        `cmd:"" help:"Create, list and revoke API keys."`
	Replicas    replicasCmd    `cmd:"" help:"List the replicas registered in the PostgreSQL store: id, hostname, version, started, last seen, live, lag."`
	Check       checkCmd       `cmd:"" help:"Send one Check request to a keygate server and print its decision (exit 0 allowed, 1 denied, 2 error)."`
	Version     versionCmd     `cmd:"" help:"Print the version and exit."`
	Scan        scanCmd        `cmd:"" help:"Find keygate tokens in files, checksums verified offline (exit 0 none, 1 found, 2 error); prints prefix and last 4 only."`
	Healthcheck healthcheckCmd `cmd:"" help:"Probe a keygate's /healthz (exit 0 on HTTP 200, 1 otherwise), for container health checks."`
	Doctor      doctorCmd      `cmd:"" help:"Report how Envoy or Istio configuration files can let a request past keygate or break it (exit 0 clean, 1 error finding, 2 unreadable file)."`
}

// deps is what every command's Run receives: the process around it.
type deps struct {
	// ctx ends at the first SIGTERM or SIGINT; hurry is closed at the
	// second (serve's drain skips the rest of --shutdown-delay).
	ctx    context.Context
	hurry  <-chan struct{}
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// kongExit is how kong's exit (after --help) unwinds out of Parse without
// os.Exit below main.
type kongExit int

// run parses args and runs the selected command until it finishes or ctx
// ends (hurry: see deps). It never exits the process; the error it returns
// carries the exit status (see exitCode).
func run(ctx context.Context, hurry <-chan struct{}, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	var c cli
	parser, err := newParser(&c, getenv, stdout, stderr)
	if err != nil {
		return fmt.Errorf("building the command line: %w", err) // a bug, not a usage error
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			err = nil
			if code != 0 {
				err = &exitError{code: int(code)}
			}
		}
	}()
	kctx, err := parser.Parse(args)
	if err != nil {
		// Unknown flags, bad values and every Validate failure.
		return &exitError{code: exitUsage, err: err}
	}
	return kctx.Run(&deps{ctx: ctx, hurry: hurry, getenv: getenv, stdout: stdout, stderr: stderr})
}

// newParser returns the kong parser of c, reading variables through getenv.
func newParser(c *cli, getenv func(string) string, stdout, stderr io.Writer) (*kong.Kong, error) {
	envs := map[*kong.Value][]string{}
	return kong.New(c,
		kong.Name("keygate"),
		kong.Description("keygate is an Envoy ext_authz authorizer for API keys."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(kongExit(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.PostBuild(func(k *kong.Kong) error { takeEnvs(k.Model.Node, envs); return nil }),
		kong.Resolvers(envResolver(envs, getenv)),
	)
}

// takeEnvs moves the env tags of every flag out of kong, which would read
// them from the process environment, into envs, which envResolver reads
// through getenv. Help still names the variable.
func takeEnvs(n *kong.Node, envs map[*kong.Value][]string) {
	for _, f := range n.Flags {
		if len(f.Envs) == 0 {
			continue
		}
		envs[f.Value] = f.Envs
		f.Help = strings.TrimSuffix(f.Help, ".") + " ($" + strings.Join(f.Envs, ", $") + ")."
		f.Envs = nil
		f.Value.Tag.Envs = nil
	}
	for _, child := range n.Children {
		takeEnvs(child, envs)
	}
}

// envResolver gives a flag that the command line left unset the value of
// its first non-empty variable. A value the flag cannot take is an error
// naming the variable, since the command line the operator sees has no
// such flag.
func envResolver(envs map[*kong.Value][]string, getenv func(string) string) kong.Resolver {
	return kong.ResolverFunc(func(_ *kong.Context, _ *kong.Path, f *kong.Flag) (any, error) {
		for _, name := range envs[f.Value] {
			v := getenv(name)
			if v == "" {
				continue
			}
			if err := tryDecode(f, v); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err) // kong puts the flag's name before it
			}
			return v, nil
		}
		return nil, nil
	})
}

// tryDecode decodes v as f would, into a scratch value, so that a bad
// value is reported before kong reports it without the variable's name.
func tryDecode(f *kong.Flag, v string) error {
	if f.Enum != "" && !f.EnumMap()[v] {
		return fmt.Errorf("must be one of %s but got %q", strings.Join(f.EnumSlice(), ", "), v)
	}
	target := reflect.New(f.Target.Type()).Elem()
	if target.Kind() == reflect.Pointer {
		target.Set(reflect.New(target.Type().Elem()))
	}
	return f.Mapper.Decode(&kong.DecodeContext{Value: f.Value, Scan: kong.Scan().PushTyped(v, kong.FlagValueToken)}, target)
}
