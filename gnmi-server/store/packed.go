package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"

	"github.com/google/btree"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// Packed entries.
//
// A packed entry is one key holding the leaves of a container whose leaves
// are written and deleted together, such as an audit record's state: the key
// is the container's and the value (built by a Packer) holds each leaf's key
// suffix and value. It costs the store one key where the leaves would cost
// one each, in memory, in Pebble and in every Raft snapshot.
//
// An entry may be durable (Tx.Set) or volatile (Tx.SetVolatile). Under the
// prefixes of Options.Packed, readers see the leaves, never the
// entry: Store.Get, Scan, ScanRange and the Readers of View expand it (a
// leaf's key is the entry's key followed by its suffix), and the Changes of
// a commit that writes or deletes the entry are those of its leaves. A
// transaction (Tx) and Store.Snapshot see what is stored: the entry under
// its own key, with its packed value, and no leaves. A transaction writes
// and deletes the whole entry by its key; its leaves cannot be written one
// by one. Nothing else may be stored under an entry's key: the leaves are
// read as the keys between the entry's and the next stored one.

// packTag starts a packed value. Outside the Packed prefixes a value that
// starts with it is an ordinary value.
const packTag = 0xfe

// Packer builds the value of a packed entry leaf by leaf. Each leaf's value
// is appended to the buffer Value returns and handed back with Add:
//
//	p.Add(suffix, AppendUint(p.Value(), n))
//
// A leaf's key is the entry's key followed by its suffix, an element's
// encoding (pathkey.AppendElem). Leaves added in suffix order are packed as
// they are; others are sorted first. The zero Packer is ready.
type Packer struct {
	vals     []byte // the leaves' values, one after another
	leaves   []leaf
	unsorted bool
}

type leaf struct{ suffix, value []byte }

// Value returns the buffer to append the next leaf's value to.
func (p *Packer) Value() []byte { return p.vals }

// Add adds the leaf suffix, whose value is what was appended to Value's
// buffer, now vals.
func (p *Packer) Add(suffix, vals []byte) {
	if n := len(p.leaves); n > 0 && bytes.Compare(p.leaves[n-1].suffix, suffix) >= 0 {
		p.unsorted = true
	}
	p.leaves = append(p.leaves, leaf{suffix: suffix, value: vals[len(p.vals):len(vals):len(vals)]})
	p.vals = vals
}

// Reset forgets the leaves added, and keeps the memory.
func (p *Packer) Reset() { p.vals, p.leaves, p.unsorted = p.vals[:0], p.leaves[:0], false }

// AppendTo appends the packed value of the leaves added to b.
func (p *Packer) AppendTo(b []byte) []byte {
	if p.unsorted {
		slices.SortStableFunc(p.leaves, func(a, b leaf) int { return bytes.Compare(a.suffix, b.suffix) })
		p.unsorted = false
	}
	b = append(b, packTag)
	for _, l := range p.leaves {
		b = binary.AppendUvarint(b, uint64(len(l.suffix)))
		b = append(b, l.suffix...)
		b = binary.AppendUvarint(b, uint64(len(l.value)))
		b = append(b, l.value...)
	}
	return b
}

var errBadPack = errors.New("store: malformed packed entry")

// leafIter walks the leaves of a packed value in suffix order.
type leafIter struct {
	rest          []byte
	suffix, value []byte // the current leaf; they share the packed value
	err           error
}

func newLeafIter(v []byte) leafIter { return leafIter{rest: v[1:]} }

// next moves to the next leaf and reports whether there is one.
func (it *leafIter) next() bool {
	if len(it.rest) == 0 || it.err != nil {
		return false
	}
	b := it.rest
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		it.err = errBadPack
		return false
	}
	it.suffix = b[k : k+int(n)]
	b = b[k+int(n):]
	n, k = binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		it.err = errBadPack
		return false
	}
	it.value = b[k : k+int(n) : k+int(n)]
	it.rest = b[k+int(n):]
	return true
}

// unpack calls fn for each leaf of the packed value v, in suffix order. The
// slices share v.
func unpack(v []byte, fn func(suffix, value []byte) error) error {
	it := newLeafIter(v)
	for it.next() {
		if err := fn(it.suffix, it.value); err != nil {
			return err
		}
	}
	return it.err
}

// packedLeaf returns the value of the leaf with suffix in the packed value v.
func packedLeaf(v, suffix []byte) ([]byte, bool) {
	it := newLeafIter(v)
	for it.next() {
		if bytes.Equal(it.suffix, suffix) {
			return it.value, true
		}
	}
	return nil, false
}

// underPrefix reports whether key starts with one of prefixes.
func underPrefix(prefixes [][]byte, key []byte) bool {
	for _, p := range prefixes {
		if bytes.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// overlaps reports whether a prefix of prefixes has keys in [lo, hi).
func overlaps(prefixes [][]byte, lo, hi []byte) bool {
	for _, p := range prefixes {
		end := pathkey.PrefixEnd(p)
		if (hi == nil || bytes.Compare(p, hi) < 0) && (end == nil || bytes.Compare(lo, end) < 0) {
			return true
		}
	}
	return false
}

// isPacked reports whether the durable key k with value v is a packed entry
// of a reader or store with the packed prefixes.
func isPacked(prefixes [][]byte, k, v []byte) bool {
	return len(v) > 0 && v[0] == packTag && underPrefix(prefixes, k)
}

// prefixBelow returns the item of t just below key (pivot holds key) if its
// key (keyOf) is a prefix of key: the entry whose leaves key may be among.
func prefixBelow[T any](t *btree.BTreeG[T], pivot T, keyOf func(T) string, key []byte) (T, bool) {
	var below T
	found := false
	t.DescendLessOrEqual(pivot, func(x T) bool {
		if keyOf(x) != string(key) {
			below, found = x, true
			return false
		}
		return true
	})
	return below, found && bytes.HasPrefix(key, []byte(keyOf(below)))
}

// entryBelow returns the durable packed entry whose leaves key may be among.
func entryBelow(t *durTree, prefixes [][]byte, key []byte) (durKV, bool) {
	kv, ok := prefixBelow(t, durKV{key: string(key)}, func(kv durKV) string { return kv.key }, key)
	if !ok || !isPacked(prefixes, []byte(kv.key), kv.value) {
		return durKV{}, false
	}
	return kv, true
}

// memEntryBelow is entryBelow among m's volatile keys.
func memEntryBelow(m *memTree, prefixes [][]byte, key []byte) (memKV, bool) {
	if m == nil || m.keys.Len() == 0 {
		return memKV{}, false
	}
	k, ok := prefixBelow(m.keys, memKey{key: string(key)}, func(k memKey) string { return k.key }, key)
	if !ok {
		return memKV{}, false
	}
	v := m.value(k.slot)
	if !isPacked(prefixes, []byte(k.key), v) {
		return memKV{}, false
	}
	return memKV{key: k.key, value: v}, true
}

// expandRange calls fn for the leaves of the packed entry at k (value v) in
// [lo, hi) (hi nil: no bound). The key passed to fn is valid only during the
// call.
func expandRange(k, v, lo, hi []byte, fn func(key, value []byte) error) error {
	buf := make([]byte, 0, len(k)+32)
	return unpack(v, func(suffix, value []byte) error {
		buf = append(append(buf[:0], k...), suffix...)
		if bytes.Compare(buf, lo) < 0 || (hi != nil && bytes.Compare(buf, hi) >= 0) {
			return nil
		}
		return fn(buf, value)
	})
}

// packedChanges appends to changes those of a commit that wrote now (nil:
// deleted) over old at k, either of them a packed entry (oldPacked,
// newPacked): a delete of each old leaf that the new value lacks, or of the
// old ordinary key; a write of each new leaf whose value changed, or of the
// new ordinary value.
func packedChanges(changes []Change, k []byte, old []byte, oldPacked bool, now []byte, newPacked bool) []Change {
	// The leaves' keys share one allocation (a few, if it grows).
	var keys []byte
	leafKey := func(suffix []byte) []byte {
		if cap(keys)-len(keys) < len(k)+len(suffix) {
			keys = make([]byte, 0, 4*(len(k)+len(suffix)))
		}
		start := len(keys)
		keys = append(append(keys, k...), suffix...)
		return keys[start:len(keys):len(keys)]
	}
	if old != nil && !oldPacked && newPacked {
		changes = append(changes, Change{Key: k})
	}
	// Both walks in suffix order, merged.
	var o, n leafIter
	oOK, nOK := false, false
	if oldPacked {
		o = newLeafIter(old)
		oOK = o.next()
	}
	if newPacked {
		n = newLeafIter(now)
		nOK = n.next()
	}
	for oOK || nOK {
		c := 0
		switch {
		case !nOK:
			c = -1
		case !oOK:
			c = 1
		default:
			c = bytes.Compare(o.suffix, n.suffix)
		}
		switch {
		case c < 0: // gone
			changes = append(changes, Change{Key: leafKey(o.suffix)})
			oOK = o.next()
		case c > 0: // new
			changes = append(changes, Change{Key: leafKey(n.suffix), Value: n.value})
			nOK = n.next()
		default:
			if !bytes.Equal(o.value, n.value) {
				changes = append(changes, Change{Key: leafKey(n.suffix), Value: n.value})
			}
			oOK, nOK = o.next(), n.next()
		}
	}
	if !newPacked && now != nil {
		changes = append(changes, Change{Key: k, Value: now})
	}
	return changes
}
