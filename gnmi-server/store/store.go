// Package store keeps the data tree durably in Pebble and serializes every
// change to it through one writer that commits many transactions per fsync.
//
// Reads are served from memory: every durable key outside Options.DiskOnly
// is also held in a copy-on-write B-tree that each commit publishes with
// the volatile keys (see volatile.go), so a read never walks Pebble's
// memtable and levels, and a reader holds its view without locks. Pebble is
// read when the store opens (to load that tree) and for disk-only keys.
//
// Readers see only committed data. A transaction is a function that runs on
// the writer goroutine against a view holding everything committed plus the
// transactions accepted earlier in the same group, so transactions are
// serializable: two that conflict can never both apply. A transaction's
// caller is answered only after its group's batch is synced to disk.
// Volatile keys (measured state, see volatile.go) commit the same way but
// live in memory only.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/btree"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// Change is one key written or deleted by a committed transaction. A nil
// Value means the key was deleted. Neither may be modified. A key a
// transaction wrote more than once may appear more than once, in order.
type Change struct {
	Key   []byte
	Value []byte
}

// Commit describes one committed group of transactions as seen by OnCommit.
type Commit struct {
	// Seq numbers commits from 1 in the order they became visible.
	Seq uint64
	// Time is the commit's wall-clock time in nanoseconds since the epoch.
	Time int64
	// Changes lists each key changed by the group, in transaction order.
	Changes []Change
}

// Reader reads keys and key ranges.
type Reader interface {
	// Get returns the value of key and whether it exists.
	Get(key []byte) ([]byte, bool, error)
	// Scan calls fn for every key that starts with prefix, in key order,
	// until fn returns an error, which Scan returns. The slices passed to fn
	// are valid only during the call, and fn must not scan the same Reader.
	Scan(prefix []byte, fn func(key, value []byte) error) error
}

// Tx is what a transaction function reads and writes.
type Tx interface {
	Reader
	// Set writes value at key.
	Set(key, value []byte)
	// SetVolatile writes value at key in memory only (see volatile.go):
	// it is gone when the store closes. The store keeps key and value: the
	// caller must not change value afterwards. A caller that writes the
	// same keys again and again should pass the same strings: the store
	// keeps the string a key was first written with and compares a key by
	// its pointer before its bytes.
	SetVolatile(key string, value []byte)
	// Delete removes key.
	Delete(key []byte)
	// Time returns the transaction's commit timestamp (ns since the epoch),
	// the same for every transaction in a group.
	Time() int64
}

// Options configures Open.
type Options struct {
	// OnCommit, if set, is called on the writer goroutine after each group is
	// durable and visible, with readers excluded (see Store.View). It must not
	// block.
	OnCommit func(Commit)
	// MaxGroup caps the transactions committed per fsync; 0 means 256.
	MaxGroup int
	// NoSync commits without fsync. Replication sets it: the Raft log is
	// the durable record, and entries Pebble lost in a crash are applied
	// again from it (see Sync).
	NoSync bool
	// DiskOnly lists key prefixes whose keys are not held in memory: key
	// ranges too large for it, such as a node's stats history. Their keys
	// are read from Pebble as it is when read, not as of a View's Seq, and a
	// transaction does not see the disk-only writes of the transactions
	// before it in its group, only its own and those committed.
	DiskOnly [][]byte
	// Packed lists key prefixes under which a key may be a packed entry
	// (see Packer): readers see its leaves.
	Packed [][]byte
	// IdleFlush is how long after its last write to Pebble the store
	// flushes Pebble's memtables, if it wrote 1 MiB or more since it last
	// did; 0 means 5 s. A node whose configuration is quiet (its measured
	// state is in memory, not in Pebble) would otherwise keep the last
	// memtable of a burst of writes, such as the scale set's load, filled
	// for good: up to 8 MiB of memory outside the Go heap (100,000 keys
	// left 9.2 MB of memtables, 0.5 MB once flushed). gnmibench's memory
	// row does not tell it from its noise (RSS 130–141 MB with it, 133–137
	// without).
	IdleFlush time.Duration
}

// Store is a Pebble database with a single serializing writer.
type Store struct {
	db   *pebble.DB
	opts Options
	reqs chan *request
	wg   sync.WaitGroup

	// mu orders commits against View: a commit holds it exclusively while it
	// makes a group visible and calls OnCommit.
	mu  sync.RWMutex
	seq uint64   // the last commit's Seq, guarded by mu
	mem *memTree // the volatile keys, replaced by commits; guarded by mu
	dur *durTree // the durable keys outside DiskOnly, likewise
	// diskOnly is Options.DiskOnly sorted, with prefixes inside another
	// dropped.
	diskOnly [][]byte
	packed   [][]byte // Options.Packed

	closeOnce sync.Once
	done      chan struct{}
	closed    atomic.Bool // set by Close

	writeFailures atomic.Uint64 // groups that could not be committed
	// closeMu orders queueing a request (read-held) before Close marks the
	// store closed (held).
	closeMu sync.RWMutex

	ops []txOp // for the next transaction; only the writer goroutine uses it
	// unflushed counts the bytes written to Pebble since the last idle
	// flush (Options.IdleFlush); only the writer goroutine uses it.
	unflushed uint64
}

type request struct {
	ctx  context.Context
	fn   func(Tx) error
	resp chan error
}

// ErrClosed is returned for transactions submitted after Close.
var ErrClosed = errors.New("store: closed")

// Open opens or creates the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxGroup == 0 {
		opts.MaxGroup = 256
	}
	if opts.IdleFlush == 0 {
		opts.IdleFlush = 5 * time.Second
	}
	// Reads come from memory but for the stats history (DiskOnly) and the
	// load at open, so the block cache is small. The memtable is 8 MiB: it
	// is memory outside Go's heap, up to two of them while one flushes, and
	// a filled 32 MiB one was a third of an edge node's budget. Measured
	// A/B (once packed records had cut what a Set writes): 64-client puts
	// on 3 voters 2,181/2,304 at 8 MiB against 2,277/2,248 at 32 MiB, and
	// one node's Sets the same within noise.
	po := &pebble.Options{
		Logger:       pebbleLogger{},
		MemTableSize: 8 << 20,
		Cache:        pebble.NewCache(8 << 20),
	}
	defer po.Cache.Unref()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts, reqs: make(chan *request, 1024), done: make(chan struct{}), mem: newMemTree(),
		diskOnly: normalizePrefixes(opts.DiskOnly), packed: normalizePrefixes(opts.Packed)}
	if s.dur, err = s.load(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: load %s: %w", dir, err)
	}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// load reads every durable key outside the disk-only prefixes into a tree.
func (s *Store) load() (*durTree, error) {
	t := newDurTree()
	it, err := s.db.NewIter(nil)
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); {
		if p := s.diskOnlyPrefix(it.Key()); p != nil {
			end := pathkey.PrefixEnd(p)
			if end == nil {
				break
			}
			it.SeekGE(end)
			continue
		}
		t.ReplaceOrInsert(durKV{key: string(it.Key()), value: bytes.Clone(it.Value())})
		it.Next()
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	return t, nil
}

// normalizePrefixes sorts prefixes and drops those inside another.
func normalizePrefixes(prefixes [][]byte) [][]byte {
	ps := slices.Clone(prefixes)
	slices.SortFunc(ps, bytes.Compare)
	var out [][]byte
	for _, p := range ps {
		if n := len(out); n > 0 && bytes.HasPrefix(p, out[n-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// diskOnlyPrefix returns the disk-only prefix key starts with, or nil.
func (s *Store) diskOnlyPrefix(key []byte) []byte {
	for _, p := range s.diskOnly {
		if bytes.HasPrefix(key, p) {
			return p
		}
	}
	return nil
}

// Close stops the writer after the transactions already submitted and closes
// the database.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		// No request is queued once the writer has drained the queue:
		// submit holds closeMu while it queues one.
		s.closeMu.Lock()
		s.closed.Store(true)
		close(s.done)
		s.closeMu.Unlock()
		s.wg.Wait()
		err = s.db.Close()
	})
	return err
}

// Update runs fn as one transaction and returns once it is durable. If fn
// returns an error, none of its writes apply and Update returns that error.
func (s *Store) Update(ctx context.Context, fn func(Tx) error) error {
	r := &request{ctx: ctx, fn: fn, resp: make(chan error, 1)}
	if err := s.submit(ctx, r); err != nil {
		return err
	}
	// Once submitted the outcome must be waited for: the transaction may
	// already be in a batch being synced.
	return <-r.resp
}

// submit queues r for the writer, unless the store is closed or ctx ends
// first.
func (s *Store) submit(ctx context.Context, r *request) error {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed.Load() {
		return ErrClosed
	}
	select {
	case s.reqs <- r:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// UpdateBatch runs fns as consecutive transactions, in order, and returns
// each one's error once all are durable. Replication applies a batch of
// committed log entries this way.
func (s *Store) UpdateBatch(ctx context.Context, fns []func(Tx) error) []error {
	errs := make([]error, len(fns))
	reqs := make([]*request, len(fns))
	for i, fn := range fns {
		r := &request{ctx: ctx, fn: fn, resp: make(chan error, 1)}
		// Queued even if ctx has ended: the writer answers with ctx's
		// error, in order with the rest of the batch.
		if err := s.submit(context.Background(), r); err != nil {
			errs[i] = err
			continue
		}
		reqs[i] = r
	}
	for i, r := range reqs {
		if r != nil {
			errs[i] = <-r.resp
		}
	}
	return errs
}

// Sync makes every write so far durable, whatever Options.NoSync says.
func (s *Store) Sync() error { return s.db.LogData(nil, pebble.Sync) }

// idleFlushMin is the fewest bytes written since the last idle flush that
// make another (Options.IdleFlush).
const idleFlushMin = 1 << 20

func (s *Store) writer() {
	defer s.wg.Done()
	idle := time.NewTimer(s.opts.IdleFlush)
	defer idle.Stop()
	for {
		var first *request
		select {
		case first = <-s.reqs:
		case <-idle.C:
			if s.unflushed >= idleFlushMin {
				s.unflushed = 0
				_, _ = s.db.AsyncFlush() // fails only on a closed or read-only database
			}
			continue
		case <-s.done:
			s.drain()
			return
		}
		group := []*request{first}
	more:
		for len(group) < s.opts.MaxGroup {
			select {
			case r := <-s.reqs:
				group = append(group, r)
			default:
				break more
			}
		}
		if s.commitGroup(group) {
			idle.Reset(s.opts.IdleFlush)
		}
	}
}

// drain answers the requests still queued at Close.
func (s *Store) drain() {
	for {
		select {
		case r := <-s.reqs:
			r.resp <- ErrClosed
		default:
			return
		}
	}
}

// maxRecycledOps bounds the operations slice a store keeps for the next
// transaction (2.5 MiB): a collector writes tens of thousands of leaves a
// second, and growing a slice to that size each time costs more than the
// writes.
const maxRecycledOps = 1 << 16

// recycle keeps ops, which the writer no longer uses, for the next
// transaction.
func (s *Store) recycle(ops []txOp) {
	if cap(ops) > maxRecycledOps || cap(ops) <= cap(s.ops) {
		return
	}
	clear(ops)
	s.ops = ops[:0]
}

// deleteDurable deletes the durable key k (kb is its bytes): a disk-only
// key at once, a key of dur from dur and later from Pebble (dels). A key in
// neither was never written and leaves no tombstone.
func (s *Store) deleteDurable(batch *pebble.Batch, dur *groupDur, k string, kb []byte, dels *[]string) error {
	if s.diskOnlyPrefix(kb) != nil {
		return batch.Delete(kb, nil)
	}
	if dur.drop(k) {
		*dels = append(*dels, k)
	}
	return nil
}

// minDeleteRun is the fewest keys deleteRuns deletes with one range
// tombstone.
const minDeleteRun = 3

// deleteRuns writes to batch the deletes of dels, keys of the durable tree
// the group deleted, after the group's writes. A run of them with no key of
// the group's resulting tree between them (a deleted list entry's leaves, a
// site's reference index) becomes one range tombstone: a cascade that
// deleted thousands of keys inserted each into Pebble's memtable, most of
// the cost of its commit. The runs are taken against the resulting tree, so
// a key deleted and then written again in the group stays and ends a run,
// and a tombstone never covers a disk-only key, which that tree lacks.
func (s *Store) deleteRuns(batch *pebble.Batch, dels []string, final *durTree) error {
	slices.Sort(dels)
	dels = slices.Compact(dels)
	for i := 0; i < len(dels); {
		// next is the first key that remains at or after dels[i].
		var next string
		found := false
		final.AscendGreaterOrEqual(durKV{key: dels[i]}, func(kv durKV) bool {
			next, found = kv.key, true
			return false
		})
		if found && next == dels[i] {
			i++ // deleted, then written again
			continue
		}
		j := i + 1
		for j < len(dels) && (!found || dels[j] < next) {
			j++
		}
		if err := s.deleteRun(batch, dels[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// deleteRun deletes run, sorted keys with no other durable key between
// them, from batch.
func (s *Store) deleteRun(batch *pebble.Batch, run []string) error {
	lo := unsafe.Slice(unsafe.StringData(run[0]), len(run[0]))
	// hi is the key right after the last one: nothing sorts between them.
	hi := append([]byte(run[len(run)-1]), 0)
	if len(run) >= minDeleteRun && !s.overlapsDiskOnly(lo, hi) {
		return batch.DeleteRange(lo, hi, nil)
	}
	for _, k := range run {
		if err := batch.Delete(unsafe.Slice(unsafe.StringData(k), len(k)), nil); err != nil {
			return err
		}
	}
	return nil
}

// overlapsDiskOnly reports whether a disk-only prefix has keys in [lo, hi).
func (s *Store) overlapsDiskOnly(lo, hi []byte) bool {
	for _, p := range s.diskOnly {
		end := pathkey.PrefixEnd(p)
		if bytes.Compare(p, hi) < 0 && (end == nil || bytes.Compare(lo, end) < 0) {
			return true
		}
	}
	return false
}

// commitGroup commits group and reports whether it wrote to Pebble.
func (s *Store) commitGroup(group []*request) (wrote bool) {
	batch := s.db.NewBatch()
	defer batch.Close()
	now := time.Now().UnixNano()
	var changes []Change
	// Only this goroutine replaces s.mem and s.dur, so it reads them
	// without the lock.
	g, dur := &groupMem{pub: s.mem}, &groupDur{pub: s.dur}
	errs := make([]error, len(group))
	applied := 0
	// dels are the keys of dur the group deleted, written to the batch
	// after the loop (deleteRuns).
	var dels []string
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		tx := &tx{s: s, g: g, dur: dur, now: now}
		err := r.fn(tx)
		if err != nil {
			errs[i] = err
			s.recycle(tx.ops)
			continue
		}
		if changes == nil {
			changes = make([]Change, 0, len(group)*len(tx.ops))
		}
		for _, op := range tx.ops {
			k, v := op.key, op.value
			// The key shares the op's (immutable) string; Pebble copies it.
			kb := unsafe.Slice(unsafe.StringData(k), len(k))
			var err error
			// A packed entry replaced or deleted, or written: the changes
			// are its leaves'.
			var old []byte
			var oldPacked, newPacked bool
			if len(s.packed) > 0 && underPrefix(s.packed, kb) {
				if mv, ok := g.get(k); ok {
					old = mv
				} else if kv, ok := dur.view().Get(durKV{key: k}); ok {
					old = kv.value
				}
				oldPacked, newPacked = isPacked(s.packed, kb, old), isPacked(s.packed, kb, v)
			}
			// Whether the key is disk-only is asked only when it matters:
			// not for the rewrite of a volatile key, which is most writes.
			switch {
			case v == nil:
				// A key is volatile, disk-only or in dur, or absent:
				// deleting an absent key leaves no tombstone.
				if !g.drop(k) {
					err = s.deleteDurable(batch, dur, k, kb, &dels)
				}
			case op.volatile:
				// A key becoming volatile loses its durable value.
				if g.set(k, v) {
					err = s.deleteDurable(batch, dur, k, kb, &dels)
				}
			default:
				g.drop(k)
				if s.diskOnlyPrefix(kb) == nil {
					dur.set(k, bytes.Clone(v))
				}
				err = batch.Set(kb, v, nil)
			}
			if err != nil {
				// The batch now holds part of this transaction: fail the
				// whole group rather than commit it.
				err = fmt.Errorf("store: batch: %w", err)
				s.writeFailures.Add(1)
				for _, r := range group {
					r.resp <- err
				}
				return
			}
			if oldPacked || newPacked {
				changes = packedChanges(changes, kb, old, oldPacked, v, newPacked)
			} else {
				changes = append(changes, Change{Key: kb, Value: v})
			}
		}
		s.recycle(tx.ops)
		applied++
	}
	if len(dels) > 0 {
		if err := s.deleteRuns(batch, dels, dur.view()); err != nil {
			err = fmt.Errorf("store: batch: %w", err)
			s.writeFailures.Add(1)
			for _, r := range group {
				r.resp <- err
			}
			return
		}
	}
	// A group that changed nothing a reader sees may still have changed
	// what is stored: an entry rewritten as it was, but now durable.
	if applied > 0 && (len(changes) > 0 || !batch.Empty() || g.work != nil || dur.work != nil) {
		wo := pebble.Sync
		if s.opts.NoSync {
			wo = pebble.NoSync
		}
		var err error
		s.mu.Lock()
		if !batch.Empty() { // a group of volatile writes only needs no sync
			if err = batch.Commit(wo); err == nil {
				wrote, s.unflushed = true, s.unflushed+uint64(batch.Len())
			}
		}
		if err == nil {
			if g.work != nil {
				s.mem = g.work
			}
			if dur.work != nil {
				s.dur = dur.work
			}
			s.seq++
			if s.opts.OnCommit != nil {
				s.opts.OnCommit(Commit{Seq: s.seq, Time: now, Changes: changes})
			}
		}
		s.mu.Unlock()
		if err != nil {
			s.writeFailures.Add(1)
			err = fmt.Errorf("store: commit: %w", err)
			for i := range errs {
				if errs[i] == nil {
					errs[i] = err
				}
			}
		}
	}
	for i, r := range group {
		r.resp <- errs[i]
	}
	return wrote
}

// View calls fn with a consistent snapshot of the committed data and the Seq
// of the last commit it contains. No commit becomes visible between the
// snapshot and the Seq, so a caller that then follows commits after Seq
// misses none and sees none twice.
func (s *Store) View(fn func(seq uint64, r Reader) error) error {
	s.mu.RLock()
	seq, r := s.seq, s.reader(s.dur, s.mem)
	s.mu.RUnlock()
	return fn(seq, r)
}

// Snapshot is a consistent read-only view of the store (but for disk-only
// keys, read as they are when read), as stored: packed entries are not
// expanded (see Packer).
type Snapshot struct {
	Reader
}

// Close releases the snapshot.
func (s *Snapshot) Close() error { return nil }

// Snapshot returns a view of the committed data as of now.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.reader(s.dur, s.mem)
	r.raw = true
	return &Snapshot{Reader: r}
}

// Get reads one committed key.
func (s *Store) Get(key []byte) ([]byte, bool, error) {
	return s.live().Get(key)
}

// Scan reads committed keys under prefix.
func (s *Store) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return s.live().Scan(prefix, fn)
}

// ScanRange reads committed keys k with lo <= k < hi in key order, like
// Scan.
func (s *Store) ScanRange(lo, hi []byte, fn func(key, value []byte) error) error {
	return s.live().scanRange(lo, hi, fn)
}

// live reads the keys last published.
func (s *Store) live() reader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.reader(s.dur, s.mem)
}

func (s *Store) reader(dur *durTree, mem *memTree) reader {
	return reader{dur: dur, mem: mem, db: s.db, diskOnly: s.diskOnly, packed: s.packed}
}

// Metrics returns Pebble's metrics.
func (s *Store) Metrics() *pebble.Metrics { return s.db.Metrics() }

// Closed reports whether Close has been called.
func (s *Store) Closed() bool { return s.closed.Load() }

// Stats is the health of the store: its Pebble database's shape and size,
// and its writer's failures.
type Stats struct {
	// DiskUsage is the bytes of every file the database holds (sstables,
	// write-ahead log, manifests).
	DiskUsage uint64
	// L0Files and L0Sublevels describe level 0, where flushed memtables
	// land; many sublevels slow reads and, past Pebble's thresholds,
	// writes.
	L0Files     int64
	L0Sublevels int32
	// ReadAmp is the number of sstable layers a read may have to look at.
	ReadAmp int
	// CompactionDebt estimates the bytes compactions must rewrite before
	// the LSM is in shape again.
	CompactionDebt uint64
	// Compactions and Flushes count those done since the store opened.
	Compactions, Flushes int64
	// MemTableSize is the bytes of the memtables; WALSize the live bytes
	// of the write-ahead log.
	MemTableSize, WALSize uint64
	// WriteFailures counts the groups of transactions the writer could
	// not commit (every transaction in such a group got the error).
	WriteFailures uint64
}

// Stats reads the store's health now from Pebble's Metrics, which takes
// Pebble's locks: it is meant for a metrics scrape, not a hot path. A
// closed store reports only its write failures.
func (s *Store) Stats() Stats {
	st := Stats{WriteFailures: s.writeFailures.Load()}
	if s.Closed() {
		return st
	}
	m := s.db.Metrics()
	st.DiskUsage = m.DiskSpaceUsage()
	st.L0Files, st.L0Sublevels = m.Levels[0].TablesCount, m.Levels[0].Sublevels
	st.ReadAmp = m.ReadAmp()
	st.CompactionDebt = m.Compact.EstimatedDebt
	st.Compactions, st.Flushes = m.Compact.Count, m.Flush.Count
	st.MemTableSize, st.WALSize = m.MemTable.Size, m.WAL.Size
	return st
}

// reader reads the durable keys of dur with the volatile keys of mem over
// them, and db for keys under the disk-only prefixes.
type reader struct {
	dur      *durTree
	mem      *memTree
	db       *pebble.DB
	diskOnly [][]byte // sorted, none inside another
	packed   [][]byte // likewise: where packed entries are expanded
	raw      bool     // reads packed entries as stored
}

// expands reports whether the reader expands packed entries in [lo, hi).
func (r reader) expands(lo, hi []byte) bool {
	return !r.raw && len(r.packed) > 0 && overlaps(r.packed, lo, hi)
}

// readOnly is v as a reader gets it: a value held in a tree, which the
// reader must not change; without spare capacity, so an append copies.
func readOnly(v []byte) []byte { return v[:len(v):len(v)] }

func (r reader) Get(key []byte) ([]byte, bool, error) {
	expand := !r.raw && len(r.packed) > 0 && underPrefix(r.packed, key)
	if v, ok := memGet(r.mem, key); ok {
		if expand && isPacked(r.packed, key, v) {
			return nil, false, nil // a container, not a leaf
		}
		return readOnly(v), true, nil
	}
	for _, p := range r.diskOnly {
		if bytes.HasPrefix(key, p) {
			return r.diskGet(key)
		}
	}
	kv, ok := r.dur.Get(durKV{key: string(key)})
	if !expand {
		return readOnly(kv.value), ok, nil
	}
	switch {
	case ok && isPacked(r.packed, key, kv.value):
		return nil, false, nil
	case ok:
		return readOnly(kv.value), true, nil
	}
	// A leaf of an entry: the entry is the key just below, volatile or
	// durable.
	if e, ok := memEntryBelow(r.mem, r.packed, key); ok {
		v, found := packedLeaf(e.value, key[len(e.key):])
		return v, found, nil
	}
	if e, ok := entryBelow(r.dur, r.packed, key); ok {
		v, found := packedLeaf(e.value, key[len(e.key):])
		return v, found, nil
	}
	return nil, false, nil
}

func (r reader) diskGet(key []byte) ([]byte, bool, error) {
	v, c, err := r.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := bytes.Clone(v)
	c.Close()
	return out, true, nil
}

func (r reader) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return r.scanRange(prefix, pathkey.PrefixEnd(prefix), fn)
}

// scanRange calls fn for the keys k with lo <= k < hi (hi nil: no bound).
func (r reader) scanRange(lo, hi []byte, fn func(key, value []byte) error) error {
	mem := memRange(r.mem, lo, hi)
	durable := func(fn func(key, value []byte) error) error { return r.durableRange(lo, hi, fn) }
	if !r.expands(lo, hi) {
		return mergeScan(mem, durable, fn)
	}
	mem, err := r.expandMem(mem, lo, hi)
	if err != nil {
		return err
	}
	return mergeScan(mem, func(fn func(key, value []byte) error) error {
		// A range that starts among an entry's leaves, past its key.
		if underPrefix(r.packed, lo) {
			if e, ok := entryBelow(r.dur, r.packed, lo); ok {
				if err := expandRange([]byte(e.key), e.value, lo, hi, fn); err != nil {
					return err
				}
			}
		}
		return durable(func(k, v []byte) error {
			if isPacked(r.packed, k, v) {
				return expandRange(k, v, lo, hi, fn)
			}
			return fn(k, v)
		})
	}, fn)
}

// expandMem replaces the packed entries among mem, the volatile keys in [lo,
// hi), with their leaves in that range, and adds first the leaves of an
// entry that the range starts among.
func (r reader) expandMem(mem []memKV, lo, hi []byte) ([]memKV, error) {
	var out []memKV
	add := func(k, v []byte) error {
		out = append(out, memKV{key: string(k), value: v})
		return nil
	}
	if underPrefix(r.packed, lo) {
		if e, ok := memEntryBelow(r.mem, r.packed, lo); ok {
			if err := expandRange([]byte(e.key), e.value, lo, hi, add); err != nil {
				return nil, err
			}
		}
	}
	if out == nil && !slices.ContainsFunc(mem, func(kv memKV) bool { return isPacked(r.packed, []byte(kv.key), kv.value) }) {
		return mem, nil
	}
	for _, kv := range mem {
		if k := []byte(kv.key); isPacked(r.packed, k, kv.value) {
			if err := expandRange(k, kv.value, lo, hi, add); err != nil {
				return nil, err
			}
		} else {
			out = append(out, kv)
		}
	}
	return out, nil
}

// durableRange calls fn for the durable keys in [lo, hi): from dur between
// the disk-only prefixes, from Pebble within them.
func (r reader) durableRange(lo, hi []byte, fn func(key, value []byte) error) error {
	cur := lo
	for _, p := range r.diskOnly {
		if hi != nil && bytes.Compare(p, hi) >= 0 {
			break
		}
		end := pathkey.PrefixEnd(p)
		if end != nil && bytes.Compare(end, cur) <= 0 {
			continue
		}
		if bytes.Compare(cur, p) < 0 {
			if err := treeRange(r.dur, cur, p, fn); err != nil {
				return err
			}
			cur = p
		}
		dhi := end
		if hi != nil && (dhi == nil || bytes.Compare(hi, dhi) < 0) {
			dhi = hi
		}
		if err := r.diskRange(cur, dhi, fn); err != nil {
			return err
		}
		if cur = end; cur == nil || (hi != nil && bytes.Compare(cur, hi) >= 0) {
			return nil
		}
	}
	return treeRange(r.dur, cur, hi, fn)
}

func (r reader) diskRange(lo, hi []byte, fn func(key, value []byte) error) error {
	it, err := r.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			it.Close()
			return err
		}
	}
	return it.Close()
}

// durKV is one durable key held in memory.
type durKV struct {
	key   string
	value []byte
}

// durTree is the durable keys held in memory. Like the volatile keys' tree,
// a published one is never changed: a group changes a copy-on-write clone.
type durTree = btree.BTreeG[durKV]

func newDurTree() *durTree {
	return btree.NewG(32, func(a, b durKV) bool { return a.key < b.key })
}

// groupDur is the durable side of one commit group.
type groupDur struct {
	pub  *durTree // the published tree when the group started
	work *durTree // pub's copy with the group's changes; nil until one
}

// view returns the durable keys as the group has them so far.
func (g *groupDur) view() *durTree {
	if g.work != nil {
		return g.work
	}
	return g.pub
}

func (g *groupDur) set(k string, v []byte) {
	if g.work == nil {
		g.work = g.pub.Clone()
	}
	g.work.ReplaceOrInsert(durKV{key: k, value: v})
}

// drop deletes k and reports whether it was there.
func (g *groupDur) drop(k string) bool {
	if g.work == nil {
		if !g.pub.Has(durKV{key: k}) {
			return false
		}
		g.work = g.pub.Clone()
	}
	_, ok := g.work.Delete(durKV{key: k})
	return ok
}

// treeRange calls fn for t's keys in [lo, hi) (hi nil: no bound). The key
// passed to fn shares the tree's memory: fn must not change it.
func treeRange(t *durTree, lo, hi []byte, fn func(key, value []byte) error) error {
	var err error
	visit := func(kv durKV) bool {
		err = fn(unsafe.Slice(unsafe.StringData(kv.key), len(kv.key)), readOnly(kv.value))
		return err == nil
	}
	if hi == nil {
		t.AscendGreaterOrEqual(durKV{key: string(lo)}, visit)
	} else {
		t.AscendRange(durKV{key: string(lo)}, durKV{key: string(hi)}, visit)
	}
	return err
}

// tx overlays one transaction's writes on its group's trees.
type tx struct {
	s   *Store
	g   *groupMem // the group's volatile keys
	dur *groupDur // the group's durable keys
	// ops are the writes in order. Until the transaction reads, a key
	// written again is appended again (the last write wins when the group
	// applies them); from then on writes indexes them and a write of a
	// known key replaces its op. A transaction that only writes (a
	// collector's) never builds the index.
	ops    []txOp
	writes map[string]int // key → the index of its last write in ops, or nil
	// sorted indexes the keys ops[:indexed] set (not those only deleted)
	// for Scan; it is brought up to date by the first Scan after new
	// writes, so that a transaction that only writes (a collector's) never
	// pays for it.
	sorted  *btree.BTreeG[string]
	indexed int
	now     int64
}

// base reads what the group has committed so far, as stored (packed entries
// are not expanded).
func (t *tx) base() reader {
	r := t.s.reader(t.dur.view(), t.g.view())
	r.raw = true
	return r
}

// scanBase calls fn for the group's keys under prefix.
func (t *tx) scanBase(prefix []byte, fn func(key, value []byte) error) error {
	return t.base().Scan(prefix, fn)
}

var _ Tx = (*tx)(nil)

func (t *tx) Time() int64 { return t.now }

// txOp is a write of one key in a transaction.
type txOp struct {
	key      string
	value    []byte // nil: deleted
	volatile bool
}

func (t *tx) Set(key, value []byte) {
	if value == nil {
		value = []byte{}
	}
	t.put(key, value, false)
}

func (t *tx) SetVolatile(key string, value []byte) {
	if value == nil {
		value = []byte{}
	}
	t.putString(key, value, true)
}

func (t *tx) Delete(key []byte) { t.put(key, nil, false) }

func (t *tx) put(key, v []byte, volatile bool) {
	// Until the transaction reads, writes is nil and every write appends.
	if i, ok := t.writes[string(key)]; ok {
		t.rewrite(i, v, volatile)
		return
	}
	t.appendOp(string(key), v, volatile)
}

func (t *tx) putString(key string, v []byte, volatile bool) {
	if i, ok := t.writes[key]; ok {
		t.rewrite(i, v, volatile)
		return
	}
	t.appendOp(key, v, volatile)
}

// rewrite replaces ops[i]'s write; a key set again after it was deleted
// and indexed joins the index.
func (t *tx) rewrite(i int, v []byte, volatile bool) {
	if v != nil && t.ops[i].value == nil && i < t.indexed {
		t.sorted.ReplaceOrInsert(t.ops[i].key)
	}
	t.ops[i].value, t.ops[i].volatile = v, volatile
}

// appendOp appends a write of a key not written before, or of any key
// before the transaction reads (see tx.ops).
func (t *tx) appendOp(key string, v []byte, volatile bool) {
	if t.writes != nil {
		t.writes[key] = len(t.ops)
	}
	if t.ops == nil {
		t.ops = t.s.ops
		t.s.ops = nil
	}
	t.ops = append(t.ops, txOp{key: key, value: v, volatile: volatile})
}

// indexWrites builds t.writes, once the transaction reads.
func (t *tx) indexWrites() {
	if t.writes == nil {
		t.writes = make(map[string]int, len(t.ops))
		for i, op := range t.ops {
			t.writes[op.key] = i
		}
	}
}

// written returns this transaction's last write of k, if any.
func (t *tx) written(k string) ([]byte, bool) {
	if len(t.ops) == 0 {
		// Nothing to index yet: a read before any write (the applied
		// index a replicated entry checks first) leaves the writes
		// that follow it unindexed until the next read.
		return nil, false
	}
	t.indexWrites()
	if i, ok := t.writes[k]; ok {
		return t.ops[i].value, true
	}
	return nil, false
}

func (t *tx) Get(key []byte) ([]byte, bool, error) {
	if v, ok := t.written(string(key)); ok {
		return v, v != nil, nil
	}
	return t.base().Get(key)
}

func (t *tx) Scan(prefix []byte, fn func(key, value []byte) error) error {
	// Merge the group's range with this transaction's writes under prefix:
	// a key the group has is looked up among the writes as the scan meets
	// it, and only the keys this transaction set are kept sorted, for the
	// keys it added. Its deletes need no index: a cascade deletes thousands
	// of keys and scans hundreds of times.
	// A callback that writes to the transaction must not count on the
	// rest of its own scan seeing those writes.
	if len(t.ops) == 0 {
		return t.scanBase(prefix, fn) // nothing written (see written)
	}
	if t.sorted == nil {
		t.sorted = btree.NewOrderedG[string](32)
	}
	t.indexWrites()
	for ; t.indexed < len(t.ops); t.indexed++ {
		if op := t.ops[t.indexed]; op.value != nil {
			t.sorted.ReplaceOrInsert(op.key)
		}
	}
	var mine []string
	t.sorted.AscendGreaterOrEqual(string(prefix), func(k string) bool {
		if !strings.HasPrefix(k, string(prefix)) {
			return false
		}
		mine = append(mine, k)
		return true
	})
	i := 0
	// emitMine sends the keys set here before upto that the group lacks.
	emitMine := func(upto []byte) error {
		for i < len(mine) && (upto == nil || mine[i] < string(upto)) {
			if v, _ := t.written(mine[i]); v != nil {
				if err := fn([]byte(mine[i]), v); err != nil {
					return err
				}
			}
			i++
		}
		return nil
	}
	err := t.scanBase(prefix, func(k, v []byte) error {
		if err := emitMine(k); err != nil {
			return err
		}
		if i < len(mine) && mine[i] == string(k) {
			i++ // sent below, as the group's key
		}
		if j, ok := t.writes[string(k)]; ok {
			// This transaction overwrote or deleted k.
			if w := t.ops[j].value; w != nil {
				return fn(k, w)
			}
			return nil
		}
		return fn(k, v)
	})
	if err != nil {
		return err
	}
	return emitMine(nil)
}

// pebbleLogger passes Pebble's errors to slog (a full disk during a flush,
// say) and drops its informational chatter.
type pebbleLogger struct{}

func (pebbleLogger) Infof(string, ...any) {}
func (pebbleLogger) Errorf(format string, args ...any) {
	slog.Error("pebble: " + fmt.Sprintf(format, args...))
}
func (pebbleLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
