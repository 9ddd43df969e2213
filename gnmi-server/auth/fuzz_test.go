package auth_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

func seedSet(f *testing.F, reqs ...*gpb.SetRequest) {
	for _, r := range reqs {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzSetRequest sends arbitrary SetRequests through the interceptors as an
// OPERATOR and as a VIEWER: nothing crashes, a VIEWER never changes
// anything, an OPERATOR never changes /system/aaa.
func FuzzSetRequest(f *testing.F) {
	p := func(s string) *gpb.Path { return nodetest.Path(f, s) }
	seedSet(f,
		&gpb.SetRequest{Update: []*gpb.Update{{Path: p("/sites/site[name=a]/config/location"), Val: str("x")}}},
		&gpb.SetRequest{Prefix: p("/system"), Delete: []*gpb.Path{p("/aaa/users/user[username=admin]")}},
		&gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF([]byte(`{}`))}}},
		&gpb.SetRequest{Prefix: p("/sites"), Update: []*gpb.Update{{Path: p("/../system/aaa"), Val: nodetest.JSONIETF([]byte(`{}`))}}},
		&gpb.SetRequest{Delete: []*gpb.Path{p("/*/aaa")}},
	)
	n := startAuth(f, auth.Config{FailureDelay: time.Millisecond, MaxFailureDelay: time.Millisecond})
	clients := []gpb.GNMIClient{n.As(f, "operator", operatorPW), n.As(f, "viewer", viewerPW)}
	admin := n.As(f, "admin", adminPW)
	aaa := p("/system/aaa")
	users := func() string {
		resp, err := admin.Get(context.Background(), &gpb.GetRequest{Path: []*gpb.Path{aaa}, Encoding: gpb.Encoding_PROTO})
		if status.Code(err) == codes.NotFound {
			return ""
		}
		if err != nil {
			f.Fatal(err)
		}
		resp.Notification[0].Timestamp = 0
		return resp.String()
	}
	before := users()
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &gpb.SetRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		for i, c := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.Set(ctx, req)
			cancel()
			if i == 1 && err == nil {
				t.Fatalf("a VIEWER's Set succeeded: %v", req)
			}
			if code := status.Code(err); code == codes.Unknown || code == codes.Internal || code == codes.Unauthenticated {
				t.Fatalf("Set %v: %v", req, err)
			}
		}
		if after := users(); after != before {
			t.Fatalf("users changed by %v:\n%s\nwas\n%s", req, after, before)
		}
	})
}

// FuzzSubscribeRequest sends arbitrary first SubscribeRequests through the
// interceptors as a VIEWER: nothing crashes and no response holds
// /system/aaa data.
func FuzzSubscribeRequest(f *testing.F) {
	for _, r := range []*gpb.SubscribeRequest{
		{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Subscription: []*gpb.Subscription{{Path: &gpb.Path{}}}}}},
		{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
			Prefix: nodetest.Path(f, "/system"), Subscription: []*gpb.Subscription{{Path: nodetest.Path(f, "/...")}}}}},
		{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM,
			Subscription: []*gpb.Subscription{{Path: nodetest.Path(f, "/system/*/users"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: uint64(time.Second)}}}}},
		{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_POLL, Subscription: []*gpb.Subscription{{Path: nodetest.Path(f, "/system/aaa")}}}}},
	} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	n := startAuth(f, auth.Config{UserRate: 1e6, UserBurst: 1e6})
	viewer := n.As(f, "viewer", viewerPW)
	f.Fuzz(func(t *testing.T, b []byte) {
		req := &gpb.SubscribeRequest{}
		if proto.Unmarshal(b, req) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		sc, err := viewer.Subscribe(ctx)
		if err != nil {
			return
		}
		if err := sc.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return
		}
		var notifs []*gpb.Notification
		for {
			resp, err := sc.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				if code := status.Code(err); code == codes.Unknown || code == codes.Internal || code == codes.Unauthenticated {
					t.Fatalf("Subscribe %v: %v", req, err)
				}
				break
			}
			if u := resp.GetUpdate(); u != nil {
				notifs = append(notifs, u)
			}
		}
		if l := leaks(notifs); len(l) > 0 {
			t.Fatalf("Subscribe %v as VIEWER leaks %v", req, l)
		}
	})
}
