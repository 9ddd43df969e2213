package main_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// httpGet fetches http://addr/p and returns the status code and the body.
func httpGet(t testing.TB, addr, p string) (int, string) {
	t.Helper()
	return httpGetWith(t, &http.Client{Timeout: 5 * time.Second}, addr, p)
}

// httpGetWith is httpGet with the client c.
func httpGetWith(t testing.TB, c *http.Client, addr, p string) (int, string) {
	t.Helper()
	resp, err := c.Get("http://" + addr + p)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, p, err)
	}
	return resp.StatusCode, string(b)
}

// metricValue finds the sample line of series (a metric name with its
// labels, as Prometheus's text format writes them) in a scrape.
func metricValue(scrape, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(scrape)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestMetricsAndHealth runs one daemon, writes and subscribes, and reads
// what its --http address says about it.
func TestMetricsAndHealth(t *testing.T) {
	d := start(t, "")
	for _, v := range []string{"a", "b"} {
		if err := setLeaf(ctxT(t, 10*time.Second), d.Client, path(t, "/sites/site[name=hq]/config/location"), strVal(v)); err != nil {
			t.Fatal(err)
		}
	}
	s := subscribe(t, d.Client, &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_JSON_IETF,
		Subscription: []*gpb.Subscription{sub(t, "/sites", gpb.SubscriptionMode_ON_CHANGE, 0)}})
	s.untilSync(t, 10*time.Second)

	code, scrape := httpGet(t, d.HTTP, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	want := map[string]float64{
		`patronus_grpc_requests_total{code="OK",method="Set",service="gnmi.gNMI"}`:       2,
		`patronus_grpc_request_duration_seconds_count{method="Set",service="gnmi.gNMI"}`: 2,
		`patronus_grpc_streams_active{method="Subscribe",service="gnmi.gNMI"}`:           1,
		`patronus_subscribe_streams`:                      1,
		`patronus_raft_state{state="leader"}`:             1,
		`patronus_raft_state{state="follower"}`:           0,
		`patronus_raft_leader_known`:                      1,
		`patronus_raft_members{suffrage="voter"}`:         1,
		`patronus_raft_members{suffrage="nonvoter"}`:      0,
		`patronus_raft_leader_changes_total`:              1,
		`patronus_raft_apply_lag_entries`:                 0,
		`patronus_node_ready`:                             1,
		`patronus_auth_failures_total`:                    0,
		`patronus_auth_rate_limited_total{reason="user"}`: 0,
		`patronus_store_write_failures_total`:             0,
		`patronus_raft_log_full`:                          0,
		`patronus_raft_log_reopens_total`:                 0,
	}
	for series, v := range want {
		if got, ok := metricValue(scrape, series); !ok || got != v {
			t.Errorf("%s = %v (present: %v), want %v", series, got, ok, v)
		}
	}
	for _, series := range []string{`patronus_subscribe_updates_sent_total`, `patronus_subscribe_notifications_sent_total`,
		`patronus_store_disk_usage_bytes`, `patronus_raft_commit_index`, `patronus_raft_term`, `go_goroutines`, `process_cpu_seconds_total`} {
		if got, ok := metricValue(scrape, series); !ok || got <= 0 {
			t.Errorf("%s = %v (present: %v), want > 0", series, got, ok)
		}
	}
	if strings.Contains(scrape, "patronus_probe_") || strings.Contains(scrape, "patronus_dataplane_") {
		t.Error("a node without --site exports dataplane metrics")
	}

	for p, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		if code, body := httpGet(t, d.HTTP, p); code != http.StatusOK || body != want {
			t.Errorf("GET %s: %d %q, want 200 %q", p, code, body, want)
		}
	}

	// gRPC's health service on the gNMI port, without credentials: the
	// node and gnmi.gNMI serve, a service it does not know is NOT_FOUND,
	// and gNMI itself still wants credentials.
	conn := dialNoCreds(t, d.Addr)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", "gnmi.gNMI"} {
		resp, err := hc.Check(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health Check %q: %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	if _, err := hc.Check(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{Service: "gnmi.gNOI"}); status.Code(err) != codes.NotFound {
		t.Errorf("health Check of an unknown service: %v, want NOT_FOUND", err)
	}
	if _, err := gpb.NewGNMIClient(conn).Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites")}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gNMI Get without credentials on the health check's connection: %v, want UNAUTHENTICATED", err)
	}
	// Watch streams, which ask no credentials either, are bounded (128).
	for i := range 128 {
		if st := nextHealth(t, watchHealth(t, d.Addr), 5*time.Second); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health Watch %d: %v, want SERVING", i+1, st)
		}
	}
	w, err := hc.Watch(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("health Watch 129: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// dialNoCreds connects to a plaintext gNMI port without credentials.
func dialNoCreds(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// watchHealth opens a health Watch of the node as a whole; its statuses
// arrive on the channel, which is closed when the stream ends.
func watchHealth(t testing.TB, addr string) <-chan healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := healthpb.NewHealthClient(dialNoCreds(t, addr)).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan healthpb.HealthCheckResponse_ServingStatus, 16)
	go func() {
		defer close(ch)
		for {
			resp, err := w.Recv()
			if err != nil {
				return
			}
			ch <- resp.GetStatus()
		}
	}()
	return ch
}

// nextHealth returns the next status a Watch sends, failing after d.
func nextHealth(t testing.TB, ch <-chan healthpb.HealthCheckResponse_ServingStatus, d time.Duration) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok {
			t.Fatal("the health Watch ended")
		}
		return st
	case <-time.After(d):
		t.Fatalf("no health status within %v", d)
	}
	return 0
}

// TestFollowerReadiness: a non-voter is ready once it follows the leader,
// and not once the only voter is gone.
func TestFollowerReadiness(t *testing.T) {
	nodes := startCluster(t, 1, 1)
	leader, edge := nodes[0], nodes[1]
	if code, body := httpGet(t, edge.http, "/readyz"); code != http.StatusOK {
		t.Errorf("a following non-voter's /readyz: %d %q, want 200", code, body)
	}
	_, scrape := httpGet(t, edge.http, "/metrics")
	for series, v := range map[string]float64{
		`patronus_raft_state{state="nonvoter"}`:      1,
		`patronus_raft_members{suffrage="voter"}`:    1,
		`patronus_raft_members{suffrage="nonvoter"}`: 1,
		`patronus_raft_leader_known`:                 1,
	} {
		if got, ok := metricValue(scrape, series); !ok || got != v {
			t.Errorf("non-voter: %s = %v (present: %v), want %v", series, got, ok, v)
		}
	}

	watch := watchHealth(t, edge.addr)
	if st := nextHealth(t, watch, 5*time.Second); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("a following non-voter's health Watch starts at %v, want SERVING", st)
	}

	leader.d.kill()
	// The Watch says so within a second of /readyz (the leader's loss is
	// noticed after an election timeout).
	if st := nextHealth(t, watch, 10*time.Second); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("the health Watch after the leader died: %v, want NOT_SERVING", st)
	}
	resp, err := healthpb.NewHealthClient(dialNoCreds(t, edge.addr)).Check(ctxT(t, 5*time.Second), &healthpb.HealthCheckRequest{Service: "gnmi.gNMI"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health Check without a leader: %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, edge.http, "/readyz")
		if code == http.StatusServiceUnavailable {
			if !strings.HasPrefix(body, "not ready: no leader known") || strings.Count(body, "\n") != 1 {
				t.Errorf("/readyz without a leader: %q, want one line saying no leader is known", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz of a non-voter whose leader is dead: still %d %q after 10s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := httpGet(t, edge.http, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz without a leader: %d %q, want 200: the process lives", code, body)
	}
}
