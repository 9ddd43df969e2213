package server

import (
	"errors"
	"testing"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
)

// TestRenderingsBounded: renderings are dropped oldest first once over the
// budget, empty ones (commits no subscription of a kind covers) included.
func TestRenderingsBounded(t *testing.T) {
	var r renderings
	const commits = 2 * maxRenderBytes / 256
	for seq := uint64(1); seq <= commits; seq++ {
		r.done(r.get("kind", seq))
	}
	if max := maxRenderBytes/256 + 1; len(r.m) > max || len(r.fifo) != len(r.m) {
		t.Errorf("%d renderings held (fifo %d) after %d empty ones; want at most %d", len(r.m), len(r.fifo), commits, max)
	}
	if _, ok := r.m[renderKey{"kind", commits}]; !ok {
		t.Error("the newest rendering was dropped")
	}
	if _, ok := r.m[renderKey{"kind", 1}]; ok {
		t.Error("the oldest rendering is still held")
	}
}

// TestRenderingsTaken: a rendering that every session of its kind has
// taken is dropped at once, its bytes with it; one that a session has not
// taken yet is kept.
func TestRenderingsTaken(t *testing.T) {
	var r renderings
	leave := []func(){r.join("kind"), r.join("kind")}
	x := r.get("kind", 1)
	x.msgs = []*preEncoded{{b: make([]byte, 1000)}}
	r.done(x)
	if r.m[renderKey{"kind", 1}] != x || r.bytes != 1256 {
		t.Fatalf("after one of two sessions took it: held %v, %d bytes; want it held, 1256 bytes", r.m[renderKey{"kind", 1}] != nil, r.bytes)
	}
	if y := r.get("kind", 1); y != x {
		t.Fatal("the second session got another rendering")
	}
	if _, ok := r.m[renderKey{"kind", 1}]; ok || r.bytes != 0 {
		t.Errorf("after both sessions took it: held %v, %d bytes; want it dropped, 0 bytes", ok, r.bytes)
	}
	// Rendered after every session took it: never counted.
	z := r.get("kind", 2)
	r.get("kind", 2)
	r.done(z)
	if r.bytes != 0 {
		t.Errorf("%d bytes held after a rendering taken before it was done; want 0", r.bytes)
	}
	for _, l := range leave {
		l()
	}
}

// TestPendingSyncIsShared: renderSync offers a sync rendering from its
// start, so a session of its kind that needs one meanwhile takes it and
// waits for it rather than render its own; a rendering that failed is no
// longer offered.
func TestPendingSyncIsShared(t *testing.T) {
	var r renderings
	f := feed.New(16, 1<<20)
	for seq := uint64(1); seq <= 6; seq++ {
		f.Publish(feed.Commit{Seq: seq})
	}
	x := r.get("kind\x00sync", 5)
	started, release := make(chan struct{}), make(chan struct{})
	go x.once.Do(func() {
		r.renderSync("kind", x, 5, func() error {
			close(started)
			<-release
			x.msgs = append(x.msgs, &preEncoded{[]byte("sync")})
			return nil
		})
	})
	<-started
	m, ok := r.recentSync("kind", f)
	if !ok || m.x != x || m.seq != 5 {
		t.Fatalf("recentSync while rendering = %+v, %v; want the rendering at 5", m, ok)
	}
	got := make(chan int)
	go func() {
		m.x.wait()
		got <- len(m.x.msgs)
	}()
	select {
	case n := <-got:
		t.Fatalf("the taker went on with %d messages before the rendering was done", n)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if n := <-got; n != 1 {
		t.Errorf("the taker got %d messages, want the 1 rendered", n)
	}

	y := r.get("kind\x00sync", 6)
	y.once.Do(func() { r.renderSync("kind", y, 6, func() error { return errors.New("store closed") }) })
	if m, ok := r.recentSync("kind", f); ok {
		t.Errorf("recentSync after a failed rendering = %+v; want none", m)
	}
	if y.err == nil {
		t.Error("the failed rendering holds no error")
	}
	if _, ok := r.m[y.key]; ok {
		t.Error("the failed rendering is still held: a session at its commit would get its error")
	}
}

// TestRenderingsUntaken: a rendering one session of its kind never takes
// (it caught up past the commit, or left) does not keep the renderings
// after it that every session took: they leave fifo, and only the untaken
// one stays until the budget drops it. A sync rendering goes once no
// session can start from it.
func TestRenderingsUntaken(t *testing.T) {
	var r renderings
	leave := []func(){r.join("kind"), r.join("kind")}
	r.done(r.get("kind", 1)) // taken by one of the two
	for seq := uint64(2); seq <= 1000; seq++ {
		x := r.get("kind", seq)
		x.msgs = []*preEncoded{{b: make([]byte, 1000)}}
		r.done(x)
		r.get("kind", seq)
	}
	if len(r.m) != 1 || r.m[renderKey{"kind", 1}] == nil || len(r.fifo) > 128 {
		t.Errorf("after 999 renderings both sessions took behind one they did not: %d held, fifo of %d; want the untaken one, a fifo of at most 128", len(r.m), len(r.fifo))
	}
	for _, l := range leave {
		l()
	}

	old := r.get("kind\x00sync", 1000)
	r.markSync("kind", syncMark{seq: 1000, at: time.Now(), x: old})
	r.done(old)
	if r.m[old.key] != old {
		t.Fatal("a fresh sync rendering is not held")
	}
	newer := r.get("kind\x00sync", 1001)
	r.markSync("kind", syncMark{seq: 1001, at: time.Now(), x: newer})
	r.done(newer)
	if _, ok := r.m[old.key]; ok {
		t.Error("a sync rendering is still held after a newer sync of its kind")
	}
	r.get("other", 1)
	if _, ok := r.m[newer.key]; !ok {
		t.Error("the newest sync rendering was dropped at once")
	}
	r.mu.Lock()
	r.forgetSyncs(time.Now().Add(2 * maxSyncAge))
	r.mu.Unlock()
	if _, ok := r.m[newer.key]; ok {
		t.Error("a sync rendering is still held once too old to start from")
	}
}
