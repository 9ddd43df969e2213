package replication

import (
	"errors"
	"fmt"
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
// Tail truncations create a segment too. So:
//   - appends are refused, before they reach the WAL, while the disk has
//     no room for a new segment (diskReserve): the WAL is never asked to
//     rotate without room;
//   - when the WAL refuses an append as sealed anyway (space taken by
//     Pebble between the check and the rotation), or a truncation fails,
//     logStore opens it again: its metadata already names the next
//     segment, and opening creates the file;
//   - when the metadata could not record the seal either, the reopened
//     WAL is sealed on disk alone and never rotates; logStore truncates
//     its last entry, which makes raft-wal seal the segment in its
//     metadata and create the next, and appends the entry again.
type logStore struct {
	dir  string
	open func() (*wal.WAL, error)
	hlog hclog.Logger

	// mu is held for reading around every call into the WAL and for
	// writing while the WAL is replaced.
	mu     sync.RWMutex
	wal    *wal.WAL // nil after a failed reopen, until one succeeds; guarded by mu
	closed bool     // guarded by mu

	// full is set while the last room check found no room for a segment.
	full atomic.Bool
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
// than extra bytes free beyond diskReserve, and records whether it had.
func (s *logStore) room(extra uint64) error {
	free, err := s.statfs(s.dir)
	if err != nil {
		return nil // cannot tell: let the write itself decide
	}
	if need := diskReserve + extra; free < need {
		s.full.Store(true)
		return fmt.Errorf("%w: the data dir has %d MiB free and keeps %d MiB for the raft log's next segment and the store", syscall.ENOSPC, free>>20, need>>20)
	}
	s.full.Store(false)
	return nil
}

// fullErr returns an error wrapping syscall.ENOSPC while the log refuses
// appends for lack of room, and nil once there is room again.
func (s *logStore) fullErr() error {
	if !s.full.Load() {
		return nil
	}
	return s.room(0)
}

// do runs f on the open WAL. When f fails in a way a reopen mends
// (mended), or no WAL is open, do reopens it and runs f once more.
func (s *logStore) do(f func(w *wal.WAL) error, mended func(error) bool) error {
	s.mu.RLock()
	w := s.wal
	err := errLogClosed
	if w != nil {
		err = f(w)
	}
	s.mu.RUnlock()
	if err == nil || w != nil && !mended(err) {
		return err
	}
	if rerr := s.reopen(w); rerr != nil {
		return fmt.Errorf("%w (%w)", err, rerr)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.wal == nil {
		return errLogClosed
	}
	return f(s.wal)
}

func sealed(err error) bool { return errors.Is(err, wal.ErrSealed) }

func anyError(err error) bool { return !errors.Is(err, wal.ErrClosed) }

// reopen replaces failed, the WAL that refused a call (nil when none is
// open), by the WAL opened again from disk, if there is room for a new
// segment. Another caller may have replaced it already.
func (s *logStore) reopen(failed *wal.WAL) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errLogClosed
	}
	if s.wal != failed {
		return nil
	}
	if err := s.room(0); err != nil {
		return err
	}
	if failed != nil {
		if err := failed.Close(); err != nil {
			s.hlog.Warn("closing the raft log to reopen it", "error", err)
		}
		s.wal = nil
	}
	// While no WAL is open Raft cannot record a new term (it panics when
	// it fails to), so a failed open is tried again for a while: space the
	// room check saw may have been taken since, and be freed again.
	var w *wal.WAL
	var err error
	for try := 0; ; try++ {
		if w, err = s.open(); err == nil {
			break
		}
		s.hlog.Error("reopening the raft log", "error", err)
		if try == reopenTries-1 {
			return fmt.Errorf("reopening the raft log: %w", err)
		}
		time.Sleep(reopenPause)
	}
	s.wal = w
	s.hlog.Warn("reopened the raft log after a failed write on a full disk")
	return nil
}

// unseal mends a WAL whose tail segment is sealed in its file but not in
// its metadata (see logStore): it truncates the last entry, which makes
// raft-wal record the seal and create the next segment, and writes the
// entry again. Until it is written again the entry is only in memory: a
// crash in those microseconds loses it from this node's log, as a crash
// loses an entry not yet synced.
func (s *logStore) unseal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wal == nil {
		return errLogClosed
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 {
		return wal.ErrSealed
	}
	var e raft.Log
	if err := s.wal.GetLog(last, &e); err != nil {
		return err
	}
	if err := s.wal.DeleteRange(last, last); err != nil {
		return err
	}
	if err := s.wal.StoreLogs([]*raft.Log{&e}); err != nil {
		return err
	}
	s.hlog.Warn("the raft log's tail segment was sealed without a successor; created it", "index", last)
	return nil
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

// store appends through f, when there is room.
func (s *logStore) store(f func(w *wal.WAL) error) error {
	if err := s.room(0); err != nil {
		return err
	}
	err := s.do(f, sealed)
	if sealed(err) {
		// Still sealed after a reopen: sealed on disk alone.
		if uerr := s.unseal(); uerr != nil {
			return fmt.Errorf("%w (%w)", err, uerr)
		}
		err = s.do(f, sealed)
	}
	return err
}

// FirstIndex implements raft.LogStore.
func (s *logStore) FirstIndex() (i uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.FirstIndex(); return }, sealed)
	return i, err
}

// LastIndex implements raft.LogStore.
func (s *logStore) LastIndex() (i uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.LastIndex(); return }, sealed)
	return i, err
}

// GetLog implements raft.LogStore.
func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	return s.do(func(w *wal.WAL) error { return w.GetLog(index, l) }, sealed)
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(l *raft.Log) error {
	return s.store(func(w *wal.WAL) error { return w.StoreLog(l) })
}

// StoreLogs implements raft.LogStore.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	return s.store(func(w *wal.WAL) error { return w.StoreLogs(logs) })
}

// DeleteRange implements raft.LogStore. A failed truncation (the segment
// it creates did not fit) has left the WAL's memory behind its metadata:
// the WAL is opened again and the truncation, then already done, repeated.
func (s *logStore) DeleteRange(min, max uint64) error {
	return s.do(func(w *wal.WAL) error { return w.DeleteRange(min, max) }, anyError)
}

// IsMonotonic implements raft.MonotonicLogStore: raft-wal only appends.
func (s *logStore) IsMonotonic() bool { return true }

// Set implements raft.StableStore.
func (s *logStore) Set(key, val []byte) error {
	return s.do(func(w *wal.WAL) error { return w.Set(key, val) }, sealed)
}

// Get implements raft.StableStore.
func (s *logStore) Get(key []byte) (v []byte, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.Get(key); return }, sealed)
	return v, err
}

// SetUint64 implements raft.StableStore.
func (s *logStore) SetUint64(key []byte, val uint64) error {
	return s.do(func(w *wal.WAL) error { return w.SetUint64(key, val) }, sealed)
}

// GetUint64 implements raft.StableStore.
func (s *logStore) GetUint64(key []byte) (v uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.GetUint64(key); return }, sealed)
	return v, err
}
