package policy

// methodSet is the methods a rule applies to, as bits: testing one is a
// mask. A policy names only the methods of RFC 9110 and PATCH.
type methodSet struct {
	all  bool // methods omitted: every method
	bits uint16
}

// methodBit returns the bit of a method a policy may name, or 0 for any
// other.
func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "PATCH":
		return 1 << 4
	case "DELETE":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "CONNECT":
		return 1 << 7
	case "TRACE":
		return 1 << 8
	}
	return 0
}

// policyMethods lists, for error messages, the methods a policy may name.
const policyMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT or TRACE"

func (s *methodSet) add(m string) { s.bits |= methodBit(m) }

// has reports whether the set holds a method whose methodBit is bit (0 for
// a method no policy can name, which only a rule for every method holds).
func (s *methodSet) has(bit uint16, _ string) bool {
	return s.all || s.bits&bit != 0
}

// validMethod reports whether a policy may name m: a method of RFC 9110 or
// PATCH, in upper case. Methods are case-sensitive, and a rule naming
// "get" or a typo such as "GETT" would silently match nothing, letting a
// request past the rule it was meant for.
func validMethod(m string) bool { return methodBit(m) != 0 }

// mask is the set's bits for a method's quick test: every bit when the
// rule lists no methods.
func (s *methodSet) mask() uint16 {
	if s.all {
		return 0xffff
	}
	return s.bits
}
