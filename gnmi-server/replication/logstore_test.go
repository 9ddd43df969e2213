package replication

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
)

// disk stands for a file system that fills up: while full, creating a
// segment file fails as its preallocation would (the file is left behind)
// and, if commits is set too, so does committing the WAL's metadata.
type disk struct {
	full, commits atomic.Bool
	failOpens     atomic.Int32 // the next opens of the WAL that fail
}

type fullFiler struct {
	*segment.Filer
	d *disk
}

func (f fullFiler) Create(info types.SegmentInfo) (types.SegmentWriter, error) {
	w, err := f.Filer.Create(info)
	if err != nil || !f.d.full.Load() {
		return w, err
	}
	w.Close()
	return nil, syscall.ENOSPC
}

type fullMeta struct {
	metadb.BoltMetaDB
	d *disk
}

func (m *fullMeta) CommitState(s types.PersistentState) error {
	if m.d.full.Load() && m.d.commits.Load() {
		return syscall.ENOSPC
	}
	return m.BoltMetaDB.CommitState(s)
}

// testSegment is small so that a few hundred entries fill a segment.
const testSegment = 64 << 10

// logBuf is what a test log store logs.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLog is a log store over a disk the test fills and frees, with
// 1 GiB free until the test says otherwise.
type testLog struct {
	*logStore
	dir  string
	d    disk
	free atomic.Uint64
	logs logBuf
}

func newTestLog(t *testing.T) *testLog {
	t.Helper()
	s := &testLog{dir: t.TempDir()}
	s.free.Store(1 << 30)
	s.restart(t)
	t.Cleanup(func() { s.Close() })
	return s
}

// restart closes the log store, if open, and opens it again.
func (s *testLog) restart(t *testing.T) {
	t.Helper()
	if s.logStore != nil {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s.logStore = &logStore{
		dir:  s.dir,
		hlog: hclog.New(&hclog.LoggerOptions{Output: &s.logs, Level: hclog.Warn}),
		open: func() (*wal.WAL, error) {
			if s.d.failOpens.Add(-1) >= 0 {
				return nil, syscall.EIO
			}
			return wal.Open(s.dir, wal.WithSegmentSize(testSegment), wal.WithLogger(hclog.NewNullLogger()),
				wal.WithSegmentFiler(fullFiler{segment.NewFiler(s.dir, fs.New()), &s.d}), wal.WithMetaStore(&fullMeta{d: &s.d}))
		},
		statfs: func(string) (uint64, error) { return s.free.Load(), nil },
	}
	w, err := s.open()
	if err != nil {
		t.Fatal(err)
	}
	s.wal = w
}

func entry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: 1, Data: fmt.Appendf(bytes.Repeat([]byte{'x'}, 1000), "%d", i)}
}

// appendUntilSealed appends entries after last until the WAL, its next
// segment not created, refuses one; it returns the last entry stored.
func appendUntilSealed(t *testing.T, raw *wal.WAL, last uint64) uint64 {
	t.Helper()
	for range 1000 {
		err := raw.StoreLog(entry(last + 1))
		if errors.Is(err, wal.ErrSealed) {
			return last
		}
		if err != nil {
			t.Fatalf("append %d: %v", last+1, err)
		}
		last++
		// The rotation runs in the background after the append that seals.
		time.Sleep(100 * time.Microsecond)
	}
	t.Fatalf("1000 appends of 1 KiB to %d KiB segments were never refused as sealed", testSegment>>10)
	return 0
}

// appendEntries appends entries from..to to s.
func appendEntries(t *testing.T, s *logStore, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := s.StoreLog(entry(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// checkLog asserts that s holds entries 1..last, each as written.
func checkLog(t *testing.T, s *logStore, last uint64) {
	t.Helper()
	if got, err := s.LastIndex(); err != nil || got != last {
		t.Fatalf("LastIndex = %d, %v; want %d", got, err, last)
	}
	for i := uint64(1); i <= last; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		if want := entry(i); l.Index != i || !bytes.Equal(l.Data, want.Data) {
			t.Fatalf("entry %d reads back as index %d, %d bytes %.8q…; want %.8q…", i, l.Index, len(l.Data), l.Data, want.Data)
		}
	}
}

// TestLogStoreFullDisk: a segment that could not be created leaves raft-wal
// refusing every append; the log store refuses appends while there is no
// room, takes them again once there is (a reopen), and loses no entry.
func TestLogStoreFullDisk(t *testing.T) {
	s := newTestLog(t)

	// The disk fills behind the free-space check's back (Pebble took the
	// space), so the WAL meets it when it rotates.
	s.d.full.Store(true)
	last := appendUntilSealed(t, s.wal, 0)

	// Still full, and now known to be: refused before the WAL.
	s.free.Store(diskReserve - 1)
	err := s.StoreLogs([]*raft.Log{entry(last + 1)})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("an append on the full disk: %v, want an error wrapping ENOSPC", err)
	}
	if err := s.room(0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("room(0) on the full disk: %v, want an error wrapping ENOSPC", err)
	}

	// Space freed: the next append goes through.
	s.d.full.Store(false)
	s.free.Store(1 << 30)
	if err := s.room(0); err != nil {
		t.Fatalf("room(0) after space was freed: %v", err)
	}
	for i := last + 1; i <= last+200; i++ {
		if err := s.StoreLogs([]*raft.Log{entry(i)}); err != nil {
			t.Fatalf("append %d after space was freed: %v", i, err)
		}
	}
	last += 200
	checkLog(t, s.logStore, last)
	if !strings.Contains(s.logs.String(), "reopened the raft log") || s.reopens.Load() != 1 {
		t.Errorf("the log store counted %d reopens, want 1; it logged:\n%s", s.reopens.Load(), s.logs.String())
	}

	// And all of it is there after a restart.
	s.restart(t)
	checkLog(t, s.logStore, last)
}

// TestLogStoreReopenRefused: when the disk fills again between an append's
// room check and the reopen it needs, the WAL is left as it was: the
// append fails, nothing is lost, and a later append goes through.
func TestLogStoreReopenRefused(t *testing.T) {
	s := newTestLog(t)
	s.d.full.Store(true)
	last := appendUntilSealed(t, s.wal, 0)
	// The append's check sees room, the reopen's does not.
	var checks atomic.Int32
	s.statfs = func(string) (uint64, error) {
		if checks.Add(1) == 1 {
			return 1 << 30, nil
		}
		return diskReserve - 1, nil
	}
	err := s.StoreLogs([]*raft.Log{entry(last + 1)})
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, wal.ErrSealed) {
		t.Fatalf("an append whose reopen found no room: %v, want an error wrapping ErrSealed and ENOSPC", err)
	}
	checkLog(t, s.logStore, last)
	s.d.full.Store(false)
	s.statfs = func(string) (uint64, error) { return 1 << 30, nil }
	if err := s.StoreLogs([]*raft.Log{entry(last + 1)}); err != nil {
		t.Fatalf("append %d after space was freed: %v", last+1, err)
	}
	checkLog(t, s.logStore, last+1)
}

// TestLogStoreSealedUnmended: a rotation whose metadata commit failed too
// leaves a segment sealed in its file alone, which no reopen mends; the
// log store says so and keeps every entry.
func TestLogStoreSealedUnmended(t *testing.T) {
	s := newTestLog(t)
	s.d.commits.Store(true)
	s.d.full.Store(true)
	last := appendUntilSealed(t, s.wal, 0)
	s.d.full.Store(false)
	err := s.StoreLogs([]*raft.Log{entry(last + 1)})
	if !errors.Is(err, wal.ErrSealed) || !strings.Contains(err.Error(), "not in its metadata") {
		t.Fatalf("an append to a segment sealed in its file alone: %v, want ErrSealed saying the metadata missed the seal", err)
	}
	checkLog(t, s.logStore, last)
}

// TestLogStoreAfterSnapshotFullDisk: the first append to a log a snapshot
// emptied creates its segment at the new index; when that fails, the
// retries find the file it left. Once there is room the append goes
// through.
func TestLogStoreAfterSnapshotFullDisk(t *testing.T) {
	s := newTestLog(t)
	appendEntries(t, s.logStore, 1, 10)
	// A snapshot at 500 was installed: the whole log goes.
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	s.d.full.Store(true)
	if err := s.wal.StoreLog(entry(501)); err == nil {
		t.Fatal("the first append after the snapshot succeeded on the full disk: the test's disk did not fill")
	}
	s.d.full.Store(false)
	if err := s.wal.StoreLog(entry(501)); err == nil {
		t.Log("raft-wal now retries a failed first append itself")
	}
	for i := uint64(501); i <= 510; i++ {
		if err := s.StoreLog(entry(i)); err != nil {
			t.Fatalf("append %d after space was freed: %v", i, err)
		}
	}
	for i := uint64(501); i <= 510; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err != nil || !bytes.Equal(l.Data, entry(i).Data) {
			t.Fatalf("GetLog(%d) = %.8q…, %v", i, l.Data, err)
		}
	}
}

// TestLogStoreTruncateFullDisk: a tail truncation creates a segment; when
// that fails, raft-wal's memory is left behind its metadata and every retry
// fails. The log store opens the WAL again, and the truncation is done.
func TestLogStoreTruncateFullDisk(t *testing.T) {
	s := newTestLog(t)
	appendEntries(t, s.logStore, 1, 100)
	// Without room for the segment it creates and the next, a tail
	// truncation is refused, and nothing is truncated.
	s.free.Store(diskReserve + uint64(wal.DefaultSegmentSize) - 1)
	if err := s.DeleteRange(91, 100); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a tail truncation without room for two segments: %v, want an error wrapping ENOSPC", err)
	}
	checkLog(t, s.logStore, 100)
	s.free.Store(1 << 30)
	s.d.full.Store(true)
	if err := s.wal.DeleteRange(91, 100); err == nil {
		t.Fatal("a tail truncation on the full disk succeeded: the test's disk did not fill")
	}
	s.d.full.Store(false)
	if err := s.wal.DeleteRange(91, 100); err == nil {
		t.Log("raft-wal now retries a failed tail truncation itself")
	}
	if err := s.DeleteRange(91, 100); err != nil {
		t.Fatalf("the tail truncation after space was freed: %v", err)
	}
	for i := uint64(91); i <= 120; i++ {
		if err := s.StoreLog(entry(i)); err != nil {
			t.Fatalf("append %d after the truncation: %v", i, err)
		}
	}
	checkLog(t, s.logStore, 120)
}

// TestLogStoreReopenRetries: while the WAL is closed for a reopen, Raft
// could not record a term; a reopen that fails is tried again.
func TestLogStoreReopenRetries(t *testing.T) {
	s := newTestLog(t)
	s.d.full.Store(true)
	last := appendUntilSealed(t, s.wal, 0)
	s.d.full.Store(false)
	s.d.failOpens.Store(reopenTries - 1)
	if err := s.StoreLog(entry(last + 1)); err != nil {
		t.Fatalf("append with the WAL's reopen failing %d times: %v", reopenTries-1, err)
	}
	if got := strings.Count(s.logs.String(), "reopening the raft log"); got != reopenTries-1 {
		t.Errorf("%d failed reopens logged, want %d:\n%s", got, reopenTries-1, s.logs.String())
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatalf("SetUint64 after the reopen: %v", err)
	}
	checkLog(t, s.logStore, last+1)
}

// TestLogStoreAppendAfterTruncation: the append after a tail truncation
// goes to the segment the truncation created and is not refused for room
// (hashicorp/raft does not take back the truncation when it is); the one
// after it is checked again.
func TestLogStoreAppendAfterTruncation(t *testing.T) {
	s := newTestLog(t)
	appendEntries(t, s.logStore, 1, 20)
	if err := s.DeleteRange(16, 20); err != nil {
		t.Fatal(err)
	}
	// The new segment took the room.
	s.free.Store(diskReserve - 1)
	if err := s.StoreLog(entry(16)); err != nil {
		t.Fatalf("the append after a tail truncation: %v", err)
	}
	if err := s.StoreLog(entry(17)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("the append after that, without room: %v, want an error wrapping ENOSPC", err)
	}
	checkLog(t, s.logStore, 16)
}
