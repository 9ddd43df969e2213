package server

import (
	"slices"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Telemetry collectors subscribe alike: every Telegraf or gnmic of a
// deployment sends the same SubscriptionList with the same credentials.
// STREAM sessions whose first request and user are identical render each
// commit once between them: the first session to reach a commit filters its
// changes, builds the notifications and marshals them; the others send
// those bytes as they are. A session alone of its kind, or one that has
// fallen more than a few commits behind, renders for itself instead,
// coalescing repeated writes of a leaf across the commits it reads at once;
// but one of a kind whose subscriptions are all on-change and that is that
// far behind catches up (see catchUp) from its kind's shared rendering of
// the whole state, as one that fell out of the feed does, sending only the
// deletes of its own: the leaves deleted since it last read depend on when
// that was.

// sharedMaxCommits is the most commits a session sends as shared
// renderings at once; a session that reads more is far behind, and
// coalescing saves it more than sharing.
const sharedMaxCommits = 256

// maxRenderBytes bounds the renderings kept, oldest dropped first.
const maxRenderBytes = 16 << 20

// preEncoded is a SubscribeResponse already marshaled; the codec below sends
// its bytes as they are.
type preEncoded struct{ b []byte }

// codec is gRPC's proto codec, except that it passes preEncoded through.
// It replaces the registered "proto" codec for the process (gRPC picks the
// last registered): every other message goes to the codec it replaced.
type codec struct{ base encoding.CodecV2 }

func init() {
	encoding.RegisterCodecV2(codec{base: encoding.GetCodecV2("proto")})
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if p, ok := v.(*preEncoded); ok {
		// Shared by many streams: a SliceBuffer is never recycled.
		return mem.BufferSlice{mem.SliceBuffer(p.b)}, nil
	}
	return c.base.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.base.Unmarshal(data, v) }

func (c codec) Name() string { return c.base.Name() }

// rendering is one commit rendered for one kind of subscription.
type rendering struct {
	once             sync.Once
	msgs             []*preEncoded
	updates, deletes uint64
	err              error

	// Guarded by renderings.mu:
	key  renderKey
	size int // bytes of msgs, counted in renderings.bytes unless dropped
	// want is how many sessions of the kind there were when it was made,
	// taken how many have asked for it since: once all have, none of them
	// needs it again, and it is dropped at once rather than when the
	// budget is spent.
	want, taken int
	dropped     bool // no longer in renderings.m
}

// done counts the bytes of a new rendering against the budget, with an
// overhead for the entry itself: a commit that none of a kind's
// subscriptions covers renders to nothing, and must still be dropped in
// time.
func (r *renderings) done(x *rendering) {
	n := 256
	for _, m := range x.msgs {
		n += len(m.b)
	}
	r.mu.Lock()
	x.size = n
	if !x.dropped {
		r.bytes += n
	}
	r.mu.Unlock()
}

// drop takes x out of the renderings held; r.mu is held. The sessions
// still sending it keep it until they are done.
func (r *renderings) drop(x *rendering) {
	if x.dropped {
		return
	}
	x.dropped = true
	r.bytes -= x.size
	delete(r.m, x.key)
}

type renderKey struct {
	kind string // the user and the marshaled first SubscribeRequest
	seq  uint64
}

// renderings holds the recent renderings of the server's sessions.
type renderings struct {
	mu    sync.Mutex
	m     map[renderKey]*rendering // guarded by mu
	fifo  []*rendering             // made, oldest first, some dropped since; guarded by mu
	bytes int                      // of the renderings in m, once rendered; guarded by mu
	kinds map[string]int           // open sessions per kind; guarded by mu
	syncs map[string]syncMark      // the last sync rendered per kind; guarded by mu
}

// syncMark is an initial sync rendered from the snapshot at seq.
type syncMark struct {
	seq uint64
	at  time.Time
	x   *rendering
}

// maxSyncAge is how old a sync rendering a session may start from: it
// then follows the feed from that sync's commit, and so converges on the
// same view as a sync of its own, sooner when its kind syncs in a herd
// while commits go on.
const maxSyncAge = time.Second

// recentSync returns the last sync rendered for kind if it is recent and
// the feed still holds every commit after it.
func (r *renderings) recentSync(kind string, f *feed.Feed) (syncMark, bool) {
	r.mu.Lock()
	m, ok := r.syncs[kind]
	r.mu.Unlock()
	if !ok || time.Since(m.at) > maxSyncAge || !f.Holds(m.seq) {
		return syncMark{}, false
	}
	return m, true
}

// forgetSyncs forgets the syncs too old to start from, so that the many
// kinds a long-running node sees (every one-off subscription is one) hold
// no memory, and a sync's rendering (the whole subtree) goes once its herd
// has synced; r.mu is held.
func (r *renderings) forgetSyncs(now time.Time) {
	for k, old := range r.syncs {
		if now.Sub(old.at) > maxSyncAge {
			delete(r.syncs, k)
			r.drop(old.x)
		}
	}
}

// unmarkSync forgets x as kind's last sync (its rendering failed).
func (r *renderings) unmarkSync(kind string, x *rendering) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.syncs[kind]; ok && m.x == x {
		delete(r.syncs, kind)
	}
	r.drop(x) // a session that gets it from get would fail with its error
}

// markSync records m as kind's last sync, which may still be rendering.
func (r *renderings) markSync(kind string, m syncMark) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.syncs == nil {
		r.syncs = map[string]syncMark{}
	}
	r.forgetSyncs(m.at)
	if old, ok := r.syncs[kind]; !ok || old.seq <= m.seq {
		if ok && old.x != m.x {
			r.drop(old.x) // no session can start from it any more
		}
		r.syncs[kind] = m
	}
}

// join counts a session of kind in until the function it returns is called.
func (r *renderings) join(kind string) (leave func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kinds == nil {
		r.kinds = map[string]int{}
	}
	r.kinds[kind]++
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.kinds[kind]--; r.kinds[kind] == 0 {
			delete(r.kinds, kind)
		}
	}
}

// shared reports whether sessions of kind should share renderings: whether
// there are several.
func (r *renderings) shared(kind string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kinds[kind] > 1
}

// get returns the rendering of commit seq for kind, new and empty if no
// session has asked for it yet. Each session of a kind asks for each
// commit once.
func (r *renderings) get(kind string, seq uint64) *rendering {
	k := renderKey{kind, seq}
	r.mu.Lock()
	defer r.mu.Unlock()
	x, ok := r.m[k]
	if !ok {
		if r.m == nil {
			r.m = map[renderKey]*rendering{}
		}
		r.forgetSyncs(time.Now())
		for len(r.fifo) > 0 && (r.bytes > maxRenderBytes || r.fifo[0].dropped) {
			r.drop(r.fifo[0])
			r.fifo[0] = nil
			r.fifo = r.fifo[1:]
		}
		// A rendering some session of its kind never takes (it caught up
		// past the commit, or left) stays until the budget drops it, and
		// the dropped ones behind it in fifo would stay with it, uncounted:
		// drop them from fifo once they are most of it.
		if len(r.fifo) >= 64 && len(r.fifo) > 2*len(r.m) {
			r.fifo = slices.DeleteFunc(r.fifo, func(x *rendering) bool { return x.dropped })
		}
		x = &rendering{key: k, want: r.kinds[kind]}
		r.m[k] = x
		r.fifo = append(r.fifo, x)
	}
	if x.taken++; x.want > 0 && x.taken >= x.want {
		r.drop(x)
	}
	return x
}

// sendShared sends commits to the on-change subs as renderings shared with
// the sessions of the same kind.
func (ss *session) sendShared(subs []*sub, commits []feed.Commit) error {
	for i := range commits {
		c := &commits[i]
		x := ss.s.renders.get(ss.kind, c.Seq)
		mine := false
		x.once.Do(func() {
			x.err = ss.changes(x.batch(ss), subs, []feed.Commit{*c})
			ss.s.renders.done(x)
			mine = true
		})
		if err := ss.sendRendering(x, mine); err != nil {
			return err
		}
	}
	return nil
}

// syncShared sends the initial sync of a STREAM session from the current
// snapshot, rendered once for the sessions of its kind that sync from the
// same commit (collectors restarted together, say). It calls at with the
// snapshot's commit sequence before it sends anything.
func (ss *session) syncShared(ts int64, at func(seq uint64)) error {
	if m, ok := ss.s.renders.recentSync(ss.kind, ss.s.cfg.Feed); ok && m.seq >= ss.wantFrom {
		at(m.seq)
		return ss.sendRendering(m.x, false)
	}
	var x *rendering
	mine := false
	err := ss.s.cfg.Store.View(func(sq uint64, r store.Reader) error {
		at(sq)
		x = ss.s.renders.get(ss.kind+"\x00sync", sq)
		x.once.Do(func() {
			ss.s.renders.renderSync(ss.kind, x, sq, func() error { return ss.fill(x.batch(ss), r, ss.subs, ts) })
			mine = true
		})
		return nil
	})
	if err != nil {
		return err
	}
	return ss.sendRendering(x, mine)
}

// renderSync renders into x, from inside x.once, the whole state at commit
// seq for kind with fill. The kind's sessions that need a sync or a
// catch-up while it renders take it (recentSync, then x.wait) rather than
// each render its own at a later commit: a herd whose writer outruns it
// falls behind together, one commit apart. A rendering that fails is
// withdrawn.
func (r *renderings) renderSync(kind string, x *rendering, seq uint64, fill func() error) {
	r.markSync(kind, syncMark{seq: seq, at: time.Now(), x: x})
	x.err = fill()
	r.done(x)
	if x.err != nil {
		r.unmarkSync(kind, x)
	}
}

// wait returns once x is rendered: a rendering is begun inside its once,
// so once.Do returns when that call is done.
func (x *rendering) wait() { x.once.Do(func() {}) }

// sendRendering sends x, once it is rendered; mine says whether this
// session rendered it.
func (ss *session) sendRendering(x *rendering, mine bool) error {
	x.wait() // one taken from recentSync may still be rendering
	if x.err != nil {
		return x.err
	}
	for _, m := range x.msgs {
		if err := ss.stream.SendMsg(m); err != nil {
			return err
		}
	}
	if len(x.msgs) > 0 {
		sent := &ss.s.sent
		sent.notifications.Add(uint64(len(x.msgs)))
		sent.updates.Add(x.updates)
		sent.deletes.Add(x.deletes)
		if !mine {
			sent.shared.Add(uint64(len(x.msgs)))
		}
	}
	return nil
}

// batch returns a batch of ss that renders its notifications into x.
func (x *rendering) batch(ss *session) *batch {
	return &batch{ss: ss, emit: func(n *gpb.Notification) error {
		raw, err := proto.Marshal(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: n}})
		if err != nil {
			return err
		}
		x.msgs = append(x.msgs, &preEncoded{raw})
		x.updates += uint64(len(n.Update))
		x.deletes += uint64(len(n.Delete))
		return nil
	}}
}
