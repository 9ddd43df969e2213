package txn

import (
	"slices"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Local is what a Set does that each node does for itself rather than
// replicates: the events it records, which name the node, and dropping the
// measured state (volatile keys) under the list entries it deletes, which
// each node measures for itself. Evaluate returns it beside the Set's
// replicated writes; WriteLocal does it on a node that applies those writes
// without evaluating the Set again.
type Local struct {
	// Recorded is set when the Set wrote an audit record: its events are
	// due. Seq is the record's sequence number, User the Set's user and
	// Changed the number of paths it changed; Message and Sites are as
	// the events say them.
	Recorded bool
	Seq      uint64
	User     string
	Changed  int
	Message  string
	Sites    []string
	// Cleared holds the encoded keys of the list entries the Set deleted
	// (an entry created again by the same Set included: its measured state
	// went with the old one), under which each node deletes what it keeps
	// for itself (DropCleared).
	Cleared []string
}

// Evaluate applies ops to tx as Apply does, except what is node-local: it
// writes no events, deletes only the measured state it reads, and returns
// both as Local. Its writes to tx are replicated state, or deletes of
// measured state that any node may replay; so its writes, in order, then
// Local's, applied on a node whose replicated state is the same leave that
// node as Apply would have. On error the caller must discard tx.
func (e *Engine) Evaluate(tx store.Tx, ops []Op, meta Meta) (*Result, *Local, error) {
	l := &Local{}
	meta.local = l
	res, err := e.Apply(tx, ops, meta)
	if err != nil {
		return nil, nil, err
	}
	return res, l, nil
}

// DropCleared deletes what this node keeps for itself (not Replicated:
// measured state, volatile or durable) under the entries l cleared. It
// finds them all before it deletes any, so that a transaction that has not
// written yet scans without indexing its writes. An entry's own leaves are
// told by their encoded suffix, without decoding (a cascade clears
// thousands).
func (e *Engine) DropCleared(tx store.Tx, l *Local) error {
	var local [][]byte
	for _, k := range l.Cleared {
		var own map[string]*schema.Node
		if elems, err := pathkey.Decode([]byte(k)); err == nil {
			if n := e.s.Lookup(elems); n != nil {
				own = e.leaves[n]
			}
		}
		err := tx.Scan([]byte(k), func(key, _ []byte) error {
			if n, ok := own[string(key[len(k):])]; ok {
				if !n.Config && !n.Mirrored {
					local = append(local, slices.Clone(key))
				}
				return nil
			}
			if !Replicated(e.s, key) {
				local = append(local, slices.Clone(key))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for _, k := range local {
		tx.Delete(k)
	}
	return nil
}

// WriteLocalEvents writes l's events, naming node.
func (e *Engine) WriteLocalEvents(tx store.Tx, l *Local, node string) error {
	if !l.Recorded {
		return nil
	}
	return e.writeEvents(tx, l, node)
}
