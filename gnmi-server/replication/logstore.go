package replication

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// logStore is the node's Raft log and stable store: raft-wal, opened again
// when a full disk has left it unable to append.
//
// raft-wal seals a segment that is full and creates the next one in the
// background. The new file is preallocated (wal.DefaultSegmentSize), so on
// a full disk its creation fails; the WAL then keeps the sealed segment as
// its tail and refuses every later append with wal.ErrSealed, even once
// space is freed. Its metadata already names the next segment, so opening
// the WAL again creates that file and appending resumes. logStore does
// that on the first append refused after there is room for a segment.
type logStore struct {
	dir  string
	hlog hclog.Logger

	// mu is held for reading around every call into the WAL and for
	// writing while the WAL is replaced.
	mu  sync.RWMutex
	wal *wal.WAL // nil once a reopen failed, until one succeeds; guarded by mu
	// full is set while the WAL refuses appends and the disk has no room
	// for the segment that reopening it would create; guarded by mu.
	full   bool
	closed bool // guarded by mu
}

// errLogClosed is returned while the log cannot be opened.
var errLogClosed = errors.New("replication: the raft log is not open")

func openLogStore(dir string, hlog hclog.Logger) (*logStore, error) {
	w, err := wal.Open(dir, wal.WithLogger(hlog))
	if err != nil {
		return nil, err
	}
	return &logStore{dir: dir, hlog: hlog, wal: w}, nil
}

// do runs f on the open WAL. When f is refused because the WAL's tail is
// sealed, or the WAL could not be opened again before, do reopens it and
// runs f once more.
func (s *logStore) do(f func(w *wal.WAL) error) error {
	s.mu.RLock()
	w := s.wal
	err := errLogClosed
	if w != nil {
		err = f(w)
	}
	s.mu.RUnlock()
	if w != nil && !errors.Is(err, wal.ErrSealed) {
		return err
	}
	if rerr := s.reopen(w); rerr != nil {
		return fmt.Errorf("%w (%v)", err, rerr)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.wal == nil {
		return errLogClosed
	}
	return f(s.wal)
}

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
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err == nil {
		need := uint64(wal.DefaultSegmentSize) + diskReserve
		if free := st.Bavail * uint64(st.Bsize); free < need {
			s.full = true
			return fmt.Errorf("the raft log needs %d MiB free for its next segment, %d MiB are: %w", need>>20, free>>20, syscall.ENOSPC)
		}
	}
	if failed != nil {
		if err := failed.Close(); err != nil {
			s.hlog.Warn("closing the raft log to reopen it", "error", err)
		}
		s.wal = nil
	}
	w, err := wal.Open(s.dir, wal.WithLogger(s.hlog))
	if err != nil {
		s.hlog.Error("reopening the raft log", "error", err)
		return fmt.Errorf("reopening the raft log: %w", err)
	}
	s.wal, s.full = w, false
	s.hlog.Warn("reopened the raft log: its next segment could not be created before")
	return nil
}

// fullErr returns an error wrapping syscall.ENOSPC while the WAL refuses
// appends for lack of room, and nil once it takes them. It reopens the WAL
// when space has been freed, so that a node nobody writes to notices too.
func (s *logStore) fullErr() error {
	s.mu.RLock()
	w, full := s.wal, s.full
	s.mu.RUnlock()
	if !full {
		return nil
	}
	return s.reopen(w)
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
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.FirstIndex(); return })
	return i, err
}

// LastIndex implements raft.LogStore.
func (s *logStore) LastIndex() (i uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { i, err = w.LastIndex(); return })
	return i, err
}

// GetLog implements raft.LogStore.
func (s *logStore) GetLog(index uint64, l *raft.Log) error {
	return s.do(func(w *wal.WAL) error { return w.GetLog(index, l) })
}

// StoreLog implements raft.LogStore.
func (s *logStore) StoreLog(l *raft.Log) error {
	return s.do(func(w *wal.WAL) error { return w.StoreLog(l) })
}

// StoreLogs implements raft.LogStore.
func (s *logStore) StoreLogs(logs []*raft.Log) error {
	return s.do(func(w *wal.WAL) error { return w.StoreLogs(logs) })
}

// DeleteRange implements raft.LogStore.
func (s *logStore) DeleteRange(min, max uint64) error {
	return s.do(func(w *wal.WAL) error { return w.DeleteRange(min, max) })
}

// IsMonotonic implements raft.MonotonicLogStore: raft-wal only appends.
func (s *logStore) IsMonotonic() bool { return true }

// Set implements raft.StableStore.
func (s *logStore) Set(key, val []byte) error {
	return s.do(func(w *wal.WAL) error { return w.Set(key, val) })
}

// Get implements raft.StableStore.
func (s *logStore) Get(key []byte) (v []byte, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.Get(key); return })
	return v, err
}

// SetUint64 implements raft.StableStore.
func (s *logStore) SetUint64(key []byte, val uint64) error {
	return s.do(func(w *wal.WAL) error { return w.SetUint64(key, val) })
}

// GetUint64 implements raft.StableStore.
func (s *logStore) GetUint64(key []byte) (v uint64, err error) {
	err = s.do(func(w *wal.WAL) (err error) { v, err = w.GetUint64(key); return })
	return v, err
}
