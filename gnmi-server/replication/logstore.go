package replication

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// logStore is the node's Raft log and stable store: raft-wal, kept from
// the states a full disk leaves it in.
//
// raft-wal preallocates each log segment (wal.DefaultSegmentSize). When a
// segment is full it seals it and creates the next in the background; if
// that creation fails, the WAL keeps the sealed segment as its tail and
// refuses every later append with wal.ErrSealed, even once space is freed.
// Tail truncations, and the first append after a snapshot emptied the log,
// create a segment too; when that fails, the WAL's memory is left behind
// its metadata and every retry fails. So:
//   - appends are refused, before they reach the WAL, while the disk has
//     no room for a new segment (diskReserve), and tail truncations while
//     it has no room for two: the WAL is not asked to create a segment
//     without room;
//   - when creating a segment fails anyway (Pebble took the space between
//     the check and the creation), logStore opens the WAL again once there
//     is room: its metadata names the segment, and opening creates the
//     file. The call is then repeated (an append only for the entries the
//     failed one did not make durable).
//
// One state is not mended: a rotation whose metadata commit failed too
// (the disk had no room left at all) leaves a segment sealed in its file
// alone, which raft-wal opens as a tail that refuses appends and never
// rotates. logStore says so in its error; nothing in the log is lost.
type logStore struct {
	dir  string
	open func() (*wal.WAL, error)
	hlog hclog.Logger

	// mu is held for reading around every call into the WAL and for
	// writing while the WAL is replaced.
	mu     sync.RWMutex
	wal    *wal.WAL // nil after a failed reopen, until one succeeds; guarded by mu
	closed bool     // guarded by mu

	// truncated is set by a tail truncation until the next append, which
	// then goes to the segment the truncation created, without a room
	// check: hashicorp/raft does not take back a truncation whose append
	// fails, and its follower would then refuse every later append.
	truncated atomic.Bool
	// reopens counts the times the WAL was opened again.
	reopens atomic.Uint64
	// statfs reports the free bytes of the data dir; a test replaces it.
	statfs func(dir string) (uint64, error)
}

// A WAL that fails to open again is tried reopenTries times, reopenPause
// apart, before the call that reopened it fails.
const (
	reopenTries = 10
	reopenPause = 100 * time.Millisecond
)

// errLogClosed is returned while the log cannot be opened.
var errLogClosed = errors.New("replication: the raft log is not open")

func openLogStore(dir string, hlog hclog.Logger) (*logStore, error) {
	s := &logStore{
		dir:    dir,
		open:   func() (*wal.WAL, error) { return wal.Open(dir, wal.WithLogger(hlog)) },
		hlog:   hlog,
		statfs: freeBytes,
	}
	w, err := s.open()
	if err != nil {
		return nil, err
	}
	s.wal = w
	return s, nil
}

// freeBytes is the space left to unprivileged writers on dir's file
// system.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// room returns an error wrapping syscall.ENOSPC when the data dir has less
// than extra bytes free beyond diskReserve. It looks now (a statfs, 2 µs
// here): room(0) fails exactly while the log refuses appends.
func (s *logStore) room(extra uint64) error {
	free, err := s.statfs(s.dir)
	if err != nil {
		return nil // cannot tell: let the write itself decide
	}
	if need := diskReserve + extra; free < need {
		return fmt.Errorf("%w: the data dir has %d MiB free and keeps %d MiB for the raft log's next segment and the store", syscall.ENOSPC, free>>20, need>>20)
	}
	return nil
}

// call runs f on the open WAL, which it returns (nil when none is open).
func (s *logStore) call(f func(w *wal.WAL) error) (*wal.WAL, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.wal == nil {
		return nil, errLogClosed
	}
	return s.wal, f(s.wal)
}

// do runs f on the open WAL. When no WAL is open, or again is set and f
// failed in a way a reopen mends, do opens the WAL again and runs again
// (or f) on it.
func (s *logStore) do(f, again func(w *wal.WAL) error) error {
	w, err := s.call(f)
	if err == nil || w != nil && (again == nil || !mendable(err)) {
		return err
	}
	if rerr := s.reopen(w); rerr != nil {
		return fmt.Errorf("%w (%w)", err, rerr)
	}
	if again == nil {
		again = f
	}
	_, err = s.call(again)
	if errors.Is(err, wal.ErrSealed) {
		return fmt.Errorf("%w: its tail segment is sealed in its file but not in its metadata (the disk had no room left when it was sealed), and raft-wal cannot append to it or rotate", err)
	}
	return err
}

// mendable reports whether err is a failure a reopen mends: an append
// refused as sealed, or a segment not created for lack of room (ENOSPC)
// or because a failed creation left its file (EEXIST). Not an I/O error:
// after a failed fsync, what a reopen reads may not be on disk.
func mendable(err error) bool {
	return errors.Is(err, wal.ErrSealed) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, os.ErrExist)
}

// reopen replaces failed, the WAL that refused a call, by the WAL opened
// again from disk, if there is room for a new segment; or opens one when
// none is open (failed is nil). Another caller may have done it already.
func (s *logStore) reopen(failed *wal.WAL) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errLogClosed
	}
	if s.wal != failed {
		return nil
	}
	tries := 1
	if failed != nil {
		if err := s.room(0); err != nil {
			return err
		}
		if err := failed.Close(); err != nil {
			s.hlog.Warn("closing the raft log to reopen it", "error", err)
		}
		s.wal = nil
		// While no WAL is open Raft cannot record a new term (it
		// panics when it fails to), so a failed open is tried again
		// for a while: the room seen may have been taken, and freed.
		tries = reopenTries
	}
	var err error
	for try := 1; ; try++ {
		var w *wal.WAL
		if w, err = s.open(); err == nil {
			s.wal = w
			s.reopens.Add(1)
			s.hlog.Warn("reopened the raft log after a failed write on a full disk")
			return nil
		}
		s.hlog.Error("reopening the raft log", "error", err)
		if try == tries {
			return fmt.Errorf("reopening the raft log: %w", err)
		}
		time.Sleep(reopenPause)
	}
}

// Close closes the WAL.
func (s *logStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.wal == nil {
		return nil
	}
	err := s.wal.Close()
	s.wal = nil
	return err
}

// FirstIndex implements raft.LogStore.
func (s *logStore) FirstIndex() (i uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.FirstIndex(); return }, nil)
	return i, err
}

// LastIndex implements raft.LogStore.
func (s *logStore) LastIndex() (i uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.LastIndex(); return }, nil)
	return i, err
}

// GetLog implements raft.LogStore.
func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	return s.do(func(w *wal.WAL) error { return w.GetLog(index, l) }, nil)
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}

// StoreLogs implements raft.LogStore. It refuses the entries while there
// is no room for a new segment.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	if !s.truncated.Swap(false) {
		if err := s.room(0); err != nil {
			return err
		}
	}
	// After a reopen, the WAL holds the entries the failed append made
	// durable (those after the log's last when Raft appended): the rest
	// are appended.
	rest := func(w *wal.WAL) error {
		last, err := w.LastIndex()
		if err != nil {
			return err
		}
		i := 0
		for i < len(logs) && logs[i].Index <= last {
			i++
		}
		if i == len(logs) {
			return nil
		}
		return w.StoreLogs(logs[i:])
	}
	return s.do(func(w *wal.WAL) error { return w.StoreLogs(logs) }, rest)
}

// DeleteRange implements raft.LogStore. A tail truncation creates a
// segment, which the append that follows it goes to: it is refused without
// room for that segment and another (Raft tries again), and the append
// after it is not refused for room (see truncated). A truncation that
// failed creating its segment is repeated on the WAL opened again, where
// it is done already or still to do.
func (s *logStore) DeleteRange(min, max uint64) error {
	first, err := s.FirstIndex()
	if err != nil {
		return err
	}
	if min > first {
		if err := s.room(uint64(wal.DefaultSegmentSize)); err != nil {
			return err
		}
	}
	f := func(w *wal.WAL) error { return w.DeleteRange(min, max) }
	err = s.do(f, f)
	if err == nil && min > first {
		s.truncated.Store(true)
	}
	return err
}

// IsMonotonic implements raft.MonotonicLogStore: raft-wal only appends.
func (s *logStore) IsMonotonic() bool { return true }

// Set implements raft.StableStore.
func (s *logStore) Set(key, val []byte) error {
	return s.do(func(w *wal.WAL) error { return w.Set(key, val) }, nil)
}

// Get implements raft.StableStore.
func (s *logStore) Get(key []byte) (v []byte, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.Get(key); return }, nil)
	return v, err
}

// SetUint64 implements raft.StableStore.
func (s *logStore) SetUint64(key []byte, val uint64) error {
	return s.do(func(w *wal.WAL) error { return w.SetUint64(key, val) }, nil)
}

// GetUint64 implements raft.StableStore.
func (s *logStore) GetUint64(key []byte) (v uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.GetUint64(key); return }, nil)
	return v, err
}
