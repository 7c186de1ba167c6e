package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate"
)

// Load reads and compiles the policy file at path (--policy). Errors name
// the file, the line and the field, e.g.
//
//	policy.yaml:3: rules[0].scope: "Admin" is not a valid scope
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return Parse(path, data)
}

// Parse compiles a policy file's contents; name is the file's name for
// error messages. An empty file (or one with only comments) has no rules.
// Loading is strict: an unknown field, a value of the wrong type or an
// invalid path, method, scope or project pattern is an error, since a
// mistyped rule would otherwise silently fall through to a later one.
func Parse(name string, data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return Default(), nil
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return nil, &fileError{file: name, line: extra.Line, msg: "a policy file holds one YAML document"}
	}
	l := loader{file: name}
	p := Default()
	if err := l.root(p, deref(&doc)); err != nil {
		return nil, err
	}
	return p, nil
}

// fileError is a policy file error: file:line: field: msg.
type fileError struct {
	file  string
	line  int
	field string
	msg   string
}

func (e *fileError) Error() string {
	if e.field == "" {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.file, e.line, e.field, e.msg)
}

type loader struct{ file string }

func (l *loader) errorf(n *yaml.Node, field, format string, args ...any) error {
	return &fileError{file: l.file, line: n.Line, field: field, msg: fmt.Sprintf(format, args...)}
}

// deref follows aliases and unwraps the document node.
func deref(n *yaml.Node) *yaml.Node {
	for {
		switch {
		case n.Kind == yaml.AliasNode && n.Alias != nil:
			n = n.Alias
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		default:
			return n
		}
	}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// fields walks mapping n, calling f for each key; it rejects keys that are
// not strings, duplicates and keys not in known.
func (l *loader) fields(n *yaml.Node, where string, known []string, f func(key string, k, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		return l.errorf(n, where, "must be a mapping, not %s", describe(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		field := join(where, k.Value)
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			return l.errorf(k, where, "%s is not a field name", describe(k))
		}
		if !slices.Contains(known, k.Value) {
			return l.errorf(k, field, "unknown field (known: %s)", strings.Join(known, ", "))
		}
		if seen[k.Value] {
			return l.errorf(k, field, "given twice")
		}
		seen[k.Value] = true
		if err := f(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) root(p *Policy, n *yaml.Node) error {
	if isNull(n) {
		return nil
	}
	return l.fields(n, "", []string{"rules", "projects"}, func(key string, _, v *yaml.Node) error {
		switch key {
		case "rules":
			return l.seq(v, "rules", func(i int, item *yaml.Node) error {
				r, err := l.rule(item, fmt.Sprintf("rules[%d]", i))
				if err != nil {
					return err
				}
				p.rules = append(p.rules, r)
				p.bits = append(p.bits, r.methods.mask())
				p.hasModes = p.hasModes || r.hasMode
				return nil
			})
		default: // projects
			p.hasProjects = !isNull(v)
			p.projects = []*pattern{}
			return l.seq(v, "projects", func(i int, item *yaml.Node) error {
				field := fmt.Sprintf("projects[%d]", i)
				s, err := l.str(item, field)
				if err != nil {
					return err
				}
				pat, err := compilePattern(s, true)
				if err != nil {
					return l.errorf(item, field, "%q is not a valid project pattern: %v", s, err)
				}
				p.projects = append(p.projects, pat)
				return nil
			})
		}
	})
}

func (l *loader) rule(n *yaml.Node, where string) (rule, error) {
	var r rule
	err := l.fields(n, where, []string{"methods", "path", "scope", "publishable", "mode", "ratelimit", "cost"}, func(key string, _, v *yaml.Node) error {
		field := where + "." + key
		switch key {
		case "methods":
			if v.Kind == yaml.SequenceNode && len(v.Content) == 0 {
				return l.errorf(v, field, "empty (omit methods for every method)")
			}
			return l.seq(v, field, func(i int, item *yaml.Node) error {
				f := fmt.Sprintf("%s[%d]", field, i)
				m, err := l.str(item, f)
				if err != nil {
					return err
				}
				if !validMethod(m) {
					return l.errorf(item, f, "%q is not an HTTP method (want %s, in upper case)", m, policyMethods)
				}
				r.methods.add(m)
				return nil
			})
		case "path":
			s, err := l.str(v, field)
			if err != nil {
				return err
			}
			pat, err := compilePattern(s, false)
			if err != nil {
				return l.errorf(v, field, "%q is not a valid path pattern: %v", s, err)
			}
			r.path = pat
		case "scope":
			s, err := l.str(v, field)
			if err != nil {
				return err
			}
			if !validScope(s) {
				return l.errorf(v, field, "%q is not a valid scope", s)
			}
			r.scope, r.hasScope = s, true
		case "publishable":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
				return l.errorf(v, field, "must be true or false, not %s", describe(v))
			}
			if err := v.Decode(&r.publishable); err != nil {
				return l.errorf(v, field, "%v", err)
			}
			r.hasPublishable = true
		case "mode":
			s, err := l.str(v, field)
			if err != nil {
				return err
			}
			m, ok := parseMode(s)
			if !ok {
				return l.errorf(v, field, "%q is neither \"enforce\" nor \"report\"", s)
			}
			r.mode, r.hasMode = m, true
		case "ratelimit":
			s, err := l.str(v, field)
			if err != nil {
				return err
			}
			if !keygate.ValidRateLimitName(s) {
				return l.errorf(v, field, "%q is not a valid rate limit name (%s)", s, keygate.RateLimitNamePattern)
			}
			r.rateLimit = s
		case "cost":
			var n int
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&n) != nil || n < 0 || n > MaxCost {
				return l.errorf(v, field, "must be an integer from 0 to %d, not %s", MaxCost, describe(v))
			}
			r.cost, r.hasCost = n, true
		}
		return nil
	})
	if err != nil {
		return rule{}, err
	}
	if r.path == nil {
		return rule{}, l.errorf(n, where+".path", "required")
	}
	if r.methods.bits == 0 {
		r.methods.all = true
	}
	return r, nil
}

// seq walks sequence n; null is an empty sequence.
func (l *loader) seq(n *yaml.Node, where string, f func(i int, item *yaml.Node) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return l.errorf(n, where, "must be a list, not %s", describe(n))
	}
	for i, item := range n.Content {
		if err := f(i, deref(item)); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) str(n *yaml.Node, where string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", l.errorf(n, where, "must be a string, not %s", describe(n))
	}
	return n.Value, nil
}

// describe names what a node is, for errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!bool":
			return "a boolean"
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
	}
	return "an alias"
}

func join(where, key string) string {
	if where == "" {
		return key
	}
	return where + "." + key
}
