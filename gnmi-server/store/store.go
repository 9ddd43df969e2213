// Package store keeps the data tree durably in Pebble and serializes every
// change to it through one writer that commits many transactions per fsync.
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
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/google/btree"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// Change is one key written or deleted by a committed transaction. A nil
// Value means the key was deleted.
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
	// it is gone when the store closes. The store keeps value: the caller
	// must not change it afterwards.
	SetVolatile(key, value []byte)
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

	closeOnce sync.Once
	done      chan struct{}
	closed    atomic.Bool // set by Close

	writeFailures atomic.Uint64 // groups that could not be committed
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
	// The durable tree is configuration, history and events: small (the
	// scale set is a few MiB), read through a 32 MiB block cache. The
	// memtable stays at 32 MiB: at 8 MiB, concurrent Sets were 13% slower.
	po := &pebble.Options{
		Logger:       pebbleLogger{},
		MemTableSize: 32 << 20,
		Cache:        pebble.NewCache(32 << 20),
	}
	defer po.Cache.Unref()
	db, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", dir, err)
	}
	s := &Store{db: db, opts: opts, reqs: make(chan *request, 1024), done: make(chan struct{}), mem: newMemTree()}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// Close stops the writer after the transactions already submitted and closes
// the database.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.wg.Wait()
		err = s.db.Close()
	})
	return err
}

// Update runs fn as one transaction and returns once it is durable. If fn
// returns an error, none of its writes apply and Update returns that error.
func (s *Store) Update(ctx context.Context, fn func(Tx) error) error {
	r := &request{ctx: ctx, fn: fn, resp: make(chan error, 1)}
	select {
	case s.reqs <- r:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	// Once submitted the outcome must be waited for: the transaction may
	// already be in a batch being synced.
	return <-r.resp
}

// UpdateBatch runs fns as consecutive transactions, in order, and returns
// each one's error once all are durable. Replication applies a batch of
// committed log entries this way.
func (s *Store) UpdateBatch(ctx context.Context, fns []func(Tx) error) []error {
	errs := make([]error, len(fns))
	reqs := make([]*request, len(fns))
	for i, fn := range fns {
		r := &request{ctx: ctx, fn: fn, resp: make(chan error, 1)}
		select {
		case s.reqs <- r:
			reqs[i] = r
		case <-s.done:
			errs[i] = ErrClosed
		}
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

func (s *Store) writer() {
	defer s.wg.Done()
	for {
		var first *request
		select {
		case first = <-s.reqs:
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
		s.commitGroup(group)
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

func (s *Store) commitGroup(group []*request) {
	batch := s.db.NewIndexedBatch()
	defer batch.Close()
	now := time.Now().UnixNano()
	var changes []Change
	// Only this goroutine replaces s.mem, so it reads it without the lock.
	g := &groupMem{pub: s.mem}
	errs := make([]error, len(group))
	applied := 0
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		tx := &tx{base: batch, g: g, writes: map[string]int{}, now: now}
		err := r.fn(tx)
		tx.close()
		if err != nil {
			errs[i] = err
			continue
		}
		if changes == nil {
			changes = make([]Change, 0, len(group)*len(tx.ops))
		}
		for _, op := range tx.ops {
			k, v := op.key, op.value
			kb := []byte(k)
			var err error
			switch {
			case v == nil:
				if !g.drop(k) {
					err = batch.Delete(kb, nil)
				}
			case op.volatile:
				if g.set(k, v) {
					err = deleteDurable(batch, kb)
				}
			default:
				g.drop(k)
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
			changes = append(changes, Change{Key: kb, Value: v})
		}
		applied++
	}
	if applied > 0 && len(changes) > 0 {
		wo := pebble.Sync
		if s.opts.NoSync {
			wo = pebble.NoSync
		}
		var err error
		s.mu.Lock()
		if !batch.Empty() { // a group of volatile writes only needs no sync
			err = batch.Commit(wo)
		}
		if err == nil {
			if g.work != nil {
				s.mem = g.work
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
}

// deleteDurable deletes key from b if it holds it (a key becoming volatile
// keeps no durable value).
func deleteDurable(b *pebble.Batch, key []byte) error {
	_, c, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c.Close()
	return b.Delete(key, nil)
}

// View calls fn with a consistent snapshot of the committed data and the Seq
// of the last commit it contains. No commit becomes visible between the
// snapshot and the Seq, so a caller that then follows commits after Seq
// misses none and sees none twice.
func (s *Store) View(fn func(seq uint64, r Reader) error) error {
	s.mu.RLock()
	snap := s.db.NewSnapshot()
	seq, mem := s.seq, s.mem
	s.mu.RUnlock()
	defer snap.Close()
	return fn(seq, pebbleReader{snap, mem})
}

// Snapshot is a consistent read-only view of the store that stays open
// until Close.
type Snapshot struct {
	Reader
	snap *pebble.Snapshot
}

// Close releases the snapshot.
func (s *Snapshot) Close() error { return s.snap.Close() }

// Snapshot returns a view of the committed data as of now.
func (s *Store) Snapshot() *Snapshot {
	s.mu.RLock()
	snap, mem := s.db.NewSnapshot(), s.mem
	s.mu.RUnlock()
	return &Snapshot{Reader: pebbleReader{snap, mem}, snap: snap}
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

// live reads the database as it is now, with the volatile keys last
// published.
func (s *Store) live() pebbleReader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return pebbleReader{s.db, s.mem}
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

type pebbleSource interface {
	Get(key []byte) ([]byte, io.Closer, error)
	NewIter(o *pebble.IterOptions) (*pebble.Iterator, error)
}

// pebbleReader reads src with the volatile keys of mem over it.
type pebbleReader struct {
	src pebbleSource
	mem *memTree
}

func (r pebbleReader) Get(key []byte) ([]byte, bool, error) {
	if v, ok := memGet(r.mem, key); ok {
		return v, true, nil
	}
	v, c, err := r.src.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	c.Close()
	return out, true, nil
}

func (r pebbleReader) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return r.scanRange(prefix, pathkey.PrefixEnd(prefix), fn)
}

func (r pebbleReader) scanRange(lo, hi []byte, fn func(key, value []byte) error) error {
	return mergeScan(memRange(r.mem, lo, hi), func(fn func(key, value []byte) error) error {
		it, err := r.src.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
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
	}, fn)
}

// tx overlays one transaction's writes on the group's batch.
type tx struct {
	base   *pebble.Batch
	g      *groupMem      // the group's volatile keys
	ops    []txOp         // the keys written, in first-write order
	writes map[string]int // key → its index in ops
	// sorted indexes the keys of ops[:indexed] for Scan; it is brought up to date
	// by the first Scan after new writes, so that a transaction that only
	// writes (a collector's) never pays for it.
	sorted  *btree.BTreeG[string]
	indexed int
	now     int64
	// iter reads the batch for every Scan of the transaction: the batch
	// does not change while the transaction runs (its writes go to writes),
	// and positioning one iterator is much cheaper than creating one.
	iter *pebble.Iterator
}

func (t *tx) close() {
	if t.iter != nil {
		t.iter.Close()
		t.iter = nil
	}
}

// scanBase calls fn for the batch's keys under prefix.
func (t *tx) scanBase(prefix []byte, fn func(key, value []byte) error) error {
	if t.iter == nil {
		it, err := t.base.NewIter(nil)
		if err != nil {
			return err
		}
		t.iter = it
	}
	hi := pathkey.PrefixEnd(prefix)
	t.iter.SetBounds(prefix, hi)
	return mergeScan(memRange(t.g.view(), prefix, hi), func(fn func(key, value []byte) error) error {
		for t.iter.First(); t.iter.Valid(); t.iter.Next() {
			if err := fn(t.iter.Key(), t.iter.Value()); err != nil {
				return err
			}
		}
		return t.iter.Error()
	}, fn)
}

var _ Tx = (*tx)(nil)

func (t *tx) Time() int64 { return t.now }

// txOp is the last write of one key in a transaction.
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

func (t *tx) SetVolatile(key, value []byte) {
	if value == nil {
		value = []byte{}
	}
	t.put(key, value, true)
}

func (t *tx) Delete(key []byte) { t.put(key, nil, false) }

func (t *tx) put(key, v []byte, volatile bool) {
	if i, ok := t.writes[string(key)]; ok {
		t.ops[i].value, t.ops[i].volatile = v, volatile
		return
	}
	k := string(key)
	t.writes[k] = len(t.ops)
	t.ops = append(t.ops, txOp{key: k, value: v, volatile: volatile})
}

// written returns this transaction's write of k, if any.
func (t *tx) written(k string) ([]byte, bool) {
	if i, ok := t.writes[k]; ok {
		return t.ops[i].value, true
	}
	return nil, false
}

func (t *tx) Get(key []byte) ([]byte, bool, error) {
	if v, ok := t.written(string(key)); ok {
		return v, v != nil, nil
	}
	return pebbleReader{t.base, t.g.view()}.Get(key)
}

func (t *tx) Scan(prefix []byte, fn func(key, value []byte) error) error {
	// Merge the batch's range with this transaction's writes under prefix.
	if t.sorted == nil {
		t.sorted = btree.NewOrderedG[string](32)
	}
	for ; t.indexed < len(t.ops); t.indexed++ {
		t.sorted.ReplaceOrInsert(t.ops[t.indexed].key)
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
			// This transaction overwrote or deleted k.
			w, _ := t.written(mine[i])
			i++
			if w == nil {
				return nil
			}
			return fn(k, w)
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
