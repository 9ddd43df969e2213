package telemetry_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

func loaded(t *testing.T) *nodetest.Node {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "testdata", "scenario1", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	n := nodetest.Start(t, nodetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(b)}}}); err != nil {
		t.Fatal(err)
	}
	return n
}

// leaves reads every leaf under path as PROTO values, by path string.
func leaves(t *testing.T, n *nodetest.Node, path string) map[string]*gpb.TypedValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := n.Client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, path)}, Encoding: gpb.Encoding_PROTO, Type: gpb.GetRequest_STATE})
	out := map[string]*gpb.TypedValue{}
	if status.Code(err) == codes.NotFound {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, nt := range resp.GetNotification() {
		for _, u := range nt.GetUpdate() {
			p := &gpb.Path{Elem: append(append([]*gpb.PathElem{}, nt.GetPrefix().GetElem()...), u.GetPath().GetElem()...)}
			s, _ := pathString(p)
			out[s] = u.GetVal()
		}
	}
	return out
}

func pathString(p *gpb.Path) (string, error) {
	s := ""
	for _, e := range p.GetElem() {
		s += "/" + e.GetName()
		for _, k := range []string{"name", "protocol", "source-address", "source-port", "destination-address", "destination-port"} {
			if v, ok := e.GetKey()[k]; ok {
				s += "[" + k + "=" + v + "]"
			}
		}
	}
	return s, nil
}

func TestWriter(t *testing.T) {
	n := loaded(t)
	ctx := context.Background()
	w := telemetry.NewWriter(n.Store)
	changed := time.Unix(1700000000, 0)
	snap := &telemetry.Snapshot{
		Paths: map[string]telemetry.Path{
			"hq-mpls--branch-1-mpls": {Health: "UP", Latency: 12345 * time.Microsecond, Jitter: 678 * time.Microsecond, Loss: 1.25, Bandwidth: 50000, LastChange: changed, ProbesSent: 10, ProbesReceived: 9, TxPackets: 3, TxBytes: 300},
			"no-such-path":           {Health: "DOWN"},
		},
		Policies: map[string]telemetry.Policy{"voice-sip": {ActivePath: "hq-mpls--branch-1-mpls", PacketsMatched: 5, BytesMatched: 500, ActiveFlows: 1}},
		Flows: []telemetry.Flow{{Protocol: 17, Src: netip.MustParseAddrPort("10.1.0.2:4000"), Dst: netip.MustParseAddrPort("10.2.0.2:5060"),
			Policy: "voice-sip", Path: "hq-mpls--branch-1-mpls", Packets: 5, Bytes: 500, FirstSeen: changed, LastSeen: changed.Add(time.Second)}},
		Endpoints: []telemetry.Endpoint{{Site: "hq", Name: "mpls", Up: true}},
	}
	if err := w.Write(ctx, snap); err != nil {
		t.Fatal(err)
	}
	p := leaves(t, n, "/paths/path[name=hq-mpls--branch-1-mpls]/state")
	base := "/paths/path[name=hq-mpls--branch-1-mpls]/state/"
	checks := map[string]func(*gpb.TypedValue) bool{
		"health-status": func(v *gpb.TypedValue) bool { return v.GetStringVal() == "UP" },
		"latency":       func(v *gpb.TypedValue) bool { return v.GetUintVal() == 12345 },
		"jitter":        func(v *gpb.TypedValue) bool { return v.GetUintVal() == 678 },
		"loss": func(v *gpb.TypedValue) bool {
			d := v.GetDecimalVal()
			return d.GetDigits() == 1250 && d.GetPrecision() == 3
		},
		"bandwidth":                func(v *gpb.TypedValue) bool { return v.GetUintVal() == 50000 },
		"last-change":              func(v *gpb.TypedValue) bool { return v.GetUintVal() == uint64(changed.UnixNano()) },
		"counters/probes-received": func(v *gpb.TypedValue) bool { return v.GetUintVal() == 9 },
		"counters/tx-bytes":        func(v *gpb.TypedValue) bool { return v.GetUintVal() == 300 },
	}
	for leaf, ok := range checks {
		if v := p[base+leaf]; v == nil || !ok(v) {
			t.Errorf("%s%s = %v", base, leaf, v)
		}
	}
	if got := leaves(t, n, "/paths/path[name=no-such-path]"); len(got) != 0 {
		t.Errorf("measured state written for a path that is not configured: %v", got)
	}
	if v := leaves(t, n, "/policies/policy[name=voice-sip]/state/active-path")["/policies/policy[name=voice-sip]/state/active-path"]; v.GetStringVal() != "hq-mpls--branch-1-mpls" {
		t.Errorf("active-path = %v", v)
	}
	flows := leaves(t, n, "/flows")
	fbase := "/flows/flow[protocol=17][source-address=10.1.0.2][source-port=4000][destination-address=10.2.0.2][destination-port=5060]/state/"
	if v := flows[fbase+"packets"]; v.GetUintVal() != 5 {
		t.Errorf("flow packets = %v (flows: %v)", v, flows)
	}
	if v := leaves(t, n, "/sites/site[name=hq]/endpoints/endpoint[name=mpls]/state/oper-status"); len(v) != 1 {
		t.Errorf("oper-status: %v", v)
	}

	// Only what changed is written; what is left out is deleted. A reader
	// of the feed says what it reads: the flow table is published only
	// while one wants it.
	_, done := n.Publisher.Want([][]*gpb.PathElem{{{Name: "paths"}}, {{Name: "flows"}}})
	defer done()
	var changes int
	// The feed is published after the store commits: start after the
	// store's last commit, not the feed's.
	var before uint64
	if err := n.Store.View(func(seq uint64, _ store.Reader) error { before = seq; return nil }); err != nil {
		t.Fatal(err)
	}
	snap.Paths["hq-mpls--branch-1-mpls"] = telemetry.Path{Health: "DOWN", Latency: 12345 * time.Microsecond, Jitter: 678 * time.Microsecond, Loss: 1.25, Bandwidth: 50000, LastChange: changed, ProbesSent: 11, ProbesReceived: 9, TxPackets: 3, TxBytes: 300}
	snap.Flows = nil
	if err := w.Write(ctx, snap); err != nil {
		t.Fatal(err)
	}
	cur := n.Feed.From(before)
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	commits, err := cur.Next(cctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range commits {
		changes += len(c.Changes)
	}
	// health-status, probes-sent and the flow's 11 leaves.
	if changes != 13 {
		t.Errorf("second write changed %d leaves, want 13", changes)
	}
	if got := leaves(t, n, "/flows"); len(got) != 0 {
		t.Errorf("expired flow still served: %v", got)
	}

	// A new writer (a restarted node) clears a stale flow table.
	if err := w.Write(ctx, &telemetry.Snapshot{Flows: []telemetry.Flow{{Protocol: 6, Src: netip.MustParseAddrPort("[2001:db8::1]:1"), Dst: netip.MustParseAddrPort("[2001:db8::2]:2"), Policy: "bulk"}}}); err != nil {
		t.Fatal(err)
	}
	if err := telemetry.NewWriter(n.Store).Write(ctx, &telemetry.Snapshot{}); err != nil {
		t.Fatal(err)
	}
	if got := leaves(t, n, "/flows"); len(got) != 0 {
		t.Errorf("a new writer left an earlier run's flows: %v", got)
	}
	for _, p := range []string{"/policies/policy[name=voice-sip]/state/counters", "/paths/path[name=hq-mpls--branch-1-mpls]/state/health-status",
		"/sites/site[name=hq]/endpoints/endpoint[name=mpls]/state/oper-status"} {
		if got := leaves(t, n, p); len(got) != 0 {
			t.Errorf("a new writer left an earlier run's %s: %v", p, got)
		}
	}
	if got := leaves(t, n, "/policies/policy[name=voice-sip]/state/priority"); len(got) != 1 {
		t.Errorf("a new writer's clean-up touched configuration mirrors: %v", got)
	}

	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := leaves(t, n, "/policies/policy[name=voice-sip]/state/counters"); len(got) != 0 {
		t.Errorf("Close left measured leaves: %v", got)
	}
}

// TestFlowChangesAreLeaves: a flow is one packed key in the store, but a
// Get serves its leaves, and a rewrite publishes only the leaves that
// changed (a collector subscribed to /flows gets packets and last-seen, not
// all eleven).
func TestFlowChangesAreLeaves(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx := context.Background()
	w := telemetry.NewWriter(n.Store)
	first := time.Unix(1700000000, 0)
	f := telemetry.Flow{Protocol: 6, Src: netip.MustParseAddrPort("10.1.0.2:40000"), Dst: netip.MustParseAddrPort("10.2.0.2:443"),
		Policy: "bulk", Packets: 10, Bytes: 1000, FirstSeen: first, LastSeen: first}
	if err := w.Write(ctx, &telemetry.Snapshot{Flows: []telemetry.Flow{f}}); err != nil {
		t.Fatal(err)
	}
	base := "/flows/flow[protocol=6][source-address=10.1.0.2][source-port=40000][destination-address=10.2.0.2][destination-port=443]/state/"
	got := leaves(t, n, "/flows")
	_, done := n.Publisher.Want([][]*gpb.PathElem{{{Name: "flows"}}}) // the flow table reaches the feed only while wanted
	defer done()
	if len(got) != 10 || got[base+"bytes"].GetUintVal() != 1000 || got[base+"policy"].GetStringVal() != "bulk" {
		t.Fatalf("flow leaves %v; want the 10 set (no path), bytes 1000, policy bulk", got)
	}
	var before uint64
	if err := n.Store.View(func(seq uint64, _ store.Reader) error { before = seq; return nil }); err != nil {
		t.Fatal(err)
	}
	f.Packets, f.LastSeen = 11, first.Add(time.Second)
	if err := w.Write(ctx, &telemetry.Snapshot{Flows: []telemetry.Flow{f}}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	commits, err := n.Feed.From(before).Next(cctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, c := range commits {
		for _, ch := range c.Changes {
			changed = append(changed, string(ch.Key[len(ch.Key)-len("last-seen\x00"):]))
		}
	}
	if len(changed) != 2 {
		t.Errorf("rewrite changed %q; want packets and last-seen alone", changed)
	}
	if got := leaves(t, n, base+"packets"); got[base+"packets"].GetUintVal() != 11 {
		t.Errorf("Get of the packets leaf: %v, want 11", got)
	}
}
