package main

import (
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// TestWireCountsAsDecoded checks the wire reading against the decoded
// messages: the same sync flag, timestamp and leaf count.
func TestWireCountsAsDecoded(t *testing.T) {
	leaf := &gpb.Path{Elem: []*gpb.PathElem{{Name: "a"}, {Name: "b", Key: map[string]string{"k": "v"}}}}
	updates := []*gpb.Update{
		{Path: leaf, Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: "x"}}},
		{Path: leaf, Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{}}},                                      // empty string: still a value
		{Path: leaf, Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{}}},                                        // zero: still a value
		{Path: leaf, Val: &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{}}},                                        // false: still a value
		{Path: leaf, Val: &gpb.TypedValue{}},                                                                        // no value
		{Path: leaf},                                                                                                // no val
		{Path: &gpb.Path{Origin: "x", Target: "t"}, Val: &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: 7}}}, // no elements
		{Val: &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: 7}}},                                            // no path
		{Path: leaf, Val: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(`{"a":1}`)}}, Duplicates: 3},
	}
	var responses []*gpb.SubscribeResponse
	for i := range updates {
		n := &gpb.Notification{Timestamp: int64(i) * 1e15, Prefix: &gpb.Path{Target: "dev", Elem: []*gpb.PathElem{{Name: "p"}}},
			Update: updates[i:], Delete: []*gpb.Path{leaf}}
		responses = append(responses, &gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: n}})
	}
	responses = append(responses,
		&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_SyncResponse{SyncResponse: true}},
		&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: &gpb.Notification{Timestamp: -1}}},
		&gpb.SubscribeResponse{Response: &gpb.SubscribeResponse_Update{Update: &gpb.Notification{}}},
	)
	// A GetResponse of every notification above.
	get := &gpb.GetResponse{}
	wantGet := 0
	for _, resp := range responses {
		if n := resp.GetUpdate(); n != nil {
			get.Notification = append(get.Notification, n)
			wantGet += leafUpdates(n)
		}
	}
	b, err := proto.Marshal(get)
	if err != nil {
		t.Fatal(err)
	}
	var got countedGet
	if err := (wireCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &got); err != nil || got.leaves != wantGet {
		t.Errorf("GetResponse: read %d leaves (%v), decoded %d", got.leaves, err, wantGet)
	}

	for i, resp := range responses {
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		want := countedResponse{sync: resp.GetSyncResponse()}
		if n, ok := resp.GetResponse().(*gpb.SubscribeResponse_Update); ok {
			want.notification, want.timestamp, want.leaves = true, n.Update.GetTimestamp(), leafUpdates(n.Update)
		}
		// Whole, and split across buffers as gRPC may hand it over.
		for _, data := range []mem.BufferSlice{{mem.SliceBuffer(b)}, {mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}} {
			var got countedResponse
			if err := (wireCodec{}).Unmarshal(data, &got); err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			if got != want {
				t.Errorf("response %d (%d buffers): read %+v, decoded %+v", i, len(data), got, want)
			}
		}
		if len(b) > 1 {
			var got countedResponse
			if err := (wireCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b[:len(b)-1])}, &got); err == nil {
				t.Errorf("response %d cut short by a byte: no error", i)
			}
		}
	}
}
