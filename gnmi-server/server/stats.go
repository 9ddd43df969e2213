package server

import (
	"sync"
	"sync/atomic"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
)

// SubscribeStats counts what the server's subscriptions have sent since it
// started, and measures how far the STREAM subscriptions that follow the
// change feed are behind it now.
type SubscribeStats struct {
	// Streams is the number of STREAM subscriptions following the feed.
	Streams int
	// LagTotal and LagMax are the commits published to the feed that those
	// subscriptions have not read yet: summed over them, and the largest.
	LagTotal, LagMax uint64
	// Notifications, Updates and Deletes count the notifications sent (in
	// initial syncs, polls, samples, changes and history) and the updates
	// and deletes they carried.
	Notifications, Updates, Deletes uint64
	// Coalesced counts the writes of a leaf that were not sent because a
	// later write of the same leaf, read from the feed at the same time,
	// replaced them.
	Coalesced uint64
	// Shared counts the notifications sent as another STREAM subscription
	// of the same kind had rendered them (see shared.go).
	Shared uint64
	// CatchUps counts the times a STREAM subscription that fell out of the
	// feed was brought up to date from a snapshot instead (see catchUp).
	CatchUps uint64
	// TooSlow counts the STREAM subscriptions ended with RESOURCE_EXHAUSTED
	// because commits they had not read were dropped from the feed, and
	// deletes they had not read from its record of deletes.
	TooSlow uint64
}

// subscribeCounters are the counters of SubscribeStats, kept with atomic
// adds on the subscriptions' own goroutines: no lock, no map lookup.
type subscribeCounters struct {
	notifications, updates, deletes, coalesced, shared, catchUps, tooSlow atomic.Uint64
}

// readers are the feed cursors of the open STREAM subscriptions.
type readers struct {
	mu  sync.Mutex
	set map[*feed.Cursor]struct{} // guarded by mu
}

func (r *readers) add(c *feed.Cursor) {
	r.mu.Lock()
	if r.set == nil {
		r.set = map[*feed.Cursor]struct{}{}
	}
	r.set[c] = struct{}{}
	r.mu.Unlock()
}

func (r *readers) remove(c *feed.Cursor) {
	r.mu.Lock()
	delete(r.set, c)
	r.mu.Unlock()
}

// SubscribeStats reads the counters and measures the lag of every STREAM
// subscription now. It costs one lock of the feed per subscription, so it is
// meant for a metrics scrape, not for a hot path.
func (s *Server) SubscribeStats() SubscribeStats {
	st := SubscribeStats{
		Notifications: s.sent.notifications.Load(),
		Updates:       s.sent.updates.Load(),
		Deletes:       s.sent.deletes.Load(),
		Coalesced:     s.sent.coalesced.Load(),
		Shared:        s.sent.shared.Load(),
		CatchUps:      s.sent.catchUps.Load(),
		TooSlow:       s.sent.tooSlow.Load(),
	}
	s.readers.mu.Lock()
	cursors := make([]*feed.Cursor, 0, len(s.readers.set))
	for c := range s.readers.set {
		cursors = append(cursors, c)
	}
	s.readers.mu.Unlock()
	st.Streams = len(cursors)
	for _, c := range cursors {
		lag := c.Lag()
		st.LagTotal += lag
		st.LagMax = max(st.LagMax, lag)
	}
	return st
}
