package txn

import (
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
	return m
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
