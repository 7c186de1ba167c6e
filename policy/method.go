package policy

// methodSet is the methods a rule applies to. The common methods are bits,
// so testing one is a mask; others are kept by name.
type methodSet struct {
	all   bool // methods omitted: every method
	bits  uint16
	other []string
}

// methodBit returns the bit of a common method, or 0 for any other.
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

func (s *methodSet) add(m string) {
	if b := methodBit(m); b != 0 {
		s.bits |= b
		return
	}
	for _, o := range s.other {
		if o == m {
			return
		}
	}
	s.other = append(s.other, m)
}

// has reports whether the set holds method m, whose methodBit is bit.
func (s *methodSet) has(bit uint16, m string) bool {
	if s.all || s.bits&bit != 0 {
		return true
	}
	if bit != 0 {
		return false
	}
	for _, o := range s.other {
		if o == m {
			return true
		}
	}
	return false
}

// validMethod reports whether m is an upper-case HTTP method: a token
// (RFC 9110 §5.6.2) without lower-case letters. Methods are case-sensitive,
// so "get" in a policy file would silently match nothing.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '!' || c == '#' || c == '$' || c == '%' || c == '&' || c == '\'' || c == '*' ||
			c == '+' || c == '-' || c == '.' || c == '^' || c == '_' || c == '`' || c == '|' || c == '~':
		default:
			return false
		}
	}
	return true
}

// mask is the set's bits for a common method's quick test: every bit when
// the rule lists no methods.
func (s *methodSet) mask() uint16 {
	if s.all {
		return 0xffff
	}
	return s.bits
}
