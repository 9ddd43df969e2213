// Package txn applies a gNMI SetRequest to the data tree as one transaction:
// deletes, then replaces, then updates, validated as a whole against the
// resulting tree (values, mandatory leaves, leafrefs, unique leaves), with
// site and endpoint deletions cascading through everything that references
// them, and the audit record and events written in the same transaction.
//
// Validation is incremental: it looks only at the list entries the request
// touches and at secondary indexes kept in the store (reverse references and
// unique values), never at the whole tree, so the cost of a Set does not grow
// with the size of the configuration.
package txn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Keys that are not data paths start with bytes no path element starts with.
const (
	// InternalPrefix starts every key that is not a data path.
	InternalPrefix = 0xf0
	refIndex       = "\xfer"  // refIndex + target entry + 0xff + referrer leaf
	fwdIndex       = "\xfef"  // fwdIndex + referrer leaf + 0xff + target entry
	uniqueIndex    = "\xfeu"  // uniqueIndex + list path + 0x00 + value + 0xff + entry
	metaPrefix     = "\xfdm/" // counters
)

// ClusterSecretKey holds the secret with which the members of a cluster
// authenticate to each other. It is replicated (in the log and in
// snapshots) but, like every internal key, never served by Get or Subscribe.
const ClusterSecretKey = "\xfds/cluster-secret"

// IsInternal reports whether a stored key is bookkeeping, not data.
func IsInternal(key []byte) bool { return len(key) > 0 && key[0] >= InternalPrefix }

// Error is a failed operation with the gRPC code the client must get.
type Error struct {
	Code codes.Code
	// Op is the index of the failing operation in delete, replace, update
	// order, or -1 when the failure concerns the resulting tree as a whole.
	Op   int
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Meta describes who sent a Set and where it is applied.
type Meta struct {
	User string
	Peer string
	Node string
	// Time is the commit time (ns since the epoch) recorded in the audit
	// record; zero means the store transaction's time. Replication sets it
	// on the leader so that every node records the same.
	Time int64
	// Commit is the commit-confirmed action of the Set, if any.
	Commit *CommitAction
	// ClusterSecret, if set, becomes the cluster's internal credential
	// (ClusterSecretKey) unless the store already holds one. Only the
	// first commit of a new cluster carries it.
	ClusterSecret string

	// local, if set (Evaluate), receives what the Set does that is this
	// node's own instead of the Set doing it.
	local *Local
}

// Op is one operation of a SetRequest with its path made absolute.
type Op struct {
	Kind  gpb.UpdateResult_Operation
	Elems []*gpb.PathElem
	Value *gpb.TypedValue
	// Path is the operation's path as the client sent it, for the response.
	Path *gpb.Path

	leaves []Leaf // decoded by Prepare
}

// Result is what a successful Set did.
type Result struct {
	// Time is the commit timestamp in ns since the epoch.
	Time int64
	// Changed lists every path written or deleted, cascades included.
	Changed []string
	// Index is the replication log index of the commit, when replicated.
	Index uint64
}

// Engine applies SetRequests. It is safe for concurrent use: each call runs
// inside one store transaction.
type Engine struct {
	s *schema.Schema
	// keyOf maps a list's key target leaf (config/name) to the key it holds.
	keyOf map[*schema.Node]string
	// defaults lists, per list, the defaulted config leaves of an entry
	// outside nested lists, as schema-relative names.
	defaults map[*schema.Node][]relLeaf
	// mandatory lists, per list, its entries' mandatory config leaves.
	mandatory map[*schema.Node][]relLeaf
	// refs lists, per list, its entries' leafref leaves.
	refs map[*schema.Node][]relLeaf
	// uniques maps a list to its unique leaf (see schema.Unique).
	uniques map[*schema.Node]relLeaf
	// keyLeaves lists, per list, the encoded paths of the leaves that hold
	// an entry's keys, relative to the entry.
	keyLeaves map[*schema.Node][][]byte
	// leaves maps, per list, the encoded path of each leaf of an entry
	// outside nested lists, relative to the entry, to its schema node: a
	// delete of a whole entry knows its keys without decoding them.
	leaves map[*schema.Node]map[string]*schema.Node
	// EventRing is the number of events kept.
	EventRing uint64
	// AuditRing is the number of audit records kept.
	AuditRing uint64
}

type relLeaf struct {
	names  []string
	node   *schema.Node
	suffix []byte // names encoded, see suffix
}

// suffix encodes names, the path of a leaf relative to its entry: the
// leaf's key is the entry's key followed by it.
func suffix(names []string) []byte {
	var b []byte
	for _, name := range names {
		b = pathkey.AppendElem(b, name, nil)
	}
	return b
}

// leafKey returns the key of the leaf at names (encoded as suffix) in the
// entry with key entryKey.
func leafKey(entryKey string, suffix []byte) []byte {
	k := make([]byte, 0, len(entryKey)+len(suffix))
	return append(append(k, entryKey...), suffix...)
}

// New returns an engine for schema s.
func New(s *schema.Schema) *Engine {
	e := &Engine{
		s: s, keyOf: map[*schema.Node]string{}, defaults: map[*schema.Node][]relLeaf{},
		mandatory: map[*schema.Node][]relLeaf{}, refs: map[*schema.Node][]relLeaf{},
		uniques: map[*schema.Node]relLeaf{}, leaves: map[*schema.Node]map[string]*schema.Node{},
		keyLeaves: map[*schema.Node][][]byte{}, EventRing: 10000, AuditRing: 100000,
	}
	schema.Walk(s.Root, func(n *schema.Node) {
		if n.Kind != schema.List {
			return
		}
		for _, k := range n.Keys {
			if kn := n.Children[k]; kn != nil && kn.Alias != nil {
				if t := descend(n, kn.Alias); t != nil {
					e.keyOf[t] = k
				}
				e.keyLeaves[n] = append(e.keyLeaves[n], suffix(kn.Alias))
			}
		}
		e.leaves[n] = map[string]*schema.Node{}
		collectLeaves(n, nil, func(rel []string, leaf *schema.Node) {
			e.leaves[n][string(suffix(rel))] = leaf
			if !leaf.Config {
				return
			}
			if leaf.Default != nil {
				e.defaults[n] = append(e.defaults[n], relLeaf{rel, leaf, suffix(rel)})
			}
			if leaf.Mandatory {
				e.mandatory[n] = append(e.mandatory[n], relLeaf{rel, leaf, suffix(rel)})
			}
			if leaf.Leafref != nil {
				e.refs[n] = append(e.refs[n], relLeaf{rel, leaf, suffix(rel)})
			}
		})
	})
	for list, leaf := range schema.Unique {
		ln := s.Lookup(elemsOf(list))
		rel := splitRel(leaf)
		e.uniques[ln] = relLeaf{rel, descend(ln, rel), suffix(rel)}
	}
	return e
}

func splitRel(p string) []string {
	var out []string
	for _, s := range bytes.Split([]byte(p), []byte("/")) {
		out = append(out, string(s))
	}
	return out
}

func elemsOf(p string) []*gpb.PathElem {
	var out []*gpb.PathElem
	for _, s := range splitRel(p[1:]) {
		out = append(out, &gpb.PathElem{Name: s})
	}
	return out
}

func descend(n *schema.Node, names []string) *schema.Node {
	for _, name := range names {
		if n = n.Children[name]; n == nil {
			return nil
		}
	}
	return n
}

// collectLeaves calls fn for every leaf below n that is not inside a nested
// list, with its names relative to n.
func collectLeaves(n *schema.Node, rel []string, fn func([]string, *schema.Node)) {
	names := make([]string, 0, len(n.Children))
	for name := range n.Children {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := n.Children[name]
		r := append(slices.Clone(rel), name)
		switch c.Kind {
		case schema.Leaf, schema.LeafList:
			if c.Alias == nil {
				fn(r, c)
			}
		case schema.Container:
			collectLeaves(c, r, fn)
		}
	}
}

// entry is a list entry touched by a transaction.
type entry struct {
	key   string // encoded path of the entry
	elems []*gpb.PathElem
	list  *schema.Node
}

type applier struct {
	e       *Engine
	tx      store.Tx
	touched map[string]*entry
	order   []string
	deleted []*entry        // entries removed, in order, awaiting cleanup and cascade
	cleared int             // deleted[:cleared] have been cleaned up
	gone    map[string]bool // keys of the entries in deleted[:cleared]
	swept   map[string]bool // keys of entries whose whole range a delete removed
	// ensured holds entries whose key leaves exist, so that writing many
	// leaves of one entry checks them once; a delete forgets it all.
	ensured map[string]bool
	changed []string
	uniques map[string]bool // unique index prefixes whose holders changed
	sites   []string        // sites deleted
}

// Apply applies ops to tx. On error the caller must discard tx.
func (e *Engine) apply(tx store.Tx, ops []Op, meta Meta) (*Result, []string, error) {
	if err := e.Prepare(ops); err != nil {
		return nil, nil, err
	}
	a := &applier{e: e, tx: tx, touched: map[string]*entry{}, uniques: map[string]bool{}, gone: map[string]bool{}, swept: map[string]bool{}, ensured: map[string]bool{}}
	for i, op := range ops {
		var err error
		switch op.Kind {
		case gpb.UpdateResult_DELETE:
			err = a.delete(op.Elems)
		case gpb.UpdateResult_REPLACE:
			if err = a.delete(op.Elems); err == nil {
				err = a.update(op)
			}
		case gpb.UpdateResult_UPDATE:
			err = a.update(op)
		}
		if err != nil {
			var te *Error
			if errors.As(err, &te) {
				te.Op = i
				return nil, nil, te
			}
			return nil, nil, &Error{Code: codes.Internal, Op: i, Path: pathkey.String(op.Elems), Msg: err.Error()}
		}
		a.changed = append(a.changed, pathkey.String(op.Elems))
	}
	if err := a.cascade(); err != nil {
		return nil, nil, err
	}
	if err := a.finish(); err != nil {
		return nil, nil, err
	}
	res := &Result{Time: tx.Time(), Changed: a.changed}
	if meta.Time != 0 {
		res.Time = meta.Time
	}
	if meta.local != nil {
		// The entries deleted, and any other whose whole range a delete
		// removed (an entry of measured state only).
		for _, ent := range a.deleted {
			meta.local.Cleared = append(meta.local.Cleared, ent.key)
		}
		for k := range a.swept {
			if !a.gone[k] {
				meta.local.Cleared = append(meta.local.Cleared, k)
			}
		}
	}
	return res, a.sites, nil
}

func checkWritable(op Op) error {
	if op.Value == nil || op.Value.GetValue() == nil {
		return &Error{Code: codes.InvalidArgument, Path: pathkey.String(op.Elems), Msg: "the operation has no value"}
	}
	switch op.Value.GetValue().(type) {
	case *gpb.TypedValue_BytesVal, *gpb.TypedValue_ProtoBytes, *gpb.TypedValue_AnyVal:
		return &Error{Code: codes.Unimplemented, Path: pathkey.String(op.Elems), Msg: "unsupported value encoding; use JSON, JSON_IETF or a scalar TypedValue"}
	}
	return nil
}

// Leaf is one decoded leaf of an update or replace.
type Leaf struct {
	Elems []*gpb.PathElem
	Node  *schema.Node
	Value *gpb.TypedValue
}

// Prepare decodes and checks the values of the update and replace
// operations against the schema. It needs no store access, so the server
// runs it before the transaction, off the store's single writer; Apply
// prepares any operation that was not.
func (e *Engine) Prepare(ops []Op) error {
	for i := range ops {
		if ops[i].Kind == gpb.UpdateResult_DELETE || ops[i].leaves != nil {
			continue
		}
		leaves, err := e.decode(ops[i])
		if err != nil {
			var te *Error
			if errors.As(err, &te) {
				te.Op = i
				return te
			}
			return &Error{Code: codes.Internal, Op: i, Path: pathkey.String(ops[i].Elems), Msg: err.Error()}
		}
		ops[i].leaves = leaves
	}
	return nil
}

// decode returns the leaves in op's value.
func (e *Engine) decode(op Op) ([]Leaf, error) {
	if err := checkWritable(op); err != nil {
		return nil, err
	}
	nodes, err := e.s.Resolve(op.Elems, false)
	if err != nil {
		return nil, notFound(err)
	}
	n := e.s.Root
	if len(nodes) > 0 {
		n = nodes[len(nodes)-1]
	}
	path := pathkey.String(op.Elems)
	if !n.Config {
		return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: "is read-only state"}
	}
	leaves := []Leaf{}
	add := func(elems []*gpb.PathElem, ln *schema.Node, tv *gpb.TypedValue) error {
		if ln.WriteOnly {
			var err error
			if tv, err = hashSecret(tv); err != nil {
				return err
			}
		}
		leaves = append(leaves, Leaf{Elems: elems, Node: ln, Value: tv})
		return nil
	}
	switch op.Value.GetValue().(type) {
	case *gpb.TypedValue_JsonVal, *gpb.TypedValue_JsonIetfVal:
		raw := op.Value.GetJsonIetfVal()
		if raw == nil {
			raw = op.Value.GetJsonVal()
		}
		v, err := schema.DecodeJSON(raw)
		if err != nil {
			return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: err.Error()}
		}
		if n.Kind == schema.Leaf || n.Kind == schema.LeafList {
			if err := checkLeafWritable(n, path); err != nil {
				return nil, err
			}
			tv, err := schema.FromJSON(n, v)
			if err != nil {
				return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: err.Error()}
			}
			return leaves, add(op.Elems, n, tv)
		}
		if n.Kind == schema.List && len(op.Elems[len(op.Elems)-1].GetKey()) == 0 {
			return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: "address a list entry with all its keys"}
		}
		if err := e.s.Flatten(op.Elems, n, v, add); err != nil {
			var pe *schema.PathError
			if errors.As(err, &pe) {
				return nil, &Error{Code: codes.InvalidArgument, Path: pe.Path, Msg: pe.Msg}
			}
			return nil, err
		}
		return leaves, nil
	}
	if n.Kind != schema.Leaf && n.Kind != schema.LeafList {
		return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: "a scalar value needs a leaf path; send JSON or JSON_IETF for a container or list"}
	}
	if err := checkLeafWritable(n, path); err != nil {
		return nil, err
	}
	tv, err := schema.FromTyped(n, op.Value)
	if err != nil {
		return nil, &Error{Code: codes.InvalidArgument, Path: path, Msg: err.Error()}
	}
	return leaves, add(op.Elems, n, tv)
}

// update writes the leaves of a prepared operation.
func (a *applier) update(op Op) error {
	for _, l := range op.leaves {
		if err := a.setLeaf(l.Elems, l.Node, l.Value); err != nil {
			return err
		}
	}
	return nil
}

func checkLeafWritable(n *schema.Node, path string) error {
	if n.Alias != nil {
		return &Error{Code: codes.InvalidArgument, Path: path, Msg: "is a list key; set it in the path"}
	}
	if !n.Config {
		return &Error{Code: codes.InvalidArgument, Path: path, Msg: "is read-only state"}
	}
	return nil
}

func notFound(err error) error {
	var pe *schema.PathError
	if errors.As(err, &pe) {
		code := codes.NotFound
		if !bytes.Contains([]byte(pe.Msg), []byte("in the schema")) {
			code = codes.InvalidArgument
		}
		return &Error{Code: code, Path: pe.Path, Msg: pe.Msg}
	}
	return err
}

// setLeaf writes one config leaf, its state mirror and its index entries,
// creating the key leaves of every list entry above it.
func (a *applier) setLeaf(elems []*gpb.PathElem, n *schema.Node, tv *gpb.TypedValue) error {
	if k, ok := a.e.keyOf[n]; ok {
		// The key leaf of the entry above: it must equal the path's key.
		want := elems[len(elems)-3].GetKey()[k]
		if s := tv.GetStringVal(); s != want && fmt.Sprint(scalarString(tv)) != want {
			return &Error{Code: codes.InvalidArgument, Path: pathkey.String(elems), Msg: fmt.Sprintf("key leaf set to %q but the path's key is %q", scalarString(tv), want)}
		}
	}
	if err := a.ensureEntries(elems); err != nil {
		return err
	}
	return a.write(elems, n, tv)
}

// write stores a leaf and keeps its mirror and indexes in step.
func (a *applier) write(elems []*gpb.PathElem, n *schema.Node, tv *gpb.TypedValue) error {
	key := pathkey.Encode(elems)
	val := EncodeValue(tv)
	old, had, err := a.tx.Get(key)
	if err != nil {
		return err
	}
	a.touch(elems)
	if had && bytes.Equal(old, val) {
		return nil
	}
	a.tx.Set(key, val)
	if n.Mirror != nil {
		a.tx.Set(mirrorKey(elems), val)
	}
	var oldTV *gpb.TypedValue
	if had {
		oldTV, _ = DecodeValue(old)
	}
	return a.reindex(elems, n, oldTV, tv)
}

// remove deletes a stored leaf with its mirror and index entries.
func (a *applier) remove(key []byte, elems []*gpb.PathElem, n *schema.Node) error {
	old, had, err := a.tx.Get(key)
	if err != nil || !had {
		return err
	}
	return a.removeFound(key, elems, n, old)
}

// removeFound is remove for a leaf known to exist with value old.
func (a *applier) removeFound(key []byte, elems []*gpb.PathElem, n *schema.Node, old []byte) error {
	a.tx.Delete(key)
	if n.Mirror != nil {
		a.tx.Delete(mirrorKey(elems))
	}
	a.touch(elems)
	if u, ok := a.e.uniques[a.listOf(elems)]; !ok || u.node != n {
		return nil // reindex has nothing to do for other leaves
	}
	oldTV, _ := DecodeValue(old)
	return a.reindex(elems, n, oldTV, nil)
}

// listOf returns the schema node of the innermost list above elems.
func (a *applier) listOf(elems []*gpb.PathElem) *schema.Node {
	var list *schema.Node
	cur := a.e.s.Root
	for i, el := range elems {
		if cur = cur.Children[el.GetName()]; cur == nil {
			return list
		}
		if cur.Kind == schema.List && i < len(elems)-1 {
			list = cur
		}
	}
	return list
}

func mirrorKey(elems []*gpb.PathElem) []byte {
	m := slices.Clone(elems)
	m[len(m)-2] = &gpb.PathElem{Name: "state"}
	return pathkey.Encode(m)
}

// reindex updates the reference and unique indexes for a leaf that changed
// from old to new (either may be nil).
func (a *applier) reindex(elems []*gpb.PathElem, n *schema.Node, old, new *gpb.TypedValue) error {
	ent := a.entryOf(elems)
	if ent == nil {
		return nil
	}
	if u, ok := a.e.uniques[ent.list]; ok && u.node == n {
		if old != nil {
			p := uniquePrefix(ent.list, old)
			a.tx.Delete(append([]byte(p), ent.key...))
		}
		if new != nil {
			p := uniquePrefix(ent.list, new)
			a.tx.Set(append([]byte(p), ent.key...), nil)
			a.uniques[p] = true
		}
	}
	return nil
}

// reindexRefs rewrites the reference index entries of an entry's leafref
// leaves from their current values and their predicate siblings' current
// values. One scan finds the old entries of all of them.
func (a *applier) reindexRefs(ent *entry) error {
	refs := a.e.refs[ent.list]
	if len(refs) == 0 {
		return nil
	}
	prefix := append([]byte(fwdIndex), ent.key...)
	var old [][]byte
	if err := a.tx.Scan(prefix, func(k, _ []byte) error {
		old = append(old, slices.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	own := a.e.leaves[ent.list]
	for _, k := range old {
		leaf, target, ok := bytes.Cut(k[len(fwdIndex):], []byte{0xff})
		if !ok {
			continue
		}
		if n := own[string(leaf[len(ent.key):])]; n == nil || !n.Config || n.Leafref == nil {
			continue // a leaf of a nested entry, reindexed with that entry
		}
		a.tx.Delete(k)
		a.tx.Delete(refKey(target, leaf))
	}
	if a.gone[ent.key] {
		if again, err := a.entryExists(ent); err != nil || !again {
			return err // deleted whole: it refers to nothing any more
		}
	}
	for _, r := range refs {
		key := leafKey(ent.key, r.suffix)
		tv, err := a.readLeaf(key)
		if err != nil {
			return err
		}
		if tv == nil {
			continue
		}
		fwd := append(append([]byte(fwdIndex), key...), 0xff)
		for _, t := range a.targets(relElems(ent.elems, r.names), r.node, tv) {
			a.tx.Set(append(slices.Clone(fwd), t...), nil)
			a.tx.Set(refKey(t, key), nil)
		}
	}
	return nil
}

// readLeaf returns a stored leaf's value, or nil if it is not set.
func (a *applier) readLeaf(key []byte) (*gpb.TypedValue, error) {
	b, ok, err := a.tx.Get(key)
	if err != nil || !ok {
		return nil, err
	}
	return DecodeValue(b)
}

func refKey(target, leaf []byte) []byte {
	k := make([]byte, 0, len(refIndex)+len(target)+1+len(leaf))
	k = append(k, refIndex...)
	k = append(k, target...)
	k = append(k, 0xff)
	return append(k, leaf...)
}

func uniquePrefix(list *schema.Node, v *gpb.TypedValue) string {
	return uniqueIndex + list.Path + "\x00" + scalarString(v) + "\xff"
}

func scalarString(tv *gpb.TypedValue) string {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return v.StringVal
	case *gpb.TypedValue_UintVal:
		return strconv.FormatUint(v.UintVal, 10)
	case *gpb.TypedValue_IntVal:
		return strconv.FormatInt(v.IntVal, 10)
	case *gpb.TypedValue_BoolVal:
		return strconv.FormatBool(v.BoolVal)
	case *gpb.TypedValue_DoubleVal:
		return strconv.FormatFloat(v.DoubleVal, 'f', -1, 64)
	}
	return tv.String()
}

// targets returns the encoded list entries that leaf n (at elems) refers to
// with value v.
func (a *applier) targets(elems []*gpb.PathElem, n *schema.Node, v *gpb.TypedValue) [][]byte {
	if v == nil {
		return nil
	}
	var vals []string
	if ll := v.GetLeaflistVal(); ll != nil {
		for _, el := range ll.GetElement() {
			vals = append(vals, scalarString(el))
		}
	} else {
		vals = []string{scalarString(v)}
	}
	var out [][]byte
	for _, val := range vals {
		if t, ok := a.target(elems, n, val); ok {
			out = append(out, t)
		}
	}
	return out
}

// target builds the key of the entry that leaf n at elems references with
// value val; ok is false if a predicate's sibling leaf is not set.
func (a *applier) target(elems []*gpb.PathElem, n *schema.Node, val string) ([]byte, bool) {
	lr := n.Leafref
	var key []byte
	cur := a.e.s.Root
	for i, step := range lr.Steps[:len(lr.Steps)-1] {
		cur = cur.Children[step.Name]
		var keys map[string]string
		if cur.Kind == schema.List {
			keys = map[string]string{}
			for k, sib := range step.Preds {
				sibElems := append(slices.Clone(elems[:len(elems)-1]), &gpb.PathElem{Name: sib})
				b, ok, err := a.tx.Get(pathkey.Encode(sibElems))
				if err != nil || !ok {
					return nil, false
				}
				tv, err := DecodeValue(b)
				if err != nil {
					return nil, false
				}
				keys[k] = scalarString(tv)
			}
			if i == len(lr.Steps)-2 {
				keys[lr.Steps[len(lr.Steps)-1].Name] = val
			}
		}
		key = pathkey.AppendElem(key, step.Name, keys)
	}
	return key, true
}

// ensureEntries creates the key leaves of every list entry above elems that
// does not exist yet, and fills the new entry's defaults.
func (a *applier) ensureEntries(elems []*gpb.PathElem) error {
	cur := a.e.s.Root
	for i, el := range elems[:len(elems)-1] {
		cur = cur.Children[el.GetName()]
		if cur.Kind != schema.List {
			continue
		}
		entryElems := elems[:i+1]
		entryKey := string(pathkey.Encode(entryElems))
		if a.ensured[entryKey] {
			continue
		}
		a.ensured[entryKey] = true
		for _, k := range cur.Keys {
			kn := cur.Children[k]
			if kn.Alias == nil {
				continue
			}
			target := descend(cur, kn.Alias)
			kElems := slices.Clone(entryElems)
			for _, name := range kn.Alias {
				kElems = append(kElems, &gpb.PathElem{Name: name})
			}
			kKey := pathkey.Encode(kElems)
			_, ok, err := a.tx.Get(kKey)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
			tv, err := schema.ParseString(target, el.GetKey()[k])
			if err != nil {
				return &Error{Code: codes.InvalidArgument, Path: pathkey.String(entryElems), Msg: err.Error()}
			}
			if err := a.write(kElems, target, tv); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *applier) touch(elems []*gpb.PathElem) {
	cur := a.e.s.Root
	var key []byte
	for i, el := range elems {
		cur = cur.Children[el.GetName()]
		if cur == nil {
			return
		}
		key = pathkey.AppendElem(key, el.GetName(), el.GetKey())
		if cur.Kind == schema.List && i < len(elems)-1 {
			k := string(key)
			if _, ok := a.touched[k]; !ok {
				a.touched[k] = &entry{key: k, elems: slices.Clone(elems[:i+1]), list: cur}
				a.order = append(a.order, k)
			}
		}
	}
}

// entryOf returns the innermost list entry containing elems.
func (a *applier) entryOf(elems []*gpb.PathElem) *entry {
	cur := a.e.s.Root
	var key []byte
	var last *entry
	for i, el := range elems {
		cur = cur.Children[el.GetName()]
		if cur == nil {
			return last
		}
		key = pathkey.AppendElem(key, el.GetName(), el.GetKey())
		if cur.Kind == schema.List && i < len(elems)-1 {
			last = &entry{key: string(key), elems: elems[:i+1], list: cur}
		}
	}
	return last
}

// delete removes the configuration at elems, which may hold wildcards.
// Deleting what does not exist succeeds.
func (a *applier) delete(elems []*gpb.PathElem) error {
	clear(a.ensured)
	nodes, err := a.e.s.Resolve(elems, true)
	if err != nil {
		var pe *schema.PathError
		if errors.As(err, &pe) {
			return &Error{Code: codes.InvalidArgument, Path: pe.Path, Msg: pe.Msg}
		}
		return err
	}
	if len(nodes) > 0 {
		n := nodes[len(nodes)-1]
		if !n.Config {
			return &Error{Code: codes.InvalidArgument, Path: pathkey.String(elems), Msg: "is read-only state and cannot be deleted"}
		}
		if n.Alias != nil {
			return &Error{Code: codes.InvalidArgument, Path: pathkey.String(elems), Msg: "is a list key; delete the list entry"}
		}
	}
	// A delete of one whole list entry removes everything under it, measured
	// state included, in this one scan (the common case of a cascade).
	whole := len(nodes) == len(elems) && len(nodes) > 0 && nodes[len(nodes)-1].Kind == schema.List && schema.Concrete(elems, nodes)
	m := NewMatcher(elems, nodes)
	type hit struct {
		key, value []byte
		elems      []*gpb.PathElem
		node       *schema.Node
	}
	var hits []hit
	// A whole entry's own leaves are known by their encoded suffix, and
	// deleted without decoding (a cascade deletes thousands of them).
	var entryKey []byte
	var own map[string]*schema.Node
	var ownKeys [][]byte
	var ownKeyLeaf bool
	var ownUnique []byte
	var list, uniqueLeaf *schema.Node
	if whole {
		entryKey = pathkey.Encode(elems)
		list = nodes[len(nodes)-1]
		own = a.e.leaves[list]
		uniqueLeaf = a.e.uniques[list].node // nil if the list has none
	}
	err = a.tx.Scan(m.Prefix(), func(k, v []byte) error {
		if IsInternal(k) {
			return nil
		}
		if own != nil && bytes.HasPrefix(k, entryKey) {
			if n := own[string(k[len(entryKey):])]; n != nil {
				ownKeys = append(ownKeys, slices.Clone(k))
				if _, ok := a.e.keyOf[n]; ok {
					ownKeyLeaf = true
				}
				if n == uniqueLeaf {
					ownUnique = slices.Clone(v)
				}
				return nil
			}
		}
		le, err := pathkey.Decode(k)
		if err != nil {
			return err
		}
		if !m.Match(le) {
			return nil
		}
		n := a.e.s.Lookup(le)
		if !whole && (n == nil || !n.Config) {
			return nil
		}
		hits = append(hits, hit{slices.Clone(k), slices.Clone(v), le, n})
		return nil
	})
	if err != nil {
		return err
	}
	if whole {
		a.swept[string(entryKey)] = true
	}
	if len(ownKeys) > 0 {
		for _, k := range ownKeys {
			a.tx.Delete(k)
		}
		// Touch the entry (and the entries above it) as a leaf of it would.
		a.touch(append(slices.Clone(elems), &gpb.PathElem{}))
		if ownUnique != nil {
			old, err := DecodeValue(ownUnique)
			if err != nil {
				return err
			}
			a.tx.Delete(append([]byte(uniquePrefix(list, old)), entryKey...))
		}
		if ownKeyLeaf {
			a.deleted = append(a.deleted, &entry{key: string(entryKey), elems: slices.Clone(elems), list: list})
		}
	}
	for _, h := range hits {
		if h.node == nil || !h.node.Config {
			// Measured state, or a key the schema does not know
			// (from an older version): the entry takes it along.
			a.tx.Delete(h.key)
			continue
		}
		if err := a.removeFound(h.key, h.elems, h.node, h.value); err != nil {
			return err
		}
		// The entry goes when the delete covers it; a key leaf deleted from
		// inside its entry (a delete of .../config) leaves an orphan that
		// finish rejects, unless a replace writes the key back.
		if _, ok := a.e.keyOf[h.node]; ok {
			if ent := a.entryOf(h.elems); len(elems) <= len(ent.elems) {
				a.deleted = append(a.deleted, ent)
			}
		}
	}
	return a.clearDeleted()
}

// sweptUnder reports whether the entry key, or an entry above it, had its
// whole range removed.
func (a *applier) sweptUnder(key string) bool {
	if len(a.swept) == 0 {
		return false
	}
	// An entry's key ends its last element (0x00): look up each prefix of
	// key that ends one, rather than try each swept entry (a cascade
	// sweeps hundreds). A prefix at an escaped 0x00 is no entry's key.
	for i := 0; i < len(key); i++ {
		if key[i] == 0 && a.swept[key[:i+1]] {
			return true
		}
	}
	return false
}

// clearDeleted removes whatever remains under deleted entries (measured
// state) and records sites deleted.
func (a *applier) clearDeleted() error {
	for ; a.cleared < len(a.deleted); a.cleared++ {
		ent := a.deleted[a.cleared]
		a.gone[ent.key] = true
		if ent.list.Path == "/sites/site" && !slices.Contains(a.sites, ent.elems[len(ent.elems)-1].GetKey()["name"]) {
			a.sites = append(a.sites, ent.elems[len(ent.elems)-1].GetKey()["name"])
		}
		if a.sweptUnder(ent.key) {
			continue
		}
		var rest [][]byte
		err := a.tx.Scan([]byte(ent.key), func(k, _ []byte) error {
			rest = append(rest, slices.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range rest {
			le, err := pathkey.Decode(k)
			if err != nil {
				return err
			}
			if n := a.e.s.Lookup(le); n != nil && n.Config {
				if err := a.remove(k, le, n); err != nil {
					return err
				}
				if _, ok := a.e.keyOf[n]; ok {
					if sub := a.entryOf(le); sub != nil && sub.key != ent.key {
						a.deleted = append(a.deleted, sub)
					}
				}
				continue
			}
			a.tx.Delete(k)
		}
	}
	return nil
}

// cascade removes references to deleted entries: a mandatory reference
// deletes the referring entry, a leaf-list loses the element, an optional
// leaf is deleted.
func (a *applier) cascade() error {
	for i := 0; i < len(a.deleted); i++ {
		ent := a.deleted[i]
		// A later operation of the same request may have created the entry
		// again (a replace of /sites then of /paths): its referrers stay,
		// and finish checks them against the new entry.
		if again, err := a.entryExists(ent); err != nil {
			return err
		} else if again {
			continue
		}
		prefix := append(append([]byte(refIndex), ent.key...), 0xff)
		var refs [][]byte
		err := a.tx.Scan(prefix, func(k, _ []byte) error {
			refs = append(refs, slices.Clone(k[len(prefix):]))
			return nil
		})
		if err != nil {
			return err
		}
		for _, leafKey := range refs {
			le, err := pathkey.Decode(leafKey)
			if err != nil {
				return err
			}
			n := a.e.s.Lookup(le)
			if n == nil {
				continue
			}
			// The referrer may be gone already, through an earlier cascade.
			if _, ok, err := a.tx.Get(leafKey); err != nil {
				return err
			} else if !ok {
				continue
			}
			a.changed = append(a.changed, pathkey.String(le))
			switch {
			case n.Kind == schema.LeafList:
				if err := a.dropElement(leafKey, le, n, ent); err != nil {
					return err
				}
			case n.Mandatory:
				ref := a.entryOf(le)
				before := len(a.deleted)
				if err := a.delete(ref.elems); err != nil {
					return err
				}
				if len(a.deleted) > before {
					a.changed[len(a.changed)-1] = pathkey.String(ref.elems)
				}
			default:
				if err := a.remove(leafKey, le, n); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (a *applier) dropElement(key []byte, elems []*gpb.PathElem, n *schema.Node, gone *entry) error {
	b, ok, err := a.tx.Get(key)
	if err != nil || !ok {
		return err
	}
	tv, err := DecodeValue(b)
	if err != nil {
		return err
	}
	out := &gpb.ScalarArray{}
	for _, el := range tv.GetLeaflistVal().GetElement() {
		t, ok := a.target(elems, n, scalarString(el))
		if ok && string(t) == gone.key {
			continue
		}
		out.Element = append(out.Element, el)
	}
	if len(out.Element) == 0 {
		return a.remove(key, elems, n)
	}
	return a.write(elems, n, &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: out}})
}

// finish validates every touched entry that still exists: its key leaves,
// defaults, mandatory leaves and references; and the unique values changed.
func (a *applier) finish() error {
	for i := 0; i < len(a.order); i++ {
		ent := a.touched[a.order[i]]
		if err := a.reindexRefs(ent); err != nil {
			return err
		}
		exists, err := a.entryExists(ent)
		if err != nil {
			return err
		}
		if !exists && a.gone[ent.key] {
			continue // deleted whole: nothing of it is left
		}
		if !exists {
			orphan := false
			err := a.tx.Scan([]byte(ent.key), func(k, _ []byte) error {
				le, err := pathkey.Decode(k)
				if err != nil {
					return err
				}
				if n := a.e.s.Lookup(le); n != nil && n.Config {
					orphan = true
				}
				return nil
			})
			if err != nil {
				return err
			}
			if orphan {
				return &Error{Code: codes.InvalidArgument, Op: -1, Path: pathkey.String(a.keyLeaf(ent)), Msg: "the list entry's key leaf was deleted while the entry remains; delete the entry itself"}
			}
			continue
		}
		for _, d := range a.e.defaults[ent.list] {
			_, ok, err := a.tx.Get(leafKey(ent.key, d.suffix))
			if err != nil {
				return err
			}
			if !ok {
				if err := a.write(relElems(ent.elems, d.names), d.node, d.node.Default); err != nil {
					return err
				}
			}
		}
		for _, m := range a.e.mandatory[ent.list] {
			_, ok, err := a.tx.Get(leafKey(ent.key, m.suffix))
			if err != nil {
				return err
			}
			if !ok {
				return &Error{Code: codes.InvalidArgument, Op: -1, Path: pathkey.String(relElems(ent.elems, m.names)), Msg: "mandatory leaf is missing"}
			}
		}
		for _, r := range a.e.refs[ent.list] {
			tv, err := a.readLeaf(leafKey(ent.key, r.suffix))
			if err != nil {
				return err
			}
			if tv == nil {
				continue
			}
			if err := a.checkRefs(relElems(ent.elems, r.names), r.node, tv); err != nil {
				return err
			}
		}
	}
	for p := range a.uniques {
		var holders []string
		err := a.tx.Scan([]byte(p), func(k, _ []byte) error {
			le, err := pathkey.Decode(k[len(p):])
			if err != nil {
				return err
			}
			holders = append(holders, pathkey.String(le))
			return nil
		})
		if err != nil {
			return err
		}
		if len(holders) > 1 {
			leaf := ""
			for list, l := range schema.Unique {
				if bytes.HasPrefix([]byte(p[len(uniqueIndex):]), []byte(list+"\x00")) {
					leaf = l
				}
			}
			val := p[bytes.IndexByte([]byte(p), 0)+1 : len(p)-1]
			return &Error{Code: codes.InvalidArgument, Op: -1, Path: holders[len(holders)-1] + "/" + leaf,
				Msg: fmt.Sprintf("value %s must be unique but is also used by %s", val, holders[0])}
		}
	}
	return nil
}

func (a *applier) checkRefs(le []*gpb.PathElem, n *schema.Node, tv *gpb.TypedValue) error {
	var vals []string
	if ll := tv.GetLeaflistVal(); ll != nil {
		for _, el := range ll.GetElement() {
			vals = append(vals, scalarString(el))
		}
	} else {
		vals = []string{scalarString(tv)}
	}
	for _, v := range vals {
		t, ok := a.target(le, n, v)
		exists := false
		if ok {
			tl, err := pathkey.Decode(t)
			if err != nil {
				return err
			}
			exists, err = a.entryExists(&entry{key: string(t), elems: tl, list: n.Leafref.List})
			if err != nil {
				return err
			}
		}
		if !exists {
			return &Error{Code: codes.InvalidArgument, Op: -1, Path: pathkey.String(le),
				Msg: fmt.Sprintf("%q refers to a %s that does not exist (leafref %s)", v, n.Leafref.List.Name, n.Leafref.List.Path)}
		}
	}
	return nil
}

func relElems(base []*gpb.PathElem, names []string) []*gpb.PathElem {
	out := slices.Clone(base)
	for _, n := range names {
		out = append(out, &gpb.PathElem{Name: n})
	}
	return out
}

// keyLeaf returns the path of the leaf that holds an entry's (first) key.
func (a *applier) keyLeaf(ent *entry) []*gpb.PathElem {
	for _, k := range ent.list.Keys {
		if kn := ent.list.Children[k]; kn.Alias != nil {
			return relElems(ent.elems, kn.Alias)
		}
	}
	return ent.elems
}

// entryExists reports whether a list entry's key leaves exist.
func (a *applier) entryExists(ent *entry) (bool, error) {
	for _, sfx := range a.e.keyLeaves[ent.list] {
		_, ok, err := a.tx.Get(leafKey(ent.key, sfx))
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// NextSeq reads and advances a stored counter.
func NextSeq(tx store.Tx, name string) (uint64, error) {
	key := []byte(metaPrefix + name)
	b, ok, err := tx.Get(key)
	if err != nil {
		return 0, err
	}
	var n uint64
	if ok && len(b) == 8 {
		n = binary.BigEndian.Uint64(b)
	}
	n++
	tx.Set(key, binary.BigEndian.AppendUint64(nil, n))
	return n, nil
}
