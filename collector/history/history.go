// Package history keeps a node's measured state over time in its own
// Pebble store (never replicated), so that counters and path quality can be
// read back for a past moment or a time range: the gNMI History extension
// and the export tool read it.
//
// Every interval (/system/stats-history/config/interval) the Recorder
// samples the measured leaves under /paths, /policies and the endpoints'
// oper-status. A sample stores only the leaves that changed since the last
// one, plus tombstones for leaves that went away; every keyframeEvery-th
// sample stores every leaf, so that reading the state at a time t replays at
// most one keyframe and the deltas after it. Samples older than the
// retention are trimmed.
//
// Keys (all under txn.LocalPrefix, so never replicated nor snapshotted):
//
//	hist/d/<time: 8 bytes big-endian ns><leaf key>  → value (empty: deleted)
//	hist/k/<time>                                   → keyframe marker
package history

import (
	"bytes"
	"context"
	"encoding/binary"
	"sort"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

const keyframeEvery = 60

// KeyPrefix starts every key of the history: the store keeps them on disk
// only (store.Options.DiskOnly), as a long retention holds far more samples
// than the tree.
const KeyPrefix = txn.LocalPrefix + "hist/"

var (
	dataPrefix  = []byte(KeyPrefix + "d/")
	framePrefix = []byte(KeyPrefix + "k/")
)

func timeKey(prefix []byte, t int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(t))
}

// roots are the subtrees whose measured leaves are recorded.
var roots = [][]*gpb.PathElem{
	{{Name: "paths"}},
	{{Name: "policies"}},
	{{Name: "sites"}},
}

// Recorder samples measured leaves into the history.
type Recorder struct {
	st  *store.Store
	sch *schema.Schema
	// last is the state recorded by the newest sample; nil before the
	// first sample of this run, which is then a keyframe.
	last    map[string][]byte
	samples int
}

// NewRecorder returns a recorder over st.
func NewRecorder(st *store.Store, sch *schema.Schema) *Recorder {
	return &Recorder{st: st, sch: sch}
}

// measured reports whether the leaf at key is measured state.
func (r *Recorder) measured(dec *pathkey.Decoder, key []byte) bool {
	elems, err := dec.Decode(key)
	if err != nil {
		return false
	}
	n := r.sch.Lookup(elems)
	return n != nil && n.Kind == schema.Leaf && !n.Config && !n.Mirrored
}

// Sample records the measured leaves at time now.
func (r *Recorder) Sample(ctx context.Context, now time.Time) error {
	cur := map[string][]byte{}
	var dec pathkey.Decoder
	for _, root := range roots {
		prefix := pathkey.Encode(root)
		dec = pathkey.Decoder{}
		if err := r.st.Scan(prefix, func(k, v []byte) error {
			if r.measured(&dec, k) {
				cur[string(k)] = bytes.Clone(v)
			}
			return nil
		}); err != nil {
			return err
		}
	}
	t := now.UnixNano()
	frame := r.last == nil || r.samples%keyframeEvery == 0
	err := r.st.Update(ctx, func(tx store.Tx) error {
		base := timeKey(dataPrefix, t)
		for k, v := range cur {
			if !frame {
				if old, ok := r.last[k]; ok && bytes.Equal(old, v) {
					continue
				}
			}
			tx.Set(append(base[:len(base):len(base)], k...), v)
		}
		if !frame {
			for k := range r.last {
				if _, ok := cur[k]; !ok {
					tx.Set(append(base[:len(base):len(base)], k...), []byte{})
				}
			}
		} else {
			tx.Set(timeKey(framePrefix, t), []byte{})
		}
		return nil
	})
	if err != nil {
		return err
	}
	r.last = cur
	r.samples++
	return nil
}

// Trim deletes the samples taken before cutoff, keeping the newest
// keyframe before it so that the state at cutoff can still be rebuilt.
func (r *Recorder) Trim(ctx context.Context, cutoff time.Time) error {
	c := cutoff.UnixNano()
	var keep int64 = -1
	if err := r.st.ScanRange(framePrefix, timeKey(framePrefix, c+1), func(k, _ []byte) error {
		keep = int64(binary.BigEndian.Uint64(k[len(framePrefix):]))
		return nil
	}); err != nil {
		return err
	}
	if keep <= 0 {
		return nil
	}
	var dead [][]byte
	collect := func(k, _ []byte) error {
		dead = append(dead, bytes.Clone(k))
		return nil
	}
	if err := r.st.ScanRange(framePrefix, timeKey(framePrefix, keep), collect); err != nil {
		return err
	}
	if err := r.st.ScanRange(dataPrefix, timeKey(dataPrefix, keep), collect); err != nil {
		return err
	}
	if len(dead) == 0 {
		return nil
	}
	return r.st.Update(ctx, func(tx store.Tx) error {
		for _, k := range dead {
			tx.Delete(k)
		}
		return nil
	})
}

// Reader reads the history.
type Reader struct{ st *store.Store }

// NewReader returns a reader of the history in st.
func NewReader(st *store.Store) *Reader { return &Reader{st: st} }

// At returns the measured leaves as of the newest sample taken at or before
// t, and that sample's time; a nil Reader if no sample that old is kept.
func (h *Reader) At(t int64) (store.Reader, int64, error) {
	var frame int64 = -1
	if err := h.st.ScanRange(framePrefix, timeKey(framePrefix, t+1), func(k, _ []byte) error {
		frame = int64(binary.BigEndian.Uint64(k[len(framePrefix):]))
		return nil
	}); err != nil {
		return nil, 0, err
	}
	if frame < 0 {
		return nil, 0, nil
	}
	state := map[string][]byte{}
	var at int64
	err := h.st.ScanRange(timeKey(dataPrefix, frame), timeKey(dataPrefix, t+1), func(k, v []byte) error {
		at = int64(binary.BigEndian.Uint64(k[len(dataPrefix):]))
		leaf := string(k[len(dataPrefix)+8:])
		if len(v) == 0 {
			delete(state, leaf)
		} else {
			state[leaf] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return newMemReader(state), at, nil
}

// Range calls fn for every sample taken in [start, end), in time order,
// with the leaves that sample changed (a nil Value: deleted).
func (h *Reader) Range(start, end int64, fn func(t int64, changes []store.Change) error) error {
	var (
		cur     int64 = -1
		changes []store.Change
	)
	flush := func() error {
		if cur < 0 || len(changes) == 0 {
			return nil
		}
		err := fn(cur, changes)
		changes = nil
		return err
	}
	err := h.st.ScanRange(timeKey(dataPrefix, start), timeKey(dataPrefix, end), func(k, v []byte) error {
		ts := int64(binary.BigEndian.Uint64(k[len(dataPrefix):]))
		if ts != cur {
			if err := flush(); err != nil {
				return err
			}
			cur = ts
		}
		ch := store.Change{Key: bytes.Clone(k[len(dataPrefix)+8:])}
		if len(v) > 0 {
			ch.Value = bytes.Clone(v)
		}
		changes = append(changes, ch)
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// memReader is a store.Reader over a fixed set of keys.
type memReader struct {
	keys []string
	vals map[string][]byte
}

func newMemReader(m map[string][]byte) *memReader {
	r := &memReader{vals: m}
	for k := range m {
		r.keys = append(r.keys, k)
	}
	sort.Strings(r.keys)
	return r
}

func (r *memReader) Get(key []byte) ([]byte, bool, error) {
	v, ok := r.vals[string(key)]
	return v, ok, nil
}

func (r *memReader) Scan(prefix []byte, fn func(key, value []byte) error) error {
	p := string(prefix)
	for i := sort.SearchStrings(r.keys, p); i < len(r.keys) && len(r.keys[i]) >= len(p) && r.keys[i][:len(p)] == p; i++ {
		if err := fn([]byte(r.keys[i]), r.vals[r.keys[i]]); err != nil {
			return err
		}
	}
	return nil
}
