package server_test

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/collector/history"
	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

// historyStream sends one SubscriptionList with the History extension and
// reads responses until the server ends the RPC, returning the
// packets-matched values by notification timestamp and whether a
// sync_response came.
func historyStream(t *testing.T, c gpb.GNMIClient, mode gpb.SubscriptionList_Mode, h *gnmi_ext.History) (map[int64]uint64, bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Send(&gpb.SubscribeRequest{
		Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Mode: mode, Encoding: gpb.Encoding_PROTO,
			Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/policies/policy[name=voice-sip]/state/counters/packets-matched")}},
		}},
		Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: h}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	vals, synced := map[int64]uint64{}, false
	for {
		r, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return vals, synced, nil
		}
		if err != nil {
			return vals, synced, err
		}
		if r.GetSyncResponse() {
			synced = true
			if mode == gpb.SubscriptionList_ONCE {
				return vals, synced, nil
			}
		}
		if n := r.GetUpdate(); n != nil {
			for _, u := range n.GetUpdate() {
				vals[n.GetTimestamp()] = u.GetVal().GetUintVal()
			}
		}
	}
}

func TestHistoryExtension(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx := context.Background()
	b, err := os.ReadFile("../../testdata/scenario1/config.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(b)}}}); err != nil {
		t.Fatal(err)
	}
	w := telemetry.NewWriter(n.Store)
	rec := history.NewRecorder(n.Store, n.Schema)
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * 10 * time.Second) }
	for i, v := range []uint64{100, 250, 400} {
		if err := w.Write(ctx, &telemetry.Snapshot{Policies: map[string]telemetry.Policy{"voice-sip": {PacketsMatched: v}}}); err != nil {
			t.Fatal(err)
		}
		if err := rec.Sample(ctx, at(i)); err != nil {
			t.Fatal(err)
		}
	}

	// A snapshot between two samples is the earlier one, stamped with its time.
	got, synced, err := historyStream(t, n.Client, gpb.SubscriptionList_ONCE,
		&gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: at(1).Add(3 * time.Second).UnixNano()}})
	if err != nil || !synced || len(got) != 1 || got[at(1).UnixNano()] != 250 {
		t.Errorf("snapshot at sample 1 + 3s: %v synced=%v err=%v; want 250 at %v", got, synced, err, at(1))
	}

	// A range sends the state at its start, then each sample in it, then ends.
	got, synced, err = historyStream(t, n.Client, gpb.SubscriptionList_STREAM,
		&gnmi_ext.History{Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: at(0).Add(time.Second).UnixNano(), End: at(2).Add(time.Second).UnixNano()}}})
	want := map[int64]uint64{at(0).UnixNano(): 100, at(1).UnixNano(): 250, at(2).UnixNano(): 400}
	if err != nil || !synced || len(got) != len(want) {
		t.Errorf("range: %v synced=%v err=%v; want %v", got, synced, err, want)
	}
	for ts, v := range want {
		if got[ts] != v {
			t.Errorf("range: at %v got %d, want %d", time.Unix(0, ts), got[ts], v)
		}
	}

	for _, tc := range []struct {
		name string
		mode gpb.SubscriptionList_Mode
		h    *gnmi_ext.History
		code codes.Code
	}{
		{"snapshot needs ONCE", gpb.SubscriptionList_STREAM, &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: at(1).UnixNano()}}, codes.InvalidArgument},
		{"range needs STREAM", gpb.SubscriptionList_ONCE, &gnmi_ext.History{Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: 1, End: 2}}}, codes.InvalidArgument},
		{"range backwards", gpb.SubscriptionList_STREAM, &gnmi_ext.History{Request: &gnmi_ext.History_Range{Range: &gnmi_ext.TimeRange{Start: at(2).UnixNano(), End: at(1).UnixNano()}}}, codes.InvalidArgument},
		{"snapshot in the future", gpb.SubscriptionList_ONCE, &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: time.Now().Add(time.Hour).UnixNano()}}, codes.Unimplemented},
		{"snapshot before any sample", gpb.SubscriptionList_ONCE, &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: at(0).Add(-time.Hour).UnixNano()}}, codes.NotFound},
		{"empty history message", gpb.SubscriptionList_ONCE, &gnmi_ext.History{}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := historyStream(t, n.Client, tc.mode, tc.h)
			if status.Code(err) != tc.code {
				t.Errorf("got %v, want %v", err, tc.code)
			}
		})
	}

	_, err = n.Client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/policies")},
		Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: 1}}}}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Get with the History extension: %v, want InvalidArgument", err)
	}
}
