package feed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
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
