package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// TestSlowSubscriberIsClosed: a subscriber that stops reading never holds
// up Sets, and once it has fallen out of the change feed it is closed with
// RESOURCE_EXHAUSTED instead of silently missing updates.
func TestSlowSubscriberIsClosed(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{FeedSlots: 64, FeedBytes: 2000 * 300})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	slow, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = slow.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode:         gpb.SubscriptionList_STREAM,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_ON_CHANGE}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := slow.Recv(); err != nil || !r.GetSyncResponse() {
		t.Fatalf("first response = %v, %v; want sync_response", r, err)
	}
	// A subscriber of samples alone does not follow the change feed, so
	// it is not closed however far the feed runs ahead while it does not
	// read (its samples of /sites soon fill the flow-control window, and
	// its session waits in Send).
	sampler, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const sampled = "/sites/site[name=s49]/config/description"
	err = sampler.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(100 * time.Millisecond)}},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	// Large values fill the stream's flow-control window quickly, so the
	// server blocks sending to the subscriber that is not reading.
	big := strings.Repeat("x", 200)
	const sets = 600
	start := time.Now()
	for i := 0; i < sets; i++ {
		req := &gpb.SetRequest{Update: []*gpb.Update{{
			Path: nodetest.Path(t, fmt.Sprintf("/sites/site[name=s%d]/config/description", i%50)),
			Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprintf("%s-%d", big, i)}},
		}}}
		if _, err := n.Client.Set(ctx, req); err != nil {
			t.Fatalf("Set %d with a stalled subscriber: %v", i, err)
		}
	}
	t.Logf("%d Sets with a stalled subscriber took %v", sets, time.Since(start))

	// Now read: the stream must end with RESOURCE_EXHAUSTED.
	for {
		_, err := slow.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stalled subscriber ended with %v; want RESOURCE_EXHAUSTED", err)
		}
		break
	}

	want := fmt.Sprintf("%s-%d", big, sets-1)
	for seen := false; !seen; {
		r, err := sampler.Recv()
		if err != nil {
			t.Fatalf("subscriber of samples: %v; want samples until %s shows the last Set", err, sampled)
		}
		for _, u := range r.GetUpdate().GetUpdate() {
			if pathkey.String(u.GetPath().GetElem()) == sampled && u.GetVal().GetStringVal() == want {
				seen = true
			}
		}
	}

	// A fresh subscriber still gets a complete, current view.
	once, err := n.Client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	once.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode:         gpb.SubscriptionList_ONCE,
		Encoding:     gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites/site[name=s49]/config/description")}},
	}}})
	var got string
	for {
		r, err := once.Recv()
		if err != nil {
			t.Fatalf("ONCE: %v", err)
		}
		if r.GetSyncResponse() {
			break
		}
		for _, u := range r.GetUpdate().GetUpdate() {
			got = u.GetVal().GetStringVal()
		}
	}
	if want := fmt.Sprintf("%s-%d", big, sets-1); got != want {
		t.Errorf("latest description = %q, want %q", got, want)
	}
}
