package envoy

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	fixedheapv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	"github.com/google/go-cmp/cmp"
)

// keygate's listen defaults, SPEC §6: `serve` takes --grpc-addr (default :9001) and
// --http-addr (default :8001). Envoy's keygate cluster, the compose file and the
// Kubernetes manifests must all agree with them.
const (
	defaultGRPCPort = 9001
	defaultHTTPPort = 8001
)

const composePath = "../docker-compose.yaml"

// loadCompose loads a compose file as `docker compose` would, with the JSON-schema
// validation (unknown keys are errors), interpolation, normalization and consistency
// checks on, and no environment from this process.
func loadCompose(ctx context.Context, content []byte) (*types.Project, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "docker-compose.yaml"), Content: content}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.ResolvePaths = true
	})
}

func mustLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t.Context(), data)
	if err != nil {
		t.Fatalf("%s does not load: %v", composePath, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publishedPort finds the port mapping of a service's container port.
func publishedPort(t *testing.T, s types.ServiceConfig, target uint32) types.ServicePortConfig {
	t.Helper()
	for _, p := range s.Ports {
		if p.Target == target {
			return p
		}
	}
	t.Fatalf("service %s does not publish container port %d (ports: %+v)", s.Name, target, s.Ports)
	return types.ServicePortConfig{}
}

func env(s types.ServiceConfig, name string) string {
	if v := s.Environment[name]; v != nil {
		return *v
	}
	return ""
}

// addrPort is the port of a KEYGATE_*_ADDR value, or def when it is unset.
func addrPort(t *testing.T, addr string, def int) uint32 {
	t.Helper()
	if addr == "" {
		return uint32(def)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return uint32(n)
}

// versionAtLeast reports whether a tag such as v1.38-latest or 1.28.1 names a release at
// or after min (MAJOR.MINOR).
func versionAtLeast(tag, min string) bool {
	parse := func(s string) (int, int, bool) {
		m := regexp.MustCompile(`^v?(\d+)\.(\d+)`).FindStringSubmatch(s)
		if m == nil {
			return 0, 0, false
		}
		major, _ := strconv.Atoi(m[1])
		minor, _ := strconv.Atoi(m[2])
		return major, minor, true
	}
	a, b, ok1 := parse(tag)
	c, d, ok2 := parse(min)
	return ok1 && ok2 && (a > c || a == c && b >= d)
}

func TestCompose_LoadsWithComposeSpecLoader(t *testing.T) {
	p := mustLoadCompose(t)
	want := []string{"envoy", "keygate", "migrate", "postgres", "upstream"}
	if diff := cmp.Diff(want, p.ServiceNames()); diff != "" {
		t.Errorf("services mismatch (-want +got):\n%s", diff)
	}
	for _, s := range p.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", s.Name)
		}
		if s.Build == nil && (!strings.Contains(s.Image, ":") || strings.HasSuffix(s.Image, ":latest")) {
			t.Errorf("service %s: image %q is not pinned to a tag", s.Name, s.Image)
		}
	}
}

func TestCompose_RejectsUnknownKeys(t *testing.T) {
	data, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(data), "healthcheck:", "healthcheckk:", 1)
	if broken == string(data) {
		t.Fatal("no healthcheck: in docker-compose.yaml: update this test")
	}
	if _, err := loadCompose(t.Context(), []byte(broken)); err == nil {
		t.Error("loader accepted a service with an unknown key")
	} else {
		t.Logf("rejected as expected: %v", err)
	}
}

func TestCompose_PostgresIsHealthChecked(t *testing.T) {
	pg := service(t, mustLoadCompose(t), "postgres")
	if !strings.HasPrefix(pg.Image, "postgres:") {
		t.Errorf("postgres image = %q, want the official postgres image", pg.Image)
	}
	if pg.HealthCheck == nil || !slices.ContainsFunc(pg.HealthCheck.Test, func(s string) bool { return strings.Contains(s, "pg_isready") }) {
		t.Errorf("postgres health check %+v does not run pg_isready", pg.HealthCheck)
	}
}

func TestCompose_KeygateStartsAfterMigrationOnHealthyPostgres(t *testing.T) {
	p := mustLoadCompose(t)
	migrate, kg := service(t, p, "migrate"), service(t, p, "keygate")

	if diff := cmp.Diff([]string{"migrate"}, []string(migrate.Command)); diff != "" {
		t.Errorf("migrate command mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"serve"}, []string(kg.Command)); diff != "" {
		t.Errorf("keygate command mismatch (-want +got):\n%s", diff)
	}
	if kg.Build == nil {
		t.Fatal("keygate service is not built from the repository")
	}
	if _, ok := kg.Build.Args["VERSION"]; !ok {
		t.Error("keygate's build passes no VERSION build arg: `keygate version` would say (devel)")
	}
	if migrate.Image != kg.Image || (migrate.Build == nil) != (kg.Build == nil) {
		t.Errorf("migrate runs image %q, keygate %q: they must run the same build", migrate.Image, kg.Image)
	}
	deps := []struct{ service, on, condition string }{
		{"migrate", "postgres", types.ServiceConditionHealthy},
		{"keygate", "postgres", types.ServiceConditionHealthy},
		{"keygate", "migrate", types.ServiceConditionCompletedSuccessfully},
		{"envoy", "keygate", types.ServiceConditionHealthy},
	}
	for _, d := range deps {
		dep, ok := service(t, p, d.service).DependsOn[d.on]
		if !ok {
			t.Errorf("%s does not depend on %s", d.service, d.on)
			continue
		}
		if dep.Condition != d.condition {
			t.Errorf("%s depends on %s with condition %q, want %q", d.service, d.on, dep.Condition, d.condition)
		}
	}
	for _, s := range []types.ServiceConfig{migrate, kg} {
		if u := env(s, "KEYGATE_DATABASE_URL"); !strings.HasPrefix(u, "postgres://") || !strings.Contains(u, "@postgres:") {
			t.Errorf("%s: KEYGATE_DATABASE_URL = %q, want a postgres:// URL to the postgres service", s.Name, u)
		}
	}
	if kg.HealthCheck == nil || !slices.Contains(kg.HealthCheck.Test, "healthcheck") {
		t.Errorf("keygate health check %+v does not run `keygate healthcheck`", kg.HealthCheck)
	}
	for _, port := range []uint32{addrPort(t, env(kg, "KEYGATE_GRPC_ADDR"), defaultGRPCPort), addrPort(t, env(kg, "KEYGATE_HTTP_ADDR"), defaultHTTPPort)} {
		publishedPort(t, kg, port)
	}
}

func TestCompose_EnvoyMountsTheTestedConfig(t *testing.T) {
	envoy := service(t, mustLoadCompose(t), "envoy")
	if !strings.HasPrefix(envoy.Image, "envoyproxy/envoy:") {
		t.Errorf("envoy image = %q, want the official envoyproxy/envoy image", envoy.Image)
	}
	if !versionAtLeast(strings.TrimPrefix(envoy.Image, "envoyproxy/envoy:"), minEnvoy) {
		t.Errorf("envoy image %s is older than Envoy %s, which envoy.yaml needs", envoy.Image, minEnvoy)
	}
	tested, err := filepath.Abs(envoyConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	var target string
	for _, v := range envoy.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == tested {
			target = v.Target
			if !v.ReadOnly {
				t.Errorf("%s is mounted read-write", tested)
			}
		}
	}
	if target == "" {
		t.Fatalf("envoy does not mount %s (volumes: %+v)", tested, envoy.Volumes)
	}
	if !slices.Contains(envoy.Command, target) {
		t.Errorf("envoy command %q does not start Envoy with %s", envoy.Command, target)
	}
}

// The numbers in envoy.yaml and docker-compose.yaml describe one deployment; a port
// changed in one file only would leave Envoy talking to nothing.
func TestCrossCheck_EnvoyAndComposeAgree(t *testing.T) {
	e, p := loadEdge(t), mustLoadCompose(t)

	t.Run("keygate cluster is the keygate service's gRPC port", func(t *testing.T) {
		kg := service(t, p, "keygate")
		addr := clusterAddress(t, e.cluster(t, "keygate"))
		grpc := addrPort(t, env(kg, "KEYGATE_GRPC_ADDR"), defaultGRPCPort)
		if addr.GetAddress() != kg.Name || addr.GetPortValue() != grpc || grpc != defaultGRPCPort {
			t.Errorf("Envoy's keygate cluster is %s:%d; compose keygate serves gRPC on %s:%d; keygate's default is %d",
				addr.GetAddress(), addr.GetPortValue(), kg.Name, grpc, defaultGRPCPort)
		}
	})
	t.Run("upstream cluster is the upstream service", func(t *testing.T) {
		up := service(t, p, "upstream")
		addr := clusterAddress(t, e.cluster(t, "upstream"))
		if addr.GetAddress() != up.Name {
			t.Errorf("Envoy's upstream cluster is %s, compose service is %s", addr.GetAddress(), up.Name)
		}
		port := strconv.Itoa(int(addr.GetPortValue()))
		if !slices.Contains(up.Expose, port) || env(up, "HTTP_PORT") != port {
			t.Errorf("Envoy's upstream cluster port %s: compose upstream exposes %v with HTTP_PORT=%q", port, up.Expose, env(up, "HTTP_PORT"))
		}
	})
	t.Run("edge listener is published", func(t *testing.T) {
		pp := publishedPort(t, service(t, p, "envoy"), e.port)
		if pp.Published != strconv.Itoa(int(e.port)) {
			t.Errorf("Envoy listens on %d, compose publishes it as %q", e.port, pp.Published)
		}
	})
	t.Run("admin is published on the host's loopback only", func(t *testing.T) {
		admin := e.bootstrap.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()
		pp := publishedPort(t, service(t, p, "envoy"), admin)
		if pp.HostIP != "127.0.0.1" {
			t.Errorf("Envoy admin %d is published on %q, want 127.0.0.1", admin, pp.HostIP)
		}
	})
	t.Run("overload manager acts below the container's memory limit", func(t *testing.T) {
		var heap uint64
		for _, m := range e.bootstrap.GetOverloadManager().GetResourceMonitors() {
			if m.GetName() == fixedHeap {
				cfg, err := unpack[fixedheapv3.FixedHeapConfig](m.GetTypedConfig())
				if err != nil {
					t.Fatal(err)
				}
				heap = cfg.GetMaxHeapSizeBytes()
			}
		}
		limit := memoryLimit(service(t, p, "envoy"))
		// Envoy's resident memory is its heap plus code, stacks and tcmalloc's slack.
		if heap == 0 || limit <= 0 || float64(heap) > 0.8*float64(limit) {
			t.Errorf("fixed_heap max_heap_size_bytes %d, compose memory limit of envoy %d: want the heap limit at most 80 %% of it", heap, limit)
		}
	})
}

// memoryLimit is a service's memory limit in bytes (deploy.resources or mem_limit), or 0.
func memoryLimit(s types.ServiceConfig) int64 {
	if s.Deploy != nil && s.Deploy.Resources.Limits != nil && s.Deploy.Resources.Limits.MemoryBytes > 0 {
		return int64(s.Deploy.Resources.Limits.MemoryBytes)
	}
	return int64(s.MemLimit)
}

// parseGoMemLimit reads a GOMEMLIMIT value the way the Go runtime does: an integer with
// an optional B, KiB, MiB, GiB or TiB suffix.
func parseGoMemLimit(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v << u.shift, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// checkGoMemLimit fails unless GOMEMLIMIT is about 90 % of the container's memory
// limit: at 100 % the kernel kills the container before the collector reacts, and far
// below it the heap is squeezed for nothing.
func checkGoMemLimit(t *testing.T, where, gomemlimit string, limit int64) {
	t.Helper()
	if limit <= 0 {
		t.Errorf("%s: no memory limit: GOMEMLIMIT has nothing to stay under", where)
		return
	}
	v, err := parseGoMemLimit(gomemlimit)
	if err != nil || v <= 0 {
		t.Errorf("%s: GOMEMLIMIT %q is not a byte count the Go runtime reads (%v)", where, gomemlimit, err)
		return
	}
	if r := float64(v) / float64(limit); r < 0.85 || r > 0.95 {
		t.Errorf("%s: GOMEMLIMIT %s is %.0f %% of the %d-byte memory limit, want about 90 %%", where, gomemlimit, 100*r, limit)
	}
}

func TestCompose_KeygateGOMEMLIMITIsNinetyPercentOfItsMemoryLimit(t *testing.T) {
	kg := service(t, mustLoadCompose(t), "keygate")
	checkGoMemLimit(t, "compose keygate", env(kg, "GOMEMLIMIT"), memoryLimit(kg))
}

// The management API mints keys and the gRPC port tells whether a token is a key: other
// hosts have no business with either. Envoy reaches keygate over the compose network.
func TestCompose_KeygatePortsArePublishedOnTheHostsLoopbackOnly(t *testing.T) {
	kg := service(t, mustLoadCompose(t), "keygate")
	for _, port := range kg.Ports {
		if port.HostIP != "127.0.0.1" {
			t.Errorf("keygate's port %d is published on %q, want 127.0.0.1", port.Target, port.HostIP)
		}
	}
}
