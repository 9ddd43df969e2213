package schema

import (
	"encoding/json"
	"fmt"
	"sort"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
)

// LeafFunc receives one leaf decoded from a JSON tree: its full path, its
// schema node and its canonical value.
type LeafFunc func(elems []*gpb.PathElem, n *Node, tv *gpb.TypedValue) error

// Flatten decodes v, the JSON value of the node n at the concrete path
// elems (n is the root for an empty path), and calls emit for every leaf in
// it. Member names may be module-qualified. Read-only data, unknown members
// and list entries whose keys disagree with the path are errors that name
// the offending path.
func (s *Schema) Flatten(elems []*gpb.PathElem, n *Node, v any, emit LeafFunc) error {
	switch n.Kind {
	case Leaf, LeafList:
		if n.Alias != nil {
			return &PathError{Path: pathString(elems), Msg: "is a list key; set it in the path"}
		}
		if !n.Config {
			return &PathError{Path: pathString(elems), Msg: "is read-only state"}
		}
		tv, err := FromJSON(n, v)
		if err != nil {
			return &PathError{Path: pathString(elems), Msg: err.Error()}
		}
		return emit(elems, n, tv)
	case List:
		last := elems[len(elems)-1]
		if len(last.GetKey()) == len(n.Keys) {
			return s.flattenEntry(elems, n, v, emit)
		}
		arr, ok := v.([]any)
		if !ok {
			return &PathError{Path: pathString(elems), Msg: fmt.Sprintf("a list takes a JSON array of entries, not %s", jsonKind(v))}
		}
		for _, item := range arr {
			obj, ok := item.(map[string]any)
			if !ok {
				return &PathError{Path: pathString(elems), Msg: "list entries must be JSON objects"}
			}
			keys := map[string]string{}
			for _, k := range n.Keys {
				kv, ok := s.memberValue(obj, n.Children[k])
				if !ok {
					return &PathError{Path: pathString(elems), Msg: fmt.Sprintf("list entry without its key %q", k)}
				}
				keys[k] = kv
			}
			e := append(cloneElems(elems[:len(elems)-1]), &gpb.PathElem{Name: n.Name, Key: keys})
			if err := s.flattenEntry(e, n, obj, emit); err != nil {
				return err
			}
		}
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return &PathError{Path: pathString(elems), Msg: fmt.Sprintf("a container takes a JSON object, not %s", jsonKind(v))}
	}
	return s.flattenMembers(elems, n, obj, emit)
}

func (s *Schema) flattenEntry(elems []*gpb.PathElem, n *Node, v any, emit LeafFunc) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return &PathError{Path: pathString(elems), Msg: fmt.Sprintf("a list entry takes a JSON object, not %s", jsonKind(v))}
	}
	keys := elems[len(elems)-1].GetKey()
	for _, k := range n.Keys {
		if kv, ok := s.memberValue(obj, n.Children[k]); ok && kv != keys[k] {
			return &PathError{Path: pathString(elems), Msg: fmt.Sprintf("key %q is %q in the value but %q in the path", k, kv, keys[k])}
		}
		if err := s.CheckKey(n, k, keys[k]); err != nil {
			return &PathError{Path: pathString(elems), Msg: err.Error()}
		}
	}
	return s.flattenMembers(elems, n, obj, emit)
}

func (s *Schema) flattenMembers(elems []*gpb.PathElem, n *Node, obj map[string]any, emit LeafFunc) error {
	names := make([]string, 0, len(obj))
	for name := range obj {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := s.Child(n, name)
		if c == nil {
			return &PathError{Path: pathString(elems) + "/" + name, Msg: "no such element in the schema"}
		}
		if c.Alias != nil {
			continue // a list key, already checked against the path
		}
		var ce []*gpb.PathElem
		if c.Kind == List {
			ce = append(cloneElems(elems), &gpb.PathElem{Name: c.Name})
		} else {
			ce = append(cloneElems(elems), &gpb.PathElem{Name: c.Name})
		}
		if !c.Config && c.Kind != Leaf && c.Kind != LeafList {
			return &PathError{Path: pathString(ce), Msg: "is read-only state"}
		}
		if err := s.Flatten(ce, c, obj[name], emit); err != nil {
			return err
		}
	}
	return nil
}

// memberValue returns the string form of a key leaf's value in a list
// entry object, taken from the entry's key member or its config container.
func (s *Schema) memberValue(obj map[string]any, key *Node) (string, bool) {
	v, ok := lookupMember(obj, key)
	if !ok && key.Alias != nil {
		inner := obj
		for i, step := range key.Alias {
			m, ok := lookupMemberName(inner, step, key.Module)
			if !ok {
				return "", false
			}
			if i == len(key.Alias)-1 {
				v = m
				break
			}
			if inner, ok = m.(map[string]any); !ok {
				return "", false
			}
		}
		if v == nil {
			return "", false
		}
	} else if !ok {
		return "", false
	}
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return fmt.Sprint(x), true
	}
	return "", false
}

func lookupMember(obj map[string]any, n *Node) (any, bool) {
	return lookupMemberName(obj, n.Name, n.Module)
}

func lookupMemberName(obj map[string]any, name, module string) (any, bool) {
	if v, ok := obj[name]; ok {
		return v, true
	}
	v, ok := obj[module+":"+name]
	return v, ok
}

func cloneElems(elems []*gpb.PathElem) []*gpb.PathElem {
	return append(make([]*gpb.PathElem, 0, len(elems)+2), elems...)
}

// Builder assembles leaves below one node into the JSON tree of that node.
type Builder struct {
	s    *Schema
	base *Node
	ietf bool
	root *object

	// The objects the previous Add passed through, by element: leaves
	// added in key order share most of their path with the previous one.
	lastRel  []*gpb.PathElem
	lastObjs []*object
	lastMods []string
}

type object struct {
	// Members in insertion order. Objects are small (a container's
	// children), where a linear search beats a map.
	names []string
	vals  []any // JSON value, *object or *list
}

func newObject() *object { return &object{} }

func (o *object) get(name string) any {
	for i, n := range o.names {
		if n == name {
			return o.vals[i]
		}
	}
	return nil
}

func (o *object) set(name string, v any) {
	for i, n := range o.names {
		if n == name {
			o.vals[i] = v
			return
		}
	}
	o.names = append(o.names, name)
	o.vals = append(o.vals, v)
}

type list struct {
	items []*object
	index map[string]*object
}

// NewBuilder returns a builder for the value of node base.
func (s *Schema) NewBuilder(base *Node, ietf bool) *Builder {
	return &Builder{s: s, base: base, ietf: ietf, root: newObject()}
}

// Add places a leaf, given by its path elements below the base node (rel),
// and the schema nodes of those elements.
func (b *Builder) Add(rel []*gpb.PathElem, nodes []*Node, value any) {
	cur := b.root
	parentModule := b.base.Module
	// Reuse the objects of the longest element prefix shared (by identity)
	// with the previous leaf.
	start := 0
	for start < len(rel)-1 && start < len(b.lastObjs) && rel[start] == b.lastRel[start] {
		start++
	}
	if start > 0 {
		cur, parentModule = b.lastObjs[start-1], b.lastMods[start-1]
	}
	b.lastRel, b.lastObjs, b.lastMods = append(b.lastRel[:start], rel[start:]...), b.lastObjs[:start], b.lastMods[:start]
	for i := start; i < len(rel); i++ {
		e := rel[i]
		n := nodes[i]
		name := n.Name
		if b.ietf && n.Module != parentModule {
			name = n.Module + ":" + n.Name
		}
		parentModule = n.Module
		if i == len(rel)-1 {
			cur.set(name, value)
			return
		}
		if n.Kind == List {
			l, _ := cur.get(name).(*list)
			if l == nil {
				l = &list{index: map[string]*object{}}
				cur.set(name, l)
			}
			id := entryID(e.GetKey())
			entry := l.index[id]
			if entry == nil {
				entry = newObject()
				for _, k := range n.Keys {
					entry.set(k, b.keyJSON(n.Children[k], e.GetKey()[k]))
				}
				l.index[id] = entry
				l.items = append(l.items, entry)
			}
			cur = entry
			b.lastObjs, b.lastMods = append(b.lastObjs, cur), append(b.lastMods, parentModule)
			continue
		}
		next, _ := cur.get(name).(*object)
		if next == nil {
			next = newObject()
			cur.set(name, next)
		}
		cur = next
		b.lastObjs, b.lastMods = append(b.lastObjs, cur), append(b.lastMods, parentModule)
	}
}

// AddEntryKeys records the key leaves of the list entry that is the base.
func (b *Builder) AddEntryKeys(keys map[string]string) {
	if b.base.Kind != List {
		return
	}
	for _, k := range b.base.Keys {
		b.root.set(k, b.keyJSON(b.base.Children[k], keys[k]))
	}
}

func (b *Builder) keyJSON(kn *Node, v string) any {
	if kn == nil {
		return v
	}
	tv, err := ParseString(kn, v)
	if err != nil {
		return v
	}
	return ToJSON(kn, tv, b.ietf)
}

func entryID(keys map[string]string) string {
	if len(keys) == 1 {
		for _, v := range keys {
			return v
		}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	id := ""
	for _, k := range names {
		id += k + "\x00" + keys[k] + "\x00"
	}
	return id
}

// Value returns the assembled JSON value.
func (b *Builder) Value() any { return render(b.root) }

// JSON returns the assembled value as JSON text, members in the order they
// were added (the store's key order).
func (b *Builder) JSON() []byte { return appendJSON(make([]byte, 0, 1024), b.root) }

func appendJSON(buf []byte, v any) []byte {
	switch x := v.(type) {
	case *object:
		buf = append(buf, '{')
		for i, name := range x.names {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSONString(buf, name)
			buf = append(buf, ':')
			buf = appendJSON(buf, x.vals[i])
		}
		return append(buf, '}')
	case *list:
		buf = append(buf, '[')
		for i, it := range x.items {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSON(buf, it)
		}
		return append(buf, ']')
	case []any:
		buf = append(buf, '[')
		for i, it := range x {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendJSON(buf, it)
		}
		return append(buf, ']')
	case string:
		return appendJSONString(buf, x)
	case json.Number:
		return append(buf, x...)
	case bool:
		if x {
			return append(buf, "true"...)
		}
		return append(buf, "false"...)
	case nil:
		return append(buf, "null"...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(buf, "null"...)
	}
	return append(buf, b...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string; s is valid UTF-8 (values
// are checked when written).
func appendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c < 0x20:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}

func render(v any) any {
	switch x := v.(type) {
	case *object:
		m := make(map[string]any, len(x.names))
		for i, k := range x.names {
			m[k] = render(x.vals[i])
		}
		return m
	case *list:
		arr := make([]any, 0, len(x.items))
		for _, it := range x.items {
			arr = append(arr, render(it))
		}
		return arr
	}
	return v
}
