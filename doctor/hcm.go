package doctor

import (
	"strings"

	"go.yaml.in/yaml/v3"
)

// authzFilters are the HTTP filters that decide whether a request may pass:
// ext_authz must come first among them, so that every request keygate
// would deny is denied before another filter's decision is logged or
// cached, and the identity headers keygate sets are there for the others.
var authzFilters = map[string]string{
	typePrefix + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz":          "ext_authz",
	typePrefix + "envoy.extensions.filters.http.rbac.v3.RBAC":                   "rbac",
	typePrefix + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication": "jwt_authn",
	typePrefix + "envoy.extensions.filters.http.oauth2.v3.OAuth2":               "oauth2",
}

// hcm checks one HttpConnectionManager that runs ext_authz: its path and
// header settings, its HTTP filter chain and its routes.
func (c *checker) hcm(file string, hcm *yaml.Node) {
	_, filters := get(hcm, "http_filters")
	if filters == nil || filters.Kind != yaml.SequenceNode {
		return
	}
	var (
		extAuthz      *yaml.Node // the ext_authz list item
		extAuthzNames = map[string]bool{"envoy.filters.http.ext_authz": true}
		stripped      bool // a strip filter runs before ext_authz
		firstAuthz    string
	)
	for _, f := range filters.Content {
		f = deref(f)
		_, name := get(f, "name")
		_, tc := get(f, "typed_config")
		t := typeURL(tc)
		if kind, ok := authzFilters[t]; ok && firstAuthz == "" {
			firstAuthz = kind
		}
		if t == extAuthzType && extAuthz == nil {
			extAuthz = f
			extAuthzNames[scalar(name)] = true
			if firstAuthz != "ext_authz" {
				c.add(Warning, file, f, "ext-authz-not-first",
					"%s runs before ext_authz: put ext_authz first among the authorization filters (ext_authz, rbac, jwt_authn, oauth2), so no other filter acts on a request keygate denies", firstAuthz)
			}
		}
		if extAuthz == nil && c.strips(tc) {
			stripped = true
		}
	}
	if extAuthz == nil {
		return
	}
	if !stripped {
		c.add(Error, file, extAuthz, "identity-headers-not-stripped",
			"no filter before ext_authz strips client-sent %s* headers: add a header_mutation filter with remove_on_match {prefix: %q, ignore_case: true} before ext_authz, or a client forges its identity on any path that skips keygate", c.opts.HeaderPrefix, c.opts.HeaderPrefix)
		walk(hcm, func(m *yaml.Node) {
			_, tpfc := get(m, "typed_per_filter_config")
			for i := 0; tpfc != nil && i+1 < len(tpfc.Content); i += 2 {
				if !extAuthzNames[tpfc.Content[i].Value] {
					continue
				}
				if k, v := get(tpfc.Content[i+1], "disabled"); isTrue(v) {
					c.add(Error, file, k, "route-skips-ext-authz-unstripped",
						"ext_authz is disabled here while client-sent %s* headers are not stripped: the upstream trusts whatever identity the client sends", c.opts.HeaderPrefix)
				}
			}
		})
	}
	c.pathSettings(file, hcm)
}

// pathSettings checks that Envoy routes, keygate checks and the upstream
// serves one and the same path, and that headers with underscores cannot
// stand in for keygate's.
func (c *checker) pathSettings(file string, hcm *yaml.Node) {
	at := func(k *yaml.Node) *yaml.Node {
		if k != nil {
			return k
		}
		return hcm // the key is absent: point at the connection manager
	}
	if k, v := get(hcm, "normalize_path"); !isTrue(v) {
		c.add(Warning, file, at(k), "path-not-normalized",
			"normalize_path is off (Envoy's default): Envoy picks the route by the raw path, so /healthz/../admin can take a route that skips ext_authz or asks for a weaker scope while the upstream serves /admin (CVE-2019-9901); set normalize_path: true")
	}
	if k, v := get(hcm, "merge_slashes"); !isTrue(v) {
		c.add(Warning, file, at(k), "slashes-not-merged",
			"merge_slashes is off (Envoy's default): //admin misses the routes and policies written for /admin, and keygate denies it as invalid_request (CVE-2021-31920); set merge_slashes: true")
	}
	switch k, v := get(hcm, "path_with_escaped_slashes_action"); scalar(v) {
	case "REJECT_REQUEST", "UNESCAPE_AND_REDIRECT", "UNESCAPE_AND_FORWARD":
	default:
		c.add(Warning, file, at(k), "escaped-slashes-kept",
			"path_with_escaped_slashes_action keeps %%2F and %%5C as they are (Envoy's default): Envoy routes /healthz%%2F..%%2Fadmin as one path and an upstream that decodes it serves another (CVE-2021-29492); set it to UNESCAPE_AND_REDIRECT or REJECT_REQUEST")
	}
	k, v := path(hcm, "common_http_protocol_options", "headers_with_underscores_action")
	if scalar(v) != "REJECT_REQUEST" {
		if k == nil {
			k, _ = get(hcm, "common_http_protocol_options")
		}
		c.add(Warning, file, at(k), "underscore-headers-allowed",
			"headers_with_underscores_action is not REJECT_REQUEST: an upstream that maps _ to - reads a client's x_keygate_org_id as keygate's header; set common_http_protocol_options.headers_with_underscores_action: REJECT_REQUEST")
	}
}

// strips reports whether the filter config tc removes every header that
// starts with the identity header prefix: a header_mutation with a
// remove_on_match prefix matcher that covers it, or a Lua filter whose code
// removes headers by that prefix.
func (c *checker) strips(tc *yaml.Node) bool {
	prefix := c.opts.HeaderPrefix
	switch typeURL(tc) {
	case headerMutType:
		_, muts := path(tc, "mutations", "request_mutations")
		if muts == nil {
			return false
		}
		for _, m := range muts.Content {
			_, km := path(m, "remove_on_match", "key_matcher")
			if km == nil {
				continue
			}
			_, p := get(km, "prefix")
			_, ic := get(km, "ignore_case")
			if p != nil && (isTrue(ic) && strings.HasPrefix(prefix, strings.ToLower(scalar(p))) || strings.HasPrefix(prefix, scalar(p))) {
				return true
			}
		}
	case luaType:
		var code strings.Builder
		walk(tc, func(m *yaml.Node) {
			for _, key := range []string{"inline_code", "inline_string"} {
				if _, v := get(m, key); v != nil {
					code.WriteString(scalar(v))
				}
			}
		})
		s := strings.ToLower(code.String())
		return strings.Contains(s, "remove") && strings.Contains(s, prefix)
	}
	return false
}
