// Package doctor reads Envoy and Istio configuration and reports how it can
// let a request past keygate or break it (SPEC §14): fail-open settings,
// headers keygate never sees, identity headers a client can forge, paths
// Envoy routes on differently from the upstream. Each finding names the file
// and the line of the offending key.
package doctor

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"go.yaml.in/yaml/v3"
)

// Severity is how bad a finding is: an error lets a request past keygate or
// leaves it blind, a warning weakens it.
type Severity string

// The two severities.
const (
	Error   Severity = "error"
	Warning Severity = "warning"
)

// Finding is one problem in one file.
type Finding struct {
	Severity Severity `json:"severity"`
	File     string   `json:"file"`
	Line     int      `json:"line"`
	Rule     string   `json:"rule"`
	Message  string   `json:"message"`
}

// String is the finding's one-line text form.
func (f Finding) String() string {
	return fmt.Sprintf("%s %s:%d: %s [%s]", f.Severity, f.File, f.Line, f.Message, f.Rule)
}

// Options are the keygate settings the configuration must fit.
type Options struct {
	// HeaderPrefix is keygate's --header-prefix: the identity headers a
	// client must not be able to send.
	HeaderPrefix string
	// ClientIPHeader is keygate's --client-ip-header, if any: it must reach
	// keygate.
	ClientIPHeader string
}

// DefaultHeaderPrefix is keygate's default --header-prefix.
const DefaultHeaderPrefix = "x-keygate-"

// Input is one configuration file.
type Input struct {
	Name string
	Data []byte
}

// ParseError is a file that is not YAML or JSON.
type ParseError struct {
	File string
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("%s: %v", e.File, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// Check reads every input and returns its findings, ordered by input, then
// line. The inputs are read together: an Istio AuthorizationPolicy relies on
// an EnvoyFilter in another file to strip the identity headers.
func Check(inputs []Input, opts Options) ([]Finding, error) {
	if opts.HeaderPrefix == "" {
		opts.HeaderPrefix = DefaultHeaderPrefix
	}
	c := &checker{opts: opts}
	for _, in := range inputs {
		docs, err := parse(in.Data)
		if err != nil {
			return nil, &ParseError{File: in.Name, Err: err}
		}
		for _, d := range docs {
			c.document(in.Name, d)
		}
	}
	c.crossFile()
	order := map[string]int{}
	for i, in := range inputs {
		if _, ok := order[in.Name]; !ok {
			order[in.Name] = i
		}
	}
	slices.SortStableFunc(c.findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(order[a.File], order[b.File]), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Rule, b.Rule))
	})
	return c.findings, nil
}

// HasError reports whether any finding is an error.
func HasError(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == Error })
}

// parse returns the top node of every document in data (JSON is YAML).
func parse(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(n.Content) == 1 {
			docs = append(docs, n.Content[0])
		}
	}
}

// checker holds the findings and what the cross-file rules need.
type checker struct {
	opts     Options
	findings []Finding

	// customPolicies are the AuthorizationPolicy documents with action
	// CUSTOM; istioStrips tells whether an EnvoyFilter strips the identity
	// headers ahead of ext_authz.
	customPolicies []policyRef
	istioStrips    bool
}

type policyRef struct {
	file   string
	action *yaml.Node // the key node of spec.action
	rules  *yaml.Node // the key node of spec.rules, nil if none
}

func (c *checker) add(sev Severity, file string, n *yaml.Node, rule, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	c.findings = append(c.findings, Finding{Severity: sev, File: file, Line: line, Rule: rule, Message: fmt.Sprintf(format, args...)})
}

// document runs every rule that applies to one YAML document: the rules
// of its Kubernetes kind, then the Envoy and Istio rules wherever their
// messages sit in it (a bootstrap, an EnvoyFilter patch, an IstioOperator).
func (c *checker) document(file string, doc *yaml.Node) {
	c.kind(file, doc)
	walk(doc, func(m *yaml.Node) {
		switch typeURL(m) {
		case extAuthzType:
			c.extAuthz(file, m)
		case hcmType:
			c.hcm(file, m)
		case perRouteType:
			c.contextExtensions(file, m)
		}
		if _, v := get(m, "extensionProviders"); v != nil && v.Kind == yaml.SequenceNode {
			c.providers(file, v)
		}
	})
}

// kind runs the rules of a Kubernetes resource's kind.
func (c *checker) kind(file string, doc *yaml.Node) {
	_, kind := get(doc, "kind")
	switch scalar(kind) {
	case "AuthorizationPolicy":
		c.authorizationPolicy(file, doc)
	case "EnvoyFilter":
		c.envoyFilter(doc)
	case "ConfigMap":
		c.meshConfigMap(file, doc)
	case "List": // kubectl get -o yaml
		if _, items := get(doc, "items"); items != nil {
			for _, it := range items.Content {
				c.kind(file, deref(it))
			}
		}
	}
}

// Type URLs of the Envoy messages the rules read.
const (
	typePrefix    = "type.googleapis.com/"
	extAuthzType  = typePrefix + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	perRouteType  = typePrefix + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	hcmType       = typePrefix + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	headerMutType = typePrefix + "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
	luaType       = typePrefix + "envoy.extensions.filters.http.lua.v3.Lua"
)

// get returns the key and value nodes of key in mapping m, or nils.
func get(m *yaml.Node, key string) (k, v *yaml.Node) {
	m = deref(m)
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], deref(m.Content[i+1])
		}
	}
	return nil, nil
}

// path follows keys through nested mappings and returns the last key and
// value nodes, or nils.
func path(m *yaml.Node, keys ...string) (k, v *yaml.Node) {
	v = m
	for _, key := range keys {
		k, v = get(v, key)
		if v == nil {
			return nil, nil
		}
	}
	return k, v
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// scalar is n's value if it is a scalar, else "".
func scalar(n *yaml.Node) string {
	if n = deref(n); n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func isTrue(n *yaml.Node) bool {
	var b bool
	return n != nil && n.Kind == yaml.ScalarNode && n.Decode(&b) == nil && b
}

func isFalse(n *yaml.Node) bool {
	var b bool
	return n != nil && n.Kind == yaml.ScalarNode && n.Decode(&b) == nil && !b
}

// typeURL is the "@type" of mapping m, or "".
func typeURL(m *yaml.Node) string {
	_, v := get(m, "@type")
	return scalar(v)
}

// walk calls fn on every mapping under n, n included.
func walk(n *yaml.Node, fn func(m *yaml.Node)) {
	if n == nil {
		return
	}
	if n.Kind == yaml.MappingNode {
		fn(n)
	}
	for _, ch := range n.Content {
		walk(ch, fn)
	}
}
