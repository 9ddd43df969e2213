package server

import "testing"

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
