package envoy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	dockerfilePath   = "../Dockerfile"
	dockerignorePath = "../.dockerignore"
	repoRoot         = ".."
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper-case: FROM, RUN, ...
	args string
}

// stage is the instructions from one FROM to the next.
type stage struct {
	from         string
	instructions []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.instructions {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// parseDockerfile reads the subset of Dockerfile syntax this repository uses: one
// instruction per line, `\` continuations, `#` comments. Parser directives and heredocs
// are not used, and a line this parser cannot read fails the test.
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var pending string
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if pending == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			pending += cont + " "
			continue
		}
		full := strings.TrimSpace(pending + trimmed)
		pending = ""
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			stages = append(stages, stage{from: in.args})
		case in.cmd == "ARG" && len(stages) == 0:
			// A global ARG before the first FROM.
		case len(stages) == 0:
			t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
		default:
			stages[len(stages)-1].instructions = append(stages[len(stages)-1].instructions, in)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a final stage", len(stages))
	}
	return stages
}

// execForm parses an instruction written in JSON exec form, like ["a", "b"].
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("%s %s is not in exec form (a JSON array): a shell-less image cannot run shell form", in.cmd, in.args)
	}
	return argv
}

// healthcheckArgv is the command of the final stage's HEALTHCHECK.
func healthcheckArgv(t *testing.T, final stage) []string {
	t.Helper()
	hc := final.all("HEALTHCHECK")
	if len(hc) != 1 {
		t.Fatalf("final stage has %d HEALTHCHECK instructions, want 1", len(hc))
	}
	_, cmd, ok := strings.Cut(hc[0].args, "CMD ")
	if !ok {
		t.Fatalf("HEALTHCHECK %s has no CMD", hc[0].args)
	}
	return execForm(t, instruction{cmd: "HEALTHCHECK CMD", args: strings.TrimSpace(cmd)})
}

func TestDockerfile_FinalImageIsStaticAndNonRoot(t *testing.T) {
	stages := parseDockerfile(t)
	final := stages[len(stages)-1]

	distroless := strings.Contains(final.from, "distroless/static") && strings.HasSuffix(final.from, ":nonroot")
	users := final.all("USER")
	if !distroless && final.from != "scratch" {
		t.Errorf("final stage FROM %s, want distroless static (nonroot) or scratch", final.from)
	}
	if len(users) == 0 && !distroless {
		t.Error("final stage sets no USER: it would run as root")
	}
	for _, u := range users {
		uid, _, _ := strings.Cut(u.args, ":")
		if uid == "0" || uid == "root" || strings.Trim(uid, "0123456789") != "" {
			t.Errorf("USER %s: want a numeric non-root uid (Kubernetes' runAsNonRoot can only verify numbers)", u.args)
		}
	}

	var exposed []string
	for _, e := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(e.args)...)
	}
	for _, p := range []string{strconv.Itoa(defaultGRPCPort), strconv.Itoa(defaultHTTPPort)} {
		if !slices.Contains(exposed, p) {
			t.Errorf("EXPOSE %v lacks %s", exposed, p)
		}
	}

	eps := final.all("ENTRYPOINT")
	if len(eps) != 1 {
		t.Fatalf("final stage has %d ENTRYPOINTs, want 1", len(eps))
	}
	entry := execForm(t, eps[0])
	if path.Base(entry[0]) != "keygate" {
		t.Errorf("ENTRYPOINT %v does not run keygate", entry)
	}
	copied := slices.ContainsFunc(final.all("COPY"), func(c instruction) bool {
		return strings.HasPrefix(c.args, "--from=") && strings.HasSuffix(c.args, " "+entry[0])
	})
	if !copied {
		t.Errorf("no COPY --from=... puts the binary at %s", entry[0])
	}

	hc := healthcheckArgv(t, final)
	want := []string{entry[0], "healthcheck", "--url", "http://127.0.0.1:" + strconv.Itoa(defaultHTTPPort) + "/healthz"}
	if !slices.Equal(hc, want) {
		t.Errorf("HEALTHCHECK CMD %q, want %q (the image has no shell and no curl)", hc, want)
	}
}

func TestDockerfile_ModulesDownloadBeforeSourceIsCopied(t *testing.T) {
	build := parseDockerfile(t)[0]
	index := func(cmd, args string) int {
		return slices.IndexFunc(build.instructions, func(in instruction) bool {
			return in.cmd == cmd && strings.HasPrefix(in.args, args)
		})
	}
	steps := []int{
		index("COPY", "go.mod go.sum"),
		index("RUN", "go mod download"),
		index("COPY", ". ."),
		index("RUN", buildRun(t, build).args),
	}
	if slices.Contains(steps, -1) || !slices.IsSorted(steps) {
		t.Errorf("build stage steps at %v: want COPY go.mod go.sum, RUN go mod download, COPY . ., RUN ... go build, in that order", steps)
	}
}

// buildRun is the build stage's RUN that runs go build.
func buildRun(t *testing.T, build stage) instruction {
	t.Helper()
	var runs []instruction
	for _, r := range build.all("RUN") {
		if strings.Contains(r.args, "go build") {
			runs = append(runs, r)
		}
	}
	if len(runs) != 1 {
		t.Fatalf("build stage has %d RUN ... go build, want 1", len(runs))
	}
	return runs[0]
}

// TestDockerfile_BuildCommandBuildsKeygate runs the Dockerfile's own go build line, with
// the build stage's ENV, from the repository root (the image's build context), writing
// the binary to a temporary directory instead of /out.
func TestDockerfile_BuildCommandBuildsKeygate(t *testing.T) {
	build := parseDockerfile(t)[0]
	var env []string
	for _, e := range build.all("ENV") {
		k, v, ok := strings.Cut(e.args, "=")
		if !ok || strings.ContainsAny(k, " \t") {
			t.Fatalf("ENV %s: write ENV as KEY=value", e.args)
		}
		env = append(env, k+"="+v)
	}
	words := strings.Fields(buildRun(t, build).args)
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" || strings.ContainsAny(strings.Join(words, " "), `"'$;&|`) {
		t.Fatalf("RUN %s: want a plain `[VAR=value ...] go build ...` line", buildRun(t, build).args)
	}
	for _, want := range []string{"CGO_ENABLED=0"} {
		if !slices.Contains(env, want) {
			t.Errorf("build runs without %s", want)
		}
	}
	for _, want := range []string{"-trimpath", "-ldflags=-s", "./cmd/keygate"} {
		if !slices.Contains(words, want) {
			t.Errorf("go build lacks %s", want)
		}
	}
	out := slices.Index(words, "-o")
	if out < 0 || out+1 >= len(words) {
		t.Fatal("go build has no -o")
	}
	bin := filepath.Join(t.TempDir(), "keygate")
	words[out+1] = bin

	if testing.Short() {
		t.Skip("-short: not building ./cmd/keygate")
	}
	checkDockerignoreKeepsSources(t)

	cmd := exec.Command(words[0], words[1:]...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, outb)
	}

	t.Run("healthcheck subcommand", func(t *testing.T) {
		stages := parseDockerfile(t)
		testHealthcheck(t, bin, healthcheckArgv(t, stages[len(stages)-1]))
	})
	t.Run("serves on the embedded store", func(t *testing.T) { testServesEmbedded(t, bin) })
}

// testServesEmbedded runs the image's binary as the image would, with no
// database: it must print the bootstrap owner key, answer /healthz and
// exit 0 on SIGTERM.
func testServesEmbedded(t *testing.T, bin string) {
	cmd := exec.Command(bin, "serve", "--data-dir", t.TempDir(), "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var httpAddr string
	for deadline := time.Now().Add(20 * time.Second); httpAddr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(stderr.String(), "\n") {
			var rec struct{ Msg, HTTP string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "listening" {
				httpAddr = rec.HTTP
			}
		}
	}
	if httpAddr == "" {
		t.Fatalf("serve did not start:\n%s", stderr.String())
	}
	if out, err := exec.Command(bin, "healthcheck", "--url", "http://"+httpAddr+"/healthz").CombinedOutput(); err != nil {
		t.Errorf("healthcheck of the running binary: %v %s", err, out)
	}
	if !strings.Contains(stdout.String(), "created owner key for organization default") {
		t.Errorf("no bootstrap owner key on stdout: %q", stdout.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after SIGTERM: %v, want exit 0\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Error("serve did not exit within 15 s of SIGTERM")
	}
}

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testHealthcheck runs the image's HEALTHCHECK command against servers that answer 200
// and 503: the image has no shell and no curl, so `keygate healthcheck --url URL` is what
// Docker and compose rely on.
func testHealthcheck(t *testing.T, bin string, argv []string) {
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	if !bytes.Contains(help, []byte("healthcheck")) {
		t.Skip("cmd/keygate has no `healthcheck` subcommand yet; the Dockerfile HEALTHCHECK and docker-compose.yaml " +
			"need `keygate healthcheck --url URL`: exit 0 when URL answers 200, non-zero otherwise")
	}
	urlAt := slices.Index(argv, "--url")
	if urlAt < 0 || urlAt+1 >= len(argv) {
		t.Fatalf("HEALTHCHECK %q has no --url", argv)
	}
	for _, tt := range []struct {
		status int
		wantOK bool
	}{{http.StatusOK, true}, {http.StatusServiceUnavailable, false}} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(tt.status)
		}))
		args := slices.Clone(argv[1:])
		args[urlAt] = srv.URL + "/healthz"
		out, err := exec.Command(bin, args...).CombinedOutput()
		srv.Close()
		if (err == nil) != tt.wantOK {
			t.Errorf("keygate %s against a %d: err = %v, want success %v\n%s", strings.Join(args, " "), tt.status, err, tt.wantOK, out)
		}
	}
}

// checkDockerignoreKeepsSources fails when .dockerignore would leave out of the image's
// build context a directory or embedded file that ./cmd/keygate is built from. It reads
// the simple patterns this repository's .dockerignore uses (no `!` exceptions).
func checkDockerignoreKeepsSources(t *testing.T) {
	t.Helper()
	data, err := os.ReadFile(dockerignorePath)
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") {
			t.Fatalf(".dockerignore: %q: this check does not understand exceptions", line)
		}
		patterns = append(patterns, strings.Trim(path.Clean(line), "/"))
	}
	ignored := func(rel string) string {
		parts := strings.Split(rel, "/")
		for i := range parts {
			prefix := strings.Join(parts[:i+1], "/")
			for _, p := range patterns {
				if base, ok := strings.CutPrefix(p, "**/"); ok {
					if m, _ := path.Match(base, parts[i]); m {
						return p
					}
				} else if m, _ := path.Match(p, prefix); m {
					return p
				}
			}
		}
		return ""
	}

	list := exec.Command("go", "list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{.Dir}}{{range .EmbedFiles}} {{$.Dir}}/{{.}}{{end}}{{"\n"}}{{end}}`, "./cmd/keygate")
	list.Dir = repoRoot
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/keygate: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	for _, f := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, f)
		if err != nil {
			t.Fatal(err)
		}
		needed = append(needed, filepath.ToSlash(rel))
	}
	for _, rel := range needed {
		if p := ignored(rel); p != "" {
			t.Errorf(".dockerignore pattern %q leaves %s out of the build context, but ./cmd/keygate needs it", p, rel)
		}
	}
}
