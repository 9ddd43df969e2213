// Package schema is the Patronus data model as the server uses it: the YANG
// schema that ygot generated into gen/model, indexed for fast path lookups,
// with the value rules (types, ranges, patterns, enumerations) that every
// leaf written through gNMI must satisfy, and the JSON and JSON_IETF codecs.
package schema

import (
	"fmt"
	"sort"
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/goyang/pkg/yang"

	"github.com/patronus-sdwan/patronus/gen/model"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// Kind is the shape of a schema node.
type Kind int

// The node kinds.
const (
	Container Kind = iota
	List
	Leaf
	LeafList
)

// Node is one schema node with what the server derives from it.
type Node struct {
	Name     string
	Kind     Kind
	Parent   *Node
	Children map[string]*Node
	// Keys are a list's key leaf names in schema order.
	Keys []string
	// Config reports whether the node is configuration (rw) data.
	Config bool
	// Module is the YANG module that defines the node.
	Module string
	// Path is the node's schema path, /sites/site/config/name.
	Path string

	// Type is the leaf's type, with leafrefs resolved to their target's type.
	Type *yang.YangType
	// Leafref is the leaf's leafref path if it references other data
	// (relative key references such as ../config/name are not included).
	Leafref *Leafref
	// Default is the YANG default of a leaf, or nil.
	Default *gpb.TypedValue
	// Mandatory marks a mandatory configuration leaf.
	Mandatory bool
	// Mirror is, for a config leaf, the state leaf that mirrors it.
	Mirror *Node
	// Mirrored marks a state leaf that mirrors a config leaf.
	Mirrored bool
	// Alias is, for a list's key leaf, the path of the leaf it stands for,
	// relative to the list entry (config/name).
	Alias []string
	// KeyOf is, for the leaf a list key stands for (config/name), the key
	// leaf at the list entry (name).
	KeyOf *Node
	// Counter marks a leaf under a counters container: data that changes
	// continuously and is best sampled.
	Counter bool
	// WriteOnly leaves are accepted in Set but never returned.
	WriteOnly bool

	entry *yang.Entry
}

// Leafref is a parsed leafref path to a list key: the referenced leaf exists
// when the list entry identified by Steps exists.
type Leafref struct {
	// Steps are the elements of the absolute target path without prefixes.
	Steps []LeafrefStep
	// List is the schema node of the referenced list.
	List *Node
}

// LeafrefStep is one element of a leafref path. Preds maps key names to the
// name of a sibling leaf of the referring leaf (current()/../sibling).
type LeafrefStep struct {
	Name  string
	Preds map[string]string
}

// Schema is the indexed data model.
type Schema struct {
	Root    *Node
	Modules []*gpb.ModelData
	modules map[string]bool
}

// Load indexes the schema generated into gen/model.
func Load() (*Schema, error) {
	ys, err := model.Schema()
	if err != nil {
		return nil, fmt.Errorf("schema: unzip generated schema: %w", err)
	}
	rootEntry := ys.SchemaTree["Device"]
	if rootEntry == nil {
		return nil, fmt.Errorf("schema: generated schema has no Device root")
	}
	s := &Schema{modules: map[string]bool{}}
	for _, m := range model.ΓModelData {
		s.Modules = append(s.Modules, &gpb.ModelData{Name: m.GetName(), Organization: m.GetOrganization(), Version: modelVersion})
		s.modules[m.GetName()] = true
	}
	s.Root = &Node{Name: "", Kind: Container, Config: true, Path: "", Children: map[string]*Node{}, entry: rootEntry}
	for name, e := range rootEntry.Dir {
		module := moduleOf(e)
		s.Root.Children[name] = s.build(e, s.Root, module, true)
	}
	if err := s.link(s.Root); err != nil {
		return nil, err
	}
	return s, nil
}

// modelVersion is the revision reference of every Patronus module; ygot only
// carries versions declared with OpenConfig's extension, which the modules
// do not import.
const modelVersion = "0.1.0"

// moduleOf returns the module of a top-level entry from ygot's schema path
// annotation, /module/name.
func moduleOf(e *yang.Entry) string {
	if p, ok := e.Annotation["schemapath"].(string); ok {
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		if len(parts) > 0 {
			return parts[0]
		}
	}
	return ""
}

func (s *Schema) build(e *yang.Entry, parent *Node, module string, config bool) *Node {
	if e.Config == yang.TSFalse {
		config = false
	} else if e.Config == yang.TSTrue {
		config = true
	}
	n := &Node{Name: e.Name, Parent: parent, Config: config, Module: module, Path: parent.Path + "/" + e.Name, entry: e}
	switch {
	case e.IsList():
		n.Kind = List
		n.Keys = strings.Fields(e.Key)
	case e.IsLeafList():
		n.Kind = LeafList
	case e.IsLeaf():
		n.Kind = Leaf
	default:
		n.Kind = Container
	}
	if e.Dir != nil {
		n.Children = map[string]*Node{}
		for name, c := range e.Dir {
			n.Children[name] = s.build(c, n, module, config)
		}
	}
	n.Counter = parent.Counter || (n.Kind == Container && n.Name == "counters")
	return n
}

// link resolves types, leafrefs, mirrors and defaults once the tree exists.
func (s *Schema) link(n *Node) error {
	for _, c := range n.Children {
		if err := s.link(c); err != nil {
			return err
		}
	}
	if n.Kind != Leaf && n.Kind != LeafList {
		return nil
	}
	e := n.entry
	t := e.Type
	if t == nil {
		return fmt.Errorf("schema: %s has no type", n.Path)
	}
	if t.Kind == yang.Yleafref {
		target, err := s.resolveLeafref(n, t.Path)
		if err != nil {
			return err
		}
		if strings.HasPrefix(t.Path, "/") {
			lr, err := s.parseLeafref(t.Path)
			if err != nil {
				return fmt.Errorf("schema: %s: %w", n.Path, err)
			}
			n.Leafref = lr
		} else if n.Parent.Kind == List {
			// A list key standing for ../config/<key> or ../state/<key>.
			n.Alias = strings.Split(strings.TrimPrefix(t.Path, "../"), "/")
			if target := descendNames(n.Parent, n.Alias); target != nil {
				target.KeyOf = n
			}
		}
		t = target
	}
	n.Type = t
	n.Mandatory = n.Config && (e.Mandatory == yang.TSTrue || RefinedMandatory[n.Path])
	n.WriteOnly = n.Config && n.Name == "password"
	if n.Config && n.Parent.Name == "config" && n.Parent.Parent != nil {
		if st := n.Parent.Parent.Children["state"]; st != nil {
			if m := st.Children[n.Name]; m != nil {
				n.Mirror = m
				m.Mirrored = true
			}
		}
	}
	if d := e.Default; len(d) > 0 && n.Kind == Leaf {
		tv, err := ParseString(n, d[0])
		if err != nil {
			return fmt.Errorf("schema: %s: default %q: %w", n.Path, d[0], err)
		}
		n.Default = tv
	}
	return nil
}

// resolveLeafref finds the type at the end of a leafref path.
func (s *Schema) resolveLeafref(n *Node, path string) (*yang.YangType, error) {
	var cur *Node
	if strings.HasPrefix(path, "/") {
		cur = s.Root
	} else {
		cur = n
	}
	for _, step := range splitSteps(strings.TrimPrefix(path, "/")) {
		name, _, _ := strings.Cut(step, "[")
		if i := strings.IndexByte(name, ':'); i >= 0 {
			name = name[i+1:]
		}
		if name == ".." {
			cur = cur.Parent
			continue
		}
		next := cur.Children[name]
		if next == nil {
			return nil, fmt.Errorf("schema: %s: leafref %q: no node %q under %s", n.Path, path, name, cur.Path)
		}
		cur = next
	}
	t := cur.entry.Type
	if t != nil && t.Kind == yang.Yleafref {
		return s.resolveLeafref(cur, t.Path)
	}
	return t, nil
}

func (s *Schema) parseLeafref(path string) (*Leafref, error) {
	lr := &Leafref{}
	cur := s.Root
	for _, raw := range splitSteps(strings.TrimPrefix(path, "/")) {
		name, preds, _ := strings.Cut(raw, "[")
		step := LeafrefStep{Name: stripPrefix(name)}
		if preds != "" {
			step.Preds = map[string]string{}
			for _, p := range strings.Split(strings.TrimSuffix(preds, "]"), "][") {
				k, v, ok := strings.Cut(p, "=")
				rel, found := strings.CutPrefix(strings.TrimSpace(v), "current()/../")
				if !ok || !found {
					return nil, fmt.Errorf("unsupported leafref predicate %q", p)
				}
				step.Preds[stripPrefix(strings.TrimSpace(k))] = rel
			}
		}
		next := cur.Children[step.Name]
		if next == nil {
			return nil, fmt.Errorf("leafref %q: no node %q", path, step.Name)
		}
		lr.Steps = append(lr.Steps, step)
		if next.Kind == Leaf {
			if cur.Kind != List || len(cur.Keys) != 1 || cur.Keys[0] != next.Name {
				return nil, fmt.Errorf("leafref %q: only references to a list's single key are supported", path)
			}
			lr.List = cur
		}
		cur = next
	}
	if lr.List == nil {
		return nil, fmt.Errorf("leafref %q does not end in a list key", path)
	}
	return lr, nil
}

func descendNames(n *Node, names []string) *Node {
	for _, name := range names {
		if n = n.Children[name]; n == nil {
			return nil
		}
	}
	return n
}

func splitSteps(p string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '/':
			if depth == 0 {
				out = append(out, p[start:i])
				start = i + 1
			}
		}
	}
	return append(out, p[start:])
}

func stripPrefix(name string) string {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// Child returns the child of n named name, which may carry a module prefix
// ("patronus-sites:sites"), or nil.
func (s *Schema) Child(n *Node, name string) *Node {
	if c := n.Children[name]; c != nil {
		return c
	}
	if mod, local, ok := strings.Cut(name, ":"); ok && s.modules[mod] {
		if c := n.Children[local]; c != nil && c.Module == mod {
			return c
		}
	}
	return nil
}

// PathError is an error about a specific path.
type PathError struct {
	Path string
	Msg  string
}

func (e *PathError) Error() string { return e.Path + ": " + e.Msg }

// Resolve walks elems from the root and returns the node of each element.
// With wild, keys may be "*" or missing and "..." may stand for any number
// of elements (Resolve then stops at "..." and returns the nodes before it).
// Element names may carry a module prefix; Resolve rewrites them in elems
// without it.
func (s *Schema) Resolve(elems []*gpb.PathElem, wild bool) ([]*Node, error) {
	nodes := make([]*Node, 0, len(elems))
	cur := s.Root
	for i, e := range elems {
		if e.GetName() == "..." {
			if !wild {
				return nil, &PathError{Path: pathString(elems), Msg: "wildcard '...' is not allowed here"}
			}
			if !s.expands(cur, elems[i:]) {
				return nil, &PathError{Path: pathString(elems), Msg: "no schema path matches it"}
			}
			return nodes, nil
		}
		if e.GetName() == "*" {
			if !wild {
				return nil, &PathError{Path: pathString(elems), Msg: "wildcard '*' is not allowed here"}
			}
			if !s.expands(cur, elems[i:]) {
				return nil, &PathError{Path: pathString(elems), Msg: "no schema path matches it"}
			}
			return nodes, nil
		}
		c := s.Child(cur, e.GetName())
		if c == nil {
			where := "/"
			if cur != s.Root {
				where = pathString(elems[:i])
			}
			return nil, &PathError{Path: pathString(elems), Msg: fmt.Sprintf("no element %q under %s in the schema", e.GetName(), where)}
		}
		if c.Name != e.GetName() {
			e.Name = c.Name
		}
		if c.Kind != List && len(e.GetKey()) > 0 {
			return nil, &PathError{Path: pathString(elems), Msg: fmt.Sprintf("%q is not a list and takes no keys", c.Name)}
		}
		if c.Kind == List {
			for k, v := range e.GetKey() {
				if !containsString(c.Keys, k) {
					return nil, &PathError{Path: pathString(elems), Msg: fmt.Sprintf("list %q has no key %q (its keys: %s)", c.Name, k, strings.Join(c.Keys, ", "))}
				}
				if v == "" {
					return nil, &PathError{Path: pathString(elems), Msg: fmt.Sprintf("empty value for key %q", k)}
				}
				if v == "*" {
					if !wild {
						return nil, &PathError{Path: pathString(elems), Msg: "key wildcards are not allowed here"}
					}
					continue
				}
				if err := s.CheckKey(c, k, v); err != nil {
					return nil, &PathError{Path: pathString(elems), Msg: err.Error()}
				}
			}
			if !wild && len(e.GetKey()) != len(c.Keys) {
				return nil, &PathError{Path: pathString(elems), Msg: fmt.Sprintf("list %q needs all its keys (%s)", c.Name, strings.Join(c.Keys, ", "))}
			}
		}
		nodes = append(nodes, c)
		cur = c
	}
	return nodes, nil
}

// expands reports whether some schema path below n matches elems, whose
// element names may be "*" (any one element) or "..." (any number).
func (s *Schema) expands(n *Node, elems []*gpb.PathElem) bool {
	if len(elems) == 0 {
		return true
	}
	e := elems[0]
	switch e.GetName() {
	case "...":
		if s.expands(n, elems[1:]) {
			return true
		}
		for _, c := range n.Children {
			if s.expands(c, elems) {
				return true
			}
		}
		return false
	case "*":
		for _, c := range n.Children {
			if keysFit(c, e) && s.expands(c, elems[1:]) {
				return true
			}
		}
		return false
	}
	c := s.Child(n, e.GetName())
	return c != nil && keysFit(c, e) && s.expands(c, elems[1:])
}

func keysFit(n *Node, e *gpb.PathElem) bool {
	if n.Kind != List {
		return len(e.GetKey()) == 0
	}
	for k := range e.GetKey() {
		if !containsString(n.Keys, k) {
			return false
		}
	}
	return true
}

// CheckKey validates a key value of list l.
func (s *Schema) CheckKey(l *Node, key, value string) error {
	kn := l.Children[key]
	if kn == nil {
		return fmt.Errorf("list %q has no key %q", l.Name, key)
	}
	if _, err := ParseString(kn, value); err != nil {
		return fmt.Errorf("key %s=%q: %w", key, value, err)
	}
	return nil
}

// Lookup returns the node at a concrete or wildcarded path without checking
// key values, or nil if there is none. It is the fast path for stored keys.
func (s *Schema) Lookup(elems []*gpb.PathElem) *Node {
	cur := s.Root
	for _, e := range elems {
		cur = cur.Children[e.GetName()]
		if cur == nil {
			return nil
		}
	}
	return cur
}

// Concrete reports whether every list element of a resolved path carries
// all its keys, none of them a wildcard.
func Concrete(elems []*gpb.PathElem, nodes []*Node) bool {
	for i, n := range nodes {
		if n.Kind != List {
			continue
		}
		if len(elems[i].GetKey()) != len(n.Keys) {
			return false
		}
		for _, v := range elems[i].GetKey() {
			if v == "*" {
				return false
			}
		}
	}
	return true
}

// Nodes returns the node of each element of a stored path, or nil if one is
// not in the schema.
func (s *Schema) Nodes(elems []*gpb.PathElem) []*Node {
	out := make([]*Node, len(elems))
	cur := s.Root
	for i, e := range elems {
		if cur = cur.Children[e.GetName()]; cur == nil {
			return nil
		}
		out[i] = cur
	}
	return out
}

// Walk calls fn for n and every node below it in name order.
func Walk(n *Node, fn func(*Node)) {
	fn(n)
	names := make([]string, 0, len(n.Children))
	for name := range n.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		Walk(n.Children[name], fn)
	}
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func pathString(elems []*gpb.PathElem) string { return pathkey.String(elems) }
