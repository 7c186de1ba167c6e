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

// testVersion is the VERSION build arg the build test passes, as
// `docker build --build-arg VERSION=...` would.
const testVersion = "v0.0.0-dockerfile-test"

// TestDockerfile_BuildCommandBuildsKeygate runs the Dockerfile's own go build line, with
// the build stage's ENV and ARGs (VERSION set to testVersion), from the repository root
// (the image's build context), writing the binary to a temporary directory instead of /out.
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
	args := stageArgs(t, build)
	if _, ok := args["VERSION"]; !ok {
		t.Fatal("build stage has no ARG VERSION: `docker build --build-arg VERSION=...` would not reach the binary")
	}
	args["VERSION"] = testVersion
	words := shellWords(t, buildRun(t, build).args, args)
	for len(words) > 0 && strings.Contains(words[0], "=") {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		t.Fatalf("RUN %s: want a plain `[VAR=value ...] go build ...` line", buildRun(t, build).args)
	}
	for _, want := range []string{"CGO_ENABLED=0"} {
		if !slices.Contains(env, want) {
			t.Errorf("build runs without %s", want)
		}
	}
	for _, want := range []string{"-trimpath", "./cmd/keygate"} {
		if !slices.Contains(words, want) {
			t.Errorf("go build lacks %s", want)
		}
	}
	var ldflags []string
	for _, w := range words {
		if v, ok := strings.CutPrefix(w, "-ldflags="); ok {
			ldflags = strings.Fields(v)
		}
	}
	if !slices.Contains(ldflags, "-s") {
		t.Errorf("go build -ldflags %q lacks -s", ldflags)
	}
	if i := slices.Index(ldflags, "-X"); i < 0 || i+1 >= len(ldflags) || ldflags[i+1] != "main.version="+testVersion {
		t.Errorf("go build -ldflags %q does not set main.version from the VERSION build arg", ldflags)
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

	stages := parseDockerfile(t)
	final := stages[len(stages)-1]
	t.Run("version is the VERSION build arg", func(t *testing.T) {
		out, err := exec.Command(bin, "version").CombinedOutput()
		if err != nil {
			t.Fatalf("keygate version: %v\n%s", err, out)
		}
		if !strings.HasPrefix(string(out), "keygate "+testVersion+" ") {
			t.Errorf("keygate version printed %q, want it to start with %q", out, "keygate "+testVersion+" ")
		}
	})
	t.Run("healthcheck subcommand", func(t *testing.T) {
		testHealthcheck(t, bin, healthcheckArgv(t, final))
	})
	t.Run("serves on the embedded store", func(t *testing.T) { testServesEmbedded(t, bin, final) })
}

// stageArgs is the ARGs a stage declares, with their defaults.
func stageArgs(t *testing.T, s stage) map[string]string {
	t.Helper()
	args := map[string]string{}
	for _, a := range s.all("ARG") {
		k, v, _ := strings.Cut(a.args, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			t.Fatalf("ARG %s: write ARG as NAME or NAME=default", a.args)
		}
		args[k] = v
	}
	return args
}

// shellWords splits a RUN line as /bin/sh would, for the subset the Dockerfile uses:
// blanks separate words, double quotes group, $NAME and ${NAME} expand from vars (the
// stage's ARGs). Anything else a shell treats specially fails the test rather than be
// guessed at.
func shellWords(t *testing.T, line string, vars map[string]string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			quoted, inWord = !quoted, true
		case c == '$':
			var name string
			if rest, ok := strings.CutPrefix(line[i+1:], "{"); ok {
				end := strings.IndexByte(rest, '}')
				if end < 0 {
					t.Fatalf("RUN %s: unterminated ${", line)
				}
				name = rest[:end]
				i += 2 + end
			} else {
				end := i + 1
				for end < len(line) && (line[end] == '_' || 'A' <= line[end] && line[end] <= 'Z' || 'a' <= line[end] && line[end] <= 'z' || '0' <= line[end] && line[end] <= '9') {
					end++
				}
				name = line[i+1 : end]
				i = end - 1
			}
			v, ok := vars[name]
			if !ok {
				t.Fatalf("RUN %s: $%s is not an ARG of the stage", line, name)
			}
			cur.WriteString(v)
			inWord = true
		case !quoted && (c == ' ' || c == '\t'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.IndexByte("'`;&|<>()\\*?~#!", c) >= 0:
			t.Fatalf("RUN %s: %q is more shell than this test reads", line, c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("RUN %s: unterminated quote", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// imageDataDir is where the final stage keeps the embedded store: KEYGATE_DATA_DIR
// from its ENV, or --data-dir in its CMD.
func imageDataDir(t *testing.T, final stage) string {
	t.Helper()
	if dir := stageEnv(t, final)["KEYGATE_DATA_DIR"]; dir != "" {
		return dir
	}
	for _, c := range final.all("CMD") {
		argv := execForm(t, c)
		if i := slices.Index(argv, "--data-dir"); i >= 0 && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// stageEnv is the ENV a stage sets, written as KEY=value.
func stageEnv(t *testing.T, s stage) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range s.all("ENV") {
		k, v, ok := strings.Cut(e.args, "=")
		if !ok || strings.ContainsAny(k, " \t") || strings.ContainsAny(v, " \t\"'$") {
			t.Fatalf("ENV %s: write ENV as KEY=value, one a line, no quotes", e.args)
		}
		env[k] = v
	}
	return env
}

// The image ran `serve` in a working directory its user could not write: "unable to
// open database file (14)". The embedded store needs a directory that exists, belongs
// to the runtime user, and is a volume (a container's own layer is lost with it).
func TestDockerfile_EmbeddedStoreHasAVolumeOwnedByTheRuntimeUser(t *testing.T) {
	stages := parseDockerfile(t)
	final := stages[len(stages)-1]
	dir := imageDataDir(t, final)
	if dir == "" || !path.IsAbs(dir) {
		t.Fatalf("final stage sets no absolute KEYGATE_DATA_DIR (or CMD --data-dir): got %q", dir)
	}

	var volumes []string
	for _, v := range final.all("VOLUME") {
		if strings.HasPrefix(v.args, "[") {
			volumes = append(volumes, execForm(t, v)...)
		} else {
			volumes = append(volumes, strings.Fields(v.args)...)
		}
	}
	if !slices.Contains(volumes, dir) {
		t.Errorf("VOLUME %v does not hold the data directory %s", volumes, dir)
	}

	users := final.all("USER")
	if len(users) != 1 {
		t.Fatalf("final stage has %d USER instructions, want 1", len(users))
	}
	uid, gid, _ := strings.Cut(users[0].args, ":")
	var src, from string
	for _, c := range final.all("COPY") {
		f := strings.Fields(c.args)
		if len(f) < 2 || f[len(f)-1] != dir {
			continue
		}
		var chown string
		for _, opt := range f[:len(f)-2] {
			if v, ok := strings.CutPrefix(opt, "--from="); ok {
				from = v
			}
			if v, ok := strings.CutPrefix(opt, "--chown="); ok {
				chown = v
			}
		}
		cu, cg, _ := strings.Cut(chown, ":")
		if cu != uid || (gid != "" && cg != gid) {
			t.Errorf("COPY %s: owner %q, want the runtime user %s", c.args, chown, users[0].args)
		}
		src = f[len(f)-2]
	}
	if src == "" {
		t.Fatalf("no COPY --chown=%s ... %s in the final stage: distroless has no shell to create it", users[0].args, dir)
	}
	made := false
	for _, s := range stages[:len(stages)-1] {
		if !strings.HasSuffix(s.from, " AS "+from) && !strings.HasSuffix(s.from, " as "+from) {
			continue
		}
		for _, r := range s.all("RUN") {
			if f := strings.Fields(r.args); slices.Contains(f, "mkdir") && slices.Contains(f, src) {
				made = true
			}
		}
	}
	if !made {
		t.Errorf("stage %q does not mkdir %s, which the final stage copies to %s", from, src, dir)
	}
}

// testServesEmbedded runs the image's binary as the image would, with its ENV and CMD and
// no database, a temporary directory standing in for the data volume: it must create the
// store there, print the bootstrap owner key, answer /healthz and exit 0 on SIGTERM.
func testServesEmbedded(t *testing.T, bin string, final stage) {
	volume := t.TempDir()
	dataDir := imageDataDir(t, final)
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "KEYGATE_") { // the image's environment, not this test's
			env = append(env, e)
		}
	}
	for k, v := range stageEnv(t, final) {
		if k == "KEYGATE_DATA_DIR" && v == dataDir {
			v = volume
		}
		env = append(env, k+"="+v)
	}
	cmds := final.all("CMD")
	if len(cmds) != 1 {
		t.Fatalf("final stage has %d CMDs, want 1", len(cmds))
	}
	args := execForm(t, cmds[0])
	if i := slices.Index(args, "--data-dir"); i >= 0 && i+1 < len(args) && args[i+1] == dataDir {
		args[i+1] = volume
	}
	args = append(args, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json")
	cmd := exec.Command(bin, args...)
	cmd.Env = env
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
	if _, err := os.Stat(filepath.Join(volume, "keygate.db")); err != nil {
		t.Errorf("the embedded store is not in the data volume: %v", err)
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
