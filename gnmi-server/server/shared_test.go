package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
)

// TestSharedRendering: STREAM subscribers that send the same request render
// each commit once between them, and each still receives every change; a
// subscriber with another request is served on its own.
func TestSharedRendering(t *testing.T) {
	n := startScenario1(t)
	ctx := ctxT(t)
	// synced counts the leaves each subscriber had before its sync_response.
	var synced []int
	subscribe := func(path string, enc gpb.Encoding) gpb.GNMI_SubscribeClient {
		t.Helper()
		stream, err := n.Client.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Mode: gpb.SubscriptionList_STREAM, Encoding: enc,
			Subscription: []*gpb.Subscription{{Path: pathT(t, path), Mode: gpb.SubscriptionMode_ON_CHANGE}},
		}}}); err != nil {
			t.Fatal(err)
		}
		leaves := 0
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetSyncResponse() {
				synced = append(synced, leaves)
				return stream
			}
			leaves += len(resp.GetUpdate().GetUpdate())
		}
	}
	const leaf = "/sites/site[name=hq]/config/description"
	same := []gpb.GNMI_SubscribeClient{subscribe("/sites/site[name=hq]/config", gpb.Encoding_JSON_IETF), subscribe("/sites/site[name=hq]/config", gpb.Encoding_JSON_IETF)}
	other := subscribe("/sites/site[name=hq]", gpb.Encoding_PROTO)
	// The initial syncs, rendered once when they read the same commit.
	if synced[0] == 0 || synced[0] != synced[1] {
		t.Errorf("leaves before sync_response: %v; want the same number, not 0, for the first two", synced)
	}
	before := n.Server.SubscribeStats().Shared

	const sets = 20
	for i := range sets {
		if _, err := n.Client.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: pathT(t, leaf),
			Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprint("v", i)}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Every subscriber sees the descriptions in order, ending with the last.
	for i, stream := range append(same, other) {
		var got []string
		for len(got) == 0 || got[len(got)-1] != fmt.Sprint("v", sets-1) {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("subscriber %d: Recv: %v after %v", i, err, got)
			}
			for _, u := range resp.GetUpdate().GetUpdate() {
				elems := u.GetPath().GetElem()
				if elems[len(elems)-1].GetName() != "description" || elems[len(elems)-2].GetName() != "config" {
					continue
				}
				v := u.GetVal()
				s := v.GetStringVal()
				if j := v.GetJsonIetfVal(); j != nil {
					s = string(j[1 : len(j)-1])
				}
				got = append(got, s)
			}
		}
		last := -1
		for _, s := range got {
			var k int
			if _, err := fmt.Sscanf(s, "v%d", &k); err != nil || k <= last {
				t.Errorf("subscriber %d received %v: want increasing v0..v%d", i, got, sets-1)
				break
			}
			last = k
		}
	}
	if shared := n.Server.SubscribeStats().Shared - before; shared == 0 {
		t.Error("no notification was shared between the two identical subscriptions")
	}
}

// TestSharedSyncAcrossCommits: a subscriber that arrives within a second of
// an identical one starts from that one's sync, rendered from an earlier
// commit, and then receives the commits since: it ends with the same view.
func TestSharedSyncAcrossCommits(t *testing.T) {
	n := startScenario1(t)
	ctx := ctxT(t)
	set := func(v string) {
		t.Helper()
		if _, err := n.Client.Set(ctx, setDescription(t, v)); err != nil {
			t.Fatal(err)
		}
	}
	// open subscribes and returns the stream with the description it shows
	// once synced.
	open := func() (gpb.GNMI_SubscribeClient, string) {
		t.Helper()
		stream, descs := subscribeDescriptions(t, ctx, n, "/sites/site[name=hq]/config")
		if len(descs) == 0 {
			return stream, ""
		}
		return stream, descs[len(descs)-1]
	}
	set("before")
	first, got := open()
	if got != "before" {
		t.Fatalf("first subscriber synced with %q, want before", got)
	}
	set("after")
	shared := n.Server.SubscribeStats().Shared
	second, got := open()
	if n.Server.SubscribeStats().Shared == shared {
		t.Skip("the second sync was not shared (more than a second passed): nothing to judge")
	}
	if got != "before" {
		t.Errorf("second subscriber's shared sync shows %q, want the first sync's before", got)
	}
	// Both then see "after", the second from the commits after the sync.
	for i, stream := range []gpb.GNMI_SubscribeClient{first, second} {
		for done := false; !done; {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("subscriber %d: %v", i, err)
			}
			for _, u := range resp.GetUpdate().GetUpdate() {
				done = done || u.GetVal().GetStringVal() == "after"
			}
		}
	}
}

// TestLateSessionSeesWhatOthersDecoded: a session that comes after the one
// whose initial sync it could share, once that one has gone and another
// session that wants other paths read (and so decoded) a later commit, must
// not follow the feed from the shared sync: that commit was decoded without
// its paths. It sees the change, in its sync or after it.
func TestLateSessionSeesWhatOthersDecoded(t *testing.T) {
	n := startScenario1(t)
	ctx := ctxT(t)
	subscribe := func(ctx context.Context, path string) (gpb.GNMI_SubscribeClient, []string) {
		t.Helper()
		return subscribeDescriptions(t, ctx, n, path)
	}
	set := func(v string) {
		t.Helper()
		if _, err := n.Client.Set(ctx, setDescription(t, v)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, ok func(server.SubscribeStats) bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(n.Server.SubscribeStats()); {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: %+v", what, n.Server.SubscribeStats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	set("before")
	actx, stopA := context.WithCancel(ctx)
	subscribe(actx, "/sites/site[name=hq]/config") // renders the sync B could share
	subscribe(ctx, "/flows")                       // wants only /flows
	stopA()
	waitFor("the first session to end", func(st server.SubscribeStats) bool { return st.Streams == 1 })
	time.Sleep(20 * time.Millisecond) // its last deferred calls
	set("after")
	waitFor("the /flows session to read the commit", func(st server.SubscribeStats) bool { return st.LagMax == 0 })

	bctx, stopB := context.WithCancel(ctx)
	defer stopB()
	b, synced := subscribe(bctx, "/sites/site[name=hq]/config")
	if slices.Contains(synced, "after") {
		return
	}
	time.AfterFunc(2*time.Second, stopB)
	for {
		resp, err := b.Recv()
		if err != nil {
			t.Fatalf("the late session synced %v and never saw the description \"after\" (Recv: %v)", synced, err)
		}
		if slices.Contains(descriptionsIn(resp), "after") {
			return
		}
	}
}

// descriptionsIn returns the descriptions a response updates.
func descriptionsIn(resp *gpb.SubscribeResponse) []string {
	var out []string
	for _, u := range resp.GetUpdate().GetUpdate() {
		elems := append(resp.GetUpdate().GetPrefix().GetElem(), u.GetPath().GetElem()...)
		if len(elems) > 0 && elems[len(elems)-1].GetName() == "description" {
			out = append(out, u.GetVal().GetStringVal())
		}
	}
	return out
}

// subscribeDescriptions opens a STREAM ON_CHANGE subscription to path and
// returns it once synced, with the descriptions its sync held.
func subscribeDescriptions(t *testing.T, ctx context.Context, n *nodetest.Node, path string) (gpb.GNMI_SubscribeClient, []string) {
	t.Helper()
	stream, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: pathT(t, path), Mode: gpb.SubscriptionMode_ON_CHANGE}},
	}}}); err != nil {
		t.Fatal(err)
	}
	var descriptions []string
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSyncResponse() {
			return stream, descriptions
		}
		descriptions = append(descriptions, descriptionsIn(resp)...)
	}
}
