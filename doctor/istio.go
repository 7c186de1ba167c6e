package doctor

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// providers checks meshConfig.extensionProviders (Istio MeshConfig, the
// istiod chart's values, or an IstioOperator's spec.meshConfig).
func (c *checker) providers(file string, list *yaml.Node) {
	for _, p := range list.Content {
		for _, kind := range []string{"envoyExtAuthzGrpc", "envoyExtAuthzHttp"} {
			k, cfg := get(p, kind)
			if cfg == nil {
				continue
			}
			if fk, v := get(cfg, "failOpen"); isTrue(v) {
				c.add(Error, file, fk, "istio-fail-open",
					"failOpen: true lets every request through when keygate is down or slow; set it to false")
			}
			if tk, v := get(cfg, "timeout"); v == nil {
				c.add(Warning, file, k, "istio-provider-no-timeout",
					"%s has no timeout: Istio's default is 600s, so a stuck keygate holds every request for ten minutes; set timeout: 0.2s", kind)
			} else if d, ok := duration(v); ok && d > maxTimeout {
				c.add(Warning, file, tk, "ext-authz-timeout",
					"ext_authz timeout %s is above 1s: a stuck keygate holds every request that long (keygate answers in well under a millisecond; 0.2s is plenty)", d)
			}
			if kind != "envoyExtAuthzHttp" {
				continue // a gRPC provider sends every header
			}
			if bk, v := get(cfg, "includeRequestBodyInCheck"); v != nil {
				c.add(Warning, file, bk, "request-body-sent",
					"includeRequestBodyInCheck sends request bodies to keygate, which reads only headers: it buffers requests and puts payloads in keygate's process; remove it")
			}
			uk, up := get(cfg, "headersToUpstreamOnAllow")
			if up == nil {
				uk = k
			}
			if up == nil || !istioHeaderMatch(up, c.opts.HeaderPrefix+"key-id") {
				c.add(Warning, file, uk, "identity-headers-not-forwarded",
					"headersToUpstreamOnAllow does not let keygate's %s* headers through: the upstream never learns which key, user or organization called; add %q", c.opts.HeaderPrefix, c.opts.HeaderPrefix+"*")
			}
			// Istio's HTTP provider sends only host, method, path and
			// content-length unless told otherwise.
			hk, hs := get(cfg, "includeRequestHeadersInCheck")
			if hk == nil {
				hk = k
			}
			c.allowedHeaders(file, hk, func(name string) bool {
				return hs != nil && istioHeaderMatch(hs, name)
			})
		}
	}
}

// istioHeaderMatch is Istio's header list matching: case-insensitive, with
// "prefix*", "*suffix" and "*".
func istioHeaderMatch(list *yaml.Node, name string) bool {
	for _, n := range list.Content {
		p := strings.ToLower(scalar(n))
		switch {
		case p == "*":
			return true
		case strings.HasSuffix(p, "*") && strings.HasPrefix(name, strings.TrimSuffix(p, "*")),
			strings.HasPrefix(p, "*") && strings.HasSuffix(name, strings.TrimPrefix(p, "*")),
			p == name:
			return true
		}
	}
	return false
}

// authorizationPolicy records a CUSTOM policy: whether it is safe depends on
// the EnvoyFilters of the other files (crossFile).
func (c *checker) authorizationPolicy(file string, doc *yaml.Node) {
	ak, action := path(doc, "spec", "action")
	if scalar(action) != "CUSTOM" {
		return
	}
	rk, rules := path(doc, "spec", "rules")
	if rules != nil && len(rules.Content) == 0 {
		rk = nil
	}
	c.customPolicies = append(c.customPolicies, policyRef{file: file, action: ak, rules: rk})
}

// envoyFilter notes an EnvoyFilter patch that strips the identity headers
// ahead of ext_authz: inserted before the ext_authz filter, or first.
func (c *checker) envoyFilter(doc *yaml.Node) {
	_, patches := path(doc, "spec", "configPatches")
	if patches == nil {
		return
	}
	for _, p := range patches.Content {
		_, op := path(p, "patch", "operation")
		_, sub := path(p, "match", "listener", "filterChain", "filter", "subFilter", "name")
		_, tc := path(p, "patch", "value", "typed_config")
		before := scalar(op) == "INSERT_FIRST" ||
			scalar(op) == "INSERT_BEFORE" && scalar(sub) == "envoy.filters.http.ext_authz"
		if before && c.strips(tc) {
			c.istioStrips = true
		}
	}
}

// crossFile runs the rules that need every file: a CUSTOM
// AuthorizationPolicy needs an EnvoyFilter that strips the identity headers.
func (c *checker) crossFile() {
	if c.istioStrips {
		return
	}
	for _, p := range c.customPolicies {
		c.add(Error, p.file, p.action, "identity-headers-not-stripped",
			"no EnvoyFilter among the files inserts a filter that strips client-sent %s* headers before ext_authz: add one (header_mutation, remove_on_match {prefix: %q, ignore_case: true}, INSERT_BEFORE envoy.filters.http.ext_authz), or a client forges its identity", c.opts.HeaderPrefix, c.opts.HeaderPrefix)
		if p.rules != nil {
			c.add(Error, p.file, p.rules, "route-skips-ext-authz-unstripped",
				"requests these rules leave out never reach keygate while client-sent %s* headers are not stripped: the upstream trusts whatever identity the client sends there", c.opts.HeaderPrefix)
		}
	}
}

// meshConfigMap checks the MeshConfig that the istio ConfigMap holds as a
// YAML string in data.mesh, with line numbers of the ConfigMap file.
func (c *checker) meshConfigMap(file string, doc *yaml.Node) {
	_, mesh := path(doc, "data", "mesh")
	if mesh == nil || mesh.Kind != yaml.ScalarNode {
		return
	}
	docs, err := parse([]byte(mesh.Value))
	if err != nil {
		return // not ours to judge: istiod reports it
	}
	delta := mesh.Line - 1
	if mesh.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		delta = mesh.Line // a block scalar starts on the next line
	}
	for _, d := range docs {
		shift(d, delta)
		c.document(file, d)
	}
}

func shift(n *yaml.Node, delta int) {
	n.Line += delta
	for _, ch := range n.Content {
		shift(ch, delta)
	}
}
