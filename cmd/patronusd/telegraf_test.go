package main_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

// The collector chain an operator copies from deploy/.
const (
	deployDir       = "../../deploy"
	telegrafConf    = deployDir + "/telegraf/telegraf.conf"
	prometheusConf  = deployDir + "/prometheus/prometheus.yml"
	dashboardJSON   = deployDir + "/grafana/dashboards/patronus.json"
	grafanaDSConfig = deployDir + "/grafana/provisioning/datasources/patronus.yaml"
	gnmicConf       = deployDir + "/gnmic/gnmic.yaml"
	telegrafModule  = "../../tools/telegraf"
)

// TestTelegraf runs the collector chain of deploy/ end to end, with the very
// files an operator copies: patronusd (TLS with its generated certificate,
// password login) → Telegraf with deploy/telegraf/telegraf.conf → Prometheus
// with deploy/prometheus/prometheus.yml. What Prometheus ends up holding is
// compared with gNMI Gets of the same leaves, and every query of the Grafana
// dashboard must parse and return data.
//
// The measured state is real: scenario 1 on the lab's network namespaces,
// with patronusd serving hq (--site hq, the node Telegraf subscribes to) and
// branch-1 (a non-voter, so that hq's probes to it are answered); branch-2
// runs nothing, so hq's paths to it go DOWN. A burst of voice and video from
// hq's LAN host gives the policies and flows their counters.
func TestTelegraf(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the collector chain reads state measured by patronusd --site in network namespaces: needs root")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not on PATH (Debian package prometheus; scripts/deps.sh installs it): %v", err)
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not on PATH (Debian package prometheus): %v", err)
	}
	if out, err := exec.Command(promtool, "check", "config", prometheusConf).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", prometheusConf, err, out)
	}
	telegraf := telegrafBinary(t)

	lab, err := topo.Build(context.Background(), fmt.Sprintf("tg%04x-", rand.IntN(0x10000)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Errorf("removing the lab: %v", err)
		}
	})
	mgmt := lab.MgmtNS()
	hqSite, b1Site := topo.Sites[0], topo.Sites[1]
	hqAddr := hqSite.Mgmt().String()

	hq := startChainNode(t, lab, hqSite)
	startChainNode(t, lab, b1Site, "--nonvoter", "--join", hqAddr+":9339")
	hqc := hq.dial(t, mgmt)
	waitFor(t, 30*time.Second, "branch-1 in hq's cluster", func() bool {
		ms, err := members(ctxT(t, 2*time.Second), hqc)
		return err == nil && len(ms) == 2
	})

	req := labScenario(t)
	if _, err := hqc.Set(ctxT(t, 10*time.Second), req); err != nil {
		t.Fatalf("loading scenario 1: %v", err)
	}
	// Telegraf logs in as a VIEWER: reading telemetry needs no more.
	const tgUser, tgPassword = "telegraf", "tg-viewer-7d2a"
	addUser(t, hqc, tgUser, "VIEWER", tgPassword)

	health := func(p string) string {
		v, _ := tgGetLeaf(hqc, pathState(p, "health-status"))
		return v.GetStringVal()
	}
	waitFor(t, 20*time.Second, "hq's paths to branch-1 UP and to branch-2 DOWN", func() bool {
		return health(mplsPath) == "UP" && health(inetPath) == "UP" && health("hq-inet--branch-2-inet") == "DOWN"
	})
	hqHost, b1Host := lab.LANHost(hqSite), lab.LANHost(b1Site)
	b1Addr := b1Site.Host()
	if got := sendBurst(t, hqHost, b1Host, netip.AddrPortFrom(b1Addr, 5060), 200, 0); got != 200 {
		t.Errorf("%d of 200 voice-sip datagrams arrived", got)
	}
	if got := sendBurst(t, hqHost, b1Host, netip.AddrPortFrom(b1Addr, 3478), 100, 0); got != 100 {
		t.Errorf("%d of 100 video datagrams arrived", got)
	}
	waitFor(t, 5*time.Second, "hq counting the burst", func() bool {
		v, _ := tgGetLeaf(hqc, policyState("voice-sip", "counters/packets-matched"))
		w, _ := tgGetLeaf(hqc, policyState("video", "counters/packets-matched"))
		return v.GetUintVal() == 200 && w.GetUintVal() == 100
	})
	// The voice flow as gNMI shows it now: it leaves /flows once idle
	// for 30 s, but its last sample stays in Telegraf's /metrics for a
	// minute after that, so the comparison below may outlive it in the tree.
	var voice stateEntry
	waitFor(t, 5*time.Second, "the voice flow in hq's /flows", func() bool {
		flows, err := tgState(hqc, "/flows/flow/state")
		if err != nil {
			return false
		}
		i := slices.IndexFunc(flows, func(f stateEntry) bool { return f.keys["destination-port"] == "5060" })
		if i >= 0 {
			voice = flows[i]
		}
		// Its path is MPLS unless a loaded machine's jitter breached
		// voice's SLA meanwhile; either way Prometheus must say the same.
		return i >= 0 && voice.uint("packets") == 200 && voice.str("path") != ""
	})

	// Telegraf and Prometheus run in the management namespace, where hq's
	// gNMI and HTTP addresses are; each listens on that namespace's own
	// loopback, at the addresses deploy/ names.
	dir := t.TempDir()
	debugConf := filepath.Join(dir, "debug.conf")
	lines := filepath.Join(dir, "telegraf.out")
	// A second config file: what Telegraf hands its outputs, as line
	// protocol, for the failure log.
	if err := os.WriteFile(debugConf, []byte("[[outputs.file]]\n  files = [\""+lines+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	chained := time.Now()
	startInNS(t, mgmt, "telegraf", []string{
		"PATRONUS_ADDR=" + hqAddr + ":9339",
		"PATRONUS_USER=" + tgUser,
		"PATRONUS_PASSWORD=" + tgPassword,
		"PATRONUS_TLS_CA=" + filepath.Join(hq.dir, "tls", "server.crt"),
		"PATRONUS_SAMPLE_INTERVAL=1s",
		"TELEGRAF_PROMETHEUS_LISTEN=127.0.0.1:9273",
	}, telegraf, "--strict-env-handling", "--config", telegrafConf, "--config", debugConf)

	b, err := os.ReadFile(prometheusConf)
	if err != nil {
		t.Fatal(err)
	}
	promConf := string(b)
	for _, r := range [][2]string{
		{"scrape_interval: 10s", "scrape_interval: 1s"},
		{"evaluation_interval: 10s", "evaluation_interval: 1s"},
		{`"127.0.0.1:9341"`, `"` + hqAddr + `:9341"`},
	} {
		if strings.Count(promConf, r[0]) != 1 {
			t.Fatalf("%s does not hold %q exactly once: the test cannot derive its config from it", prometheusConf, r[0])
		}
		promConf = strings.Replace(promConf, r[0], r[1], 1)
	}
	promFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promFile, []byte(promConf), 0o644); err != nil {
		t.Fatal(err)
	}
	startInNS(t, mgmt, "prometheus", nil, promBin, "--config.file="+promFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address=127.0.0.1:9090", "--log.level=warn")
	prom := newPromAPI(mgmt, "http://127.0.0.1:9090")
	waitFor(t, 30*time.Second, "Prometheus ready", func() bool { return prom.ready() })
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := os.ReadFile(lines)
			t.Logf("what Telegraf wrote (last lines):\n%s", tail(string(out), 40))
		}
	})

	// Everything Prometheus holds must match a Get of the same leaves,
	// taken afresh on every try: a value read from the tree between two
	// samples converges within a sample interval plus a scrape.
	var last error
	for deadline := time.Now().Add(60 * time.Second); ; {
		if last = compareChain(hqc, prom, hqAddr, voice); last == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus does not hold what gNMI reads after 60s: %v", last)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("Prometheus agreed with gNMI %v after Telegraf started", time.Since(chained).Round(100*time.Millisecond))
	if names, err := prom.query(context.Background(), `count by (__name__) ({job="telegraf", __name__=~"patronus_.*"})`); err == nil {
		var list []string
		for _, n := range names {
			list = append(list, fmt.Sprintf("%s (%v)", n.labels["__name__"], n.value))
		}
		sort.Strings(list)
		t.Logf("Telegraf's metrics (series): %s", strings.Join(list, ", "))
	}
	if events, err := tgState(hqc, "/system/events/event/state"); err == nil {
		types := map[string]int{}
		for _, e := range events {
			types[e.str("type")]++
		}
		t.Logf("hq's events by type: %v", types)
	}

	t.Run("dashboard", func(t *testing.T) {
		checkDashboard(t, prom)
	})
}

// telegrafBinary builds Telegraf with tools/telegraf/build.sh, once per
// content of that module: the binary is kept in the repository's bin/
// (ignored by git) under a name derived from go.mod, go.sum and build.sh,
// so a developer's later runs reuse it and a fresh clone (CI) builds it.
func telegrafBinary(t *testing.T) string {
	t.Helper()
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "build.sh"} {
		b, err := os.ReadFile(filepath.Join(telegrafModule, f))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	cache, err := filepath.Abs(filepath.Join("..", "..", "bin", "telegraf-cache"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(cache, "telegraf-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(bin); err == nil {
		t.Logf("Telegraf: %s (cached)", bin)
		return bin
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	// Built beside its final name and renamed into place, so a run that
	// dies half-way never leaves a truncated binary to be reused.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, os.Getpid())
	defer os.Remove(tmp)
	began := time.Now()
	out, err := exec.Command(filepath.Join(telegrafModule, "build.sh"), tmp).CombinedOutput()
	if err != nil {
		t.Fatalf("building Telegraf: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	// Binaries of earlier versions of the module are of no further use.
	if old, err := filepath.Glob(filepath.Join(cache, "telegraf-*")); err == nil {
		for _, f := range old {
			if f != bin && !strings.HasSuffix(f, ".tmp") {
				os.Remove(f)
			}
		}
	}
	t.Logf("Telegraf: built %s in %v", bin, time.Since(began).Round(100*time.Millisecond))
	return bin
}

// chainNode is a patronusd serving one site of the lab with TLS, the
// default: its gNMI server is reached over the management network with its
// generated certificate verified.
type chainNode struct {
	site topo.Site
	dir  string
}

func startChainNode(t *testing.T, lab *topo.Topology, s topo.Site, extra ...string) *chainNode {
	t.Helper()
	n := &chainNode{site: s, dir: t.TempDir()}
	m := s.Mgmt().String()
	args := append([]string{"--node-name", s.Name, "--site", s.Name, "--data-dir", n.dir,
		"--listen", m + ":9339", "--http", m + ":9341", "--raft-listen", m + ":9340",
		"--admin-password-file", adminPasswordFile}, extra...)
	startInNS(t, lab.Router(s), "patronusd "+s.Name, nil, patronusdBin, args...)
	return n
}

// dial returns an admin client of n that verifies n's generated
// certificate, once n answers Capabilities.
func (n *chainNode) dial(t *testing.T, mgmt string) gpb.GNMIClient {
	t.Helper()
	certFile := filepath.Join(n.dir, "tls", "server.crt")
	var pem []byte
	waitFor(t, 15*time.Second, n.site.Name+"'s generated certificate", func() bool {
		var err error
		pem, err = os.ReadFile(certFile)
		return err == nil && len(pem) > 0
	})
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", certFile)
	}
	conn, err := grpc.NewClient(n.site.Mgmt().String()+":9339",
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})),
		grpc.WithPerRPCCredentials(adminCreds), grpc.WithContextDialer(topo.Dialer(mgmt)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := gpb.NewGNMIClient(conn)
	waitFor(t, 20*time.Second, n.site.Name+" serving gNMI over TLS", func() bool {
		_, err := c.Capabilities(ctxT(t, time.Second), &gpb.CapabilityRequest{})
		return err == nil
	})
	return c
}

// startInNS runs bin in namespace ns until the test ends; then it gets
// SIGTERM (SIGKILL after 15 s) and is waited for. Its output is logged if
// the test failed.
func startInNS(t *testing.T, ns, name string, env []string, bin string, args ...string) {
	t.Helper()
	out := &lockedBuffer{}
	cmd := topo.Exec(context.Background(), ns, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
			t.Errorf("%s exited before the test ended: %v", name, cmd.ProcessState)
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Errorf("%s did not stop within 15s of SIGTERM", name)
			}
		}
		if t.Failed() {
			t.Logf("%s (%s %v):\n%s", name, ns, args, tail(out.String(), 60))
		}
	})
}

// tgGetLeaf reads one leaf of c as a PROTO scalar.
func tgGetLeaf(c gpb.GNMIClient, p string) (*gpb.TypedValue, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{mustPath(p)}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, err
	}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			return u.GetVal(), nil
		}
	}
	return nil, fmt.Errorf("%s: no value", p)
}

// stateEntry is one entry of a list's (or a container's) state: the keys
// of the path to it and its leaves by their path below `state`
// ("counters/tx-bytes").
type stateEntry struct {
	keys   map[string]string
	leaves map[string]*gpb.TypedValue
}

func (e stateEntry) str(leaf string) string  { return e.leaves[leaf].GetStringVal() }
func (e stateEntry) uint(leaf string) uint64 { return e.leaves[leaf].GetUintVal() }

// tgState reads the state containers under p (e.g. /paths/path/state) with
// one Get, one entry per distinct set of keys.
func tgState(c gpb.GNMIClient, p string) ([]stateEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{mustPath(p)}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, fmt.Errorf("Get %s: %w", p, err)
	}
	byKeys := map[string]*stateEntry{}
	var order []string
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			i := slices.IndexFunc(elems, func(e *gpb.PathElem) bool { return e.GetName() == "state" })
			if i < 0 {
				continue
			}
			keys := map[string]string{}
			var id []string
			for _, e := range elems[:i] {
				for k, v := range e.GetKey() {
					keys[k] = v
					id = append(id, k+"="+v)
				}
			}
			sort.Strings(id)
			k := strings.Join(id, ",")
			e := byKeys[k]
			if e == nil {
				e = &stateEntry{keys: keys, leaves: map[string]*gpb.TypedValue{}}
				byKeys[k] = e
				order = append(order, k)
			}
			var leaf []string
			for _, el := range elems[i+1:] {
				leaf = append(leaf, el.GetName())
			}
			e.leaves[strings.Join(leaf, "/")] = u.GetVal()
		}
	}
	out := make([]stateEntry, 0, len(order))
	for _, k := range order {
		out = append(out, *byKeys[k])
	}
	return out, nil
}

// decimal returns a decimal64 leaf (loss) as a float, as Telegraf does.
func decimal(v *gpb.TypedValue) float64 {
	d := v.GetDecimalVal()
	return float64(d.GetDigits()) / math.Pow10(int(d.GetPrecision()))
}

// compareChain compares what Prometheus holds now with what hq's gNMI
// server returns now (and with voice, the voice flow as gNMI showed it after
// the burst), and describes the first difference.
func compareChain(c gpb.GNMIClient, prom *promAPI, source string, voice stateEntry) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, job := range []string{"telegraf", "patronusd"} {
		s, err := prom.one(ctx, `up{job="`+job+`"}`)
		if err != nil {
			return err
		}
		if s.value != 1 {
			return fmt.Errorf("Prometheus cannot scrape job %s: up = %v", job, s.value)
		}
	}

	policies, err := tgState(c, "/policies/policy/state")
	if err != nil {
		return err
	}
	for _, p := range policies {
		name := p.keys["name"]
		for _, leaf := range []string{"counters/packets-matched", "counters/bytes-matched", "counters/active-flows"} {
			metric := "patronus_policy_" + strings.NewReplacer("/", "_", "-", "_").Replace(leaf)
			s, err := prom.one(ctx, metric+`{name="`+name+`"}`)
			if err != nil {
				return err
			}
			if want := float64(p.uint(leaf)); s.value != want {
				return fmt.Errorf("%s{name=%q} = %v, gNMI says %v", metric, name, s.value, want)
			}
			if s.labels["active_path"] != p.str("active-path") || s.labels["source"] != source {
				return fmt.Errorf("%s{name=%q} has labels %v, gNMI says active-path %q and the source is %s", metric, name, s.labels, p.str("active-path"), source)
			}
		}
	}

	paths, err := tgState(c, "/paths/path/state")
	if err != nil {
		return err
	}
	measured := map[string]int{}
	for _, p := range paths {
		name, status := p.keys["name"], p.str("health-status")
		if status == "" {
			continue // measured by the node serving its source site, not hq
		}
		measured[status]++
		loss, err := prom.one(ctx, `patronus_path_loss{name="`+name+`"}`)
		if err != nil {
			return err
		}
		if loss.labels["health_status"] != status || loss.value != decimal(p.leaves["loss"]) {
			return fmt.Errorf("patronus_path_loss{name=%q} is %v %v, gNMI says health %s loss %v", name, loss.labels, loss.value, status, decimal(p.leaves["loss"]))
		}
		bw, err := prom.one(ctx, `patronus_path_bandwidth{name="`+name+`"}`)
		if err != nil {
			return err
		}
		if want := float64(p.uint("bandwidth")); bw.value != want {
			return fmt.Errorf("patronus_path_bandwidth{name=%q} = %v, gNMI says %v", name, bw.value, want)
		}
		for _, leaf := range []string{"latency", "jitter"} {
			s, err := prom.one(ctx, `patronus_path_`+leaf+`{name="`+name+`"}`)
			if err != nil {
				return err
			}
			// Measured anew with every probe: compare the order of
			// magnitude (µs on loopback veths), not the value.
			if status != "DOWN" && (leaf == "latency" && s.value <= 0 || s.value > 1e6) {
				return fmt.Errorf("patronus_path_%s{name=%q} = %v µs on a path that is %s (gNMI says %d)", leaf, name, s.value, status, p.uint(leaf))
			}
		}
	}
	// DEGRADED: a loaded machine's jitter can breach voice's SLA for a while.
	if measured["UP"]+measured["DEGRADED"] < 2 || measured["DOWN"] < 2 {
		return fmt.Errorf("hq measures paths %v, want UP ones to branch-1 and DOWN ones to branch-2", measured)
	}

	fs, err := prom.one(ctx, `patronus_flow_packets{destination_port="5060",source_port="`+voice.keys["source-port"]+`"}`)
	if err != nil {
		return err
	}
	if fs.value != float64(voice.uint("packets")) || fs.labels["policy"] != voice.str("policy") || fs.labels["path"] != voice.str("path") ||
		fs.labels["destination_address"] != voice.keys["destination-address"] || fs.labels["protocol"] != "17" {
		return fmt.Errorf("patronus_flow_packets of the voice flow is %v %v; gNMI said %v", fs.labels, fs.value, voice.leaves)
	}

	events, err := tgState(c, "/system/events/event/state")
	if err != nil {
		return err
	}
	got, err := prom.query(ctx, "patronus_event_timestamp")
	if err != nil {
		return err
	}
	bySeq := map[string]promSample{}
	for _, s := range got {
		bySeq[s.labels["sequence"]] = s
	}
	types := map[string]bool{}
	for _, e := range events {
		seq := e.keys["sequence"]
		s, ok := bySeq[seq]
		if !ok {
			return fmt.Errorf("event %s (%s) is not in Prometheus", seq, e.str("type"))
		}
		if s.value != float64(e.uint("timestamp")) || s.labels["type"] != e.str("type") || s.labels["severity"] != e.str("severity") ||
			s.labels["message"] != e.str("message") || s.labels["subject"] != e.str("subject") {
			return fmt.Errorf("event %s: Prometheus has %v %v, gNMI says %v", seq, s.labels, s.value, e.leaves)
		}
		types[e.str("type")] = true
	}
	for _, want := range []string{"CONFIG_COMMIT", "PATH_DOWN", "LEADER_CHANGE"} {
		if !types[want] {
			return fmt.Errorf("no %s event among hq's %d events", want, len(events))
		}
	}

	cluster, err := tgState(c, "/system/cluster/state")
	if err != nil {
		return err
	}
	if len(cluster) != 1 {
		return fmt.Errorf("/system/cluster/state: %d entries", len(cluster))
	}
	cs := cluster[0]
	s, err := prom.one(ctx, "patronus_cluster_term")
	if err != nil {
		return err
	}
	if s.value != float64(cs.uint("term")) || s.labels["role"] != cs.str("role") || s.labels["leader"] != cs.str("leader") || cs.str("role") != "LEADER" {
		return fmt.Errorf("patronus_cluster_term is %v %v; gNMI says %v", s.labels, s.value, cs.leaves)
	}
	return nil
}

// grafanaVars stand in for Grafana's variables when a dashboard query is
// sent to Prometheus directly.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "15s",
	"$__range_s", "3600",
	"$__range", "1h",
	"$node", ".*",
)

// checkDashboard sends every query of the Grafana dashboard to Prometheus:
// each must parse, and each must return data for the state the test made.
func checkDashboard(t *testing.T, prom *promAPI) {
	b, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []dashPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardJSON, err)
	}
	ds, err := os.ReadFile(grafanaDSConfig)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*uid:\s*(\S+)\s*$`).FindSubmatch(ds)
	if m == nil {
		t.Fatalf("%s names no datasource uid", grafanaDSConfig)
	}
	uid := string(m[1])

	// A query with value mappings (a state timeline, a stat) must give
	// only values that are mapped.
	type query struct {
		where, expr string
		mapped      map[string]string
	}
	var queries []query
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != uid {
				t.Errorf("panel %q uses datasource %q, the provisioned one is %q", p.Title, p.Datasource.UID, uid)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			var mapped map[string]string
			for _, m := range p.FieldConfig.Defaults.Mappings {
				if mapped == nil {
					mapped = map[string]string{}
				}
				for v, o := range m.Options {
					mapped[v] = o.Text
				}
			}
			for _, q := range p.Targets {
				queries = append(queries, query{"panel " + strconv.Quote(p.Title), q.Expr, mapped})
			}
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`)
	for _, v := range dash.Templating.List {
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		if s == "" {
			s, _ = v.Query.(string)
		}
		lv := labelValues.FindStringSubmatch(s)
		if lv == nil {
			t.Errorf("variable %q: query %q is not label_values(metric, label)", v.Name, s)
			continue
		}
		queries = append(queries, query{"variable " + strconv.Quote(v.Name), "group by (" + lv[2] + ") (" + lv[1] + ")", nil})
	}
	if len(queries) < 10 {
		t.Fatalf("%s holds %d queries; the dashboard lost its panels?", dashboardJSON, len(queries))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, q := range queries {
		expr := grafanaVars.Replace(q.expr)
		if strings.Contains(expr, "$") {
			t.Errorf("%s: %q uses a variable the test does not know", q.where, q.expr)
			continue
		}
		var res []promSample
		// Rates need two samples in their window; give them a few scrapes.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			res, err = prom.query(ctx, expr)
			if err != nil || len(res) > 0 || time.Now().After(deadline) {
				break
			}
		}
		switch {
		case err != nil:
			t.Errorf("%s: %v", q.where, err)
		case len(res) == 0:
			t.Errorf("%s: %s returns no data", q.where, expr)
		default:
			t.Logf("%s: %d series", q.where, len(res))
		}
		states := map[string]string{}
		for _, r := range res {
			if q.mapped == nil {
				break
			}
			text, ok := q.mapped[strconv.FormatFloat(r.value, 'f', -1, 64)]
			if !ok {
				t.Errorf("%s: value %v of %v has no value mapping", q.where, r.value, r.labels)
			}
			states[r.labels["name"]+r.labels["source"]] = text
		}
		// The state timelines turn a string label into a number: its
		// mapping must give back the label.
		for title, src := range map[string]struct{ metric, label string }{
			`panel "Path health"`:  {"patronus_path_latency", "health_status"},
			`panel "Cluster role"`: {"patronus_cluster_term", "role"},
		} {
			if q.where != title {
				continue
			}
			want, err := prom.query(ctx, src.metric)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range want {
				if got := states[w.labels["name"]+w.labels["source"]]; got != w.labels[src.label] {
					t.Errorf("%s shows %v as %q, %s says %s=%q", q.where, w.labels, got, src.metric, src.label, w.labels[src.label])
				}
			}
		}
	}
}

// dashPanel is what the test reads of a Grafana panel.
type dashPanel struct {
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Panels     []dashPanel `json:"panels"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Mappings []struct {
				Options map[string]struct {
					Text string `json:"text"`
				} `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

// promAPI queries Prometheus' HTTP API in a network namespace.
type promAPI struct {
	base string
	hc   *http.Client
}

func newPromAPI(ns, base string) *promAPI {
	dial := topo.Dialer(ns)
	return &promAPI{base: base, hc: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dial(ctx, addr)
		}},
	}}
}

func (p *promAPI) ready() bool {
	resp, err := p.hc.Get(p.base + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// promSample is one series of an instant vector.
type promSample struct {
	labels map[string]string
	value  float64
}

// query evaluates expr now. A result that is not an instant vector (a
// scalar) comes back as one sample without labels.
func (p *promAPI) query(ctx context.Context, expr string) ([]promSample, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("query %s: HTTP %d: %s", expr, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %s: %s: %s", expr, r.ErrorType, r.Error)
	}
	if r.Data.ResultType == "scalar" {
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return nil, err
		}
		f, err := promValue(v)
		return []promSample{{value: f}}, err
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: a %s, not an instant vector", expr, r.Data.ResultType)
	}
	var vec []struct {
		Metric map[string]string `json:"metric"`
		Value  [2]any            `json:"value"`
	}
	if err := json.Unmarshal(r.Data.Result, &vec); err != nil {
		return nil, err
	}
	out := make([]promSample, 0, len(vec))
	for _, s := range vec {
		f, err := promValue(s.Value)
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", expr, err)
		}
		out = append(out, promSample{labels: s.Metric, value: f})
	}
	return out, nil
}

func promValue(v [2]any) (float64, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v[1])
	}
	return strconv.ParseFloat(s, 64)
}

// one evaluates expr and wants exactly one series.
func (p *promAPI) one(ctx context.Context, expr string) (promSample, error) {
	res, err := p.query(ctx, expr)
	if err != nil {
		return promSample{}, err
	}
	if len(res) != 1 {
		return promSample{}, fmt.Errorf("%s: %d series in Prometheus, want 1: %v", expr, len(res), res)
	}
	return res[0], nil
}

// TestGnmicConfig: deploy/gnmic/gnmic.yaml, which cannot be run here, makes
// the same subscriptions as the tested Telegraf configuration, in the same
// modes.
func TestGnmicConfig(t *testing.T) {
	read := func(f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// Each mode setting ends a subscription; its path is the last one
	// before it.
	subs := func(text string, path, mode *regexp.Regexp) []string {
		var out []string
		start := 0
		for _, m := range mode.FindAllStringSubmatchIndex(text, -1) {
			p := path.FindAllStringSubmatch(text[start:m[0]], -1)
			if len(p) == 0 {
				t.Fatalf("a subscription without a path before %q", text[m[0]:m[1]])
			}
			out = append(out, p[len(p)-1][1]+" "+strings.ReplaceAll(strings.ToLower(text[m[2]:m[3]]), "-", "_"))
			start = m[1]
		}
		return out
	}
	tg := subs(read(telegrafConf), regexp.MustCompile(`(?m)^\s*path = "(\S+)"`), regexp.MustCompile(`(?m)^\s*subscription_mode = "(\S+)"`))
	gc := subs(read(gnmicConf), regexp.MustCompile(`(?m)^\s*- (/\S+)$`), regexp.MustCompile(`(?m)^\s*stream-mode: (\S+)$`))
	if len(tg) < 5 {
		t.Fatalf("%s: subscriptions %v", telegrafConf, tg)
	}
	if diff := cmp.Diff(tg, gc); diff != "" {
		t.Errorf("subscriptions (path mode) of %s (-) and %s (+) differ:\n%s", telegrafConf, gnmicConf, diff)
	}
}
