package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/metrics"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

// sample returns the value of the series of metric name whose labels
// include the given name/value pairs (a histogram's sample count), and
// whether there is one.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// waitFor polls the metric until it has the value want (2 s).
func waitFor(t *testing.T, g prometheus.Gatherer, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, _ := sample(t, g, name, labels...)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func str(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

func TestRequests(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	reg := n.Metrics.Registry()
	ctx := context.Background()
	if _, err := n.Client.Capabilities(ctx, &gpb.CapabilityRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{
		Path: nodetest.Path(t, "/sites/site[name=hq]/config/location"), Val: str("Lisbon")}}}); err != nil {
		t.Fatal(err)
	}
	_, err := n.Client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/sites/site[name=nowhere]")}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Get of a missing site: %v, want NOT_FOUND", err)
	}

	// Every gNMI method is exported from the start with its OK count; other
	// codes appear once they happen.
	want := `
# HELP patronus_grpc_requests_total gRPC requests finished, by service, method and the status code the client got.
# TYPE patronus_grpc_requests_total counter
patronus_grpc_requests_total{code="OK",method="Capabilities",service="gnmi.gNMI"} 1
patronus_grpc_requests_total{code="OK",method="Get",service="gnmi.gNMI"} 0
patronus_grpc_requests_total{code="NotFound",method="Get",service="gnmi.gNMI"} 1
patronus_grpc_requests_total{code="OK",method="Set",service="gnmi.gNMI"} 1
patronus_grpc_requests_total{code="OK",method="Subscribe",service="gnmi.gNMI"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "patronus_grpc_requests_total"); err != nil {
		t.Error(err)
	}
	for method, count := range map[string]float64{"Capabilities": 1, "Get": 1, "Set": 1} {
		if got, _ := sample(t, reg, "patronus_grpc_request_duration_seconds", "method", method); got != count {
			t.Errorf("latency histogram of %s: %v samples, want %v", method, got, count)
		}
	}
	if got, ok := sample(t, reg, "patronus_store_disk_usage_bytes"); !ok || got <= 0 {
		t.Errorf("patronus_store_disk_usage_bytes = %v (present %v), want > 0", got, ok)
	}
	if got, _ := sample(t, reg, "patronus_node_ready"); got != 1 {
		t.Errorf("patronus_node_ready = %v, want 1", got)
	}
	// Without replication there is no Raft state to export.
	if n, err := testutil.GatherAndCount(reg, "patronus_raft_term", "patronus_raft_state"); err != nil || n != 0 {
		t.Errorf("Raft metrics of a node without replication: %d series (%v), want none", n, err)
	}
	if err := n.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	n.Stop()
	if err := n.Ready(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Ready after Close: %v, want the store closed", err)
	}
}

// TestSubscribe counts what an ON_CHANGE subscription is sent, and the
// changes it is spared: the subscriber reads nothing while its initial
// sync fills the flow-control windows, three Sets of one leaf pile up in the
// feed behind it, and it then gets only the last.
func TestSubscribe(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	reg := n.Metrics.Registry()
	ctx := context.Background()
	// About 2 MiB of initial sync: far more than gRPC's windows.
	type site struct {
		Name   string            `json:"name"`
		Config map[string]string `json:"config"`
	}
	var sites []site
	long := strings.Repeat("x", 4000)
	for i := range 250 {
		name := fmt.Sprintf("s%03d", i)
		sites = append(sites, site{Name: name, Config: map[string]string{"name": name, "description": long}})
	}
	doc, _ := json.Marshal(map[string]any{"site": sites})
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/sites"), Val: nodetest.JSONIETF(doc)}}}); err != nil {
		t.Fatal(err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Fixed windows: no BDP estimation growing them to hold the sync.
	stream, err := n.Dial(t, grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16)).Subscribe(sctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON_IETF,
		Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_ON_CHANGE}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, reg, 1, "patronus_grpc_streams_active", "method", "Subscribe")
	// The sync's first notification: from here on the sync's commit is
	// fixed, so the three Sets below all follow it, while the rest of the
	// sync waits on the windows.
	if resp, err := stream.Recv(); err != nil || resp.GetSyncResponse() {
		t.Fatalf("first response: %v, %v; want the start of the sync", resp, err)
	}
	leaf := nodetest.Path(t, "/sites/site[name=s000]/config/location")
	for _, v := range []string{"a", "b", "c"} {
		if _, err := n.Client.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: leaf, Val: str(v)}}}); err != nil {
			t.Fatal(err)
		}
	}
	synced := false
	var locations []string
	for len(locations) == 0 || locations[len(locations)-1] != `"c"` {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v (locations so far %v)", err, locations)
		}
		if resp.GetSyncResponse() {
			synced = true
			continue
		}
		for _, u := range resp.GetUpdate().GetUpdate() {
			if synced && u.GetPath().GetElem()[len(u.GetPath().GetElem())-1].GetName() == "location" {
				locations = append(locations, string(u.GetVal().GetJsonIetfVal()))
			}
		}
	}
	// Each Set writes the leaf and its state mirror: each of those six
	// writes was either sent or coalesced into a later one, depending on
	// how many commits the session read at once.
	if got, _ := sample(t, reg, "patronus_subscribe_updates_coalesced_total"); got != float64(6-len(locations)) {
		t.Errorf("patronus_subscribe_updates_coalesced_total = %v, want %d: 6 writes, %d sent (%v)", got, 6-len(locations), len(locations), locations)
	}
	if got, _ := sample(t, reg, "patronus_subscribe_updates_sent_total"); got < 1000 {
		t.Errorf("patronus_subscribe_updates_sent_total = %v, want at least the 1,000 leaves of the sync", got)
	}
	if got, _ := sample(t, reg, "patronus_subscribe_notifications_sent_total"); got < 2 {
		t.Errorf("patronus_subscribe_notifications_sent_total = %v, want at least 2", got)
	}
	if got, _ := sample(t, reg, "patronus_subscribe_streams"); got != 1 {
		t.Errorf("patronus_subscribe_streams = %v, want 1", got)
	}
	// The subscriber kept up: exported, and zero.
	if got, ok := sample(t, reg, "patronus_subscribe_catch_ups_total"); !ok || got != 0 {
		t.Errorf("patronus_subscribe_catch_ups_total = %v (exported: %v), want 0", got, ok)
	}
	cancel()
	waitFor(t, reg, 0, "patronus_grpc_streams_active", "method", "Subscribe")
	waitFor(t, reg, 0, "patronus_subscribe_streams")
	waitFor(t, reg, 1, "patronus_grpc_requests_total", "method", "Subscribe", "code", "Canceled")
}

func TestAuthRefusals(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Auth: &auth.Config{
		FailureDelay: time.Millisecond, MaxFailureDelay: time.Millisecond, UserRate: 0.001, UserBurst: 1,
	}})
	n.AddUser(t, "viewer", "VIEWER", "viewer-pw")
	reg := n.Metrics.Registry()
	ctx := context.Background()
	_, err := n.As(t, "viewer", "wrong").Capabilities(ctx, &gpb.CapabilityRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong password: %v, want UNAUTHENTICATED", err)
	}
	c := n.As(t, "viewer", "viewer-pw")
	if _, err := c.Capabilities(ctx, &gpb.CapabilityRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Capabilities(ctx, &gpb.CapabilityRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("second request over a burst of 1: %v, want RESOURCE_EXHAUSTED", err)
	}
	want := `
# HELP patronus_auth_failures_total Requests refused with UNAUTHENTICATED: no credentials, a wrong password or cluster secret, an unknown user, a client certificate naming no user.
# TYPE patronus_auth_failures_total counter
patronus_auth_failures_total 1
# HELP patronus_auth_rate_limited_total Requests refused with RESOURCE_EXHAUSTED by the limits: the user's or the client address's token bucket, the cap on a user's open streams, or a lockout after failed logins.
# TYPE patronus_auth_rate_limited_total counter
patronus_auth_rate_limited_total{reason="lockout"} 0
patronus_auth_rate_limited_total{reason="peer"} 0
patronus_auth_rate_limited_total{reason="streams"} 0
patronus_auth_rate_limited_total{reason="user"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "patronus_auth_failures_total", "patronus_auth_rate_limited_total"); err != nil {
		t.Error(err)
	}
	for code, count := range map[string]float64{"OK": 1, "Unauthenticated": 1, "ResourceExhausted": 1} {
		if got, _ := sample(t, reg, "patronus_grpc_requests_total", "method", "Capabilities", "code", code); got != count {
			t.Errorf("Capabilities answered %s: %v, want %v", code, got, count)
		}
	}
}

// TestLint checks every metric of a node against Prometheus's naming and
// help conventions.
func TestLint(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{Auth: &auth.Config{}})
	problems, err := testutil.GatherAndLint(n.Metrics.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "patronus_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// BenchmarkUnaryInterceptor is what the metrics interceptor adds to every
// unary RPC: a method lookup, two clock reads, a histogram observation and
// an atomic add.
func BenchmarkUnaryInterceptor(b *testing.B) {
	m := metrics.New()
	m.Known(gpb.GNMI_ServiceDesc)
	intercept := m.UnaryInterceptor()
	info := &grpc.UnaryServerInfo{FullMethod: "/gnmi.gNMI/Get"}
	handler := func(context.Context, any) (any, error) { return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := intercept(ctx, nil, info, handler); err != nil {
				b.Fatal(err)
			}
		}
	})
}
