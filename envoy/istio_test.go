package envoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1 "istio.io/api/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// istioObject is an Istio custom resource: Kubernetes' envelope around a spec that is
// one of Istio's API protos.
type istioObject struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            json.RawMessage   `json:"spec"`
}

// unmarshalStrictYAML decodes YAML the way the Kubernetes API server decodes a
// manifest: field names match case-sensitively, and unknown or repeated fields are
// errors. (sigs.k8s.io/yaml.UnmarshalStrict uses encoding/json, whose field matching
// ignores case: it would take readOnlyRootFileSystem for readOnlyRootFilesystem, which
// Kubernetes drops.)
func unmarshalStrictYAML(data []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// yamlDocs splits a multi-document YAML file, dropping documents that hold only comments.
func yamlDocs(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		js, err := yaml.YAMLToJSONStrict([]byte(d))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if string(js) != "null" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

// loadIstioObject strictly unmarshals the only document of path as an Istio resource of
// the given kind, with its spec parsed strictly into spec.
func loadIstioObject(t *testing.T, path, apiVersion, kind string, spec proto.Message) metav1.ObjectMeta {
	t.Helper()
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: got %d documents, want 1", path, len(docs))
	}
	var obj istioObject
	if err := unmarshalStrictYAML(docs[0], &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if obj.APIVersion != apiVersion || obj.Kind != kind {
		t.Fatalf("%s: got %s %s, want %s %s", path, obj.APIVersion, obj.Kind, apiVersion, kind)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(obj.Spec, spec); err != nil {
		t.Fatalf("%s: spec is not a valid %s: %v", path, spec.ProtoReflect().Descriptor().FullName(), err)
	}
	return obj.Metadata
}

// manifests is istio/namespace.yaml and istio/keygate.yaml, each object strictly decoded
// into its Kubernetes type.
type manifests struct {
	namespace  *corev1.Namespace
	deployment *appsv1.Deployment
	service    *corev1.Service
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	// The Namespace has a file of its own: the Secret is created in it before
	// keygate.yaml's Deployment starts.
	const nsPath = "istio/namespace.yaml"
	docs := yamlDocs(t, nsPath)
	if len(docs) != 1 {
		t.Fatalf("%s: got %d documents, want 1", nsPath, len(docs))
	}
	m.namespace = &corev1.Namespace{}
	if err := unmarshalStrictYAML(docs[0], m.namespace); err != nil {
		t.Fatalf("%s: %v", nsPath, err)
	}
	if m.namespace.APIVersion != "v1" || m.namespace.Kind != "Namespace" {
		t.Fatalf("%s: got %s %s, want v1 Namespace", nsPath, m.namespace.APIVersion, m.namespace.Kind)
	}
	const path = "istio/keygate.yaml"
	for i, doc := range yamlDocs(t, path) {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "apps/v1 Deployment":
			m.deployment = &appsv1.Deployment{}
			obj = m.deployment
		case "v1 Service":
			m.service = &corev1.Service{}
			obj = m.service
		case "policy/v1 PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, meta.APIVersion, meta.Kind)
		}
		if err := unmarshalStrictYAML(doc, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", path, i, meta.Kind, err)
		}
	}
	if m.deployment == nil || m.service == nil {
		t.Fatalf("%s needs a Deployment and a Service", path)
	}
	return m
}

// keygateContainer is the Deployment's keygate container.
func keygateContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == "keygate" })
	if i < 0 {
		t.Fatal("no container named keygate")
	}
	return cs[i]
}

// setting is what a keygate flag is set to in a container: the flag in args, else its
// KEYGATE_* variable (a literal value), else "".
func setting(c corev1.Container, flag string) string {
	args := append(slices.Clone(c.Command), c.Args...)
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	name := "KEYGATE_" + strings.ToUpper(strings.ReplaceAll(strings.TrimPrefix(flag, "--"), "-", "_"))
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// meshProvider is the keygate entry of istio/mesh-config.yaml, plus the raw JSON of it
// (to see which fields are written out, which a proto3 bool cannot tell).
func meshProvider(t *testing.T, name string) (*meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider, map[string]any) {
	t.Helper()
	const path = "istio/mesh-config.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := unmarshalStrictYAML(data, &values); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var mesh meshv1alpha1.MeshConfig
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(values.MeshConfig, &mesh); err != nil {
		t.Fatalf("%s: meshConfig is not a valid MeshConfig: %v", path, err)
	}
	var raw struct {
		ExtensionProviders []map[string]any `json:"extensionProviders"`
	}
	if err := json.Unmarshal(values.MeshConfig, &raw); err != nil {
		t.Fatal(err)
	}
	for i, p := range mesh.GetExtensionProviders() {
		if p.GetName() != name {
			continue
		}
		grpc := p.GetEnvoyExtAuthzGrpc()
		if grpc == nil {
			t.Fatalf("%s: provider %q is not envoyExtAuthzGrpc", path, name)
		}
		rawGRPC, _ := raw.ExtensionProviders[i]["envoyExtAuthzGrpc"].(map[string]any)
		return grpc, rawGRPC
	}
	t.Fatalf("%s: no extension provider %q", path, name)
	return nil, nil
}

func loadAuthorizationPolicy(t *testing.T) (metav1.ObjectMeta, *securityv1.AuthorizationPolicy) {
	t.Helper()
	var ap securityv1.AuthorizationPolicy
	meta := loadIstioObject(t, "istio/authorization-policy.yaml", "security.istio.io/v1", "AuthorizationPolicy", &ap)
	return meta, &ap
}

func TestIstio_MeshProviderFailsClosedWithTimeout(t *testing.T) {
	_, ap := loadAuthorizationPolicy(t)
	m := loadManifests(t)
	grpc, raw := meshProvider(t, ap.GetProvider().GetName())

	wantHost := fmt.Sprintf("%s.%s.svc.cluster.local", m.service.Name, m.service.Namespace)
	if grpc.GetService() != wantHost {
		t.Errorf("provider service = %q, want %q (the Service in keygate.yaml)", grpc.GetService(), wantHost)
	}
	if grpc.GetPort() != defaultGRPCPort {
		t.Errorf("provider port = %d, want keygate's gRPC port %d", grpc.GetPort(), defaultGRPCPort)
	}
	// Istio's default is 600s; without an explicit timeout a stuck keygate holds
	// requests for ten minutes.
	if _, ok := raw["timeout"]; !ok || grpc.GetTimeout().AsDuration() <= 0 || grpc.GetTimeout().AsDuration() > time.Second {
		t.Errorf("provider timeout = %v, want written out and at most 1s", grpc.GetTimeout().AsDuration())
	}
	if v, ok := raw["failOpen"]; !ok || v != false || grpc.GetFailOpen() {
		t.Errorf("provider failOpen = %v, want written out as false", raw["failOpen"])
	}
}

func TestIstio_AuthorizationPolicyIsCustomOnEveryPathButHealthz(t *testing.T) {
	_, ap := loadAuthorizationPolicy(t)
	if ap.GetAction() != securityv1.AuthorizationPolicy_CUSTOM {
		t.Errorf("action = %v, want CUSTOM", ap.GetAction())
	}
	if ap.GetProvider().GetName() == "" {
		t.Error("no provider name")
	}
	if len(ap.GetSelector().GetMatchLabels()) == 0 {
		t.Error("no selector: the policy would apply to every workload of its namespace")
	}
	// A CUSTOM policy triggers only where a rule matches: no rules means no checks.
	if len(ap.GetRules()) == 0 {
		t.Fatal("no rules: keygate would never be asked")
	}
	for i, r := range ap.GetRules() {
		if len(r.GetFrom()) != 0 || len(r.GetWhen()) != 0 {
			t.Errorf("rules[%d] narrows the check by source or condition", i)
		}
		for _, to := range r.GetTo() {
			op := to.GetOperation()
			if len(op.GetPaths()) != 0 || len(op.GetHosts()) != 0 || len(op.GetMethods()) != 0 || len(op.GetPorts()) != 0 ||
				len(op.GetNotHosts()) != 0 || len(op.GetNotMethods()) != 0 || len(op.GetNotPorts()) != 0 {
				t.Errorf("rules[%d] narrows the check to some requests: %v", i, op)
			}
			for _, p := range op.GetNotPaths() {
				if p != "/healthz" {
					t.Errorf("rules[%d] exempts %q from keygate", i, p)
				}
			}
		}
	}
}

func TestIstio_EnvoyFilterStripsIdentityHeadersBeforeExtAuthz(t *testing.T) {
	apMeta, ap := loadAuthorizationPolicy(t)
	var ef networkingv1alpha3.EnvoyFilter
	meta := loadIstioObject(t, "istio/envoy-filter.yaml", "networking.istio.io/v1alpha3", "EnvoyFilter", &ef)

	if meta.Namespace != apMeta.Namespace {
		t.Errorf("EnvoyFilter is in namespace %q, the AuthorizationPolicy in %q", meta.Namespace, apMeta.Namespace)
	}
	if diff := cmp.Diff(ap.GetSelector().GetMatchLabels(), ef.GetWorkloadSelector().GetLabels()); diff != "" {
		t.Errorf("EnvoyFilter selects other workloads than the AuthorizationPolicy (-policy +filter):\n%s", diff)
	}
	var strips []*networkingv1alpha3.EnvoyFilter_EnvoyConfigObjectPatch
	for _, p := range ef.GetConfigPatches() {
		if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
			strips = append(strips, p)
		}
	}
	if len(strips) == 0 {
		t.Fatal("no configPatches besides MERGE ones")
	}
	for i, p := range strips {
		if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER {
			t.Errorf("configPatches[%d] applies to %v, want HTTP_FILTER", i, p.GetApplyTo())
		}
		filter := p.GetMatch().GetListener().GetFilterChain().GetFilter()
		if filter.GetName() != "envoy.filters.network.http_connection_manager" || filter.GetSubFilter().GetName() != extAuthzNamespace {
			t.Errorf("configPatches[%d] matches filter %q sub-filter %q, want the HCM's %s", i, filter.GetName(), filter.GetSubFilter().GetName(), extAuthzNamespace)
		}
		if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_INSERT_BEFORE {
			t.Errorf("configPatches[%d] operation %v, want INSERT_BEFORE", i, p.GetPatch().GetOperation())
		}

		// The patch value is what Istio hands Envoy: parse it as go-control-plane's
		// HttpFilter, with the same strictness as envoy.yaml.
		js, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		var hf hcmv3.HttpFilter
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &hf); err != nil {
			t.Fatalf("configPatches[%d] value is not an Envoy HttpFilter: %v", i, err)
		}
		if err := checkTree(fmt.Sprintf("configPatches[%d]", i), &hf); err != nil {
			t.Fatal(err)
		}
		if hf.GetName() != "envoy.filters.http.header_mutation" {
			t.Errorf("configPatches[%d] inserts %q, want envoy.filters.http.header_mutation", i, hf.GetName())
		}
		hm, err := unpack[headermutationv3.HeaderMutation](hf.GetTypedConfig())
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range identityHeaders {
			if !removesHeader(hm.GetMutations().GetRequestMutations(), h) {
				t.Errorf("configPatches[%d] does not remove client-sent %s", i, h)
			}
		}
		for _, h := range []string{"authorization", "x-api-key", "x-request-id"} {
			if removesHeader(hm.GetMutations().GetRequestMutations(), h) {
				t.Errorf("configPatches[%d] removes %s, which keygate needs", i, h)
			}
		}
	}
}

// Istio's envoyExtAuthzGrpc provider has no allowed_headers: a MERGE into the gateway's
// ext_authz filter adds them, so cookies and unrelated headers stay away from keygate.
func TestIstio_EnvoyFilterSendsKeygateOnlyTheHeadersItReads(t *testing.T) {
	_, ap := loadAuthorizationPolicy(t)
	var ef networkingv1alpha3.EnvoyFilter
	loadIstioObject(t, "istio/envoy-filter.yaml", "networking.istio.io/v1alpha3", "EnvoyFilter", &ef)
	var merges int
	for i, p := range ef.GetConfigPatches() {
		if p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
			continue
		}
		merges++
		where := fmt.Sprintf("configPatches[%d]", i)
		filter := p.GetMatch().GetListener().GetFilterChain().GetFilter()
		if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_HTTP_FILTER || p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_GATEWAY ||
			filter.GetName() != "envoy.filters.network.http_connection_manager" || filter.GetSubFilter().GetName() != extAuthzNamespace {
			t.Errorf("%s merges into %v %v %q/%q, want the gateway HCM's %s", where, p.GetApplyTo(), p.GetMatch().GetContext(), filter.GetName(), filter.GetSubFilter().GetName(), extAuthzNamespace)
		}
		js, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			t.Fatal(err)
		}
		var hf hcmv3.HttpFilter
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &hf); err != nil {
			t.Fatalf("%s value is not an Envoy HttpFilter: %v", where, err)
		}
		if err := checkTree(where, &hf); err != nil {
			t.Fatal(err)
		}
		authz, err := unpack[extauthzv3.ExtAuthz](hf.GetTypedConfig())
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		checkAllowedHeaders(t, where, authz)
		// Only allowed_headers: everything else stays as mesh-config.yaml's provider sets it.
		only := &extauthzv3.ExtAuthz{AllowedHeaders: authz.GetAllowedHeaders()}
		if !proto.Equal(authz, only) {
			t.Errorf("%s sets more than allowed_headers: %v", where, authz)
		}
	}
	if merges != 1 {
		t.Errorf("got %d MERGE patches, want 1 (allowed_headers on %s)", merges, ap.GetProvider().GetName())
	}
}

// Behind a cloud load balancer every client reaches the gateway as a node address unless
// the gateway keeps the client's: then keygate, counting failed keys per TCP peer, would
// lock everyone behind that node out after one scanner's 60 bad keys.
func TestIstio_KeygateCountsFailuresPerClientAddressTheGatewaySets(t *testing.T) {
	c := keygateContainer(t, loadManifests(t).deployment)
	if got := setting(c, "--client-ip-header"); got != "x-envoy-external-address" {
		t.Errorf("keygate's --client-ip-header (or KEYGATE_CLIENT_IP_HEADER) = %q, want x-envoy-external-address", got)
	}

	const path = "istio/gateway-values.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Service struct {
			ExternalTrafficPolicy string `json:"externalTrafficPolicy"`
		} `json:"service"`
		PodAnnotations map[string]string `json:"podAnnotations"`
	}
	if err := unmarshalStrictYAML(data, &values); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if values.Service.ExternalTrafficPolicy != "Local" {
		t.Errorf("%s: service.externalTrafficPolicy = %q, want Local", path, values.Service.ExternalTrafficPolicy)
	}
	annotation, ok := values.PodAnnotations["proxy.istio.io/config"]
	if !ok {
		t.Fatalf("%s: no podAnnotations proxy.istio.io/config", path)
	}
	js, err := yaml.YAMLToJSONStrict([]byte(annotation))
	if err != nil {
		t.Fatalf("%s: proxy.istio.io/config: %v", path, err)
	}
	var pc meshv1alpha1.ProxyConfig
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &pc); err != nil {
		t.Fatalf("%s: proxy.istio.io/config is not a valid ProxyConfig: %v", path, err)
	}
	var raw struct {
		GatewayTopology map[string]any `json:"gatewayTopology"`
	}
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatal(err)
	}
	// 0 is the default; written out, it is a setting an operator sees and sets.
	if _, ok := raw.GatewayTopology["numTrustedProxies"]; !ok {
		t.Errorf("%s: gatewayTopology.numTrustedProxies is not written out", path)
	}
	if got := pc.GetConnectionSettings().GetProfile(); got != meshv1alpha1.ProxyConfig_ConnectionSettings_EDGE {
		t.Errorf("%s: connectionSettings.profile = %v, want EDGE", path, got)
	}
}

// SPEC §6: on SIGTERM keygate stays up, not ready, for --shutdown-delay, then finishes
// in-flight Checks for up to --shutdown-timeout. The kubelet must not SIGKILL it, nor
// the sidecar stop carrying the gateway's Checks, before that is over.
func TestIstio_TerminationOutlastsKeygatesShutdown(t *testing.T) {
	d := loadManifests(t).deployment
	c := keygateContainer(t, d)
	duration := func(flag, def string) time.Duration {
		v := setting(c, flag)
		if v == "" {
			v = def
		}
		dur, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s = %q: %v", flag, v, err)
		}
		return dur
	}
	shutdown := duration("--shutdown-delay", "5s") + duration("--shutdown-timeout", "10s")
	var preStop time.Duration
	if h := c.Lifecycle; h != nil && h.PreStop != nil {
		if h.PreStop.Sleep == nil {
			t.Fatal("preStop is not a sleep action: the image has no shell to run a command")
		}
		preStop = time.Duration(h.PreStop.Sleep.Seconds) * time.Second
	}
	const margin = 5 * time.Second
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second < preStop+shutdown+margin {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least preStop %v + shutdown delay and timeout %v + %v", grace, preStop, shutdown, margin)
	}

	annotation, ok := d.Spec.Template.Annotations["proxy.istio.io/config"]
	if !ok {
		t.Fatalf("the pod template has no proxy.istio.io/config annotation: the sidecar drains for Istio's default 5 s, less than keygate's shutdown (%v)", preStop+shutdown)
	}
	js, err := yaml.YAMLToJSONStrict([]byte(annotation))
	if err != nil {
		t.Fatalf("proxy.istio.io/config: %v", err)
	}
	var pc meshv1alpha1.ProxyConfig
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &pc); err != nil {
		t.Fatalf("proxy.istio.io/config is not a valid ProxyConfig: %v", err)
	}
	// Istio's default drain is 5 s: the sidecar would stop mid-delay.
	if drain := pc.GetTerminationDrainDuration().AsDuration(); drain < preStop+shutdown {
		t.Errorf("sidecar terminationDrainDuration = %v, want at least %v (keygate's preStop, delay and timeout)", drain, preStop+shutdown)
	}
	if drain := pc.GetTerminationDrainDuration().AsDuration(); grace != nil && drain > time.Duration(*grace)*time.Second {
		t.Errorf("sidecar terminationDrainDuration = %v outlasts terminationGracePeriodSeconds %d", drain, *grace)
	}
}

func TestIstio_DeploymentGOMEMLIMITIsNinetyPercentOfItsMemoryLimit(t *testing.T) {
	c := keygateContainer(t, loadManifests(t).deployment)
	limit := c.Resources.Limits.Memory().Value()
	var gomemlimit string
	for _, e := range c.Env {
		if e.Name == "GOMEMLIMIT" {
			if e.ValueFrom != nil {
				t.Fatal("GOMEMLIMIT comes from a resourceFieldRef: that is 100 % of the limit, which leaves the runtime no room")
			}
			gomemlimit = e.Value
		}
	}
	checkGoMemLimit(t, "istio keygate", gomemlimit, limit)
}

// The Deployment's pods cannot start without the database Secret: the instructions create
// it first, in a namespace created before both.
func TestIstio_READMECreatesTheSecretBeforeTheDeployment(t *testing.T) {
	data, err := os.ReadFile("istio/README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	steps := []string{"kubectl apply -f namespace.yaml", "create secret generic keygate-database", "kubectl apply -f keygate.yaml"}
	last := -1
	for _, s := range steps {
		i := strings.Index(readme, s)
		if i < 0 {
			t.Fatalf("istio/README.md has no %q", s)
		}
		if i < last {
			t.Errorf("istio/README.md runs %q too early: want %q in that order", s, steps)
		}
		last = i
	}
}

// minIstio is the oldest Istio that runs these files: it ships Envoy 1.36 (minEnvoy).
const minIstio = "1.28"

func TestIstio_StatesTheIstioVersionItNeeds(t *testing.T) {
	for _, path := range []string{"istio/README.md", "istio/envoy-filter.yaml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := "Istio " + minIstio + " or later"; !strings.Contains(strings.Join(strings.Fields(strings.ReplaceAll(string(data), "#", "")), " "), want) {
			t.Errorf("%s does not say %q", path, want)
		}
	}
}

func TestIstio_DeploymentIsProbedAndLockedDown(t *testing.T) {
	m := loadManifests(t)
	d := m.deployment
	if d.Namespace != m.namespace.Name {
		t.Errorf("Deployment is in namespace %q, want %q", d.Namespace, m.namespace.Name)
	}
	pod := d.Spec.Template.Spec
	i := slices.IndexFunc(pod.Containers, func(c corev1.Container) bool { return c.Name == "keygate" })
	if i < 0 {
		t.Fatal("no container named keygate")
	}
	c := pod.Containers[i]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if diff := cmp.Diff(map[string]int32{"grpc": defaultGRPCPort, "http": defaultHTTPPort}, ports); diff != "" {
		t.Errorf("container ports mismatch (-want +got):\n%s", diff)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s is not an HTTP probe", p.name)
			continue
		}
		port := p.probe.HTTPGet.Port.IntVal
		if p.probe.HTTPGet.Port.StrVal != "" {
			port = ports[p.probe.HTTPGet.Port.StrVal]
		}
		if p.probe.HTTPGet.Path != p.path || port != defaultHTTPPort {
			t.Errorf("%s probes %s on port %d, want %s on %d", p.name, p.probe.HTTPGet.Path, port, p.path, defaultHTTPPort)
		}
	}

	sc := c.SecurityContext
	nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) ||
		(pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot)
	if !nonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) != 0 {
		t.Error("capabilities do not drop ALL (or add some back)")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	j := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KEYGATE_DATABASE_URL" })
	if j < 0 || c.Env[j].Value != "" || c.Env[j].ValueFrom == nil || c.Env[j].ValueFrom.SecretKeyRef == nil {
		t.Error("KEYGATE_DATABASE_URL does not come from a Secret")
	}
}

func TestIstio_ServiceExposesGRPCAndHTTP(t *testing.T) {
	m := loadManifests(t)
	s := m.service
	if s.Namespace != m.namespace.Name {
		t.Errorf("Service is in namespace %q, want %q", s.Namespace, m.namespace.Name)
	}
	podLabels := m.deployment.Spec.Template.Labels
	for k, v := range s.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%s does not match the Deployment's pods (%v)", k, v, podLabels)
		}
	}
	type port struct {
		Port        int32
		Target      string
		AppProtocol string
	}
	got := map[string]port{}
	for _, p := range s.Spec.Ports {
		ap := ""
		if p.AppProtocol != nil {
			ap = *p.AppProtocol
		}
		got[p.Name] = port{p.Port, p.TargetPort.String(), ap}
	}
	want := map[string]port{
		"grpc": {defaultGRPCPort, "grpc", "grpc"},
		"http": {defaultHTTPPort, "http", "http"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Service ports mismatch (-want +got):\n%s", diff)
	}
}
