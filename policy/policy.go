// Package policy decides what a route requires: the scope a key must hold,
// whether publishable keys may call it, and which project (if any) the path
// names. It also says whether a path is normalized (CheckPath).
//
// Each of the three settings comes separately from the first source that
// sets it: the route's context_extensions from Envoy, then the policy file
// (first matching rule), then the default. See README.md for the file
// format. Patterns are compiled once into segments; resolving a request
// does not allocate.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keygate/keygate"
)

// Context extension keys that Envoy routes set (route
// typed_per_filter_config, ext_authz CheckSettings.context_extensions).
const (
	ExtScope       = "keygate.scope"       // the scope the route requires
	ExtPublishable = "keygate.publishable" // "true" or "false"
	ExtProject     = "keygate.project"     // one project pattern
	ExtMode        = "keygate.mode"        // "enforce" or "report" (SPEC §11)
	ExtRateLimit   = "keygate.ratelimit"   // the key's named rate limit the route applies (SPEC §9)
	ExtCost        = "keygate.cost"        // uses an allow spends, 0–1000 (SPEC §9)
)

// ExtensionNames are every context extension keygate reads; another
// keygate.* name is ignored (keygate doctor warns of it).
var ExtensionNames = []string{ExtScope, ExtPublishable, ExtProject, ExtMode, ExtRateLimit, ExtCost}

// DefaultCost is the uses an allowed request spends of a usage-limited
// key when neither keygate.cost nor a rule says (SPEC §9); MaxCost is the
// largest cost a route may set.
const (
	DefaultCost = 1
	MaxCost     = 1000
)

// Mode is how a route applies its decision (SPEC §11).
type Mode uint8

const (
	// Enforce denies what the decision denies: the default.
	Enforce Mode = iota
	// Report allows what the decision would deny (except invalid_request),
	// telling the upstream which code it would have been.
	Report
)

// String is the mode as the policy file and keygate.mode spell it.
func (m Mode) String() string {
	if m == Report {
		return "report"
	}
	return "enforce"
}

// parseMode reads "enforce" or "report".
func parseMode(s string) (Mode, bool) {
	switch s {
	case "enforce":
		return Enforce, true
	case "report":
		return Report, true
	}
	return Enforce, false
}

// ErrInvalidExtension is matched (errors.Is) by the error Resolve returns
// for a context extension value that is not valid; extauthz denies such a
// request, because a route whose policy cannot be read must fail closed.
var ErrInvalidExtension = errors.New("policy: invalid context extension")

// Route is what a request's route requires.
type Route struct {
	Scope       string // the scope the key must hold
	Publishable bool   // publishable keys may call the route
	Project     string // the project the path names, when HasProject
	HasProject  bool
	Mode        Mode // enforce (the default) or report
	// RateLimit names the key's named rate limit the route applies
	// (SPEC §9); "" for none. A key without a limit of that name is
	// held to its main limit only.
	RateLimit string
	// Cost, when HasCost, is the uses an allow spends of a usage-limited
	// key (SPEC §9), from keygate.cost or the rule's cost; Uses says what
	// the route costs either way.
	Cost    int
	HasCost bool
}

// Uses is what an allow on the route spends of a usage-limited key: its
// cost, else DefaultCost.
func (r *Route) Uses() int {
	if r.HasCost {
		return r.Cost
	}
	return DefaultCost
}

// Policy is a loaded policy file. A nil *Policy is the default policy (no
// file); so is the one Default returns, which also caches the compiled
// keygate.project patterns. A Policy is safe for concurrent use.
type Policy struct {
	rules []rule
	// bits holds, contiguously, each rule's method bits (every bit for a
	// rule without methods), so match skips a rule of other methods
	// without touching the rule itself.
	bits []uint16
	// projects are the file's project patterns; nil with hasProjects false
	// means the default ones. An empty list the file gives means no path
	// names a project.
	projects    []*pattern
	hasProjects bool
	// hasModes is set when some rule sets mode: without one, ModeExt
	// matches no rule.
	hasModes bool
	ext      extCache
}

type rule struct {
	methods        methodSet
	path           *pattern
	scope          string
	hasScope       bool
	publishable    bool
	hasPublishable bool
	mode           Mode
	hasMode        bool
	rateLimit      string // "" when the rule names none
	cost           int
	hasCost        bool
}

// Default returns the policy without a file: GET, HEAD and OPTIONS need
// read, every other method write; no route is publishable; projects come
// from "/v1/projects/{project}" and "/v1/projects/{project}/**".
func Default() *Policy { return &Policy{} }

// Len returns the number of rules in the file.
func (p *Policy) Len() int {
	if p == nil {
		return 0
	}
	return len(p.rules)
}

// Resolve returns what the route of a request requires. method is the HTTP
// method, path the request path (everything from the first '?' is
// ignored), ext the route's context_extensions (nil when it has none). The
// error, matching ErrInvalidExtension, reports a context extension value
// that is not valid. Resolve does not check that path is normalized; call
// CheckPath first.
func (p *Policy) Resolve(method, path string, ext map[string]string) (Route, error) {
	return p.ResolveExt(method, path, ExtMap(ext))
}

// Extensions are a route's context_extensions, however they were read:
// Envoy's map (ExtMap), or the pairs a wire reader took.
type Extensions interface {
	// Len is the number of extensions.
	Len() int
	// Get returns the extension name, if the route sets it.
	Get(name string) (string, bool)
}

// ExtMap is context_extensions as a map.
type ExtMap map[string]string

// Len is the number of extensions.
func (m ExtMap) Len() int { return len(m) }

// Get returns the extension name, if set.
func (m ExtMap) Get(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

// ResolveExt is Resolve with the extensions in any form.
func (p *Policy) ResolveExt(method, path string, ext Extensions) (Route, error) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	var (
		r                         Route
		hasScope, hasPub, hasMode bool
		extProject                *pattern
	)
	if ext.Len() > 0 { // most routes carry none: skip the lookups
		var err error
		if r, hasScope, hasPub, hasMode, extProject, err = p.fromExtensions(ext); err != nil {
			return Route{}, err
		}
		if r.RateLimit, err = extRateLimit(ext); err != nil {
			return Route{}, err
		}
	}
	var hasCost bool
	if ext.Len() > 0 {
		var err error
		if r.Cost, hasCost, err = extCost(ext); err != nil {
			return Route{}, err
		}
	}

	if (!hasScope || !hasPub || !hasMode || r.RateLimit == "" || !hasCost) && p != nil {
		if ru := p.match(method, path); ru != nil {
			if !hasScope && ru.hasScope {
				r.Scope, hasScope = ru.scope, true
			}
			if !hasPub && ru.hasPublishable {
				r.Publishable = ru.publishable
			}
			if !hasMode && ru.hasMode {
				r.Mode = ru.mode
			}
			if r.RateLimit == "" {
				r.RateLimit = ru.rateLimit
			}
			if !hasCost && ru.hasCost {
				r.Cost, hasCost = ru.cost, true
			}
		}
	}
	r.HasCost = hasCost
	if !hasScope {
		r.Scope = defaultScope(method)
	}

	switch {
	case extProject != nil:
		r.Project, r.HasProject = extProject.match(path)
	case p != nil && p.hasProjects:
		for _, pat := range p.projects {
			if r.Project, r.HasProject = pat.match(path); r.HasProject {
				break
			}
		}
	default:
		r.Project, r.HasProject = defaultProject(path)
	}
	return r, nil
}

// ModeExt returns only the mode of a request's route, from the same
// sources as ResolveExt (keygate.mode, then the first matching rule, then
// enforce), without the rest of the route. A caller needs the mode before
// anything else is decided: on a report route every deny, including those
// before the route policy step, is reported instead. The error matches
// ErrInvalidExtension for a keygate.mode that is neither "enforce" nor
// "report". ext may be nil. Like ResolveExt it does not check that path is normalized.
func (p *Policy) ModeExt(method, path string, ext Extensions) (Mode, error) {
	if ext != nil && ext.Len() > 0 {
		if m, ok, err := extMode(ext); ok || err != nil {
			return m, err
		}
	}
	if p == nil || !p.hasModes {
		return Enforce, nil
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if ru := p.match(method, path); ru != nil && ru.hasMode {
		return ru.mode, nil
	}
	return Enforce, nil
}

// extMode reads keygate.mode.
func extMode(ext Extensions) (Mode, bool, error) {
	s, ok := ext.Get(ExtMode)
	if !ok {
		return Enforce, false, nil
	}
	m, valid := parseMode(s)
	if !valid {
		return Enforce, false, fmt.Errorf("%w %s: %q is neither \"enforce\" nor \"report\"", ErrInvalidExtension, ExtMode, s)
	}
	return m, true, nil
}

// extRateLimit reads keygate.ratelimit: "" when the route sets none. A
// value that is not a valid limit name is an error (the route fails
// closed), not "no limit": a typo must not lift a limit silently.
func extRateLimit(ext Extensions) (string, error) {
	s, ok := ext.Get(ExtRateLimit)
	if !ok {
		return "", nil
	}
	if !keygate.ValidRateLimitName(s) {
		return "", fmt.Errorf("%w %s: %q is not a valid rate limit name (%s)", ErrInvalidExtension, ExtRateLimit, s, keygate.RateLimitNamePattern)
	}
	return s, nil
}

// extCost reads keygate.cost: a decimal integer 0–MaxCost, anything else
// ErrInvalidExtension (the route is denied, as for every malformed
// extension).
func extCost(ext Extensions) (int, bool, error) {
	s, ok := ext.Get(ExtCost)
	if !ok {
		return 0, false, nil
	}
	n, ok := parseCost(s)
	if !ok {
		return 0, false, fmt.Errorf("%w %s: %q is not an integer from 0 to %d", ErrInvalidExtension, ExtCost, s, MaxCost)
	}
	return n, true, nil
}

// parseCost parses a cost: 1 to 4 decimal digits, at most MaxCost. No
// sign, space or leading "+": the route's author wrote a number.
func parseCost(s string) (int, bool) {
	if len(s) == 0 || len(s) > 4 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= MaxCost
}

// fromExtensions reads the settings that context_extensions set.
func (p *Policy) fromExtensions(ext Extensions) (r Route, hasScope, hasPub, hasMode bool, project *pattern, err error) {
	if r.Mode, hasMode, err = extMode(ext); err != nil {
		return Route{}, false, false, false, nil, err
	}
	if r.Scope, hasScope = ext.Get(ExtScope); hasScope && !validScope(r.Scope) {
		return Route{}, false, false, false, nil, fmt.Errorf("%w %s: %q is not a valid scope", ErrInvalidExtension, ExtScope, r.Scope)
	}
	if pub, ok := ext.Get(ExtPublishable); ok {
		switch pub {
		case "true":
			r.Publishable, hasPub = true, true
		case "false":
			hasPub = true
		default:
			return Route{}, false, false, false, nil, fmt.Errorf("%w %s: %q is neither \"true\" nor \"false\"", ErrInvalidExtension, ExtPublishable, pub)
		}
	}
	if src, ok := ext.Get(ExtProject); ok {
		if project, err = p.extPattern(src); err != nil {
			return Route{}, false, false, false, nil, err
		}
	}
	return r, hasScope, hasPub, hasMode, project, nil
}

// match returns the first rule whose methods and path match, or nil.
func (p *Policy) match(method, path string) *rule {
	m := methodBit(method)
	if len(p.bits) != len(p.rules) {
		return p.matchSlow(m, method, path)
	}
	for i, bits := range p.bits {
		if m != 0 && bits&m == 0 {
			continue // a common method the rule does not list
		}
		ru := &p.rules[i]
		if m == 0 && !ru.methods.has(m, method) {
			continue
		}
		if _, ok := ru.path.match(path); ok {
			return ru
		}
	}
	return nil
}

// matchSlow is match for a Policy built without bits.
func (p *Policy) matchSlow(m uint16, method, path string) *rule {
	for i := range p.rules {
		ru := &p.rules[i]
		if !ru.methods.has(m, method) {
			continue
		}
		if _, ok := ru.path.match(path); ok {
			return ru
		}
	}
	return nil
}

// defaultScope is the default required scope: reads need read, everything
// else write.
func defaultScope(method string) string {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return "read"
	}
	return "write"
}

// validScope reports whether s matches ^[a-z][a-z0-9_.:-]{0,63}$, the
// scope syntax of SPEC §2, without a regexp.
func validScope(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}

// maxExtPatterns bounds the cache of compiled keygate.project values. They
// come from Envoy's route configuration, a finite set; past the bound a
// value is compiled on every request instead of growing memory.
const maxExtPatterns = 1024

// extCache holds compiled keygate.project values (and their errors, so a
// bad value costs no compile per request either). Reads take no lock.
type extCache struct {
	m sync.Map // string -> *extEntry
	n atomic.Int64
}

type extEntry struct {
	pat *pattern
	err error
}

// extPattern compiles a keygate.project value, through the cache when p is
// not nil.
func (p *Policy) extPattern(src string) (*pattern, error) {
	if p != nil {
		if e, ok := p.ext.m.Load(src); ok {
			e := e.(*extEntry)
			return e.pat, e.err
		}
	}
	e := &extEntry{}
	e.pat, e.err = compilePattern(src, true)
	if e.err != nil {
		e.pat, e.err = nil, fmt.Errorf("%w %s: %q is not a valid project pattern: %v", ErrInvalidExtension, ExtProject, src, e.err)
	}
	if p != nil && p.ext.n.Load() < maxExtPatterns {
		if _, loaded := p.ext.m.LoadOrStore(src, e); !loaded {
			p.ext.n.Add(1)
		}
	}
	return e.pat, e.err
}
