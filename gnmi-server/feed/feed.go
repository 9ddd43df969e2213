// Package feed publishes committed changes to any number of readers without
// ever making the publisher wait for them.
//
// The feed is a bounded ring of commits shared by all readers. Publishing
// never blocks, and costs O(1) beyond a pass over the commit's changes (and
// sorting the keys it deleted) and one over the open cursors. Each reader
// keeps its own cursor and reads at its own pace; a reader whose cursor falls
// out of the ring has missed changes and is told so with ErrTooSlow. A
// commit leaves the ring when the ring is over its budget, or once every
// open cursor has read it and it is DefaultRetain (or what SetRetain says)
// older than the newest commit: a node whose readers keep up holds only its
// last seconds of commits. Beside the ring, the feed keeps a compact record of
// the keys deleted by each commit, which reaches back much further: a reader
// that fell out of the ring can read the current state from a snapshot of the
// store and learn from the record what was deleted since it last read (see
// Cursor.Skip), so that it need not silently lose updates nor start over.
package feed

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Change is one leaf written or deleted, decoded once for every reader.
type Change struct {
	// Key is the stored key of the leaf.
	Key []byte
	// Elems is the leaf's path.
	Elems []*gpb.PathElem
	// Value is the new value, or nil if the leaf was deleted.
	Value *gpb.TypedValue
	// Node is the leaf's schema node, if the publisher looked it up.
	Node *schema.Node
}

// Commit is the set of changes that became visible together.
type Commit struct {
	Seq     uint64
	Time    int64 // ns since the epoch
	Changes []Change
	// Raw is the store's changes of a commit published with PublishRaw:
	// what a cursor from FromRaw reads instead of Changes.
	Raw []store.Change
}

// Decoder turns a commit's store changes into the changes readers see. It
// may leave changes out. It is called from the first reader of the commit's
// Changes, with no lock of the feed held, and again if a reader comes after
// the feed released the decoded changes (see Cursor.Close). It may leave out
// changes no reader wants at the time (server.Publisher.Want), and so give
// different changes each time, but a change some reader wants must be in
// every decoding that reader can read.
type Decoder func([]store.Change) []Change

// entry is a commit in the ring. A commit published raw is decoded on the
// first read of its Changes: one that no reader asks for is never decoded.
// Once every open cursor has read it, its decoded changes are released and
// only its raw changes stay.
type entry struct {
	seq    uint64
	time   int64
	raw    []store.Change
	decode Decoder // nil: changes is set for good

	// changes are the decoded changes, nil until decoded and once
	// released; mu is held to decode or release them.
	changes atomic.Pointer[[]Change]
	mu      sync.Mutex
}

// commit returns e as a Commit, decoded unless raw.
func (e *entry) commit(raw bool) Commit {
	c := Commit{Seq: e.seq, Time: e.time, Raw: e.raw}
	if raw {
		return c
	}
	p := e.changes.Load()
	if p == nil {
		e.mu.Lock()
		if p = e.changes.Load(); p == nil {
			changes := e.decode(e.raw)
			p = &changes
			e.changes.Store(p)
		}
		e.mu.Unlock()
	}
	c.Changes = *p
	return c
}

// release drops e's decoded changes, unless a reader is decoding them now
// (publishing, which releases, never waits for a reader).
func (e *entry) release() {
	if e.decode == nil || !e.mu.TryLock() {
		return
	}
	e.changes.Store(nil)
	e.mu.Unlock()
}

// changeSize estimates the memory a change of key holds once decoded: the
// key, the struct and its decoded value, and the path elements decoded for
// it, which grow with the key (a flow's five list keys make a map; the
// elements a change shares with the one before it are not new). Measured
// with heap profiles of the flow table and policy counters: within a factor
// of 1.5. A commit not decoded yet holds less, but may be decoded at any
// time; a commit adds 64 bytes.
func changeSize(key []byte) int { return 4*len(key) + 200 }

// ErrTooSlow reports that a reader fell so far behind that changes it had not
// read were dropped from the ring (Cursor.Next), or deletes it had not read
// from the record of deletes too (Cursor.Skip).
var ErrTooSlow = errors.New("feed: reader fell behind; changes were dropped")

// DefaultRetain is how long the feed keeps a commit that every open cursor has read
// (by the commits' times): a reader that takes a snapshot of the store and
// then opens a cursor from the snapshot's commit finds the commits after it,
// and so does one that starts from a shared snapshot up to a second old (see
// Holds).
const DefaultRetain = 2 * time.Second

// DeletesShare is the share of a feed's memory budget that its record of
// deletes may take besides: New(slots, maxBytes) keeps maxBytes/DeletesShare
// bytes of deleted keys.
const DeletesShare = 4

// Feed is a ring of the most recent commits.
type Feed struct {
	mu    sync.Mutex
	ring  []*entry      // ring[seq%len] holds commit seq; guarded by mu
	sizes []int         // sizes[i] estimates the bytes ring[i] holds; guarded by mu
	last  uint64        // Seq of the newest commit published; guarded by mu
	bytes int           // the sum of sizes; guarded by mu
	wake  chan struct{} // closed and replaced on every publish; guarded by mu
	dels  deletes       // guarded by mu
	// open are the cursors not closed, raw and decoded; released is the
	// newest commit whose decoded changes were released, every open cursor
	// that reads them having read it; first is the oldest commit the ring
	// may still hold (see trim). All guarded by mu.
	open     map[*Cursor]struct{}
	released uint64
	first    uint64

	retain time.Duration

	maxBytes int
}

// deletes records the keys deleted by recent commits, one block per commit
// that deleted any, oldest first. Deletes are few beside writes, and a block
// holds its keys sorted and front-coded, so that the leaves of a deleted list
// entry cost little more than their names: the record reaches back much
// further than the ring for the same memory.
type deletes struct {
	blocks []deletedBlock
	bytes  int // of the blocks held, with an overhead per block
	// lost is the newest commit whose deletes were dropped: the record
	// holds the deletes of every commit after it.
	lost uint64
	max  int
}

// deletedBlock is the keys one commit deleted: per key, the length of the prefix
// it shares with the key before it and the length of the rest as uvarints,
// then the rest.
type deletedBlock struct {
	seq  uint64
	keys []byte
}

// deletedOverhead is what a block costs beyond its keys: its entry in
// deletes.blocks and the allocation of its keys.
const deletedOverhead = 64

// New returns a feed that holds at most slots commits and about maxBytes of
// changes in all, older commits dropped first, and a record of the keys
// deleted by the newest commits of about maxBytes/DeletesShare.
func New(slots, maxBytes int) *Feed {
	return &Feed{ring: make([]*entry, slots), sizes: make([]int, slots), wake: make(chan struct{}), maxBytes: maxBytes,
		dels: deletes{max: maxBytes / DeletesShare}, open: map[*Cursor]struct{}{}, first: 1, retain: DefaultRetain}
}

// SetRetain sets how long the feed keeps a commit every open cursor has read
// (DefaultRetain until then, and never less: a session that starts from a
// shared sync up to a second old needs the commits after it); a test that
// needs every commit kept sets it long. It is called before the feed is
// used.
func (f *Feed) SetRetain(d time.Duration) { f.retain = max(d, DefaultRetain) }

// Publish appends c, decoded. Commits must be published in Seq order
// without gaps.
func (f *Feed) Publish(c Commit) {
	e := &entry{seq: c.Seq, time: c.Time}
	e.changes.Store(&c.Changes)
	f.publish(e, len(c.Changes), func(i int) ([]byte, bool) { return c.Changes[i].Key, c.Changes[i].Value == nil })
}

// PublishRaw appends the commit seq of the store's changes, which decode
// turns into its Changes when a reader first asks for them. Commits must be
// published in Seq order without gaps. The feed keeps changes.
func (f *Feed) PublishRaw(seq uint64, time int64, changes []store.Change, decode Decoder) {
	f.publish(&entry{seq: seq, time: time, raw: changes, decode: decode}, len(changes),
		func(i int) ([]byte, bool) { return changes[i].Key, changes[i].Value == nil })
}

// publish appends e, a commit of n changes; change(i) gives the key of
// change i and whether it is a delete.
func (f *Feed) publish(e *entry, n int, change func(i int) (key []byte, deleted bool)) {
	size := 64
	var deleted [][]byte
	for i := range n {
		k, d := change(i)
		size += changeSize(k)
		if d {
			deleted = append(deleted, k)
		}
	}
	seq := e.seq
	del := encodeDeletes(deleted)
	f.mu.Lock()
	if del != nil {
		f.dels.add(deletedBlock{seq: seq, keys: del})
	}
	i := seq % uint64(len(f.ring))
	f.bytes += size - f.sizes[i]
	f.ring[i], f.sizes[i] = e, size
	f.last = seq
	if n := uint64(len(f.ring)); seq > n {
		f.first = max(f.first, seq-n+1) // the slots before were reused
	}
	// Drop the oldest commits while over the budget, but never the newest
	// one.
	old := f.first
	for ; f.bytes > f.maxBytes && old < seq; old++ {
		f.drop(old)
	}
	f.first = old
	decoded, all := f.read()
	f.trim(e.time, all)
	f.release(decoded)
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// read returns the newest commit that every open cursor reading decoded
// changes has read, and the newest that every open cursor has read; f.mu is
// held. A cursor whose next commit is gone counts for nothing: it will get
// ErrTooSlow, and read none of the commits after it.
func (f *Feed) read() (decoded, all uint64) {
	decoded, all = f.last, f.last
	for c := range f.open {
		if c.next <= f.last && c.next < f.first {
			continue // lost
		}
		all = min(all, c.next-1)
		if !c.raw {
			decoded = min(decoded, c.next-1)
		}
	}
	return decoded, all
}

// release releases the decoded changes of the commits up to upTo, which
// every open cursor has read; f.mu is held.
func (f *Feed) release(upTo uint64) {
	if f.released+uint64(len(f.ring)) < upTo {
		f.released = upTo - uint64(len(f.ring)) // older ones are gone
	}
	for ; f.released < upTo; f.released++ {
		seq := f.released + 1
		if e := f.ring[seq%uint64(len(f.ring))]; e.holds(seq) {
			e.release()
		}
	}
}

// drop drops commit seq from the ring if it holds it; f.mu is held.
func (f *Feed) drop(seq uint64) {
	j := seq % uint64(len(f.ring))
	if f.ring[j].holds(seq) {
		f.bytes -= f.sizes[j]
		f.ring[j], f.sizes[j] = nil, 0
	}
}

// trim drops, oldest first, the commits up to upTo (which every open
// cursor has read) that are f.retain older than now (the newest commit's
// time), but never the newest one; f.mu is held. Commits a cursor has not
// read stay, up to the budget.
func (f *Feed) trim(now int64, upTo uint64) {
	for ; f.first <= upTo && f.first < f.last; f.first++ {
		e := f.ring[f.first%uint64(len(f.ring))]
		if !e.holds(f.first) {
			continue // dropped for the budget
		}
		if now-e.time < int64(f.retain) {
			return
		}
		f.drop(f.first)
	}
}

// holds reports whether e is commit seq (a nil entry is none).
func (e *entry) holds(seq uint64) bool { return e != nil && seq != 0 && e.seq == seq }

// encodeDeletes returns the block of the deleted keys, or nil if there are
// none. It sorts keys.
func encodeDeletes(keys [][]byte) []byte {
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, bytes.Compare)
	keys = slices.CompactFunc(keys, bytes.Equal)
	var b []byte
	var prev []byte
	for _, k := range keys {
		n := 0
		for n < len(prev) && n < len(k) && prev[n] == k[n] {
			n++
		}
		b = binary.AppendUvarint(b, uint64(n))
		b = binary.AppendUvarint(b, uint64(len(k)-n))
		b = append(b, k[n:]...)
		prev = k
	}
	return slices.Clip(b)
}

// each calls fn with each key of block d, in order, until fn returns an
// error, which each returns. The key is valid only during the call.
func (d deletedBlock) each(fn func(key []byte) error) error {
	var k []byte
	for b := d.keys; len(b) > 0; {
		shared, n1 := binary.Uvarint(b)
		rest, n2 := binary.Uvarint(b[n1:])
		b = b[n1+n2:]
		k = append(k[:shared], b[:rest]...)
		b = b[rest:]
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// add appends d, the newest block, and drops the oldest blocks while the
// record is over its budget, but never d.
func (r *deletes) add(d deletedBlock) {
	r.blocks = append(r.blocks, d)
	r.bytes += len(d.keys) + deletedOverhead
	for r.bytes > r.max && len(r.blocks) > 1 {
		old := r.blocks[0]
		r.bytes -= len(old.keys) + deletedOverhead
		r.lost = old.seq
		r.blocks[0] = deletedBlock{}
		r.blocks = r.blocks[1:]
	}
}

// Last returns the Seq of the newest published commit.
func (f *Feed) Last() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Holds reports whether the feed still holds every commit after seq, so
// that a cursor From(seq) can read them.
func (f *Feed) Holds(seq uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return seq >= f.last || f.ring[(seq+1)%uint64(len(f.ring))].holds(seq+1)
}

// Cursor reads the feed from a position onwards.
type Cursor struct {
	f       *Feed
	next    uint64
	raw     bool
	entries []*entry // Next's, between the lock and decoding
}

// From returns a cursor whose first commit is the one after seq. Until it
// is closed, the feed keeps the decoded changes of the commits it has not
// read (see Close).
func (f *Feed) From(seq uint64) *Cursor { return f.cursor(seq, false) }

func (f *Feed) cursor(seq uint64, raw bool) *Cursor {
	c := &Cursor{f: f, next: seq + 1, raw: raw}
	f.mu.Lock()
	f.open[c] = struct{}{}
	f.mu.Unlock()
	return c
}

// Close tells the feed that c reads no more. The decoded changes of a commit
// are released once every cursor from From that is not closed has read it
// (a reader that comes later decodes it again), so a cursor that is never
// closed keeps them from the commit after its last read on; and the ring
// keeps the commits an open cursor has not read, within its budget.
func (c *Cursor) Close() {
	c.f.mu.Lock()
	delete(c.f.open, c)
	c.f.mu.Unlock()
}

// FromRaw returns a cursor like From's that reads commits without decoding
// them: Next leaves their Changes nil where their Raw is set.
func (f *Feed) FromRaw(seq uint64) *Cursor { return f.cursor(seq, true) }

// Skip moves the cursor past every commit up to and including seq, which its
// reader has learnt the outcome of from a snapshot of the store at seq instead
// of reading them, and calls fn with the key of each leaf those commits
// deleted, until fn returns an error, which Skip returns. Some of those
// leaves may exist again at seq. The keys of one commit come in key order,
// each once, and commits oldest first: a leaf deleted by several commits comes
// once for each. A key is valid only during the call. Skip waits until commit
// seq is published, or ctx ends. If the record of deletes no longer holds
// every commit the cursor would skip, it returns ErrTooSlow. The cursor moves
// only if Skip returns nil.
func (c *Cursor) Skip(ctx context.Context, seq uint64, fn func(key []byte) error) error {
	f := c.f
	for {
		f.mu.Lock()
		if f.last >= seq {
			break
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if seq < c.next {
		f.mu.Unlock()
		return nil
	}
	if c.next-1 < f.dels.lost {
		f.mu.Unlock()
		return ErrTooSlow
	}
	// Publishing drops blocks from the record's start in place: keep the
	// ones to read apart (a block's keys never change).
	blocks := f.dels.blocks
	i, _ := slices.BinarySearchFunc(blocks, c.next, func(d deletedBlock, seq uint64) int { return cmp.Compare(d.seq, seq) })
	j, _ := slices.BinarySearchFunc(blocks, seq+1, func(d deletedBlock, seq uint64) int { return cmp.Compare(d.seq, seq) })
	blocks = slices.Clone(blocks[i:j])
	f.mu.Unlock()

	for _, d := range blocks {
		if err := d.each(fn); err != nil {
			return err
		}
	}
	f.mu.Lock()
	c.next = seq + 1
	f.mu.Unlock()
	return nil
}

// Seq returns the Seq of the last commit the cursor has read or skipped.
func (c *Cursor) Seq() uint64 {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	return c.next - 1
}

// Lag returns how many published commits the cursor has not read yet. It
// may be called from another goroutine than the cursor's reader.
func (c *Cursor) Lag() uint64 {
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if c.next > c.f.last {
		return 0
	}
	return c.f.last - c.next + 1
}

// Next appends every commit after the cursor's position to buf and returns
// it. It waits until there is at least one, ctx ends, or wait (if not nil)
// fires; then it may return an empty slice. It returns ErrTooSlow if commits
// the cursor had not read were dropped.
func (c *Cursor) Next(ctx context.Context, wait <-chan struct{}, buf []Commit) ([]Commit, error) {
	for {
		c.f.mu.Lock()
		if c.next <= c.f.last {
			var err error
			es := c.entries[:0]
			for ; c.next <= c.f.last; c.next++ {
				e := c.f.ring[c.next%uint64(len(c.f.ring))]
				if !e.holds(c.next) {
					err = ErrTooSlow
					break
				}
				es = append(es, e)
			}
			c.f.mu.Unlock()
			// Decoding happens outside the lock: publishing never waits
			// for it.
			for _, e := range es {
				buf = append(buf, e.commit(c.raw && e.decode != nil))
			}
			clear(es)
			c.entries = es[:0]
			return buf, err
		}
		wake := c.f.wake
		c.f.mu.Unlock()
		select {
		case <-wake:
		case <-wait:
			return buf, nil
		case <-ctx.Done():
			return buf, ctx.Err()
		}
	}
}
