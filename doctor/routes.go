package doctor

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/policy"
)

// contextExtensions runs the rules of a route's keygate.* context
// extensions (an ExtAuthzPerRoute's check_settings): a value keygate
// refuses denies every request of the route with forbidden, and a
// keygate.* name keygate does not read does nothing at all, so a typo
// (keygate.ratelimt) silently lifts the limit it meant to apply.
func (c *checker) contextExtensions(file string, per *yaml.Node) {
	_, ext := path(per, "check_settings", "context_extensions")
	if ext = deref(ext); ext == nil || ext.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(ext.Content); i += 2 {
		k := ext.Content[i]
		name := scalar(k)
		if !strings.HasPrefix(name, "keygate.") {
			continue
		}
		if !slices.Contains(policy.ExtensionNames, name) {
			c.add(Warning, file, k, "unknown-context-extension",
				"%s is not a context extension keygate reads (%s): it is ignored", name, strings.Join(policy.ExtensionNames, ", "))
			continue
		}
		if _, err := policy.Default().Resolve("GET", "/", map[string]string{name: scalar(ext.Content[i+1])}); err != nil {
			c.add(Error, file, k, "invalid-context-extension", "%v: keygate denies every request of this route (forbidden)", err)
		}
	}
}
