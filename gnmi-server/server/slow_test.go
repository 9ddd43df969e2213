package server_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// mirror is what a subscriber knows: the leaves it was sent, as path ->
// value text, with the deletes it was sent applied.
type mirror struct {
	leaves  map[string]string
	deleted map[string]bool // every path it was sent a delete of
}

func newMirror() *mirror { return &mirror{leaves: map[string]string{}, deleted: map[string]bool{}} }

// apply applies one response; it reports whether it was a sync_response.
func (m *mirror) apply(r *gpb.SubscribeResponse) bool {
	if r.GetSyncResponse() {
		return true
	}
	n := r.GetUpdate()
	path := func(p *gpb.Path) string {
		return pathkey.String(append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), p.GetElem()...))
	}
	// A notification's deletes come before its updates.
	for _, d := range n.GetDelete() {
		delete(m.leaves, path(d))
		m.deleted[path(d)] = true
	}
	for _, u := range n.GetUpdate() {
		m.leaves[path(u.GetPath())] = valueString(u.GetVal())
	}
	return false
}

// subscribeStream opens a STREAM subscription to /sites in PROTO encoding
// and reads it up to its sync_response into a mirror.
func subscribeStream(t *testing.T, ctx context.Context, c gpb.GNMIClient, mode gpb.SubscriptionMode) (gpb.GNMI_SubscribeClient, *mirror) {
	t.Helper()
	stream := openStream(t, ctx, c, mode)
	return stream, readSync(t, stream, mode)
}

// openStream opens a STREAM subscription to /sites in PROTO encoding.
func openStream(t *testing.T, ctx context.Context, c gpb.GNMIClient, mode gpb.SubscriptionMode) gpb.GNMI_SubscribeClient {
	t.Helper()
	stream, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: mode}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// readSync reads stream up to its sync_response into a new mirror.
func readSync(t *testing.T, stream gpb.GNMI_SubscribeClient, mode gpb.SubscriptionMode) *mirror {
	t.Helper()
	m := newMirror()
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("%v subscriber before its sync_response: %v", mode, err)
		}
		if m.apply(r) {
			return m
		}
	}
}

// follow reads stream into m until done(m).
func (m *mirror) follow(stream gpb.GNMI_SubscribeClient, done func(*mirror) bool) error {
	for !done(m) {
		r, err := stream.Recv()
		if err != nil {
			return err
		}
		if m.apply(r) {
			return fmt.Errorf("a second sync_response")
		}
	}
	return nil
}

// sitesLeaves reads every leaf under /sites (Get as PROTO) as path -> value
// text.
func sitesLeaves(t *testing.T, ctx context.Context, c gpb.GNMIClient) map[string]string {
	t.Helper()
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/sites")}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatalf("Get /sites: %v", err)
	}
	out := map[string]string{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			out[pathkey.String(append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...))] = valueString(u.GetVal())
		}
	}
	return out
}

func description(site string) string {
	return fmt.Sprintf("/sites/site[name=%s]/config/description", site)
}

func setSiteDescription(t *testing.T, ctx context.Context, c gpb.GNMIClient, site, v string) {
	t.Helper()
	req := &gpb.SetRequest{Update: []*gpb.Update{{
		Path: nodetest.Path(t, description(site)),
		Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v}},
	}}}
	if _, err := c.Set(ctx, req); err != nil {
		t.Fatalf("Set %s: %v", description(site), err)
	}
}

func deletePath(t *testing.T, ctx context.Context, c gpb.GNMIClient, path string) {
	t.Helper()
	if _, err := c.Set(ctx, &gpb.SetRequest{Delete: []*gpb.Path{nodetest.Path(t, path)}}); err != nil {
		t.Fatalf("delete %s: %v", path, err)
	}
}

// stalling returns a client on a connection of its own whose flow-control
// windows stay at 64 KiB (no BDP estimation growing them), so that a
// subscriber that does not read soon makes the server wait in Send.
func stalling(t *testing.T, n *nodetest.Node) gpb.GNMIClient {
	return n.Dial(t, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
}

// stall writes large values to the descriptions of sites, which fill the
// flow-control window of a subscriber that does not read, so that the
// server blocks sending to it, and then more commits than a small feed
// holds.
func stall(t *testing.T, ctx context.Context, c gpb.GNMIClient, sites []string, sets int) {
	t.Helper()
	big := strings.Repeat("x", 200)
	start := time.Now()
	for i := range sets {
		setSiteDescription(t, ctx, c, sites[i%len(sites)], fmt.Sprintf("%s-%d", big, i))
	}
	t.Logf("%d Sets with stalled subscribers took %v", sets, time.Since(start))
}

// TestSlowSubscriberCatchesUp: a subscriber that stops reading never holds
// up Sets, and once it has fallen out of the change feed it is brought up
// to date when it reads again: it ends up with exactly the current state,
// leaves deleted meanwhile (ones it had received among them) deleted and
// leaves created meanwhile present, without being closed. So is one of a
// kind whose other session kept up and shared its renderings, and the
// on-change half of a TARGET_DEFINED subscription.
func TestSlowSubscriberCatchesUp(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{FeedSlots: 64, FeedBytes: 2000 * 300})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sites := makeSites(t, ctx, n.Client, 50)
	slow, slowView := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	// A second one of the same kind, stalled with it: the two catch up
	// from one rendering of the whole state.
	slow2, slow2View := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	slowTD, slowTDView := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_TARGET_DEFINED)
	for _, m := range []*mirror{slowView, slow2View, slowTDView} {
		if _, ok := m.leaves[description("s0")]; !ok {
			t.Fatalf("initial sync without %s: %v", description("s0"), m.leaves)
		}
	}
	// One more of the same kind as slow, which keeps reading: the two share
	// renderings until slow falls behind.
	const marker = `string_val:"done"`
	done := func(m *mirror) bool { return m.leaves[description("s49")] == marker }
	keeper, keeperView := subscribeStream(t, ctx, n.Client, gpb.SubscriptionMode_ON_CHANGE)
	keeperErr := make(chan error, 1)
	go func() { keeperErr <- keeperView.follow(keeper, done) }()

	// A subscriber of samples alone does not follow the change feed, so
	// it is not closed however far the feed runs ahead while it does not
	// read (its samples of /sites soon fill the flow-control window, and
	// its session waits in Send).
	sampler, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = sampler.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(100 * time.Millisecond)}},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	stall(t, ctx, n.Client, sites[10:], 600)
	// Deletes of leaves the subscribers received in their sync: whole
	// sites, and one leaf.
	for _, s := range sites[:5] {
		deletePath(t, ctx, n.Client, "/sites/site[name="+s+"]")
	}
	deletePath(t, ctx, n.Client, description("s5"))
	// Sites created meanwhile, some of them deleted again.
	for i := range 10 {
		setSiteDescription(t, ctx, n.Client, fmt.Sprintf("new%d", i), "created")
	}
	for i := range 5 {
		deletePath(t, ctx, n.Client, fmt.Sprintf("/sites/site[name=new%d]", i))
	}
	// Enough commits after the deletes for them to fall out of the feed.
	stall(t, ctx, n.Client, sites[10:49], 200)
	setSiteDescription(t, ctx, n.Client, "s49", "done")

	want := sitesLeaves(t, ctx, n.Client)
	if _, ok := want[description("new9")]; !ok {
		t.Fatalf("Get /sites without %s", description("new9"))
	}
	for name, s := range map[string]struct {
		stream gpb.GNMI_SubscribeClient
		m      *mirror
	}{"ON_CHANGE": {slow, slowView}, "second ON_CHANGE": {slow2, slow2View}, "TARGET_DEFINED": {slowTD, slowTDView}} {
		if err := s.m.follow(s.stream, done); err != nil {
			t.Fatalf("stalled %s subscriber: %v; want it brought up to date", name, err)
		}
		if diff := cmp.Diff(want, s.m.leaves); diff != "" {
			t.Errorf("stalled %s subscriber's view once it has the last Set (-Get +view):\n%s", name, diff)
		}
		if !s.m.deleted[description("s0")] || !s.m.deleted[description("s5")] {
			t.Errorf("stalled %s subscriber was not sent deletes of %s and %s, which it had received", name, description("s0"), description("s5"))
		}
	}
	if err := <-keeperErr; err != nil {
		t.Fatalf("subscriber that kept reading: %v", err)
	}
	if diff := cmp.Diff(want, keeperView.leaves); diff != "" {
		t.Errorf("view of the subscriber that kept reading (-Get +view):\n%s", diff)
	}
	st := n.Server.SubscribeStats()
	if st.CatchUps < 3 || st.TooSlow != 0 {
		t.Errorf("SubscribeStats: %d catch-ups, %d closed too slow; want at least 3 (the stalled subscribers) and 0", st.CatchUps, st.TooSlow)
	}

	// Caught up, the stalled subscriber shares renderings with the one of
	// its kind that kept reading again: each commit is rendered by one of
	// them and sent as it is by the other.
	const after = 5
	for i := range after {
		setSiteDescription(t, ctx, n.Client, "s48", fmt.Sprint("after", i))
	}
	last := func(m *mirror) bool {
		return m.leaves[description("s48")] == fmt.Sprintf("string_val:%q", fmt.Sprint("after", after-1))
	}
	for _, s := range []struct {
		stream gpb.GNMI_SubscribeClient
		m      *mirror
	}{{slow, slowView}, {keeper, keeperView}} {
		if err := s.m.follow(s.stream, last); err != nil {
			t.Fatal(err)
		}
	}
	if shared := n.Server.SubscribeStats().Shared - st.Shared; shared < after {
		t.Errorf("%d notifications shared after the catch-up, want at least %d: one per Set", shared, after)
	}

	for seen := false; !seen; {
		r, err := sampler.Recv()
		if err != nil {
			t.Fatalf("subscriber of samples: %v; want samples until %s shows the last Set", err, description("s49"))
		}
		for _, u := range r.GetUpdate().GetUpdate() {
			if pathkey.String(u.GetPath().GetElem()) == description("s49") && u.GetVal().GetStringVal() == "done" {
				seen = true
			}
		}
	}
}

// TestSlowSubscriberBeyondDeletesIsClosed: a subscriber that fell so far
// behind that the feed's record of deletes no longer reaches back to it
// cannot be brought up to date, and is closed with RESOURCE_EXHAUSTED
// instead of silently keeping leaves that are gone.
func TestSlowSubscriberBeyondDeletesIsClosed(t *testing.T) {
	// Room for a few commits, and for the deletes of a few dozen.
	n := nodetest.Start(t, nodetest.Options{FeedSlots: 16, FeedBytes: 8000})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sites := makeSites(t, ctx, n.Client, 10)
	slow, _ := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	stall(t, ctx, n.Client, sites, 600)
	for i := range 100 {
		site := fmt.Sprintf("gone%d", i)
		setSiteDescription(t, ctx, n.Client, site, "created")
		deletePath(t, ctx, n.Client, "/sites/site[name="+site+"]")
	}

	for {
		_, err := slow.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "commits behind") {
			t.Fatalf("stalled subscriber ended with %v; want RESOURCE_EXHAUSTED saying how far behind it was", err)
		}
		t.Logf("stalled subscriber: %v", err)
		break
	}
	if st := n.Server.SubscribeStats(); st.TooSlow != 1 {
		t.Errorf("SubscribeStats.TooSlow = %d, want 1", st.TooSlow)
	}

	// A fresh subscriber still gets a complete, current view.
	_, fresh := subscribeStream(t, ctx, n.Client, gpb.SubscriptionMode_ON_CHANGE)
	if diff := cmp.Diff(sitesLeaves(t, ctx, n.Client), fresh.leaves); diff != "" {
		t.Errorf("fresh subscriber's sync (-Get +sync):\n%s", diff)
	}
}

// TestSlowSyncFollowsFeed: a subscriber whose initial sync takes twice as long
// as the feed keeps commits no cursor needs (feed.DefaultRetain), because it does not
// read it, still follows the feed from its sync's snapshot once it reads:
// the commits made meanwhile are kept for it, and it is sent them, not
// caught up.
func TestSlowSyncFollowsFeed(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sites := makeSites(t, ctx, n.Client, 50)
	for _, s := range sites {
		setSiteDescription(t, ctx, n.Client, s, strings.Repeat("x", 2000)) // a sync past the window
	}
	stream := openStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	time.Sleep(200 * time.Millisecond) // the session blocks sending its sync
	for i, start := 0, time.Now(); time.Since(start) < 2*feed.DefaultRetain; i++ {
		setSiteDescription(t, ctx, n.Client, "s0", fmt.Sprint("during", i))
		time.Sleep(100 * time.Millisecond)
	}
	setSiteDescription(t, ctx, n.Client, "s49", "done")

	m := readSync(t, stream, gpb.SubscriptionMode_ON_CHANGE)
	if err := m.follow(stream, func(m *mirror) bool { return m.leaves[description("s49")] == `string_val:"done"` }); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sitesLeaves(t, ctx, n.Client), m.leaves); diff != "" {
		t.Errorf("view after the slow sync (-Get +view):\n%s", diff)
	}
	if st := n.Server.SubscribeStats(); st.CatchUps != 0 || st.TooSlow != 0 {
		t.Errorf("SubscribeStats: %d catch-ups, %d closed too slow; want 0 and 0: the feed kept the commits made during the sync", st.CatchUps, st.TooSlow)
	}
}

// makeSites creates sites s0 … s<count-1>, each with the description
// "initial", and returns their names.
func makeSites(t *testing.T, ctx context.Context, c gpb.GNMIClient, count int) []string {
	t.Helper()
	var sites []string
	for i := range count {
		sites = append(sites, fmt.Sprintf("s%d", i))
		setSiteDescription(t, ctx, c, sites[i], "initial")
	}
	return sites
}

// TestFarBehindHerdJumps: sessions of a kind that fall further behind than
// they would send as shared renderings, though the feed still holds every
// commit they missed, catch up from one rendering of the whole state (and
// their own deletes) instead of each rendering the commits for itself, and
// end up with exactly the current state.
func TestFarBehindHerdJumps(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{FeedSlots: 1 << 14, FeedBytes: 1 << 30, FeedRetain: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	sites := makeSites(t, ctx, n.Client, 50)
	a, aView := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	b, bView := subscribeStream(t, ctx, stalling(t, n), gpb.SubscriptionMode_ON_CHANGE)
	stall(t, ctx, n.Client, sites[10:], 600)
	deletePath(t, ctx, n.Client, "/sites/site[name=s0]")
	stall(t, ctx, n.Client, sites[10:49], 100)
	setSiteDescription(t, ctx, n.Client, "s49", "done")
	if !n.Feed.Holds(n.Feed.Last() - 700) {
		t.Fatal("the feed dropped commits: the test is about sessions still in it")
	}

	want := sitesLeaves(t, ctx, n.Client)
	const marker = `string_val:"done"`
	for name, s := range map[string]struct {
		stream gpb.GNMI_SubscribeClient
		m      *mirror
	}{"a": {a, aView}, "b": {b, bView}} {
		if err := s.m.follow(s.stream, func(m *mirror) bool { return m.leaves[description("s49")] == marker }); err != nil {
			t.Fatalf("subscriber %s: %v", name, err)
		}
		if diff := cmp.Diff(want, s.m.leaves); diff != "" {
			t.Errorf("subscriber %s's view (-Get +view):\n%s", name, diff)
		}
		if !s.m.deleted[description("s0")] {
			t.Errorf("subscriber %s was not sent the delete of %s", name, description("s0"))
		}
	}
	if st := n.Server.SubscribeStats(); st.CatchUps < 2 || st.TooSlow != 0 {
		t.Errorf("SubscribeStats: %d catch-ups, %d closed too slow; want each far-behind session to catch up, none closed", st.CatchUps, st.TooSlow)
	}
}

// TestNoGoroutinePerRound: a session whose subscription has a heartbeat
// waits for the feed and for its next heartbeat at once; the rounds that
// commits end leave no goroutine behind.
func TestNoGoroutinePerRound(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sites := makeSites(t, ctx, n.Client, 5)
	stream, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_ON_CHANGE, HeartbeatInterval: uint64(time.Hour)}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	m := newMirror()
	if err := m.follow(stream, func(*mirror) bool { return false }); err == nil || err.Error() != "a second sync_response" {
		// follow stops at the first sync_response it meets, reported as
		// a second one.
		t.Fatalf("initial sync: %v", err)
	}
	before := runtime.NumGoroutine()
	for i := range 300 {
		v := fmt.Sprint("v", i)
		setSiteDescription(t, ctx, n.Client, sites[i%len(sites)], v)
		// Read each change before the next Set: one round per commit.
		if err := m.follow(stream, func(m *mirror) bool {
			return m.leaves[description(sites[i%len(sites)])] == fmt.Sprintf("string_val:%q", v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if after := runtime.NumGoroutine(); after > before+50 {
		t.Errorf("%d goroutines after 300 commits read one by one, %d before: one is left behind per round", after, before)
	}
}
