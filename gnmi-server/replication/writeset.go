package replication

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// A write-set entry carries a Set the leader has already evaluated: the
// keys it writes, in order, with what each node does for itself (its events,
// dropping the measured state of the entries it deletes, txn.Local). A node
// applying it writes those keys instead of evaluating the Set again, which is
// most of a Set's cost (a site's delete cascade: its scans, decodes and
// index upkeep), so followers keep their CPU, and a leader that shares a
// host with them keeps its own.
//
// The keys are right only for the state the leader evaluated against: the
// store as it was after entry base. The entry applies them only when it is
// the entry right after base (index base+1) and the store has applied base;
// otherwise (another entry came between, a node that lost the race) it
// evaluates the Set it also carries, as every entry did before. Both ways end
// in the same replicated state, so nodes taking different ways agree.
//
// Layout: writeSetCommand, uvarint base, uvarint time, the Set's command
// (length-prefixed), Local (Recorded as 0/1, Seq, User, Changed, Message,
// Sites, Cleared), then the number of writes and the writes: a byte, wsSet
// or wsDelete, the key and, for wsSet, the value (each length-prefixed).
const writeSetCommand = 0x81

const (
	wsDelete = 0
	wsSet    = 1
)

// writeSet is a decoded write-set entry. cmd and the keys and values in
// writes alias the entry's bytes.
type writeSet struct {
	base   uint64
	time   int64
	cmd    []byte
	local  txn.Local
	n      int // writes
	writes []byte
}

// captureTx records what a Set writes, in order, as a write-set entry's
// writes.
type captureTx struct {
	store.Tx
	b []byte
	n int // writes in b
	// unsupported is set by a write a write-set entry cannot carry.
	unsupported bool
}

func (c *captureTx) Set(key, value []byte) {
	if value == nil {
		value = []byte{}
	}
	c.b = append(c.b, wsSet)
	c.b = appendBytes(c.b, key)
	c.b = appendBytes(c.b, value)
	c.n++
	c.Tx.Set(key, value)
}

func (c *captureTx) Delete(key []byte) {
	c.b = append(c.b, wsDelete)
	c.b = appendBytes(c.b, key)
	c.n++
	c.Tx.Delete(key)
}

func (c *captureTx) SetVolatile(key string, value []byte) {
	c.unsupported = true
	c.Tx.SetVolatile(key, value)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// errEvaluated ends the transaction in which the leader evaluates a Set:
// its writes are carried by the entry, not committed.
var errEvaluated = errors.New("evaluated")

// evaluate evaluates the Set cmd (ops with meta) against the store as it is
// after entry last, the last in the leader's log, and returns the write-set
// entry that carries it. It returns nil (propose cmd itself) when the store
// has not applied last yet (entries in flight), when the Set fails (every
// node is to record its rejection), or when it writes what an entry cannot
// carry.
func (f *fsm) evaluate(cmd []byte, ops []txn.Op, meta txn.Meta, last uint64) []byte {
	if f.isHalted() {
		return nil
	}
	var out []byte
	err := f.st.Update(context.Background(), func(tx store.Tx) error {
		if applied, err := readApplied(tx); err != nil || applied != last {
			return err
		}
		b := []byte{writeSetCommand}
		b = binary.AppendUvarint(b, last)
		b = binary.AppendUvarint(b, uint64(meta.Time))
		b = appendBytes(b, cmd)
		c := &captureTx{Tx: tx}
		res, l, err := f.eng.Evaluate(c, ops, meta)
		if err != nil || c.unsupported || res.Time != meta.Time {
			return errEvaluated
		}
		var recorded uint64
		if l.Recorded {
			recorded = 1
		}
		b = binary.AppendUvarint(b, recorded)
		b = binary.AppendUvarint(b, l.Seq)
		b = appendString(b, l.User)
		b = binary.AppendUvarint(b, uint64(l.Changed))
		b = appendString(b, l.Message)
		b = binary.AppendUvarint(b, uint64(len(l.Sites)))
		for _, s := range l.Sites {
			b = appendString(b, s)
		}
		b = binary.AppendUvarint(b, uint64(len(l.Cleared)))
		for _, k := range l.Cleared {
			b = appendString(b, k)
		}
		b = binary.AppendUvarint(b, uint64(c.n))
		out = append(b, c.b...)
		return errEvaluated
	})
	if err != nil && !errors.Is(err, errEvaluated) {
		return nil
	}
	return out
}

var errBadWriteSet = errors.New("malformed write-set entry")

// wsReader reads the fields of a write-set entry; the first error sticks.
type wsReader struct {
	b   []byte
	err error
}

func (r *wsReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadWriteSet
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wsReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.err = errBadWriteSet
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// count reads a number of items that each take at least one more byte.
func (r *wsReader) count() int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = errBadWriteSet
	}
	return int(n)
}

func decodeWriteSet(b []byte) (writeSet, error) {
	r := &wsReader{b: b[1:]}
	var ws writeSet
	ws.base = r.uvarint()
	ws.time = int64(r.uvarint())
	ws.cmd = r.bytes()
	switch r.uvarint() {
	case 0:
	case 1:
		ws.local.Recorded = true
	default:
		r.err = errBadWriteSet
	}
	ws.local.Seq = r.uvarint()
	ws.local.User = string(r.bytes())
	ws.local.Changed = int(r.uvarint())
	ws.local.Message = string(r.bytes())
	n := r.count()
	for i := 0; i < n && r.err == nil; i++ {
		ws.local.Sites = append(ws.local.Sites, string(r.bytes()))
	}
	n = r.count()
	for i := 0; i < n && r.err == nil; i++ {
		ws.local.Cleared = append(ws.local.Cleared, string(r.bytes()))
	}
	ws.n = r.count()
	if r.err != nil {
		return writeSet{}, r.err
	}
	ws.writes = r.b
	// The writes are read as they are applied; check them whole first, so
	// that a malformed entry changes nothing.
	if err := ws.each(func(byte, []byte, []byte) {}); err != nil {
		return writeSet{}, err
	}
	return ws, nil
}

// each calls fn with each write: its kind, key and value (nil for a delete).
func (ws writeSet) each(fn func(kind byte, key, value []byte)) error {
	r := &wsReader{b: ws.writes}
	for range ws.n {
		if len(r.b) == 0 {
			return errBadWriteSet
		}
		kind := r.b[0]
		r.b = r.b[1:]
		key := r.bytes()
		var value []byte
		switch kind {
		case wsSet:
			value = r.bytes()
		case wsDelete:
		default:
			return fmt.Errorf("%w: write kind %d", errBadWriteSet, kind)
		}
		if r.err != nil {
			return r.err
		}
		fn(kind, key, value)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: trailing bytes", errBadWriteSet)
	}
	return nil
}

// apply writes ws's writes.
func (ws writeSet) apply(tx store.Tx) {
	ws.each(func(kind byte, key, value []byte) {
		if kind == wsSet {
			tx.Set(key, value)
		} else {
			tx.Delete(key)
		}
	})
}
