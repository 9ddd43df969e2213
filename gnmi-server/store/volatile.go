package store

import (
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

// memKV is one volatile key.
type memKV struct {
	key   string
	value []byte
}

func memLess(a, b memKV) bool { return a.key < b.key }

// memTree is the volatile keys. A published tree is never changed: the
// writer changes a lazy copy (btree's Clone is copy-on-write) and publishes
// it with the commit, so readers hold one without locks.
type memTree = btree.BTreeG[memKV]

func newMemTree() *memTree { return btree.NewG(32, memLess) }

// memGet returns the value of key in m.
func memGet(m *memTree, key []byte) ([]byte, bool) {
	if m == nil || m.Len() == 0 {
		return nil, false
	}
	kv, ok := m.Get(memKV{key: string(key)})
	return kv.value, ok
}

// memRange returns m's keys k with lo <= k < hi (hi nil: no bound).
func memRange(m *memTree, lo, hi []byte) []memKV {
	if m == nil || m.Len() == 0 {
		return nil
	}
	var out []memKV
	visit := func(kv memKV) bool {
		out = append(out, kv)
		return true
	}
	if hi == nil {
		m.AscendGreaterOrEqual(memKV{key: string(lo)}, visit)
	} else {
		m.AscendRange(memKV{key: string(lo)}, memKV{key: string(hi)}, visit)
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

// set writes the volatile key k and reports whether it is new.
func (g *groupMem) set(k string, v []byte) bool {
	if g.work == nil {
		g.work = g.pub.Clone()
	}
	_, replaced := g.work.ReplaceOrInsert(memKV{key: k, value: v})
	return !replaced
}

// drop deletes k if it is a volatile key, and reports whether it was.
func (g *groupMem) drop(k string) bool {
	if _, ok := g.view().Get(memKV{key: k}); !ok {
		return false
	}
	if g.work == nil {
		g.work = g.pub.Clone()
	}
	g.work.Delete(memKV{key: k})
	return true
}
