package main_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/patronus-sdwan/patronus/dataplane/impair"
	"github.com/patronus-sdwan/patronus/tools/lab/topo"
	"github.com/patronus-sdwan/patronus/tools/lab/traffic"
)

// labNode is a patronusd serving one site of the lab, inside that site's
// router namespace, reached over the lab's management network.
type labNode struct {
	t      *testing.T
	lab    *topo.Topology
	site   topo.Site
	dir    string
	join   string
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *lockedBuffer
	conn   *grpc.ClientConn
	client gpb.GNMIClient
}

func (n *labNode) addr() string { return n.site.Mgmt().String() + ":9339" }

func (n *labNode) start() {
	t := n.t
	m := n.site.Mgmt().String()
	args := []string{"netns", "exec", n.lab.Router(n.site), patronusdBin, "--insecure", "--insecure-non-loopback-dangerous", "--node-name", n.site.Name, "--site", n.site.Name,
		"--data-dir", n.dir, "--listen", m + ":9339", "--http", m + ":9341", "--raft-listen", m + ":9340",
		"--admin-password-file", adminPasswordFile}
	if n.join != "" {
		args = append(args, "--join", n.join)
	}
	n.stderr = &lockedBuffer{}
	n.cmd = exec.Command("ip", args...)
	n.cmd.Stderr, n.cmd.Stdout = n.stderr, n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting patronusd for %s: %v", n.site.Name, err)
	}
	done := make(chan struct{})
	n.done = done
	go func() { n.cmd.Wait(); close(done) }()
	if n.conn == nil {
		conn, err := grpc.NewClient(n.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminCreds),
			grpc.WithContextDialer(topo.Dialer(n.lab.MgmtNS())))
		if err != nil {
			t.Fatal(err)
		}
		n.conn, n.client = conn, gpb.NewGNMIClient(conn)
	}
}

// stop sends sig and waits for the process to end.
func (n *labNode) stop(sig syscall.Signal) {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		n.t.Errorf("patronusd %s did not stop within 15s of %v", n.site.Name, sig)
	}
}

func (n *labNode) get(path string) (*gpb.TypedValue, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := n.client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{mustPath(path)}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, err
	}
	for _, nt := range resp.GetNotification() {
		for _, u := range nt.GetUpdate() {
			return u.GetVal(), nil
		}
	}
	return nil, fmt.Errorf("%s: no value", path)
}

func (n *labNode) str(path string) string {
	v, err := n.get(path)
	if err != nil {
		return ""
	}
	return v.GetStringVal()
}

func (n *labNode) uint(path string) uint64 {
	v, err := n.get(path)
	if err != nil {
		return 0
	}
	return v.GetUintVal()
}

func mustPath(s string) *gpb.Path {
	p, err := pathNoT(s)
	if err != nil {
		panic(err)
	}
	return p
}

// waitFor polls cond every 20 ms until it holds or timeout passes, and
// returns how long that took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// ownRules lists the policy-routing rules Patronus installed in ns.
func ownRules(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns, "rule", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip rule: %v: %s", err, out)
	}
	var own []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "9000:") {
			own = append(own, strings.TrimSpace(l))
		}
	}
	return own
}

const (
	mplsPath = "hq-mpls--branch-1-mpls"
	inetPath = "hq-inet--branch-1-inet"
)

func policyState(name, leaf string) string {
	return "/policies/policy[name=" + name + "]/state/" + leaf
}

func pathState(name, leaf string) string {
	return "/paths/path[name=" + name + "]/state/" + leaf
}

// TestLab runs scenario 1 on the lab of scenario 3: three sites, each
// served by a patronusd (one cluster) in its own router namespace, with
// traffic between LAN hosts through a wan namespace.
func TestLab(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root: it builds network namespaces and loads eBPF programs")
	}
	ctx := context.Background()
	lab, err := topo.Build(ctx, fmt.Sprintf("pt%04x-", rand.IntN(0x10000)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
	})
	nodes := map[string]*labNode{}
	for i, s := range topo.Sites {
		n := &labNode{t: t, lab: lab, site: s, dir: t.TempDir()}
		if i > 0 {
			n.join = nodes["hq"].addr()
		}
		nodes[s.Name] = n
		n.start()
		t.Cleanup(func() {
			n.stop(syscall.SIGKILL)
			n.conn.Close()
			if t.Failed() {
				t.Logf("patronusd %s:\n%s", n.site.Name, n.stderr.String())
			}
		})
	}
	hq, b1 := nodes["hq"], nodes["branch-1"]
	waitFor(t, 30*time.Second, "a cluster of the three sites", func() bool {
		for _, n := range nodes {
			ms, err := members(ctxT(t, 2*time.Second), n.client)
			if err != nil || len(ms) != 3 {
				return false
			}
		}
		return true
	})

	// Scenario 1 with the lab's wiring, probing every 50 ms, sampling the
	// stats history every second.
	req := labScenario(t)
	for _, p := range []string{mplsPath, inetPath} {
		req.Update = append(req.Update, &gpb.Update{Path: mustPath("/paths/path[name=" + p + "]/config/probe-interval"), Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 50}}})
	}
	req.Update = append(req.Update, &gpb.Update{Path: mustPath("/system/stats-history/config/interval"), Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 1}}})
	if _, err := b1.client.Set(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatalf("loading scenario 1: %v", err)
	}
	took := waitFor(t, 15*time.Second, "hq's paths to branch-1 UP", func() bool {
		return hq.str(pathState(mplsPath, "health-status")) == "UP" && hq.str(pathState(inetPath, "health-status")) == "UP"
	})
	t.Logf("hq's paths to branch-1 were UP %v after the config", took.Round(time.Millisecond))
	if got := hq.str(policyState("voice-sip", "active-path")); got != mplsPath {
		t.Fatalf("voice-sip steers onto %q, want %s", got, mplsPath)
	}
	if got := hq.str("/sites/site[name=hq]/endpoints/endpoint[name=mpls]/state/oper-status"); got != "UP" {
		t.Errorf("hq mpls oper-status %q, want UP", got)
	}
	hqHost, b1Host := lab.LANHost(topo.Sites[0]), lab.LANHost(topo.Sites[1])
	b1Addr := topo.Sites[1].Host()

	t.Run("counters", func(t *testing.T) {
		const n = 200
		// Voice signalling: steered onto MPLS, every datagram counted and
		// delivered.
		sip := sendBurst(t, hqHost, b1Host, netip.AddrPortFrom(b1Addr, 5060), n, 0)
		if sip != n {
			t.Errorf("%d of %d voice-sip datagrams arrived at branch-1", sip, n)
		}
		video := sendBurst(t, hqHost, b1Host, netip.AddrPortFrom(b1Addr, 3478), n/2, 0)
		if video != n/2 {
			t.Errorf("%d of %d video datagrams arrived", video, n/2)
		}
		// Telnet is dropped at hq: nothing reaches branch-1.
		l, err := traffic.ListenTCP(b1Host, netip.AddrPortFrom(b1Addr, 23))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan bool, 1)
		go func() {
			c, err := l.Accept()
			accepted <- err == nil
			if c != nil {
				c.Close()
			}
		}()
		cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		c, err := traffic.DialTCP(cctx, hqHost, netip.AddrPortFrom(b1Addr, 23), 0)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("a telnet connection got through the DROP policy")
		}
		waitFor(t, 5*time.Second, "policy counters", func() bool {
			return hq.uint(policyState("voice-sip", "counters/packets-matched")) == n &&
				hq.uint(policyState("video", "counters/packets-matched")) == n/2 &&
				hq.uint(policyState("block-telnet", "counters/packets-matched")) >= 1
		})
		mpls, inet := hq.uint(pathState(mplsPath, "counters/tx-packets")), hq.uint(pathState(inetPath, "counters/tx-packets"))
		events := eventTypes(t, hq)
		if events["FAILOVER"] {
			// Nothing impairs a path yet: a failover now means the machine
			// stalled the probes long enough to take a path DOWN (3 × 50 ms),
			// and some datagrams rightly took the other path.
			t.Logf("a path changed under load during the burst (events %v): %d on MPLS, %d on the Internet", events, mpls, inet)
			if mpls+inet != n+n/2 {
				t.Errorf("%d + %d datagrams counted on the paths, want %d", mpls, inet, n+n/2)
			}
		} else {
			if mpls != n {
				t.Errorf("%s tx-packets = %d, want the %d voice-sip datagrams", mplsPath, mpls, n)
			}
			if inet != n/2 {
				t.Errorf("%s tx-packets = %d, want the %d video datagrams", inetPath, inet, n/2)
			}
		}
		if got := hq.uint(policyState("voice-sip", "counters/bytes-matched")); got < n*(28+100) {
			t.Errorf("voice-sip bytes-matched = %d, too few for %d datagrams", got, n)
		}
		select {
		case ok := <-accepted:
			if ok {
				t.Errorf("branch-1 accepted a telnet connection")
			}
		default:
		}
		// The flow table lists the voice flow on its path.
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		resp, err := hq.client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{mustPath("/flows/flow[destination-port=5060]/state/path")}, Encoding: gpb.Encoding_PROTO})
		if err != nil {
			t.Fatalf("reading the voice flow: %v", err)
		}
		// After a failover under load (above) the flow may be on the
		// Internet path, where the failover steered it.
		found := false
		for _, nt := range resp.GetNotification() {
			for _, u := range nt.GetUpdate() {
				p := u.GetVal().GetStringVal()
				found = found || p == mplsPath || events["FAILOVER"] && p == inetPath
			}
		}
		if !found {
			t.Errorf("no flow to port 5060 on %s in /flows (failover under load: %v): %v", mplsPath, events["FAILOVER"], resp)
		}
	})

	var drop *impair.Dropper
	hqMPLS, _ := topo.Sites[0].Endpoint("mpls")
	idx, err := topo.Ifindex(lab.WAN(), hqMPLS.WANIface())
	if err != nil {
		t.Fatal(err)
	}
	// The dropper sits on the wan side of hq's MPLS link, on packets
	// arriving from hq: data and probes alike.
	if err := topo.InNS(lab.WAN(), func() (err error) {
		drop, err = impair.Attach(idx, false)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drop.Close() })

	t.Run("failover", func(t *testing.T) {
		const rate = 1000
		st, err := traffic.Start(traffic.StreamConfig{From: hqHost, To: b1Host, Dst: netip.AddrPortFrom(b1Addr, 40000), Rate: rate, Size: 160, DSCP: 46})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		if got := hq.str(policyState("voice-rtp", "active-path")); got != mplsPath {
			t.Errorf("before the failure voice-rtp is on %q", got)
		}
		failed := time.Now()
		if err := drop.SetLoss(1_000_000); err != nil {
			t.Fatal(err)
		}
		took := waitFor(t, 5*time.Second, "voice-rtp to fail over to the Internet path", func() bool {
			return hq.str(policyState("voice-rtp", "active-path")) == inetPath
		})
		t.Logf("voice-rtp moved to %s %v after MPLS failed (as seen through gNMI)", inetPath, took.Round(time.Millisecond))
		time.Sleep(time.Second)
		res, err := st.Stop(200 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("failover at 50 ms probes, 1000 pkt/s voice stream: %v (detection bound 3×50 ms + 50 ms = 200 ms)", res)
		if res.Received == 0 || res.Lost == res.Sent {
			t.Fatalf("the stream never got through: %v", res)
		}
		if res.LongestRunTime > 2*time.Second || res.LossDerived > 2*time.Second {
			t.Errorf("blackout %v: the stream did not move to the other path", res.LossDerived)
		}
		t.Logf("detection and failover seen by gNMI %v after the failure", time.Since(failed).Round(time.Millisecond))
		if got := hq.str(pathState(mplsPath, "health-status")); got != "DOWN" {
			t.Errorf("%s health %q under 100%% loss, want DOWN", mplsPath, got)
		}

		// Recovery: back on MPLS only after the hysteresis (5 good probes).
		recovered := time.Now()
		if err := drop.SetLoss(0); err != nil {
			t.Fatal(err)
		}
		back := waitFor(t, 10*time.Second, "voice-rtp back on MPLS", func() bool {
			return hq.str(policyState("voice-rtp", "active-path")) == mplsPath
		})
		t.Logf("failback %v after recovery", back.Round(time.Millisecond))
		if time.Since(recovered) < 5*50*time.Millisecond {
			t.Errorf("failback after %v, before 5 probes could prove the path", time.Since(recovered))
		}
		events := eventTypes(t, hq)
		for _, want := range []string{"PATH_DOWN", "FAILOVER", "PATH_UP"} {
			if !events[want] {
				t.Errorf("no %s event on hq (events: %v)", want, events)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		// The failover and the failback, and the probes lost meanwhile,
		// as hq's /metrics has them.
		dial := topo.Dialer(lab.MgmtNS())
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }}}
		var scrape string
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			var code int
			if code, scrape = httpGetWith(t, hc, hq.site.Mgmt().String()+":9341", "/metrics"); code != http.StatusOK {
				t.Fatalf("GET /metrics on hq: %d", code)
			}
			if v, ok := metricValue(scrape, `patronus_probe_path_health{path="`+mplsPath+`"}`); ok && v == 1 {
				break
			}
			if time.Since(start) > 5*time.Second {
				var lines []string
				for _, l := range strings.Split(scrape, "\n") {
					if strings.HasPrefix(l, "patronus_probe_") || strings.HasPrefix(l, "patronus_dataplane_") {
						lines = append(lines, l)
					}
				}
				t.Fatalf("hq's /metrics does not show %s UP within 5s:\n%s", mplsPath, strings.Join(lines, "\n"))
			}
		}
		for series, least := range map[string]float64{
			`patronus_dataplane_failovers_total`:                     2,
			`patronus_probe_sent_total{path="` + mplsPath + `"}`:     1,
			`patronus_probe_received_total{path="` + mplsPath + `"}`: 1,
			`patronus_probe_lost_total{path="` + mplsPath + `"}`:     3,
			`patronus_probe_sent_total{path="` + inetPath + `"}`:     1,
			`patronus_dataplane_collect_duration_seconds_count`:      1,
			`patronus_dataplane_orphaned_flow_packets_total`:         0,
			`patronus_dataplane_orphaned_flow_bytes_total`:           0,
		} {
			if got, ok := metricValue(scrape, series); !ok || got < least {
				t.Errorf("%s = %v (present: %v), want at least %v", series, got, ok, least)
			}
		}
	})

	t.Run("brownout", func(t *testing.T) {
		if err := drop.SetLoss(50_000); err != nil { // 5%, above voice's 1% SLA
			t.Fatal(err)
		}
		defer drop.SetLoss(0)
		took := waitFor(t, 20*time.Second, "voice-sip to leave the lossy MPLS path", func() bool {
			return hq.str(policyState("voice-sip", "active-path")) == inetPath
		})
		t.Logf("5%% loss on MPLS moved voice after %v; MPLS is %s at %s loss", took.Round(time.Millisecond),
			hq.str(pathState(mplsPath, "health-status")), lossOf(hq, mplsPath))
		if got := hq.str(policyState("bulk", "active-path")); got != inetPath {
			t.Errorf("bulk moved to %q", got)
		}
		if got := hq.str(pathState(mplsPath, "health-status")); got == "DOWN" {
			t.Errorf("5%% loss took %s DOWN, want DEGRADED", mplsPath)
		}
	})

	t.Run("history", func(t *testing.T) {
		// The counters of the counters step are in the history a second later.
		time.Sleep(1500 * time.Millisecond)
		st, err := hq.client.Subscribe(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		err = st.Send(&gpb.SubscribeRequest{
			Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
				Subscription: []*gpb.Subscription{{Path: mustPath(policyState("voice-sip", "counters/packets-matched"))}}}},
			Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{Request: &gnmi_ext.History_SnapshotTime{SnapshotTime: time.Now().UnixNano()}}}}},
		})
		if err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if v := r.GetUpdate().GetUpdate(); len(v) != 1 || v[0].GetVal().GetUintVal() != 200 {
			t.Errorf("history snapshot of voice-sip packets-matched: %v, want 200", r)
		}
	})

	t.Run("crash and clean stop", func(t *testing.T) {
		router := lab.Router(topo.Sites[0])
		before := ownRules(t, router)
		if len(before) != 4 { // one per local path of hq, all IPv4
			t.Errorf("hq has %d rules before the crash, want 4: %v", len(before), before)
		}
		boot := hq.uint("/system/state/boot-time")
		hq.stop(syscall.SIGKILL)
		if got := ownRules(t, router); len(got) == 0 {
			t.Errorf("the crash left no rules: the restart check would prove nothing")
		}
		hq.start()
		waitFor(t, 20*time.Second, "the restarted hq serving", func() bool {
			b := hq.uint("/system/state/boot-time")
			return b != 0 && b != boot
		})
		// What the crashed run measured is gone; the new run measures anew.
		if got := hq.str(pathState(mplsPath, "health-status")); got == "DOWN" {
			t.Errorf("the restarted hq reports %s %s", mplsPath, got)
		}
		waitFor(t, 20*time.Second, "hq's MPLS path UP again", func() bool {
			return hq.str(pathState(mplsPath, "health-status")) == "UP"
		})
		if after := ownRules(t, router); len(after) != len(before) {
			t.Errorf("after a crash and restart hq has %d rules, before %d:\n%v\n%v", len(after), len(before), after, before)
		}
		if got := sendBurst(t, hqHost, b1Host, netip.AddrPortFrom(b1Addr, 5061), 50, 0); got != 50 {
			t.Errorf("after the restart %d of 50 voice datagrams arrived", got)
		}
		waitFor(t, 5*time.Second, "the restarted hq counting voice", func() bool {
			return hq.uint(policyState("voice-sip", "counters/packets-matched")) == 50
		})
		hq.stop(syscall.SIGTERM)
		if code := hq.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("patronusd exited %d after SIGTERM", code)
		}
		if got := ownRules(t, router); len(got) != 0 {
			t.Errorf("a clean stop left rules: %v", got)
		}
		out, _ := exec.Command("ip", "-n", router, "route", "show", "table", "all", "proto", "80").CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("a clean stop left routes:\n%s", out)
		}
	})
}

func lossOf(n *labNode, path string) string {
	v, err := n.get(pathState(path, "loss"))
	if err != nil {
		return "?"
	}
	d := v.GetDecimalVal()
	return fmt.Sprintf("%d.%03d%%", d.GetDigits()/1000, d.GetDigits()%1000)
}

func eventTypes(t *testing.T, n *labNode) map[string]bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := n.client.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{mustPath("/system/events/event/state/type")}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatalf("reading events: %v", err)
	}
	out := map[string]bool{}
	for _, nt := range resp.GetNotification() {
		for _, u := range nt.GetUpdate() {
			out[u.GetVal().GetStringVal()] = true
		}
	}
	return out
}

// sendBurst sends count datagrams of one flow from ns from to dst in ns to
// and returns how many arrived.
func sendBurst(t *testing.T, from, to string, dst netip.AddrPort, count int, dscp uint8) int {
	t.Helper()
	rx, err := traffic.ListenUDP(to, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var recv traffic.Receiver
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); recv.Run(ctx, rx) }()
	tx, err := traffic.DialUDP(from, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	if dscp != 0 {
		if err := traffic.SetDSCP(tx, dscp); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 100)
	for i := range count {
		buf[7] = byte(i) // a sequence number, for the receiver's header
		buf[6] = byte(i >> 8)
		if _, err := tx.Write(buf); err != nil {
			t.Fatalf("sending datagram %d: %v", i, err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	deadline := time.Now().Add(2 * time.Second)
	for recv.Count() < count && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // anything more would be a duplicate
	cancel()
	<-done
	return recv.Count()
}

// labScenario returns a Set that loads scenario 1 with the lab's wiring.
func labScenario(t *testing.T) *gpb.SetRequest {
	t.Helper()
	req := &gpb.SetRequest{}
	for _, part := range []string{"sites", "paths", "policies"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "scenario1", part+".json"))
		if err != nil {
			t.Fatal(err)
		}
		req.Replace = append(req.Replace, &gpb.Update{Path: mustPath("/" + part), Val: ietf(b)})
	}
	req.Update = append(req.Update, &gpb.Update{Path: mustPath("/sites"), Val: ietf(topo.Wiring())})
	return req
}
