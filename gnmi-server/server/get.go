package server

import (
	"context"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// leaf is one stored leaf read for a response.
type leaf struct {
	key   []byte
	elems []*gpb.PathElem
	node  *schema.Node
	value *gpb.TypedValue
	// nodes, when set, are the schema nodes of elems; valid only during the
	// callback that receives the leaf.
	nodes []*schema.Node
}

// query is one requested path, resolved.
type query struct {
	elems []*gpb.PathElem
	nodes []*schema.Node
	// matcher matches the stored paths at or below a query that is not a
	// leaf; a leaf query matches its key alone (see matches).
	matcher *txn.Matcher
	// alias is the path the client asked for when it named a list key leaf,
	// which is read from the leaf it stands for.
	alias []*gpb.PathElem
	wild  bool // holds "..."
	// visible, if set, is the caller's filter of the leaves it may read.
	visible func([]*gpb.PathElem) bool
	// leaf marks a concrete path to one leaf, read with a point lookup of key.
	leaf bool
	key  []byte
}

func (s *Server) newQuery(elems []*gpb.PathElem) (*query, error) {
	nodes, err := s.resolve(elems)
	if err != nil {
		return nil, err
	}
	q := &query{elems: elems, nodes: nodes, wild: len(nodes) < len(elems)}
	if !q.wild && len(nodes) > 0 {
		if last := nodes[len(nodes)-1]; last.Alias != nil {
			q.alias = elems
			q.elems = append(append([]*gpb.PathElem{}, elems[:len(elems)-1]...), aliasElems(last.Alias)...)
			if q.nodes, err = s.resolve(q.elems); err != nil {
				return nil, err
			}
		}
	}
	if !q.wild && len(q.nodes) > 0 {
		if last := q.nodes[len(q.nodes)-1]; (last.Kind == schema.Leaf || last.Kind == schema.LeafList) && schema.Concrete(q.elems, q.nodes) {
			q.leaf, q.key = true, pathkey.Encode(q.elems)
			return q, nil
		}
	}
	q.matcher = txn.NewMatcher(q.elems, q.nodes)
	return q, nil
}

// prefix returns the key prefix of every stored leaf at or below q.
func (q *query) prefix() []byte {
	if q.leaf {
		return q.key
	}
	return q.matcher.Prefix()
}

// matches reports whether the stored leaf at key, whose path is elems, is
// at or below q. Nothing is stored below a leaf, so a leaf query matches
// its own key only.
func (q *query) matches(key []byte, elems []*gpb.PathElem) bool {
	if q.leaf {
		return string(key) == string(q.key)
	}
	return q.matcher.Match(elems)
}

// nodeCache looks up the schema nodes of paths that arrive in key order,
// reusing the nodes of the elements a path shares (by identity, as
// pathkey.Decoder returns them) with the previous one.
type nodeCache struct {
	elems []*gpb.PathElem
	nodes []*schema.Node
}

func (c *nodeCache) last() *schema.Node {
	if len(c.nodes) == 0 {
		return nil
	}
	return c.nodes[len(c.nodes)-1]
}

func (c *nodeCache) lookup(s *schema.Schema, elems []*gpb.PathElem) *schema.Node {
	i := 0
	for i < len(elems) && i < len(c.elems) && elems[i] == c.elems[i] {
		i++
	}
	cur := s.Root
	if i > 0 {
		cur = c.nodes[i-1]
	}
	c.nodes = c.nodes[:i]
	for _, e := range elems[i:] {
		if cur = cur.Children[e.GetName()]; cur == nil {
			c.elems, c.nodes = nil, c.nodes[:0]
			return nil
		}
		c.nodes = append(c.nodes, cur)
	}
	c.elems = elems
	return cur
}

func aliasElems(names []string) []*gpb.PathElem {
	out := make([]*gpb.PathElem, len(names))
	for i, n := range names {
		out[i] = &gpb.PathElem{Name: n}
	}
	return out
}

// requested returns the path the client asked for.
func (q *query) requested() []*gpb.PathElem {
	if q.alias != nil {
		return q.alias
	}
	return q.elems
}

// shows reports whether the caller may read the leaf at elems.
func (q *query) shows(elems []*gpb.PathElem) bool {
	return q.visible == nil || q.visible(elems)
}

// scan reads the leaves that match q, pass keep and are visible to the
// caller.
func (s *Server) scan(r store.Reader, q *query, keep func(*schema.Node, int) bool, fn func(leaf) error) error {
	if q.leaf {
		v, ok, err := r.Get(q.key)
		if err != nil || !ok {
			return err
		}
		n := q.nodes[len(q.nodes)-1]
		if n.WriteOnly || !keep(n, len(q.elems)) || !q.shows(q.elems) {
			return nil
		}
		tv, err := txn.DecodeValue(v)
		if err != nil {
			return err
		}
		return fn(leaf{key: q.key, elems: q.elems, node: n, value: tv})
	}
	var dec pathkey.Decoder
	var nodes nodeCache
	return r.Scan(q.matcher.Prefix(), func(k, v []byte) error {
		if txn.IsInternal(k) {
			return nil
		}
		// Most keys a pattern with wildcards does not match are told from
		// their bytes, without decoding them.
		sure := q.matcher.Exact() // every key under the prefix matches
		if !sure {
			var matched bool
			if matched, sure = q.matcher.MatchKey(k); sure && !matched {
				return nil
			}
		}
		elems, err := dec.Decode(k)
		if err != nil {
			return err
		}
		if !sure && !q.matcher.Match(elems) {
			return nil
		}
		if !q.shows(elems) {
			return nil
		}
		n := nodes.lookup(s.cfg.Schema, elems)
		if n == nil || n.WriteOnly {
			return nil
		}
		if !keep(n, len(elems)) {
			// Below a depth limit, the leaf a list key stands for still
			// yields the key itself at the entry.
			if n.KeyOf == nil || !keep(n.KeyOf, len(elems)-1) {
				return nil
			}
			elems = append(elems[:len(elems)-2:len(elems)-2], &gpb.PathElem{Name: n.KeyOf.Name})
			if !q.matcher.Match(elems) {
				return nil
			}
			n = n.KeyOf
		}
		tv, err := txn.DecodeValue(v)
		if err != nil {
			return err
		}
		l := leaf{key: append([]byte(nil), k...), elems: elems, node: n, value: tv}
		if n == nodes.last() {
			l.nodes = nodes.nodes
		}
		return fn(l)
	})
}

func typeFilter(t gpb.GetRequest_DataType) func(*schema.Node) bool {
	switch t {
	case gpb.GetRequest_CONFIG:
		return func(n *schema.Node) bool { return n.Config }
	case gpb.GetRequest_STATE:
		return func(n *schema.Node) bool { return !n.Config }
	case gpb.GetRequest_OPERATIONAL:
		return func(n *schema.Node) bool { return !n.Config && !n.Mirrored }
	}
	return func(*schema.Node) bool { return true }
}

// Get returns one notification per requested path, read from one snapshot.
func (s *Server) Get(ctx context.Context, req *gpb.GetRequest) (*gpb.GetResponse, error) {
	if err := checkEncoding(req.GetEncoding()); err != nil {
		return nil, err
	}
	if _, ok := gpb.GetRequest_DataType_name[int32(req.GetType())]; !ok {
		return nil, status.Errorf(codes.InvalidArgument, "unknown data type %d", req.GetType())
	}
	depth, err := depthOf(req.GetExtension(), "Get")
	if err != nil {
		return nil, err
	}
	if len(req.GetPath()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "GetRequest has no path")
	}
	queries := make([]*query, 0, len(req.GetPath()))
	visible := s.visible(ctx)
	for _, p := range req.GetPath() {
		elems, err := fullPath(req.GetPrefix(), p)
		if err != nil {
			return nil, err
		}
		q, err := s.newQuery(elems)
		if err != nil {
			return nil, err
		}
		q.visible = visible
		queries = append(queries, q)
	}
	if s.cfg.Authorize != nil {
		paths := make([]*gpb.Path, len(queries))
		for i, q := range queries {
			paths[i] = &gpb.Path{Elem: q.requested()}
		}
		if err := s.cfg.Authorize(ctx, "Get", paths); err != nil {
			return nil, err
		}
	}
	if s.cfg.Reads != nil && linearizable(ctx) {
		// A read may be retried freely: wait out an election, within
		// the deadline, instead of failing while the leader changes.
		for {
			leader, err := s.cfg.Reads.Linearize(ctx)
			if err == nil && leader == nil {
				break // this node may serve it
			}
			if err == nil {
				out := metadata.Pairs(ConsistencyHeader, "linearizable")
				if s.cfg.User != nil {
					// The leader filters the answer for the caller.
					out.Set(ForwardedUserHeader, s.cfg.User(ctx))
				}
				resp, err := leader.Get(metadata.NewOutgoingContext(ctx, out), req)
				if status.Code(err) != codes.Unavailable {
					return resp, err
				}
			}
			select {
			case <-ctx.Done():
				return nil, status.Errorf(codes.Unavailable, "linearizable read: no leader confirmed it before the deadline: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	resp := &gpb.GetResponse{}
	typeOK := typeFilter(req.GetType())
	read := s.cfg.Store.View
	if len(queries) == 1 {
		// One path needs no snapshot: each read is consistent by itself.
		read = func(fn func(uint64, store.Reader) error) error { return fn(0, s.cfg.Store) }
	}
	err = read(func(_ uint64, r store.Reader) error {
		ts := time.Now().UnixNano()
		for _, q := range queries {
			n, err := s.notification(r, q, req.GetEncoding(), typeOK, depth)
			if err != nil {
				return err
			}
			n.Timestamp = ts
			if t := req.GetPrefix().GetTarget(); t != "" {
				n.Prefix = &gpb.Path{Target: t}
			}
			resp.Notification = append(resp.Notification, n)
		}
		return nil
	})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, internal(err)
	}
	return resp, nil
}

// linearizable reports whether the request in ctx asks for a linearizable
// read (ConsistencyHeader).
func linearizable(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return false
	}
	v := md.Get(ConsistencyHeader)
	return len(v) > 0 && v[0] == "linearizable"
}

// notification reads one query into a notification: one update per leaf for
// PROTO and for "..." paths, otherwise one JSON tree per matched node.
func (s *Server) notification(r store.Reader, q *query, enc gpb.Encoding, typeOK func(*schema.Node) bool, depth uint32) (*gpb.Notification, error) {
	base := len(q.elems)
	keep := func(n *schema.Node, l int) bool {
		return typeOK(n) && (depth == 0 || l-base < int(depth)+1)
	}
	notif := &gpb.Notification{}
	// A leaf query's one leaf is a group of its own: one update either way.
	perLeaf := enc == gpb.Encoding_PROTO || q.wild || q.leaf
	type group struct {
		elems []*gpb.PathElem
		b     *schema.Builder
		leaf  *leaf
	}
	var groups []*group
	var index map[string]*group
	err := s.scan(r, q, keep, func(l leaf) error {
		if perLeaf {
			v, err := leafValue(l.node, l.value, enc)
			if err != nil {
				return err
			}
			p := l.elems
			if q.alias != nil {
				p = q.alias
			}
			notif.Update = append(notif.Update, &gpb.Update{Path: &gpb.Path{Elem: p}, Val: v})
			return nil
		}
		head, _, _ := pathkey.Split(l.key, base)
		g := index[string(head)]
		if g == nil {
			if index == nil {
				index = map[string]*group{}
			}
			g = &group{elems: l.elems[:base]}
			index[string(head)] = g
			groups = append(groups, g)
		}
		if len(l.elems) == base {
			lc := l
			g.leaf = &lc
			return nil
		}
		if g.b == nil {
			baseNode := s.cfg.Schema.Root
			if base > 0 {
				baseNode = s.cfg.Schema.Lookup(g.elems)
			}
			g.b = s.cfg.Schema.NewBuilder(baseNode, enc == gpb.Encoding_JSON_IETF)
			if baseNode.Kind == schema.List {
				g.b.AddEntryKeys(g.elems[base-1].GetKey())
			}
		}
		rel := l.elems[base:]
		nodes := l.nodes
		if len(nodes) != len(l.elems) {
			nodes = s.cfg.Schema.Nodes(l.elems)
		}
		g.b.Add(rel, nodes[base:], schema.ToJSON(l.node, l.value, enc == gpb.Encoding_JSON_IETF))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !perLeaf {
		for _, g := range groups {
			p := g.elems
			if q.alias != nil {
				p = q.alias
			}
			var v *gpb.TypedValue
			if g.leaf != nil {
				var err error
				if v, err = leafValue(g.leaf.node, g.leaf.value, enc); err != nil {
					return nil, err
				}
			} else {
				b := g.b.JSON()
				if enc == gpb.Encoding_JSON_IETF {
					v = &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: b}}
				} else {
					v = &gpb.TypedValue{Value: &gpb.TypedValue_JsonVal{JsonVal: b}}
				}
			}
			notif.Update = append(notif.Update, &gpb.Update{Path: &gpb.Path{Elem: p}, Val: v})
		}
	}
	if len(notif.Update) == 0 {
		return nil, status.Errorf(codes.NotFound, "%s: no data at this path", pathkey.String(q.requested()))
	}
	return notif, nil
}
