package doctor

import (
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxTimeout is the longest ext_authz timeout that does not hold a request
// hostage to a stuck keygate; a cache hit answers in well under 1 ms.
const maxTimeout = time.Second

// extAuthz checks one Envoy ext_authz filter config (its typed_config).
func (c *checker) extAuthz(file string, cfg *yaml.Node) {
	if k, v := get(cfg, "failure_mode_allow"); isTrue(v) {
		c.add(Error, file, k, "ext-authz-fail-open",
			"failure_mode_allow: true lets every request through when keygate is down or slow; set it to false")
	}
	if k, v := get(cfg, "filter_enabled"); v != nil && !alwaysOn(v) {
		if _, deny := get(cfg, "deny_at_disable"); !isTrue(featureFlag(deny)) {
			c.add(Error, file, k, "ext-authz-partially-enabled",
				"filter_enabled runs ext_authz on only a fraction of requests, and the others pass unchecked; remove it, or set deny_at_disable: true")
		}
	}
	_, grpc := get(cfg, "grpc_service")
	_, http := get(cfg, "http_service")
	for _, t := range []*yaml.Node{grpc, http} {
		k, v := get(t, "timeout")
		if t == http {
			k, v = path(http, "server_uri", "timeout")
		}
		if d, ok := duration(v); ok && d > maxTimeout {
			c.add(Warning, file, k, "ext-authz-timeout",
				"ext_authz timeout %s is above 1s: a stuck keygate holds every request that long (keygate answers in well under a millisecond; 0.2s is plenty)", d)
		}
	}
	if k, v := get(cfg, "with_request_body"); v != nil {
		c.add(Warning, file, k, "request-body-sent",
			"with_request_body sends request bodies to keygate, which reads only headers: it buffers requests and puts payloads in keygate's process; remove it")
	}

	// An HTTP service's answer headers reach the upstream only when
	// allowed_upstream_headers lets them.
	if http != nil {
		k, _ := path(http, "authorization_response", "allowed_upstream_headers")
		_, list := path(http, "authorization_response", "allowed_upstream_headers", "patterns")
		if k == nil {
			k, _ = get(cfg, "http_service")
		}
		if list == nil || !matchesAny(list, c.opts.HeaderPrefix+"key-id") {
			c.add(Warning, file, k, "identity-headers-not-forwarded",
				"authorization_response.allowed_upstream_headers does not let keygate's %s* headers through: the upstream never learns which key, user or organization called; add {prefix: %q, ignore_case: true}", c.opts.HeaderPrefix, c.opts.HeaderPrefix)
		}
	}

	// allowed_headers: unset, a gRPC service gets every header. An HTTP
	// service always gets authorization (Envoy adds it to the list).
	k, _ := get(cfg, "allowed_headers")
	_, list := path(cfg, "allowed_headers", "patterns")
	if list == nil && http != nil {
		k, _ = path(http, "authorization_request", "allowed_headers")
		_, list = path(http, "authorization_request", "allowed_headers", "patterns")
	}
	if list != nil {
		c.allowedHeaders(file, k, func(name string) bool {
			if http != nil && name == "authorization" {
				return true
			}
			return matchesAny(list, name)
		})
	}
	if k, list := path(cfg, "disallowed_headers", "patterns"); list != nil {
		for _, name := range []string{"authorization", "x-api-key"} {
			if matchesAny(list, name) {
				c.add(Error, file, k, "allowed-headers-missing-credential",
					"disallowed_headers keeps %s from keygate: requests with that credential are denied", name)
			}
		}
	}
}

// allowedHeaders reports the headers keygate needs that sent (the matcher of
// a header allow list, whose key node is k) leaves out.
func (c *checker) allowedHeaders(file string, k *yaml.Node, sent func(name string) bool) {
	var missing []string
	for _, name := range []string{"authorization", "x-api-key"} {
		if !sent(name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		c.add(Error, file, k, "allowed-headers-missing-credential",
			"the header list sent to keygate leaves out %s: keys sent there never reach keygate and every such request is denied", strings.Join(missing, " and "))
	}
	if !sent("x-request-id") {
		c.add(Warning, file, k, "allowed-headers-missing-context",
			"the header list sent to keygate leaves out x-request-id: keygate's log lines and deny bodies lose the request id")
	}
	if h := strings.ToLower(c.opts.ClientIPHeader); h != "" && !sent(h) {
		c.add(Warning, file, k, "allowed-headers-missing-context",
			"the header list sent to keygate leaves out %s (--client-ip-header): failed-key throttling sees the proxy's address instead of the client's", h)
	}
}

// matchesAny reports whether any Envoy StringMatcher in list matches the
// header name (Envoy lower-cases header names before matching).
func matchesAny(list *yaml.Node, name string) bool {
	for _, m := range list.Content {
		if stringMatch(deref(m), name) {
			return true
		}
	}
	return false
}

// stringMatch is Envoy's type.matcher.v3.StringMatcher.
func stringMatch(m *yaml.Node, s string) bool {
	_, ic := get(m, "ignore_case")
	fold := isTrue(ic)
	norm := func(x string) string {
		if fold {
			return strings.ToLower(x)
		}
		return x
	}
	if _, v := get(m, "exact"); v != nil {
		return norm(s) == norm(scalar(v))
	}
	if _, v := get(m, "prefix"); v != nil {
		return strings.HasPrefix(norm(s), norm(scalar(v)))
	}
	if _, v := get(m, "suffix"); v != nil {
		return strings.HasSuffix(norm(s), norm(scalar(v)))
	}
	if _, v := get(m, "contains"); v != nil {
		return strings.Contains(norm(s), norm(scalar(v)))
	}
	if _, v := path(m, "safe_regex", "regex"); v != nil {
		re, err := regexp.Compile("^(?:" + scalar(v) + ")$")
		return err == nil && re.MatchString(s)
	}
	return false
}

// duration reads a protobuf Duration in its JSON form ("0.2s") or as a
// {seconds, nanos} mapping.
func duration(n *yaml.Node) (time.Duration, bool) {
	if n == nil {
		return 0, false
	}
	if n.Kind == yaml.MappingNode {
		var d struct {
			Seconds int64 `yaml:"seconds"`
			Nanos   int64 `yaml:"nanos"`
		}
		if n.Decode(&d) != nil {
			return 0, false
		}
		return time.Duration(d.Seconds)*time.Second + time.Duration(d.Nanos), true
	}
	d, err := time.ParseDuration(scalar(n))
	if err != nil {
		return 0, false
	}
	return d, true
}

// alwaysOn reports whether a RuntimeFractionalPercent's default is 100%.
func alwaysOn(rfp *yaml.Node) bool {
	_, dv := get(rfp, "default_value")
	_, num := get(dv, "numerator")
	_, den := get(dv, "denominator")
	var n int64
	if num == nil || num.Decode(&n) != nil {
		return false // numerator 0: never on
	}
	switch scalar(den) {
	case "", "HUNDRED":
		return n >= 100
	case "TEN_THOUSAND":
		return n >= 10000
	case "MILLION":
		return n >= 1000000
	}
	return false
}

// featureFlag reads deny_at_disable, a RuntimeFeatureFlag: {default_value: bool}.
func featureFlag(flag *yaml.Node) *yaml.Node {
	_, v := get(flag, "default_value")
	return v
}
