package txn

import (
	"bytes"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
)

// Matcher matches stored paths against a path that may hold key wildcards
// ("*" or a missing key) and "..." (any number of elements).
type Matcher struct {
	elems  []*gpb.PathElem
	prefix []byte
	exact  bool // every key under prefix matches
	// raw is the pattern as MatchKey compares it with encoded keys; nil
	// if it cannot (a "..." or a key that must be empty).
	raw []rawElem
}

// rawElem is a pattern element in its encoded form: the name (nil: any)
// and the keys that must have a given value, escaped.
type rawElem struct {
	name []byte
	keys [][2][]byte
}

// NewMatcher returns a matcher for pattern, whose schema nodes (as Resolve
// returns them, up to any "...") are nodes.
func NewMatcher(pattern []*gpb.PathElem, nodes []*schema.Node) *Matcher {
	m := &Matcher{elems: pattern}
	covered := 0
	for i, e := range pattern {
		if i >= len(nodes) || e.GetName() == "..." || e.GetName() == "*" {
			break
		}
		if n := nodes[i]; n.Kind == schema.List && (hasWildKey(e) || len(e.GetKey()) < len(n.Keys)) {
			// Stored list elements always carry all their keys.
			m.prefix = pathkey.AppendListPrefix(m.prefix, e.GetName())
			break
		}
		m.prefix = pathkey.AppendElem(m.prefix, e.GetName(), e.GetKey())
		covered++
	}
	m.exact = covered == len(pattern)
	m.raw = rawPattern(pattern)
	return m
}

// rawPattern returns pattern's elements in their encoded form, or nil if
// MatchKey cannot compare them byte by byte.
func rawPattern(pattern []*gpb.PathElem) []rawElem {
	raw := make([]rawElem, 0, len(pattern))
	for _, e := range pattern {
		var r rawElem
		switch e.GetName() {
		case "...":
			return nil
		case "*":
		default:
			r.name = pathkey.AppendEscaped(nil, e.GetName())
		}
		for k, v := range e.GetKey() {
			if v == "" {
				return nil // matches a missing key too
			}
			if v != "*" {
				r.keys = append(r.keys, [2][]byte{pathkey.AppendEscaped(nil, k), pathkey.AppendEscaped(nil, v)})
			}
		}
		raw = append(raw, r)
	}
	return raw
}

func hasWildKey(e *gpb.PathElem) bool {
	if len(e.GetKey()) == 0 {
		return false
	}
	for _, v := range e.GetKey() {
		if v == "*" {
			return true
		}
	}
	return false
}

// Prefix is the key prefix that every matching key starts with.
func (m *Matcher) Prefix() []byte { return m.prefix }

// Match reports whether the concrete path p is at or below the pattern.
func (m *Matcher) Match(p []*gpb.PathElem) bool { return match(m.elems, p) }

// MatchKey reports whether the stored key matches, as Match does for its
// decoded path, reading the key's bytes without decoding them: a scan of a
// pattern with wildcards sees many keys that do not match, and decoding each
// costs allocations. sure is false when MatchKey cannot tell (a pattern with
// "...", a malformed key): then Match must.
func (m *Matcher) MatchKey(key []byte) (matched, sure bool) {
	if m.raw == nil {
		return false, false
	}
	for _, e := range m.raw {
		if len(key) == 0 {
			return false, true // the path is shorter than the pattern
		}
		name, keys, rest, ok := pathkey.SplitElem(key)
		if !ok {
			return false, false
		}
		if e.name != nil && !bytes.Equal(name, e.name) {
			return false, true
		}
		for _, want := range e.keys {
			found := false
			for ks := keys; !found; {
				k, v, more, ok := pathkey.SplitKey(ks)
				if !ok {
					break
				}
				if bytes.Equal(k, want[0]) {
					if !bytes.Equal(v, want[1]) {
						return false, true
					}
					found = true
				}
				ks = more
			}
			if !found {
				return false, true
			}
		}
		key = rest
	}
	return true, true
}

// Exact reports whether every key that starts with Prefix matches, so that
// a scan of Prefix needs no Match.
func (m *Matcher) Exact() bool { return m.exact }

func match(pat, p []*gpb.PathElem) bool {
	for i, e := range pat {
		if e.GetName() == "..." {
			rest := pat[i+1:]
			for j := i; j <= len(p); j++ {
				if match(rest, p[j:]) {
					return true
				}
			}
			return false
		}
		if i >= len(p) {
			return false
		}
		if e.GetName() != "*" && e.GetName() != p[i].GetName() {
			return false
		}
		for k, v := range e.GetKey() {
			if v != "*" && p[i].GetKey()[k] != v {
				return false
			}
		}
	}
	return true
}
