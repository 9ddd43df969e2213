package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// maxUpdatesPerNotification bounds one SubscribeResponse.
const maxUpdatesPerNotification = 1000

// sub is one Subscription of a SubscriptionList, resolved.
type sub struct {
	q *query
	// mode is ON_CHANGE or SAMPLE; TARGET_DEFINED is split into one of each.
	mode gpb.SubscriptionMode
	// only, if set, restricts the leaves this sub covers (TARGET_DEFINED).
	only      func(*schema.Node) bool
	interval  time.Duration
	heartbeat time.Duration
	suppress  bool

	next     time.Time         // next sample, or next heartbeat of ON_CHANGE
	beatAt   time.Time         // next heartbeat of a SAMPLE sub
	lastSent map[string][]byte // suppress_redundant: value last sent per key
}

func (x *sub) covers(n *schema.Node) bool { return x.only == nil || x.only(n) }

// session is one Subscribe RPC.
type session struct {
	s      *Server
	stream gpb.GNMI_SubscribeServer
	list   *gpb.SubscriptionList
	enc    gpb.Encoding
	depth  uint32
	subs   []*sub
	target string
	// kind, for a STREAM session with on-change subs, tells which
	// sessions may share its renderings (see shared.go).
	kind string
	// wantFrom is the earliest commit the session may follow the feed
	// from when it starts from a sync another session rendered: a commit
	// after an earlier one may have been decoded without its paths
	// (Publisher.Want).
	wantFrom uint64
}

// Subscribe serves ONCE, POLL and STREAM subscriptions.
func (s *Server) Subscribe(stream gpb.GNMI_SubscribeServer) error {
	req, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	list := req.GetSubscribe()
	if list == nil {
		return status.Error(codes.InvalidArgument, "the first SubscribeRequest must hold a SubscriptionList")
	}
	ss := &session{s: s, stream: stream, list: list, enc: list.GetEncoding(), target: list.GetPrefix().GetTarget()}
	if err := ss.init(req); err != nil {
		return err
	}
	if list.GetMode() == gpb.SubscriptionList_STREAM {
		raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
		if err != nil {
			return internal(err)
		}
		ss.kind = s.userOf(stream.Context()) + "\x00" + string(raw)
	}
	if h := historyOf(req.GetExtension()); h != nil {
		return ss.history(h)
	}
	switch list.GetMode() {
	case gpb.SubscriptionList_ONCE:
		return ss.once()
	case gpb.SubscriptionList_POLL:
		return ss.poll()
	case gpb.SubscriptionList_STREAM:
		return ss.streamLoop()
	}
	return status.Errorf(codes.InvalidArgument, "unknown subscription list mode %d", list.GetMode())
}

func (ss *session) init(req *gpb.SubscribeRequest) error {
	s := ss.s
	if err := checkEncoding(ss.enc); err != nil {
		return err
	}
	depth, err := depthOf(req.GetExtension(), "Subscribe")
	if err != nil {
		return err
	}
	ss.depth = depth
	if len(ss.list.GetSubscription()) == 0 {
		return status.Error(codes.InvalidArgument, "the SubscriptionList has no subscription")
	}
	var paths []*gpb.Path
	stream := ss.list.GetMode() == gpb.SubscriptionList_STREAM
	visible := s.visible(ss.stream.Context())
	for _, x := range ss.list.GetSubscription() {
		elems, err := fullPath(ss.list.GetPrefix(), x.GetPath())
		if err != nil {
			return err
		}
		q, err := s.newQuery(elems)
		if err != nil {
			return err
		}
		q.visible = visible
		paths = append(paths, &gpb.Path{Elem: elems})
		base := &sub{q: q, heartbeat: time.Duration(x.GetHeartbeatInterval()), suppress: x.GetSuppressRedundant()}
		if !stream {
			ss.subs = append(ss.subs, base)
			continue
		}
		if base.heartbeat != 0 && base.heartbeat < s.cfg.MinSampleInterval {
			return status.Errorf(codes.InvalidArgument, "%s: heartbeat_interval %v is below the minimum %v", pathString(elems), base.heartbeat, s.cfg.MinSampleInterval)
		}
		switch x.GetMode() {
		case gpb.SubscriptionMode_ON_CHANGE:
			base.mode = gpb.SubscriptionMode_ON_CHANGE
			ss.subs = append(ss.subs, base)
		case gpb.SubscriptionMode_SAMPLE:
			iv := time.Duration(x.GetSampleInterval())
			if iv == 0 {
				iv = s.cfg.MinSampleInterval
			}
			if iv < s.cfg.MinSampleInterval {
				return status.Errorf(codes.InvalidArgument, "%s: sample_interval %v is below the minimum %v", pathString(elems), iv, s.cfg.MinSampleInterval)
			}
			base.mode, base.interval = gpb.SubscriptionMode_SAMPLE, iv
			ss.subs = append(ss.subs, base)
		case gpb.SubscriptionMode_TARGET_DEFINED:
			if x.GetSampleInterval() != 0 {
				return status.Errorf(codes.InvalidArgument, "%s: TARGET_DEFINED takes no sample_interval", pathString(elems))
			}
			onChange := *base
			onChange.mode = gpb.SubscriptionMode_ON_CHANGE
			onChange.only = func(n *schema.Node) bool { return !n.Counter }
			sample := *base
			sample.mode, sample.interval = gpb.SubscriptionMode_SAMPLE, s.cfg.TargetDefinedInterval
			sample.only = func(n *schema.Node) bool { return n.Counter }
			ss.subs = append(ss.subs, &onChange, &sample)
		default:
			return status.Errorf(codes.InvalidArgument, "%s: unknown subscription mode %d", pathString(elems), x.GetMode())
		}
	}
	return s.authorize(ss.stream.Context(), "Subscribe", paths)
}

func pathString(elems []*gpb.PathElem) string { return (&query{elems: elems}).String() }

func (q *query) String() string {
	if q.alias != nil {
		return pathkey.String(q.alias)
	}
	return pathkey.String(q.elems)
}

// batch accumulates updates and deletes into notifications. A full
// notification ends before the updates of the list entry it was filling, so
// that an entry's leaves arrive together: collectors such as Telegraf turn
// the leaves of one notification that share an entry into one metric with
// its string leaves as labels.
type batch struct {
	ss    *session
	notif *gpb.Notification
	// entry is the path up to the last keyed element of the last update,
	// and entryAt the index of its entry's first update in notif.
	entry   []*gpb.PathElem
	entryAt int
	// emit, if set, takes each notification instead of the stream.
	emit func(*gpb.Notification) error
}

func (b *batch) add(ts int64, u *gpb.Update, del *gpb.Path) error {
	var carry []*gpb.Update
	if b.notif != nil && (b.notif.Timestamp != ts || len(b.notif.Update)+len(b.notif.Delete) >= maxUpdatesPerNotification) {
		if b.notif.Timestamp == ts && u != nil && b.entryAt > 0 && sameEntry(b.entry, u.GetPath().GetElem()) {
			carry = slices.Clone(b.notif.Update[b.entryAt:])
			b.notif.Update = b.notif.Update[:b.entryAt]
		}
		if err := b.flush(); err != nil {
			return err
		}
	}
	if b.notif == nil {
		b.notif = &gpb.Notification{Timestamp: ts, Update: carry}
		if b.ss.target != "" {
			b.notif.Prefix = &gpb.Path{Target: b.ss.target}
		}
		b.entry, b.entryAt = nil, 0
		if len(carry) > 0 {
			b.entry = entryOf(carry[0].GetPath().GetElem())
		}
	}
	if u != nil {
		elems := u.GetPath().GetElem()
		if !sameEntry(b.entry, elems) {
			b.entry, b.entryAt = entryOf(elems), len(b.notif.Update)
		}
		b.notif.Update = append(b.notif.Update, u)
	}
	if del != nil {
		b.notif.Delete = append(b.notif.Delete, del)
	}
	return nil
}

// entryOf returns elems up to its last keyed element (nil if none).
func entryOf(elems []*gpb.PathElem) []*gpb.PathElem {
	for i := len(elems) - 1; i >= 0; i-- {
		if len(elems[i].GetKey()) > 0 {
			return elems[:i+1]
		}
	}
	return nil
}

// sameEntry reports whether elems lies in the list entry entry.
func sameEntry(entry, elems []*gpb.PathElem) bool {
	if entry == nil || len(entryOf(elems)) != len(entry) {
		return false
	}
	for i, e := range entry {
		if f := elems[i]; e != f && (e.GetName() != f.GetName() || !maps.Equal(e.GetKey(), f.GetKey())) {
			return false
		}
	}
	return true
}

func (b *batch) flush() error {
	if b.notif == nil {
		return nil
	}
	n := b.notif
	b.notif = nil
	if b.emit != nil {
		return b.emit(n)
	}
	if err := b.ss.stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: n}}); err != nil {
		return err
	}
	sent := &b.ss.s.sent
	sent.notifications.Add(1)
	if len(n.Update) > 0 {
		sent.updates.Add(uint64(len(n.Update)))
	}
	if len(n.Delete) > 0 {
		sent.deletes.Add(uint64(len(n.Delete)))
	}
	return nil
}

func (ss *session) syncResponse() error {
	return ss.stream.Send(&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_SyncResponse{SyncResponse: true}})
}

func (ss *session) keep(x *sub) func(*schema.Node, int) bool {
	return func(n *schema.Node, l int) bool { return ss.keeps(x, n, l) }
}

// keeps reports whether sub x delivers leaf n whose path has l elements.
func (ss *session) keeps(x *sub, n *schema.Node, l int) bool {
	return x.covers(n) && (ss.depth == 0 || l-len(x.q.elems) < int(ss.depth)+1)
}

// update renders one leaf for the stream.
func (ss *session) update(x *sub, l leaf) (*gpb.Update, error) {
	v, err := leafValue(l.node, l.value, ss.enc)
	if err != nil {
		return nil, err
	}
	return &gpb.Update{Path: &gpb.Path{Elem: x.pathOf(l.elems)}, Val: v}, nil
}

// sendAll sends the current value of every leaf the given subs cover, each
// leaf once, from one snapshot; at, if not nil, is called with the
// snapshot's commit sequence before anything is sent.
func (ss *session) sendAll(subs []*sub, ts int64, at func(seq uint64)) error {
	return ss.s.cfg.Store.View(func(sq uint64, r store.Reader) error {
		if at != nil {
			at(sq)
		}
		return ss.sendFrom(r, subs, ts)
	})
}

// sendFrom sends every leaf of r that the given subs cover, each leaf once.
func (ss *session) sendFrom(r store.Reader, subs []*sub, ts int64) error {
	return ss.fill(&batch{ss: ss}, r, subs, ts)
}

// fill adds to b, and flushes, every leaf of r that the given subs cover,
// each leaf once.
func (ss *session) fill(b *batch, r store.Reader, subs []*sub, ts int64) error {
	// Only subs whose paths overlap can cover a leaf twice: the set of the
	// leaves sent, a copy of every key, is kept for them alone.
	var seen map[string]bool
	if overlap(subs) {
		seen = map[string]bool{}
	}
	for _, x := range subs {
		err := ss.s.scan(r, x.q, ss.keep(x), func(l leaf) error {
			if seen != nil {
				if seen[string(l.key)] {
					return nil
				}
				seen[string(l.key)] = true
			}
			u, err := ss.update(x, l)
			if err != nil {
				return err
			}
			if x.lastSent != nil {
				x.lastSent[string(l.key)] = txn.EncodeValue(l.value)
			}
			return b.add(ts, u, nil)
		})
		if err != nil {
			return err
		}
	}
	return b.flush()
}

// overlap reports whether a stored leaf may lie under the paths of two of
// subs: whether the key prefix of one's matches starts the other's.
func overlap(subs []*sub) bool {
	for i, x := range subs {
		for _, y := range subs[i+1:] {
			px, py := x.q.prefix(), y.q.prefix()
			if bytes.HasPrefix(px, py) || bytes.HasPrefix(py, px) {
				return true
			}
		}
	}
	return false
}

func (ss *session) once() error {
	if !ss.list.GetUpdatesOnly() {
		if err := ss.sendAll(ss.subs, time.Now().UnixNano(), nil); err != nil {
			return streamError(err)
		}
	}
	return ss.syncResponse()
}

func (ss *session) poll() error {
	if err := ss.once(); err != nil {
		return err
	}
	type recv struct {
		req *gpb.SubscribeRequest
		err error
	}
	reqs := make(chan recv)
	go func() {
		for {
			req, err := ss.stream.Recv()
			select {
			case reqs <- recv{req, err}:
			case <-ss.stream.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r recv
		select {
		case r = <-reqs:
		case <-ss.s.stopping:
			return errShuttingDown
		}
		req, err := r.req, r.err
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetPoll() == nil {
			return status.Error(codes.InvalidArgument, "a POLL subscription takes only Poll requests after the SubscriptionList")
		}
		if err := ss.sendAll(ss.subs, time.Now().UnixNano(), nil); err != nil {
			return streamError(err)
		}
		if err := ss.syncResponse(); err != nil {
			return err
		}
	}
}

// streamLoop serves a STREAM subscription until the client goes away.
func (ss *session) streamLoop() error {
	ctx, cancel := context.WithCancel(ss.stream.Context())
	defer cancel()
	go func() {
		select {
		case <-ss.s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	clientErr := make(chan error, 1)
	go func() {
		// A STREAM subscription takes no further requests; reading detects
		// the client closing its side.
		for {
			req, err := ss.stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return
				}
				clientErr <- err
				cancel()
				return
			}
			if req.GetPoll() != nil || req.GetSubscribe() != nil {
				clientErr <- status.Error(codes.InvalidArgument, "a STREAM subscription takes no further requests")
				cancel()
				return
			}
		}
	}()

	var onChange, samples []*sub
	for _, x := range ss.subs {
		if x.mode == gpb.SubscriptionMode_ON_CHANGE {
			onChange = append(onChange, x)
		} else {
			samples = append(samples, x)
			if x.suppress {
				x.lastSent = map[string][]byte{}
			}
		}
	}
	defer ss.s.renders.join(ss.kind)()
	if len(onChange) > 0 {
		// Before the state the feed is followed from is read (see Want).
		var paths [][]*gpb.PathElem
		for _, x := range onChange {
			paths = append(paths, x.q.elems)
		}
		var done func()
		ss.wantFrom, done = ss.s.cfg.Publisher.Want(paths)
		defer done()
	}
	// Only on-change subs follow the feed: samples read the store when
	// due, and a session of samples alone never falls behind the feed. The
	// cursor opens as soon as the snapshot the sync is read from is chosen:
	// the feed keeps what an open cursor has not read, while the sync is
	// sent (which may take longer than feed.DefaultRetain).
	var cursor *feed.Cursor
	follow := func(seq uint64) {
		if len(onChange) > 0 {
			cursor = ss.s.cfg.Feed.From(seq)
		}
	}
	defer func() {
		if cursor != nil {
			cursor.Close()
		}
	}()
	now := time.Now()
	var err error
	switch {
	case ss.list.GetUpdatesOnly():
		err = ss.s.cfg.Store.View(func(sq uint64, _ store.Reader) error { follow(sq); return nil })
	case !ss.suppresses(samples):
		err = ss.syncShared(now.UnixNano(), follow)
	default:
		err = ss.sendAll(ss.subs, now.UnixNano(), follow)
	}
	if err != nil {
		return streamError(err)
	}
	if err := ss.syncResponse(); err != nil {
		return err
	}
	for _, x := range samples {
		x.next = now.Add(x.interval)
		x.beatAt = now.Add(x.heartbeat)
	}
	for _, x := range onChange {
		if x.heartbeat > 0 {
			x.next = now.Add(x.heartbeat)
		}
	}
	if cursor != nil {
		ss.s.readers.add(cursor)
		defer ss.s.readers.remove(cursor)
	}
	var buf []feed.Commit
	for {
		var timer *time.Timer
		var wake <-chan time.Time
		if next := ss.nextDue(); !next.IsZero() {
			timer = time.NewTimer(time.Until(next))
			wake = timer.C
		}
		done, waited := make(chan struct{}), make(chan struct{})
		if wake != nil {
			// Ends with this round of the loop (waited), not the session:
			// a round that a commit ends would otherwise leave it behind.
			go func() {
				select {
				case <-wake:
					close(done)
				case <-waited:
				case <-ctx.Done():
				}
			}()
		}
		if cursor != nil && ss.jumps(onChange, cursor) {
			// Far behind in a herd: catch up from the herd's shared
			// rendering of the whole state rather than render the
			// commits missed for this session alone.
			err = feed.ErrTooSlow
		} else if cursor != nil {
			buf, err = cursor.Next(ctx, done, buf[:0])
		} else {
			err = nil
			select {
			case <-done:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		close(waited)
		if timer != nil {
			timer.Stop()
		}
		if errors.Is(err, feed.ErrTooSlow) {
			clear(buf)
			buf = buf[:0]
			behind := cursor.Lag()
			err = ss.catchUp(ctx, cursor, onChange)
			if errors.Is(err, feed.ErrTooSlow) {
				ss.s.sent.tooSlow.Add(1)
				return status.Errorf(codes.ResourceExhausted, "subscriber fell %d commits behind the change stream, beyond the record of deletes; resubscribe", behind)
			}
			if err == nil {
				ss.s.sent.catchUps.Add(1)
			}
		}
		if err != nil {
			select {
			case cerr := <-clientErr:
				return cerr
			case <-ss.s.stopping:
				return errShuttingDown
			default:
			}
			if ss.stream.Context().Err() != nil {
				return nil
			}
			return streamError(err)
		}
		// A session that has just caught up is at the newest commit but
		// those published while it did, which its kind's sessions that kept
		// up have rendered: it takes those renderings (held until every
		// session of the kind has, or the budget drops them), unless it is
		// as far behind as a session that renders for itself.
		if len(buf) <= sharedMaxCommits && ss.s.renders.shared(ss.kind) {
			err = ss.sendShared(onChange, buf)
		} else {
			err = ss.sendChanges(onChange, buf)
		}
		// The next read reuses buf from its start: what this one left in it
		// would keep commits alive after the feed dropped them.
		clear(buf)
		if err != nil {
			return streamError(err)
		}
		if err := ss.sendDue(onChange, samples); err != nil {
			return streamError(err)
		}
	}
}

// catchUp brings the on-change subs of a session whose cursor fell out of
// the feed up to date without the commits it missed: from one snapshot of the
// store, it sends a delete for every leaf the subs cover that those commits
// deleted and that is gone, then every leaf the subs cover, as an initial
// sync does but without a sync_response, and moves the cursor to the
// snapshot's commit. It returns feed.ErrTooSlow if the feed's record of
// deletes no longer reaches back to the cursor.
//
// Sessions of a kind that fell behind together (a herd of collectors on a
// node whose writes outrun them) share the full state: a session whose subs
// are all on-change sends its kind's sync rendering of a recent commit (see
// syncShared), or renders one for the others, and sends only the deletes of
// its own.
func (ss *session) catchUp(ctx context.Context, cursor *feed.Cursor, subs []*sub) error {
	if len(subs) == len(ss.subs) && ss.s.renders.shared(ss.kind) {
		return ss.catchUpShared(ctx, cursor)
	}
	ts := time.Now().UnixNano()
	return ss.s.cfg.Store.View(func(seq uint64, r store.Reader) error {
		b := &batch{ss: ss}
		if err := ss.skipDeleted(ctx, cursor, seq, r, b, subs, ts); err != nil {
			return err
		}
		return ss.fill(b, r, subs, ts)
	})
}

// catchUpShared is catchUp from a sync rendering of the session's kind: a
// recent one if it is ahead of the session and the feed holds every commit
// after it, else one rendered now. The deletes it sends are of the leaves gone in the store's current
// view, which may be newer than the rendering: a leaf deleted before the
// rendering's commit and written again after it gets no delete, and the
// feed brings its new value next; one written before and deleted after
// gets a delete, then the rendering's value, then the feed's delete.
func (ss *session) catchUpShared(ctx context.Context, cursor *feed.Cursor) error {
	ts := time.Now().UnixNano()
	var x *rendering
	var seq uint64
	// A recent rendering serves if it is ahead of the session: one that
	// has just jumped to it and is still far behind renders a new one.
	if m, ok := ss.s.renders.recentSync(ss.kind, ss.s.cfg.Feed); ok && m.seq > cursor.Seq() {
		x, seq = m.x, m.seq
	}
	mine := false
	err := ss.s.cfg.Store.View(func(sq uint64, r store.Reader) error {
		if x == nil {
			seq = sq
			x = ss.s.renders.get(ss.kind+"\x00sync", sq)
			x.once.Do(func() {
				ss.s.renders.renderSync(ss.kind, x, sq, func() error { return ss.fill(x.batch(ss), r, ss.subs, ts) })
				mine = true
			})
		}
		b := &batch{ss: ss}
		if err := ss.skipDeleted(ctx, cursor, seq, r, b, ss.subs, ts); err != nil {
			return err
		}
		return b.flush()
	})
	if err != nil {
		return err
	}
	return ss.sendRendering(x, mine)
}

// skipDeleted moves cursor to seq and adds to b a delete of every leaf the
// subs cover that the commits it skips deleted and that r does not hold.
func (ss *session) skipDeleted(ctx context.Context, cursor *feed.Cursor, seq uint64, r store.Reader, b *batch, subs []*sub, ts int64) error {
	var dec pathkey.Decoder
	return cursor.Skip(ctx, seq, func(k []byte) error {
		if !mayCover(subs, k) {
			return nil
		}
		if _, ok, err := r.Get(k); err != nil || ok {
			return err
		}
		elems, err := dec.Decode(k)
		if err != nil {
			return nil
		}
		n := ss.s.cfg.Schema.Lookup(elems)
		if n == nil {
			return nil
		}
		if x := ss.covering(subs, k, elems, n); x != nil {
			return b.add(ts, nil, &gpb.Path{Elem: x.pathOf(elems)})
		}
		return nil
	})
}

// jumps reports whether the session, which follows the feed with cursor
// for the on-change subs, is so far behind (more commits than it would
// send as shared renderings) that it should catch up from its kind's
// shared rendering of the whole state, as one that fell out of the feed
// does, instead of reading the commits.
func (ss *session) jumps(onChange []*sub, cursor *feed.Cursor) bool {
	return len(onChange) == len(ss.subs) && cursor.Lag() > sharedMaxCommits && ss.s.renders.shared(ss.kind)
}

// mayCover reports whether key lies under the key prefix of one of subs.
func mayCover(subs []*sub, key []byte) bool {
	for _, x := range subs {
		if bytes.HasPrefix(key, x.q.prefix()) {
			return true
		}
	}
	return false
}

// covering returns the first of the on-change subs that delivers the
// changes of the leaf at key, whose path is elems and schema node n; nil if
// none does.
func (ss *session) covering(subs []*sub, key []byte, elems []*gpb.PathElem, n *schema.Node) *sub {
	for _, x := range subs {
		if x.q.matches(key, elems) && ss.keeps(x, n, len(elems)) && x.q.shows(elems) {
			return x
		}
	}
	return nil
}

// pathOf returns the path x sends the leaf at elems by: the one the client
// asked for, if x is for a list key that stands for a leaf.
func (x *sub) pathOf(elems []*gpb.PathElem) []*gpb.PathElem {
	if x.q.alias != nil {
		return x.q.alias
	}
	return elems
}

// suppresses reports whether a SAMPLE sub among samples sends only the
// leaves that changed, and so must see what the initial sync sent.
func (ss *session) suppresses(samples []*sub) bool {
	for _, x := range samples {
		if x.lastSent != nil {
			return true
		}
	}
	return false
}

func (ss *session) nextDue() time.Time {
	var next time.Time
	for _, x := range ss.subs {
		if !x.next.IsZero() && (next.IsZero() || x.next.Before(next)) {
			next = x.next
		}
	}
	return next
}

// sendChanges sends the committed changes that on-change subs cover,
// coalescing repeated writes of a leaf to its last value.
func (ss *session) sendChanges(subs []*sub, commits []feed.Commit) error {
	return ss.changes(&batch{ss: ss}, subs, commits)
}

// changes adds to b, and flushes, the committed changes that on-change subs
// cover, coalescing repeated writes of a leaf to its last value.
func (ss *session) changes(b *batch, subs []*sub, commits []feed.Commit) error {
	if len(subs) == 0 || len(commits) == 0 {
		return nil
	}
	type pending struct {
		x  *sub
		ch feed.Change
		ts int64
	}
	var order []pending
	// Coalescing needs a map only across commits: a commit rarely writes a
	// leaf twice, and then both writes go out, in order.
	var last map[string]int // key → its index in order
	if len(commits) > 1 {
		last = map[string]int{}
	}
	var coalesced uint64
	for _, c := range commits {
		for _, ch := range c.Changes {
			if ch.Node == nil {
				if ch.Node = ss.s.cfg.Schema.Lookup(ch.Elems); ch.Node == nil {
					continue
				}
			}
			x := ss.covering(subs, ch.Key, ch.Elems, ch.Node)
			if x == nil {
				continue
			}
			if last == nil {
				order = append(order, pending{x: x, ch: ch, ts: c.Time})
			} else if i, ok := last[string(ch.Key)]; ok {
				order[i].ch, order[i].ts = ch, c.Time
				coalesced++
			} else {
				last[string(ch.Key)] = len(order)
				order = append(order, pending{x: x, ch: ch, ts: c.Time})
			}
		}
	}
	if coalesced > 0 {
		ss.s.sent.coalesced.Add(coalesced)
	}
	for _, p := range order {
		if p.ch.Value == nil {
			if err := b.add(p.ts, nil, &gpb.Path{Elem: p.x.pathOf(p.ch.Elems)}); err != nil {
				return err
			}
			continue
		}
		u, err := ss.update(p.x, leaf{key: p.ch.Key, elems: p.ch.Elems, node: p.ch.Node, value: p.ch.Value})
		if err != nil {
			return err
		}
		if err := b.add(p.ts, u, nil); err != nil {
			return err
		}
	}
	return b.flush()
}

// sendDue serves the samples and heartbeats whose time has come.
func (ss *session) sendDue(onChange, samples []*sub) error {
	now := time.Now()
	var due []*sub
	for _, x := range onChange {
		if !x.next.IsZero() && !now.Before(x.next) {
			due = append(due, x)
			x.next = now.Add(x.heartbeat)
		}
	}
	if len(due) > 0 {
		if err := ss.sendAll(due, now.UnixNano(), nil); err != nil {
			return err
		}
	}
	for _, x := range samples {
		if now.Before(x.next) {
			continue
		}
		heartbeat := x.heartbeat > 0 && !now.Before(x.beatAt)
		if heartbeat {
			x.beatAt = now.Add(x.heartbeat)
		}
		x.next = x.next.Add(x.interval)
		if x.next.Before(now) {
			x.next = now.Add(x.interval)
		}
		if err := ss.sample(x, now.UnixNano(), heartbeat); err != nil {
			return err
		}
	}
	return nil
}

// sample sends the current values of a SAMPLE sub; with suppress_redundant
// only the leaves that changed since they were last sent, unless a
// heartbeat is due.
func (ss *session) sample(x *sub, ts int64, heartbeat bool) error {
	b := &batch{ss: ss}
	err := ss.s.cfg.Store.View(func(_ uint64, r store.Reader) error {
		return ss.s.scan(r, x.q, ss.keep(x), func(l leaf) error {
			if x.lastSent != nil {
				raw := txn.EncodeValue(l.value)
				if !heartbeat && string(x.lastSent[string(l.key)]) == string(raw) {
					return nil
				}
				x.lastSent[string(l.key)] = raw
			}
			u, err := ss.update(x, l)
			if err != nil {
				return err
			}
			return b.add(ts, u, nil)
		})
	})
	if err != nil {
		return err
	}
	return b.flush()
}

func streamError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Errorf(codes.Unavailable, "subscription failed: %v", err)
}
