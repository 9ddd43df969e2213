package store

import (
	"slices"

	"github.com/google/btree"
)

// Volatile keys live in memory only. They are for what a node measures
// (counters, health, the flow table): values that change every second, that
// a restarted node measures again and must not report from before, and that
// would otherwise cost a write-ahead-log record, a memtable insert and
// eventually compactions each. They commit in the same groups as durable
// keys, with the same Seq and OnCommit, and every reader sees both as one
// key space; a volatile key shadows a durable key of the same name until it
// is deleted. They are not in Pebble, so not in its checkpoints either.
//
// A key is never both: when a key becomes volatile, a durable value of it is
// deleted, so deleting a volatile key needs no tombstone in Pebble.
//
// A collector rewrites the values of the same keys every second, so a tree
// keeps keys and values apart: the sorted keys each name a slot, and the
// values sit in fixed-size chunks of slots. Writing a new value to an
// existing key changes neither the key tree nor needs a search of it (the
// writer finds the slot by hash); it copies the value's chunk once per
// commit group instead of a path of tree nodes.

// memKV is one volatile key and its value.
type memKV struct {
	key   string
	value []byte
}

// memKey is one volatile key in a key tree, and the slot of its value.
type memKey struct {
	key  string
	slot uint32
}

func memLess(a, b memKey) bool { return a.key < b.key }

const (
	chunkBits = 6
	chunkSize = 1 << chunkBits
)

// valChunk holds the values of chunkSize consecutive slots (nil: a free
// slot). Trees share a chunk until one changes it: only the tree whose gen
// the chunk carries changes it in place, and only before it is published.
type valChunk struct {
	gen  uint64
	vals [chunkSize][]byte
}

// memTree is one version of the volatile keys. A published tree is never
// changed: a commit group changes a copy (the key tree is copy-on-write,
// chunks are copied when first written) and publishes it with the commit, so
// readers hold one without locks.
type memTree struct {
	keys *btree.BTreeG[memKey]
	dir  []*valChunk // slot s is dir[s>>chunkBits].vals[s&(chunkSize-1)]
	n    uint32      // slots in use or free; every slot >= n is unused
	gen  uint64      // tells this tree's chunks from those it shares
	idx  *memIndex
}

// memIndex finds keys' slots for the store's writer, which alone uses it. It
// describes the tree whose gen it carries: after a group that was not
// published it is rebuilt from the published tree.
//
// A collector writes the same keys in the same order every time, so the
// index first tries the slot written after the previous key the last time:
// comparing the key with that slot's walks memory in slot order, where the
// map's lookup is two cache misses.
type memIndex struct {
	gen     uint64
	lastGen uint64 // the last gen given to a tree
	slots   map[string]uint32
	keys    []string // the key of each slot below the tree's n ("" if free)
	free    []uint32 // the free slots below the tree's n
	next    []uint32 // next[s] is 1 + the slot written after slot s; 0: none
	last    uint32   // 1 + the slot written last; 0: none
}

func newMemTree() *memTree {
	return &memTree{keys: btree.NewG(32, memLess), idx: &memIndex{slots: map[string]uint32{}}}
}

// clone returns a copy of m to change.
func (m *memTree) clone() *memTree {
	m.idx.lastGen++
	return &memTree{keys: m.keys.Clone(), dir: slices.Clone(m.dir), n: m.n, gen: m.idx.lastGen, idx: m.idx}
}

func (m *memTree) value(slot uint32) []byte {
	return m.dir[slot>>chunkBits].vals[slot&(chunkSize-1)]
}

// setValue sets a slot's value in m, which must not be published.
func (m *memTree) setValue(slot uint32, v []byte) {
	i := slot >> chunkBits
	c := m.dir[i]
	if c.gen != m.gen {
		cp := *c
		cp.gen = m.gen
		c = &cp
		m.dir[i] = c
	}
	c.vals[slot&(chunkSize-1)] = v
}

// alloc returns a free slot of m, which must not be published.
func (m *memTree) alloc() uint32 {
	x := m.idx
	if n := len(x.free); n > 0 {
		s := x.free[n-1]
		x.free = x.free[:n-1]
		return s
	}
	s := m.n
	m.n++
	if int(s>>chunkBits) == len(m.dir) {
		m.dir = append(m.dir, &valChunk{gen: m.gen})
	}
	for len(x.keys) < int(m.n) {
		x.keys = append(x.keys, "")
		x.next = append(x.next, 0)
	}
	return s
}

// rebuild makes x describe m.
func (x *memIndex) rebuild(m *memTree) {
	x.slots = make(map[string]uint32, m.keys.Len())
	x.keys = make([]string, m.n)
	x.next = make([]uint32, m.n)
	x.last = 0
	used := make([]bool, m.n)
	m.keys.Ascend(func(k memKey) bool {
		x.slots[k.key] = k.slot
		x.keys[k.slot] = k.key
		used[k.slot] = true
		return true
	})
	x.free = x.free[:0]
	for s, u := range used {
		if !u {
			x.free = append(x.free, uint32(s))
		}
	}
	x.gen = m.gen
}

// lookup returns the slot of k in the tree x describes.
func (x *memIndex) lookup(k string) (uint32, bool) {
	if x.last != 0 {
		if c := x.next[x.last-1]; c != 0 && x.keys[c-1] == k && k != "" {
			x.last = c
			return c - 1, true
		}
	}
	s, ok := x.slots[k]
	if ok {
		x.written(s)
	}
	return s, ok
}

// written records that slot s was written after the one before.
func (x *memIndex) written(s uint32) {
	if x.last != 0 {
		x.next[x.last-1] = s + 1
	}
	x.last = s + 1
}

// memGet returns the value of key in m.
func memGet(m *memTree, key []byte) ([]byte, bool) {
	if m == nil || m.keys.Len() == 0 {
		return nil, false
	}
	k, ok := m.keys.Get(memKey{key: string(key)})
	if !ok {
		return nil, false
	}
	return m.value(k.slot), true
}

// memRange returns m's keys k with lo <= k < hi (hi nil: no bound).
func memRange(m *memTree, lo, hi []byte) []memKV {
	if m == nil || m.keys.Len() == 0 {
		return nil
	}
	var out []memKV
	visit := func(k memKey) bool {
		out = append(out, memKV{key: k.key, value: m.value(k.slot)})
		return true
	}
	if hi == nil {
		m.keys.AscendGreaterOrEqual(memKey{key: string(lo)}, visit)
	} else {
		m.keys.AscendRange(memKey{key: string(lo)}, memKey{key: string(hi)}, visit)
	}
	return out
}

// mergeScan calls fn for the union of mem (sorted) and the keys durable
// visits, in key order; a key in both is mem's.
func mergeScan(mem []memKV, durable func(func(key, value []byte) error) error, fn func(key, value []byte) error) error {
	if len(mem) == 0 {
		return durable(fn)
	}
	i := 0
	err := durable(func(k, v []byte) error {
		for i < len(mem) && mem[i].key < string(k) {
			if err := fn([]byte(mem[i].key), mem[i].value); err != nil {
				return err
			}
			i++
		}
		if i < len(mem) && mem[i].key == string(k) {
			i++ // the volatile key shadows the durable one
			return fn(k, mem[i-1].value)
		}
		return fn(k, v)
	})
	if err != nil {
		return err
	}
	for ; i < len(mem); i++ {
		if err := fn([]byte(mem[i].key), mem[i].value); err != nil {
			return err
		}
	}
	return nil
}

// groupMem is the volatile side of one commit group.
type groupMem struct {
	pub  *memTree // the published tree when the group started
	work *memTree // pub's copy with the group's changes; nil until one
}

// view returns the volatile keys as the group has them so far.
func (g *groupMem) view() *memTree {
	if g.work != nil {
		return g.work
	}
	return g.pub
}

// index returns the writer's index of the view.
func (g *groupMem) index() *memIndex {
	m := g.view()
	if m.idx.gen != m.gen {
		m.idx.rebuild(m)
	}
	return m.idx
}

// edit returns the group's tree to change.
func (g *groupMem) edit() *memTree {
	if g.work == nil {
		g.work = g.pub.clone()
		g.work.idx.gen = g.work.gen
	}
	return g.work
}

// get returns the value of the volatile key k, by the writer's index. It
// leaves the index's guess of the next write alone: set follows.
func (g *groupMem) get(k string) ([]byte, bool) {
	if s, ok := g.index().slots[k]; ok {
		return g.view().value(s), true
	}
	return nil, false
}

// set writes the volatile key k and reports whether it is new.
func (g *groupMem) set(k string, v []byte) bool {
	x := g.index()
	m := g.edit()
	if s, ok := x.lookup(k); ok {
		m.setValue(s, v)
		return false
	}
	s := m.alloc()
	m.keys.ReplaceOrInsert(memKey{key: k, slot: s})
	m.setValue(s, v)
	x.slots[k], x.keys[s] = s, k
	x.written(s)
	return true
}

// drop deletes k if it is a volatile key, and reports whether it was.
func (g *groupMem) drop(k string) bool {
	x := g.index()
	s, ok := x.slots[k]
	if !ok {
		return false
	}
	m := g.edit()
	m.keys.Delete(memKey{key: k})
	m.setValue(s, nil)
	delete(x.slots, k)
	x.keys[s] = ""
	x.free = append(x.free, s)
	return true
}
