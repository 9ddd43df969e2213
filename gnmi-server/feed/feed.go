// Package feed publishes committed changes to any number of readers without
// ever making the publisher wait for them.
//
// The feed is a bounded ring of commits shared by all readers. Publishing is
// O(1) and never blocks. Each reader keeps its own cursor and reads at its own
// pace; a reader whose cursor falls out of the ring has missed changes and is
// told so with ErrTooSlow, so that its subscription can be closed instead of
// silently losing updates.
package feed

import (
	"context"
	"errors"
	"sync"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
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
}

// size estimates the memory c holds: per change the key, the struct and
// its decoded value, and the path elements decoded for it, which grow with
// the key (a flow's five list keys make a map; the elements a change
// shares with the one before it are not new). Measured with heap profiles
// of the flow table and policy counters: within a factor of 1.5.
func (c *Commit) size() int {
	n := 64
	for _, ch := range c.Changes {
		n += 4*len(ch.Key) + 200
	}
	return n
}

// ErrTooSlow reports that a reader fell so far behind that changes it had not
// read were dropped from the ring.
var ErrTooSlow = errors.New("feed: reader fell behind; changes were dropped")

// Feed is a ring of the most recent commits.
type Feed struct {
	mu    sync.Mutex
	ring  []Commit      // ring[seq%len] holds commit seq; guarded by mu
	sizes []int         // sizes[i] estimates the bytes ring[i] holds; guarded by mu
	last  uint64        // Seq of the newest commit published; guarded by mu
	bytes int           // the sum of sizes; guarded by mu
	wake  chan struct{} // closed and replaced on every publish; guarded by mu

	maxBytes int
}

// New returns a feed that holds at most slots commits and about maxBytes of
// changes in all; older commits are dropped first.
func New(slots, maxBytes int) *Feed {
	return &Feed{ring: make([]Commit, slots), sizes: make([]int, slots), wake: make(chan struct{}), maxBytes: maxBytes}
}

// Publish appends c. Commits must be published in Seq order without gaps;
// Publish is meant to be the store's OnCommit hook.
func (f *Feed) Publish(c Commit) {
	size := c.size()
	f.mu.Lock()
	i := c.Seq % uint64(len(f.ring))
	f.bytes += size - f.sizes[i]
	f.ring[i], f.sizes[i] = c, size
	f.last = c.Seq
	// Drop the oldest commits while over the budget, but never the newest
	// one.
	oldest := uint64(1)
	if n := uint64(len(f.ring)); c.Seq > n {
		oldest = c.Seq - n + 1
	}
	for seq := oldest; f.bytes > f.maxBytes && seq < c.Seq; seq++ {
		j := seq % uint64(len(f.ring))
		if f.ring[j].Seq == seq && seq != 0 {
			f.bytes -= f.sizes[j]
			f.ring[j], f.sizes[j] = Commit{}, 0
		}
	}
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
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
	return seq >= f.last || f.ring[(seq+1)%uint64(len(f.ring))].Seq == seq+1
}

// Cursor reads the feed from a position onwards.
type Cursor struct {
	f    *Feed
	next uint64
}

// From returns a cursor whose first commit is the one after seq.
func (f *Feed) From(seq uint64) *Cursor { return &Cursor{f: f, next: seq + 1} }

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
			for ; c.next <= c.f.last; c.next++ {
				cm := c.f.ring[c.next%uint64(len(c.f.ring))]
				if cm.Seq != c.next {
					c.f.mu.Unlock()
					return buf, ErrTooSlow
				}
				buf = append(buf, cm)
			}
			c.f.mu.Unlock()
			return buf, nil
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
