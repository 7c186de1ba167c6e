package envoy

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Every extension a typed_config in envoy.yaml or istio/envoy-filter.yaml names.
	// Importing a package registers its messages, which is how protojson and
	// Any.UnmarshalNew find them; a @type not listed here fails the loader.
	// (ext_authz is imported by name above.)
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/fixed_heap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// identityHeaders are the upstream headers keygate sets on an allow (SPEC §3). Whoever
// can send one of them past Envoy can claim any identity, so the edge strips them all.
var identityHeaders = []string{
	"x-keygate-key-id",
	"x-keygate-org-id",
	"x-keygate-user-id",
	"x-keygate-scopes",
	"x-keygate-key-type",
	"x-keygate-environment",
	"x-keygate-project-ids",
}

// extAuthzNamespace is the dynamic-metadata namespace Envoy files keygate's
// CheckResponse.dynamic_metadata under: the ext_authz filter's name.
const extAuthzNamespace = "envoy.filters.http.ext_authz"

// loadBootstrap parses an Envoy bootstrap the way Envoy does: YAML to JSON, then a
// strict protojson unmarshal (an unknown field or an unregistered @type is an error),
// then every nested Any unpacked and every message checked against its
// protoc-gen-validate rules. The error lists every problem found, each with its path.
func loadBootstrap(data []byte) (*bootstrapv3.Bootstrap, error) {
	b := &bootstrapv3.Bootstrap{}
	if err := unmarshalYAMLProto(data, b); err != nil {
		return nil, err
	}
	if err := checkTree("bootstrap", b); err != nil {
		return nil, err
	}
	return b, nil
}

// unmarshalYAMLProto is a strict protojson unmarshal of a YAML document into m.
func unmarshalYAMLProto(data []byte, m proto.Message) error {
	// Strict: a key given twice is an error, not "the last one wins".
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// checkTree validates m and every message below it, unpacking each google.protobuf.Any
// (protoc-gen-validate does not look inside an Any, so each unpacked message is
// validated on its own). It also rejects deprecated fields: Envoy only warns about them,
// and they are the ones the next Envoy release removes.
func checkTree(path string, m proto.Message) error {
	var errs []error
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	} else {
		errs = append(errs, fmt.Errorf("%s: %s has no ValidateAll method", path, m.ProtoReflect().Descriptor().FullName()))
	}
	walkMessage(path, m.ProtoReflect(), func(p string, a *anypb.Any) {
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", p, a.GetTypeUrl(), err))
			return
		}
		errs = append(errs, checkTree(fmt.Sprintf("%s(%s)", p, inner.ProtoReflect().Descriptor().Name()), inner))
	}, func(p string) {
		errs = append(errs, fmt.Errorf("%s: deprecated field", p))
	})
	return errors.Join(errs...)
}

// walkMessage calls onAny for every Any below m (without descending into it) and
// onDeprecated for every set field marked deprecated.
func walkMessage(path string, m protoreflect.Message, onAny func(string, *anypb.Any), onDeprecated func(string)) {
	visit := func(p string, v protoreflect.Message) {
		if a, ok := v.Interface().(*anypb.Any); ok {
			onAny(p, a)
			return
		}
		walkMessage(p, v, onAny, onDeprecated)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			onDeprecated(p)
		}
		switch {
		case fd.IsList():
			if fd.Message() == nil {
				break
			}
			l := v.List()
			for i := range l.Len() {
				visit(fmt.Sprintf("%s[%d]", p, i), l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				break
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				visit(fmt.Sprintf("%s[%s]", p, k.String()), mv.Message())
				return true
			})
		case fd.Message() != nil:
			visit(p, v.Message())
		}
		return true
	})
}

// unpack unmarshals a into a new T, for tests that look inside a typed_config.
func unpack[T any, PT interface {
	*T
	proto.Message
}](a *anypb.Any) (PT, error) {
	m := PT(new(T))
	if err := a.UnmarshalTo(m); err != nil {
		return nil, fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
	}
	return m, nil
}

// removesHeader reports whether the header_mutation request mutations remove the
// (lower-case, as Envoy stores it) header name.
func removesHeader(mutations []*mutationrulesv3.HeaderMutation, name string) bool {
	for _, m := range mutations {
		if m.GetRemove() == name {
			return true
		}
		if km := m.GetRemoveOnMatch().GetKeyMatcher(); km != nil && stringMatches(km, name) {
			return true
		}
	}
	return false
}

// stringMatches evaluates an Envoy StringMatcher the way Envoy does.
func stringMatches(m *matcherv3.StringMatcher, s string) bool {
	fold := func(x string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(x)
		}
		return x
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return fold(s) == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(fold(s), fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(fold(s), fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(fold(s), fold(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		// RE2 and Go's regexp agree; Envoy's safe_regex matches the whole string.
		re, err := regexp.Compile(`^(?:` + p.SafeRegex.GetRegex() + `)$`)
		return err == nil && re.MatchString(s)
	}
	return false
}

// keygateReads are the request headers keygate decides on (SPEC §3): the two credential
// headers, the request id, the client-address header the configs here name, and the
// identity headers (keygate removes client-sent ones on allow).
var keygateReads = append([]string{"authorization", "x-api-key", "x-request-id", "x-envoy-external-address"}, identityHeaders...)

// keygateIgnores are headers of a client's request that keygate never reads, so they
// must not reach it: session cookies, bodies' metadata, other proxies' lists.
var keygateIgnores = []string{"cookie", "content-type", "content-length", "user-agent", "x-forwarded-for", "x-csrf-token", "proxy-authorization", "accept"}

// checkAllowedHeaders fails when ext_authz would send keygate more than it reads (with
// no allowed_headers a gRPC authorization server gets every header) or leaves out one it
// needs.
func checkAllowedHeaders(t *testing.T, where string, authz *extauthzv3.ExtAuthz) {
	t.Helper()
	allowed := authz.GetAllowedHeaders()
	if len(allowed.GetPatterns()) == 0 {
		t.Fatalf("%s: ext_authz has no allowed_headers: every header of every request, cookies included, goes to keygate", where)
	}
	sent := func(h string) bool {
		return slices.ContainsFunc(allowed.GetPatterns(), func(m *matcherv3.StringMatcher) bool { return stringMatches(m, h) }) &&
			!slices.ContainsFunc(authz.GetDisallowedHeaders().GetPatterns(), func(m *matcherv3.StringMatcher) bool { return stringMatches(m, h) })
	}
	for _, h := range keygateReads {
		for _, spelling := range []string{h, strings.ToUpper(h)} {
			if !sent(spelling) {
				t.Errorf("%s: ext_authz does not send %s, which keygate reads", where, spelling)
			}
		}
	}
	for _, h := range keygateIgnores {
		if sent(h) {
			t.Errorf("%s: ext_authz sends %s, which keygate does not read", where, h)
		}
	}
}
