// Package sources parses and matches a key's allowed_sources (SPEC §11):
// CIDRs or single IP addresses, matched against the client address, and
// SPIFFE IDs (exact, or ending in "/*" for every path under one), matched
// against the mTLS principal Envoy reports (attributes.source.principal).
//
// A list is kept in canonical form: each entry in the form String gives,
// sorted, without duplicates, joined with commas (no entry holds a comma).
// Match reads that joined form directly, without allocating, so the
// decision keeps one interned string per distinct list and parses nothing
// ahead of time.
package sources

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MaxEntries is the most entries a key's allowed_sources may hold.
const MaxEntries = 32

const spiffeScheme = "spiffe://"

// maxSPIFFE bounds a SPIFFE ID (the SPIFFE spec's URI limit).
const maxSPIFFE = 2048

// Entry is one parsed allowed source: a network prefix, or a SPIFFE ID
// (Wildcard: every ID under it).
type Entry struct {
	Prefix   netip.Prefix // valid for a CIDR or address entry
	SPIFFE   string       // the ID, without "/*" for a wildcard
	Wildcard bool
}

// String is the entry's canonical form: a single address as an address
// (IPv4-mapped IPv6 as IPv4), any other prefix as a CIDR, a SPIFFE ID as
// given, a wildcard with its "/*".
func (e Entry) String() string {
	if e.Prefix.IsValid() {
		if e.Prefix.IsSingleIP() {
			return e.Prefix.Addr().String()
		}
		return e.Prefix.String()
	}
	if e.Wildcard {
		return e.SPIFFE + "/*"
	}
	return e.SPIFFE
}

// Parse parses one entry. A CIDR must have no bits set past its prefix
// length (10.0.0.1/8 is refused rather than guessed at), and addresses
// carry no zone.
func Parse(s string) (Entry, error) {
	if strings.HasPrefix(s, spiffeScheme) {
		return parseSPIFFE(s)
	}
	if strings.IndexByte(s, '/') >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Entry{}, fmt.Errorf("%q is neither a CIDR, an IP address nor a SPIFFE ID (spiffe://<trust domain>/<path>)", s)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Masked() != p {
			return Entry{}, fmt.Errorf("%q has bits set past its prefix length; did you mean %s?", s, p.Masked())
		}
		return Entry{Prefix: p}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return Entry{}, fmt.Errorf("%q is neither a CIDR, an IP address nor a SPIFFE ID (spiffe://<trust domain>/<path>)", s)
	}
	a = a.Unmap()
	return Entry{Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
}

func parseSPIFFE(s string) (Entry, error) {
	e := Entry{SPIFFE: s}
	if rest, ok := strings.CutSuffix(s, "/*"); ok {
		e.SPIFFE, e.Wildcard = rest, true
	}
	if err := checkSPIFFE(e.SPIFFE, e.Wildcard); err != nil {
		return Entry{}, fmt.Errorf("%q is not a SPIFFE ID: %v", s, err)
	}
	return e, nil
}

// checkSPIFFE validates a SPIFFE ID by the SPIFFE ID spec: a lower-case
// trust domain of letters, digits, '.', '-' and '_'; a path of non-empty
// segments of letters, digits, '.', '-' and '_', none "." or "..", no
// trailing slash. A wildcard's base may be the trust domain alone.
func checkSPIFFE(s string, wildcard bool) error {
	if len(s) > maxSPIFFE {
		return errTooLong
	}
	rest, ok := strings.CutPrefix(s, spiffeScheme)
	if !ok {
		return errScheme
	}
	td, path, hasPath := strings.Cut(rest, "/")
	if td == "" {
		return errNoTrustDomain
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return errTrustDomain
		}
	}
	if !hasPath {
		if wildcard {
			return nil
		}
		return errNoPath
	}
	for {
		seg, more, found := strings.Cut(path, "/")
		switch seg {
		case "":
			return errEmptySegment
		case ".", "..":
			return errDotSegment
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
				return errPathChar
			}
		}
		if !found {
			return nil
		}
		path = more
	}
}

// The reasons checkSPIFFE gives, made once: ValidID runs per Check.
var (
	errTooLong       = errors.New("longer than 2048 bytes")
	errScheme        = errors.New("it must start with spiffe://")
	errNoTrustDomain = errors.New("the trust domain is empty")
	errTrustDomain   = errors.New("the trust domain may hold only lower-case letters, digits, '.', '-' and '_'")
	errNoPath        = errors.New("the path is empty (give spiffe://<trust domain>/<path>, or /* for the whole trust domain)")
	errEmptySegment  = errors.New("the path has an empty segment")
	errDotSegment    = errors.New("the path has a '.' or '..' segment")
	errPathChar      = errors.New("the path may hold only letters, digits, '.', '-' and '_'")
)

// EntryError is a bad entry of a list: Index is its position in the list
// as given.
type EntryError struct {
	Index int
	Err   error
}

func (e *EntryError) Error() string { return e.Err.Error() }

// ErrTooMany is a list of more than MaxEntries entries.
var ErrTooMany = fmt.Errorf("allowed_sources holds at most %d entries", MaxEntries)

// Canonical parses list and returns it in canonical form: canonical
// entries, sorted, duplicates dropped; an empty list (from anywhere) is an
// empty, non-nil slice. A bad entry is an *EntryError; more than
// MaxEntries entries ErrTooMany.
func Canonical(list []string) ([]string, error) {
	if len(list) > MaxEntries {
		return nil, ErrTooMany
	}
	out := make([]string, 0, len(list))
	for i, s := range list {
		e, err := Parse(s)
		if err != nil {
			return nil, &EntryError{Index: i, Err: err}
		}
		out = append(out, e.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Within reports whether every source inner allows, outer allows too: a
// CIDR inside an outer CIDR of the same family, the same SPIFFE ID, or an
// ID (or wildcard) under an outer wildcard.
func Within(inner, outer Entry) bool {
	switch {
	case inner.Prefix.IsValid() != outer.Prefix.IsValid():
		return false
	case inner.Prefix.IsValid():
		return outer.Prefix.Addr().Is4() == inner.Prefix.Addr().Is4() &&
			outer.Prefix.Bits() <= inner.Prefix.Bits() && outer.Prefix.Contains(inner.Prefix.Addr())
	case !outer.Wildcard:
		return !inner.Wildcard && inner.SPIFFE == outer.SPIFFE
	}
	return inner.SPIFFE == outer.SPIFFE && inner.Wildcard || under(inner.SPIFFE, outer.SPIFFE)
}

// under reports whether id is a path below base.
func under(id, base string) bool {
	return len(id) > len(base)+1 && strings.HasPrefix(id, base) && id[len(base)] == '/'
}

// ListWithin reports whether every entry of the canonical list inner lies
// within some entry of outer (an empty outer allows anything; an empty
// inner, from anywhere, lies within only an empty outer). bad is the first
// entry of inner that does not.
func ListWithin(inner, outer []string) (bad string, ok bool) {
	if len(outer) == 0 {
		return "", true
	}
	if len(inner) == 0 {
		return "", false
	}
	outs := make([]Entry, 0, len(outer))
	for _, s := range outer {
		if e, err := Parse(s); err == nil {
			outs = append(outs, e)
		}
	}
next:
	for _, s := range inner {
		e, err := Parse(s)
		if err != nil {
			return s, false
		}
		for _, o := range outs {
			if Within(e, o) {
				continue next
			}
		}
		return s, false
	}
	return "", true
}

// Match reports whether the comma-joined canonical list allows a request
// from client address addr (invalid: none) with mTLS principal principal
// ("" for none). proxy says that addr stands for a proxy rather than the
// client (it lies inside --trusted-proxies): no CIDR matches it then. An
// empty list allows everything. An entry that does not parse matches
// nothing (fail closed). Match does not allocate.
func Match(list string, addr netip.Addr, proxy bool, principal string) bool {
	if list == "" {
		return true
	}
	addr = addr.Unmap()
	checkAddr := addr.IsValid() && !proxy
	okPrincipal := principal != "" && ValidID(principal)
	for item := range strings.SplitSeq(list, ",") { // list is not empty here
		if strings.HasPrefix(item, spiffeScheme) {
			if !okPrincipal {
				continue
			}
			if base, ok := strings.CutSuffix(item, "/*"); ok {
				if under(principal, base) {
					return true
				}
			} else if principal == item {
				return true
			}
			continue
		}
		if !checkAddr {
			continue
		}
		if strings.IndexByte(item, '/') >= 0 {
			if p, err := netip.ParsePrefix(item); err == nil && p.Contains(addr) {
				return true
			}
		} else if a, err := netip.ParseAddr(item); err == nil && a == addr {
			return true
		}
	}
	return false
}

// ValidID reports whether s is a well-formed SPIFFE ID (not a wildcard):
// a principal that is not never matches.
func ValidID(s string) bool { return checkSPIFFE(s, false) == nil }
