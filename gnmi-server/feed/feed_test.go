package feed_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

func commit(seq uint64, changes int) feed.Commit {
	c := feed.Commit{Seq: seq, Time: int64(seq)}
	for range changes {
		c.Changes = append(c.Changes, feed.Change{Key: make([]byte, 100)})
	}
	return c
}

// TestBudget: commits beyond the memory budget are dropped oldest first,
// from the very first commit on, and a reader that had not read them is
// told; the newest commit stays however large.
func TestBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(1024, 100_000) // room for about 160 changes of 100-byte keys
	behind := f.From(0)
	for seq := uint64(1); seq <= 10; seq++ {
		f.Publish(commit(seq, 50))
	}
	if _, err := behind.Next(ctx, nil, nil); !errors.Is(err, feed.ErrTooSlow) {
		t.Fatalf("reader of commit 1 after 500 changes: %v, want ErrTooSlow", err)
	}
	got, err := f.From(7).Next(ctx, nil, nil)
	if err != nil || len(got) != 3 || got[0].Seq != 8 {
		t.Fatalf("reader after commit 7: %d commits from %v, %v; want 8, 9, 10", len(got), got, err)
	}
	f.Publish(commit(11, 10_000))
	got, err = f.From(10).Next(ctx, nil, nil)
	if err != nil || len(got) != 1 || len(got[0].Changes) != 10_000 {
		t.Fatalf("the newest commit, over the budget alone: %v", err)
	}
	if _, err := f.From(9).Next(ctx, nil, nil); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("reader of commit 10 once commit 11 filled the budget: %v, want ErrTooSlow", err)
	}
}

// TestSlots: the ring holds at most its number of slots.
func TestSlots(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(4, 1<<30)
	for seq := uint64(1); seq <= 6; seq++ {
		f.Publish(commit(seq, 1))
	}
	if _, err := f.From(1).Next(ctx, nil, nil); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("reader of commit 2 in a 4-slot ring after 6: %v, want ErrTooSlow", err)
	}
	if got, err := f.From(2).Next(ctx, nil, nil); err != nil || len(got) != 4 {
		t.Errorf("reader of commits 3-6: %d, %v", len(got), err)
	}
}

// deletes returns a commit that deletes keys and writes one leaf.
func deletes(seq uint64, keys ...string) feed.Commit {
	c := feed.Commit{Seq: seq, Changes: []feed.Change{{Key: []byte("written"), Value: &gpb.TypedValue{}}}}
	for _, k := range keys {
		c.Changes = append(c.Changes, feed.Change{Key: []byte(k)})
	}
	return c
}

// skip skips c to seq and returns the keys it was given.
func skip(ctx context.Context, c *feed.Cursor, seq uint64) ([]string, error) {
	var keys []string
	err := c.Skip(ctx, seq, func(k []byte) error {
		keys = append(keys, string(k))
		return nil
	})
	return keys, err
}

// TestSkip: a reader that fell out of the ring learns what the commits it
// skips deleted, each commit's keys sorted and once, for as long as the
// record of deletes reaches back to it; then it reads on from where it
// skipped to.
func TestSkip(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(4, 1<<20)
	behind := f.From(1)
	f.Publish(deletes(1, "a/x"))
	f.Publish(deletes(2, "a/z", "a/y", "b", "a/y"))
	for seq := uint64(3); seq <= 8; seq++ {
		f.Publish(deletes(seq))
	}
	f.Publish(deletes(9, "a/z", "c"))
	f.Publish(deletes(10, "d"))
	if _, err := behind.Next(ctx, nil, nil); !errors.Is(err, feed.ErrTooSlow) {
		t.Fatalf("reader of commit 2 in a 4-slot ring after 10: %v, want ErrTooSlow", err)
	}
	// Skipping to 12 waits until it is published.
	go func() {
		time.Sleep(10 * time.Millisecond)
		f.Publish(deletes(11))
		f.Publish(deletes(12, "e"))
	}()
	keys, err := skip(ctx, behind, 12)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a/y", "a/z", "b", "a/z", "c", "d", "e"}, keys); diff != "" {
		t.Errorf("keys deleted by commits 2-12 (-want +got):\n%s", diff)
	}
	f.Publish(deletes(13, "f"))
	got, err := behind.Next(ctx, nil, nil)
	if err != nil || len(got) != 1 || got[0].Seq != 13 {
		t.Errorf("after skipping to 12: %v, %v; want commit 13", got, err)
	}
	if lag := behind.Lag(); lag != 0 {
		t.Errorf("lag after reading 13 = %d, want 0", lag)
	}

	// Nothing to skip.
	if keys, err := skip(ctx, f.From(13), 13); err != nil || len(keys) != 0 {
		t.Errorf("skipping nothing: %q, %v", keys, err)
	}

	// A cursor whose reader failed to take the keys stays where it was.
	stuck := f.From(11)
	failed := errors.New("failed")
	if err := stuck.Skip(ctx, 13, func([]byte) error { return failed }); err != failed {
		t.Errorf("Skip with a failing fn: %v, want its error", err)
	}
	if lag := stuck.Lag(); lag != 2 {
		t.Errorf("lag after a failed skip = %d, want 2", lag)
	}
}

// TestSkipBeyondRecord: the record of deletes is bounded too, oldest
// commits dropped first but never the newest; a reader that needs dropped
// deletes is told, and its cursor does not move.
func TestSkipBeyondRecord(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(4, 4*feed.DeletesShare*100) // about 400 bytes of deletes
	behind := f.From(0)
	ahead := f.From(0)
	key := func(seq uint64, i int) string { return fmt.Sprintf("%03d-%s-%d", seq, strings.Repeat("x", 50), i) }
	for seq := uint64(1); seq <= 20; seq++ {
		c := deletes(seq)
		for i := range 3 {
			c.Changes = append(c.Changes, feed.Change{Key: []byte(key(seq, i))})
		}
		f.Publish(c)
		if seq == 3 {
			if _, err := skip(ctx, ahead, 3); err != nil {
				t.Fatalf("skipping to 3: %v", err)
			}
		}
	}
	if _, err := skip(ctx, behind, 20); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("skipping 20 commits' deletes with room for a few: %v, want ErrTooSlow", err)
	}
	if lag := behind.Lag(); lag != 20 {
		t.Errorf("lag after a failed skip = %d, want 20", lag)
	}
	if _, err := skip(ctx, ahead, 20); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("skipping 4-20: %v, want ErrTooSlow", err)
	}
	recent := f.From(18)
	keys, err := skip(ctx, recent, 20)
	if err != nil {
		t.Fatalf("skipping 19-20: %v", err)
	}
	want := []string{key(19, 0), key(19, 1), key(19, 2), key(20, 0), key(20, 1), key(20, 2)}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("keys deleted by commits 19-20 (-want +got):\n%s", diff)
	}

	// One commit deleting more than the budget is kept whole.
	big := deletes(21)
	for i := range 100 {
		big.Changes = append(big.Changes, feed.Change{Key: []byte(key(21, i))})
	}
	f.Publish(big)
	if keys, err := skip(ctx, f.From(20), 21); err != nil || len(keys) != 100 {
		t.Errorf("skipping commit 21 of 100 deletes: %d keys, %v", len(keys), err)
	}
	if _, err := skip(ctx, f.From(19), 21); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("skipping 20-21 once 21 filled the record: %v, want ErrTooSlow", err)
	}
}

// TestDecodeOnRead: a commit published raw is decoded once, by its first
// reader, and never if only raw readers read it; every reader sees the same
// decoded changes and the store's changes as they were.
func TestDecodeOnRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(16, 1<<20)
	var mu sync.Mutex
	decoded := map[string]int{}
	decode := func(changes []store.Change) []feed.Change {
		var out []feed.Change
		for _, ch := range changes {
			mu.Lock()
			decoded[string(ch.Key)]++
			mu.Unlock()
			out = append(out, feed.Change{Key: ch.Key, Elems: []*gpb.PathElem{{Name: string(ch.Key)}}})
		}
		return out
	}
	raw := f.FromRaw(0)
	f.PublishRaw(1, 1, []store.Change{{Key: []byte("a"), Value: []byte("1")}}, decode)
	f.PublishRaw(2, 2, []store.Change{{Key: []byte("b")}}, decode)

	got, err := raw.Next(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Changes != nil || string(got[0].Raw[0].Value) != "1" || got[1].Raw[0].Value != nil {
		t.Fatalf("a raw reader read %+v, want both commits undecoded with their store changes", got)
	}
	if len(decoded) != 0 {
		t.Fatalf("a raw reader decoded %v", decoded)
	}

	var wg sync.WaitGroup
	results := make([][]feed.Commit, 8)
	for i := range results {
		wg.Go(func() {
			results[i], _ = f.From(0).Next(ctx, nil, nil)
		})
	}
	wg.Wait()
	for i, r := range results {
		if len(r) != 2 || len(r[0].Changes) != 1 || r[0].Changes[0].Elems[0].GetName() != "a" || r[1].Changes[0].Elems[0].GetName() != "b" {
			t.Fatalf("reader %d read %+v", i, r)
		}
	}
	if want := map[string]int{"a": 1, "b": 1}; !cmp.Equal(decoded, want) {
		t.Errorf("decoded %v, want each commit once: %v", decoded, want)
	}
	// The deletes of a raw commit are recorded like any other.
	keys, err := skip(ctx, f.From(1), 2)
	if err != nil || !cmp.Equal(keys, []string{"b"}) {
		t.Errorf("Skip over the raw commits: %v, %v; want [b]", keys, err)
	}
}

// TestReleaseDecoded: once every open cursor has read a commit, its decoded
// changes are released (a later reader decodes it again, to the same
// changes); a cursor that has not read it yet keeps them, and a closed one
// no longer does.
func TestReleaseDecoded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(16, 1<<20)
	decodes := map[uint64]int{}
	var mu sync.Mutex
	publish := func(seq uint64) {
		f.PublishRaw(seq, int64(seq), []store.Change{{Key: []byte(fmt.Sprint("k", seq)), Value: []byte{1}}}, func(changes []store.Change) []feed.Change {
			mu.Lock()
			decodes[seq]++
			mu.Unlock()
			return []feed.Change{{Key: changes[0].Key}}
		})
	}
	count := func(seq uint64) int {
		mu.Lock()
		defer mu.Unlock()
		return decodes[seq]
	}
	read := func(c *feed.Cursor) []feed.Commit {
		t.Helper()
		got, err := c.Next(ctx, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	fast, slow := f.From(0), f.From(0)
	publish(1)
	publish(2)
	read(fast)
	publish(3) // releases what every open cursor has read: nothing, slow read none
	got := read(slow)
	if count(1) != 1 || count(2) != 1 || len(got) != 3 {
		t.Fatalf("slow read %d commits, decodes %v; want 3 commits, 1 and 2 decoded once (kept for slow)", len(got), decodes)
	}
	read(fast)
	publish(4) // both have read 1-3: released
	again := read(f.From(0))
	if count(1) != 2 || count(3) != 2 {
		t.Errorf("decodes %v after every cursor read 1-3 and a new one read them; want 1 and 3 decoded twice", decodes)
	}
	if len(again) != 4 || string(again[0].Changes[0].Key) != "k1" || string(again[2].Changes[0].Key) != "k3" {
		t.Errorf("decoded again: %+v", again)
	}

	// A closed cursor holds nothing back.
	f2 := feed.New(16, 1<<20)
	f = f2
	stuck := f.From(0)
	reader := f.From(0)
	publish(1)
	read(reader)
	stuck.Close()
	publish(2)
	before := count(1)
	read(f.From(0))
	if count(1) != before+1 {
		t.Errorf("commit 1 decoded %d times after a new reader, %d before: a closed cursor kept it", count(1), before)
	}
}

// TestRetain: a commit every open cursor has read leaves the ring once it is
// DefaultRetain older than the newest commit; one that a cursor, decoded or raw,
// has not read stays until the cursor reads it or is closed; the newest
// stays however old.
func TestRetain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(1024, 1<<30)
	at := func(seq uint64, sec int) feed.Commit {
		c := commit(seq, 1)
		c.Time = int64(sec) * int64(time.Second)
		return c
	}
	dec, raw := f.From(0), f.FromRaw(0)
	for seq := uint64(1); seq <= 5; seq++ {
		f.Publish(at(seq, int(seq)))
	}
	if got, err := dec.Next(ctx, nil, nil); err != nil || len(got) != 5 {
		t.Fatalf("decoded cursor: %d commits, %v; want 5", len(got), err)
	}
	f.Publish(at(6, 6))
	if !f.Holds(0) {
		t.Fatal("commit 1 dropped while the raw cursor had not read it")
	}
	if got, err := raw.Next(ctx, nil, nil); err != nil || len(got) != 6 {
		t.Fatalf("raw cursor: %d commits, %v; want 6", len(got), err)
	}
	f.Publish(at(7, 7)) // commits 1-5 are 2 s old or more
	if f.Holds(4) || !f.Holds(5) {
		t.Errorf("after commit 7 at 7 s (commit 6 unread by the decoded cursor): holds commit 5 %v, commit 6 %v; want false, true", f.Holds(4), f.Holds(5))
	}
	late := f.From(5)
	if got, err := late.Next(ctx, nil, nil); err != nil || len(got) != 2 {
		t.Errorf("reader after commit 5: %d commits, %v; want 6 and 7", len(got), err)
	}
	late.Close()
	dec.Close()
	raw.Close()

	behind := f.From(7)
	f.Publish(at(8, 100))
	f.Publish(at(9, 200))
	if !f.Holds(7) {
		t.Error("commit 8 dropped while an open cursor had not read it")
	}
	behind.Close()
	f.Publish(at(10, 300))
	if f.Holds(7) || f.Holds(8) || !f.Holds(9) {
		t.Errorf("after the cursor closed: holds 8 %v, 9 %v, 10 %v; want false, false, true", f.Holds(7), f.Holds(8), f.Holds(9))
	}
}

// TestRetainWraps: trimming stays right when the ring's slots are reused
// and the budget drops commits first; a commit 0 publishes.
func TestRetainWraps(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := feed.New(4, 1<<30)
	f.Publish(feed.Commit{Seq: 0, Time: 1})
	c := f.From(0)
	for seq := uint64(1); seq <= 10; seq++ {
		f.Publish(feed.Commit{Seq: seq, Time: int64(seq) * int64(time.Second)})
		if got, err := c.Next(ctx, nil, nil); err != nil || len(got) != 1 || got[0].Seq != seq {
			t.Fatalf("commit %d: read %v, %v", seq, got, err)
		}
	}
	if f.Holds(7) || !f.Holds(8) || !f.Holds(9) {
		t.Errorf("after 10 commits a second apart in 4 slots: holds 8 %v, 9 %v, 10 %v; want false, true, true", f.Holds(7), f.Holds(8), f.Holds(9))
	}
	c.Close()

	// Two commits of two 100-byte keys (1,264 bytes each) fit the budget,
	// three do not. A cursor stuck at commit 1, which the budget dropped,
	// holds nothing back: retention then keeps the newest commit alone.
	small := feed.New(16, 3000)
	stuck := small.From(0)
	for seq := uint64(1); seq <= 6; seq++ {
		cm := commit(seq, 2)
		cm.Time = int64(seq) * int64(3*time.Second)
		small.Publish(cm)
	}
	if small.Holds(4) || !small.Holds(5) {
		t.Errorf("commits 3 s apart, a cursor lost at commit 1: holds 5 %v, 6 %v; want false, true", small.Holds(4), small.Holds(5))
	}
	if _, err := stuck.Next(ctx, nil, nil); !errors.Is(err, feed.ErrTooSlow) {
		t.Errorf("the stuck cursor: %v, want ErrTooSlow", err)
	}
	stuck.Close()
}
