package server_test

import (
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// TestNotificationsKeepEntriesWhole: a subscription's updates are split into
// notifications of at most 1,000, never through the leaves of one list
// entry, which collectors group by notification.
func TestNotificationsKeepEntriesWhole(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx := ctxT(t)
	doc, err := scale.Generate(1).JSON()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(doc)}}}); err != nil {
		t.Fatal(err)
	}
	stream, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: pathT(t, "/policies/policy")}},
	}}}); err != nil {
		t.Fatal(err)
	}
	in := map[string]int{} // policy → the notification that had its leaves
	notifications, updates := 0, 0
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSyncResponse() {
			break
		}
		notifications++
		us := resp.GetUpdate().GetUpdate()
		if len(us) > 1000 {
			t.Errorf("notification %d has %d updates, want at most 1,000", notifications, len(us))
		}
		for _, u := range us {
			updates++
			name := u.GetPath().GetElem()[1].GetKey()["name"]
			if at, ok := in[name]; ok && at != notifications {
				t.Fatalf("the leaves of policy %s are in notifications %d and %d", name, at, notifications)
			}
			in[name] = notifications
		}
	}
	if notifications < 2 || len(in) != 1000 {
		t.Errorf("%d updates of %d policies in %d notifications; want the scale set's 1,000 policies in several", updates, len(in), notifications)
	}
}
