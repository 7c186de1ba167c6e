package policy

import (
	"errors"
	"strings"
)

// segKind is what one segment of a pattern matches.
type segKind uint8

const (
	segLiteral segKind = iota // exactly lit
	segOne                    // *: one non-empty segment
	segAny                    // **: zero or more segments
	segProject                // {project}: one non-empty segment, captured
)

// projectSegment is the placeholder that captures the project id.
const projectSegment = "{project}"

type segment struct {
	kind segKind
	lit  string
}

// pattern is a compiled path pattern. A path "/a/b" is the segments "a" and
// "b"; "/" is one empty segment and "/a/" is "a" and "" — so a trailing
// slash is a segment of its own and "/a" and "/a/" are different paths.
type pattern struct {
	src  string
	segs []segment
	// literal is true when the pattern has no wildcard: it then matches
	// exactly the path src, compared as a string.
	literal bool
	// prefix is the literal start of src before its first wildcard segment
	// (without the slash before it): every matching path starts with it.
	prefix string
}

// compilePattern compiles src. A project pattern must hold exactly one
// {project}; any other pattern none. The error says why src is invalid.
func compilePattern(src string, project bool) (*pattern, error) {
	if src == "" {
		return nil, errors.New("empty")
	}
	if src[0] != '/' {
		return nil, errors.New("it does not start with /")
	}
	for i := 0; i < len(src); i++ {
		if c := src[i]; c <= ' ' || c == 0x7f {
			return nil, errors.New("it contains a space or a control character")
		}
	}
	if strings.IndexByte(src, '?') >= 0 {
		return nil, errors.New("it contains ? (the query string is never matched)")
	}
	if err := CheckPath(src); err != nil {
		return nil, errors.New(string(err.(notNormalized)))
	}
	p := &pattern{src: src, literal: true}
	projects := 0
	rest := src[1:]
	for {
		seg, tail, more := strings.Cut(rest, "/")
		s := segment{kind: segLiteral, lit: seg}
		switch {
		case seg == "*":
			s = segment{kind: segOne}
		case seg == "**":
			s = segment{kind: segAny}
		case seg == projectSegment:
			if !project {
				return nil, errors.New("{project} is allowed only in project patterns")
			}
			projects++
			s = segment{kind: segProject}
		case strings.IndexByte(seg, '*') >= 0:
			return nil, errors.New("* and ** must be a whole segment")
		case strings.IndexByte(seg, '{') >= 0 || strings.IndexByte(seg, '}') >= 0:
			return nil, errors.New("{ and } may appear only as the whole segment {project}")
		}
		if s.kind != segLiteral && p.literal {
			p.literal = false
			p.prefix = src[:len(src)-len(rest)-1] // up to the slash before this segment
		}
		p.segs = append(p.segs, s)
		if !more {
			break
		}
		rest = tail
	}
	if project && projects != 1 {
		return nil, errors.New("a project pattern must hold {project} exactly once")
	}
	return p, nil
}

// match reports whether path (without its query string) matches p and, for
// a project pattern, returns the captured project. When several alignments
// match (e.g. "/**/{project}/**"), the project is the one that leaves the
// earliest '**' shortest. match does not allocate.
func (p *pattern) match(path string) (project string, ok bool) {
	if p.literal {
		return "", path == p.src
	}
	if len(path) == 0 || path[0] != '/' || !strings.HasPrefix(path, p.prefix) {
		return "", false
	}
	// The classic wildcard algorithm over segments: '**' is the only
	// token that matches a variable number of segments, so remembering the
	// last '**' seen and letting it swallow one more segment on a mismatch
	// is complete, and costs O(len(segs) × segments of path) at worst.
	rest := path[1:]
	n := len(rest)
	pi, pos := 0, 0 // pattern index; start of the current path segment (n+1: none left)
	star, starPos := -1, 0
	for pos <= n {
		seg, next := segmentAt(rest, pos)
		if pi < len(p.segs) {
			s := &p.segs[pi]
			switch s.kind {
			case segAny:
				star, starPos = pi, pos
				pi++
				continue
			case segLiteral:
				if seg == s.lit {
					pi, pos = pi+1, next
					continue
				}
			case segOne:
				if seg != "" {
					pi, pos = pi+1, next
					continue
				}
			case segProject:
				if seg != "" {
					project = seg
					pi, pos = pi+1, next
					continue
				}
			}
		}
		if star < 0 {
			return "", false
		}
		// Let the last '**' take one more segment and retry after it.
		_, starPos = segmentAt(rest, starPos)
		pi, pos = star+1, starPos
	}
	for pi < len(p.segs) && p.segs[pi].kind == segAny {
		pi++
	}
	if pi != len(p.segs) {
		return "", false
	}
	return project, true
}

// segmentAt returns the segment of rest that starts at pos and the start of
// the segment after it (len(rest)+1 when it was the last).
func segmentAt(rest string, pos int) (seg string, next int) {
	if i := strings.IndexByte(rest[pos:], '/'); i >= 0 {
		return rest[pos : pos+i], pos + i + 1
	}
	return rest[pos:], len(rest) + 1
}

// defaultProject extracts the project with the default project patterns
// "/v1/projects/{project}" and "/v1/projects/{project}/**", written out so
// that a nil *Policy needs nothing compiled. A test pins it to the compiled
// patterns.
func defaultProject(path string) (string, bool) {
	const prefix = "/v1/projects/"
	if !strings.HasPrefix(path, prefix) {
		return "", false
	}
	seg, _ := segmentAt(path[len(prefix):], 0)
	return seg, seg != ""
}
