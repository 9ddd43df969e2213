// Cluster tests: several real patronusd processes on loopback form a Raft
// cluster, and the tests kill, restart, wipe and remove them while clients
// write. Histories of the load test are checked for linearizability with
// porcupine.
package main_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ---------------------------------------------------------------------------
// Running a cluster.

// cnode is one member of a test cluster: its fixed addresses and data dir,
// so that it can be restarted as the same member.
type cnode struct {
	name                  string
	addr, http, raft, dir string
	join                  string   // gNMI address to join through; "" bootstraps
	extra                 []string // more flags
	d                     *daemon
	t                     testing.TB
	launchedAt, readyAt   time.Time
	nonvoter              bool
	// tls serves gNMI over TLS (no --insecure): Raft and the members'
	// calls are then mutual TLS with the cluster CA.
	tls bool
}

func (n *cnode) args() []string {
	a := []string{"--node-name", n.name, "--data-dir", n.dir,
		"--listen", n.addr, "--http", n.http, "--raft-listen", n.raft}
	if !n.tls {
		a = append([]string{"--insecure"}, a...)
	}
	if n.join != "" {
		a = append(a, "--join", n.join)
	}
	if n.nonvoter {
		a = append(a, "--nonvoter")
	}
	return append(a, n.extra...)
}

// launch starts the process on the node's addresses without waiting.
func (n *cnode) launch() {
	n.t.Helper()
	n.d = launch(n.t, n.name, n.args(), nil)
	n.d.Addr, n.d.HTTP, n.d.Dir = n.addr, n.http, n.dir
	n.launchedAt = time.Now()
}

// ready waits until the node serves gNMI.
func (n *cnode) ready() error {
	creds := insecure.NewCredentials()
	if n.tls {
		// The test trusts the server it started.
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a test's own daemon
	}
	err := n.d.ready(n.addr, creds)
	n.readyAt = time.Now()
	return err
}

func (n *cnode) client() gpb.GNMIClient { return n.d.Client }

func (n *cnode) alive() bool { return n.d != nil && !n.d.exited() }

// newNode describes a member with fresh loopback addresses and data dir.
func newNode(t testing.TB, name, join string, extra ...string) *cnode {
	return &cnode{t: t, name: name, addr: freeAddr(t), http: freeAddr(t), raft: freeAddr(t),
		dir: filepath.Join(t.TempDir(), name), join: join, extra: extra}
}

// startFresh launches a node that has never run and waits for it to serve,
// choosing new ports if the chosen ones were taken in the meantime.
func (n *cnode) startFresh() error {
	for attempt := 0; ; attempt++ {
		n.launch()
		err := n.ready()
		if err == nil {
			return nil
		}
		n.d.kill()
		if attempt == 2 || !strings.Contains(n.d.stderr.String(), "address already in use") {
			return fmt.Errorf("%s did not start: %v", n.name, err)
		}
		os.RemoveAll(n.dir)
		n.addr, n.http, n.raft = freeAddr(n.t), freeAddr(n.t), freeAddr(n.t)
	}
}

// startCluster starts voters n1..nV (n1 bootstraps, the others join through
// it) and nonvoters e1..eN, and waits until every node agrees on the leader
// and lists every member.
func startCluster(t testing.TB, voters, nonvoters int, extra ...string) []*cnode {
	t.Helper()
	return startClusterTLS(t, false, voters, nonvoters, extra...)
}

// startClusterTLS is startCluster, serving TLS if withTLS.
func startClusterTLS(t testing.TB, withTLS bool, voters, nonvoters int, extra ...string) []*cnode {
	t.Helper()
	first := newNode(t, "n1", "", extra...)
	first.tls = withTLS
	if err := first.startFresh(); err != nil {
		t.Fatal(err)
	}
	nodes := []*cnode{first}
	for i := 2; i <= voters; i++ {
		nodes = append(nodes, newNode(t, fmt.Sprintf("n%d", i), first.addr, extra...))
	}
	for i := 1; i <= nonvoters; i++ {
		n := newNode(t, fmt.Sprintf("e%d", i), first.addr, extra...)
		n.nonvoter = true
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.tls = withTLS
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i+1] = n.startFresh()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitCluster(t, nodes, len(nodes), 15*time.Second)
	return nodes
}

// cstate is a node's /system/cluster/state.
type cstate struct {
	Leader, Role                    string
	Term, CommitIndex, AppliedIndex uint64
}

func clusterState(ctx context.Context, c gpb.GNMIClient) (cstate, error) {
	var st cstate
	p, _ := pathNoT("/system/cluster/state")
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return st, err
	}
	for k, v := range updates(resp) {
		switch k[strings.LastIndex(k, "/")+1:] {
		case "leader":
			st.Leader = v.GetStringVal()
		case "role":
			st.Role = v.GetStringVal()
		case "term":
			st.Term = v.GetUintVal()
		case "commit-index":
			st.CommitIndex = v.GetUintVal()
		case "applied-index":
			st.AppliedIndex = v.GetUintVal()
		}
	}
	return st, nil
}

// members reads /system/cluster/members: node-name -> config leaf -> value.
func members(ctx context.Context, c gpb.GNMIClient) (map[string]map[string]string, error) {
	p, _ := pathNoT("/system/cluster/members/member[node-name=*]/config")
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_PROTO})
	out := map[string]map[string]string{}
	if status.Code(err) == codes.NotFound {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			if len(elems) < 6 {
				continue
			}
			name := elems[3].GetKey()["node-name"]
			if out[name] == nil {
				out[name] = map[string]string{}
			}
			out[name][elems[len(elems)-1].GetName()] = u.GetVal().GetStringVal()
		}
	}
	return out, nil
}

// waitCluster polls until every live node in nodes reports the same leader,
// which is one of them, and lists want members. It returns the leader.
func waitCluster(t testing.TB, nodes []*cnode, want int, timeout time.Duration) *cnode {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		why = ""
		leader := ""
		for _, n := range nodes {
			if !n.alive() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := clusterState(ctx, n.client())
			var ms map[string]map[string]string
			if err == nil {
				ms, err = members(ctx, n.client())
			}
			cancel()
			switch {
			case err != nil:
				why = fmt.Sprintf("%s: %v", n.name, err)
			case st.Leader == "":
				why = fmt.Sprintf("%s knows no leader (role %s)", n.name, st.Role)
			case leader != "" && st.Leader != leader:
				why = fmt.Sprintf("%s says %s leads, another node says %s", n.name, st.Leader, leader)
			case len(ms) != want:
				why = fmt.Sprintf("%s lists %d members, want %d: %v", n.name, len(ms), want, ms)
			}
			if why != "" {
				break
			}
			leader = st.Leader
		}
		if why == "" {
			for _, n := range nodes {
				if n.name == leader && n.alive() {
					return n
				}
			}
			why = fmt.Sprintf("the leader %s is not a live node of the test", leader)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster did not settle within %v: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// roles reads every live node's role.
func roles(t testing.TB, nodes []*cnode) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes {
		if !n.alive() {
			continue
		}
		st, err := clusterState(ctxT(t, 5*time.Second), n.client())
		if err != nil {
			t.Fatalf("%s: cluster state: %v", n.name, err)
		}
		out[n.name] = st.Role
	}
	return out
}

// followersOf returns the nodes other than leader, in order.
func followersOf(nodes []*cnode, leader *cnode) []*cnode {
	var out []*cnode
	for _, n := range nodes {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

func byName(nodes []*cnode, name string) *cnode {
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// pathNoT parses a path where no testing.TB is at hand (client goroutines).
func pathNoT(s string) (*gpb.Path, error) { return ygot.StringToStructuredPath(s) }

func linearizable(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "patronus-consistency", "linearizable")
}

// desc reads one site's description ("" when the site does not exist).
func desc(ctx context.Context, c gpb.GNMIClient, site string) (string, error) {
	p, _ := pathNoT("/sites/site[name=" + site + "]/config/description")
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_PROTO})
	if status.Code(err) == codes.NotFound {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	for _, v := range updates(resp) {
		return v.GetStringVal(), nil
	}
	return "", nil
}

// descs reads every site description of a node.
func descs(ctx context.Context, c gpb.GNMIClient) (map[string]string, error) {
	p, _ := pathNoT("/sites/site[name=*]/config/description")
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_PROTO})
	out := map[string]string{}
	if status.Code(err) == codes.NotFound {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			out[elems[1].GetKey()["name"]] = u.GetVal().GetStringVal()
		}
	}
	return out, nil
}

// diffDescs describes how got differs from want on want's keys.
func diffDescs(got, want map[string]string) (missing []string) {
	for k, v := range want {
		if got[k] != v {
			missing = append(missing, fmt.Sprintf("%s=%q (want %q)", k, got[k], v))
		}
	}
	sort.Strings(missing)
	return missing
}

// waitDescs polls a node until its descriptions of want's sites equal want.
func waitDescs(t testing.TB, n *cnode, want map[string]string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		got, err := descs(ctx, n.client())
		cancel()
		var diff []string
		if err == nil {
			diff = diffDescs(got, want)
			if len(diff) == 0 {
				return time.Since(start)
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("%s: reading descriptions: %v", n.name, err)
			}
			t.Fatalf("%s: %d of %d descriptions still differ after %v, e.g. %v", n.name, len(diff), len(want), timeout, diff[:min(5, len(diff))])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeDescs sets count site descriptions "<prefix>-NNN" through nodes
// (round robin, a few at a time) and returns what was acknowledged; every
// Set must succeed.
func writeDescs(t testing.TB, nodes []*cnode, prefix string, count int) map[string]string {
	t.Helper()
	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	errs := make(chan error, count)
	const workers = 8
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < count; i += workers {
				n := nodes[i%len(nodes)]
				site, val := fmt.Sprintf("%s-%03d", prefix, i), fmt.Sprintf("%s value %d", prefix, i)
				p, _ := pathNoT("/sites/site[name=" + site + "]/config/description")
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := setLeaf(ctx, n.client(), p, strVal(val))
				cancel()
				if err != nil {
					errs <- fmt.Errorf("Set %s on %s: %v", site, n.name, err)
					continue
				}
				mu.Lock()
				acked[site] = val
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return acked
}

// ---------------------------------------------------------------------------
// 1. Forming a cluster.

// configLeaves reads every config leaf under /sites, /paths and /policies.
func configLeaves(ctx context.Context, c gpb.GNMIClient) (map[string]string, error) {
	var ps []*gpb.Path
	for _, s := range []string{"/sites", "/paths", "/policies"} {
		p, _ := pathNoT(s)
		ps = append(ps, p)
	}
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: ps, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range updates(resp) {
		if strings.Contains(k, "/config/") {
			out[k] = v.String()
		}
	}
	return out, nil
}

func TestClusterForms(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 1)
	leader := waitCluster(t, nodes, 4, 5*time.Second)
	t.Logf("leader: %s", leader.name)

	// Every node's role (/system/cluster/state is refreshed every 500 ms),
	// and every member's entry.
	wantRoles := map[string]string{}
	for _, n := range nodes {
		wantRoles[n.name] = "FOLLOWER"
		switch {
		case n == leader:
			wantRoles[n.name] = "LEADER"
		case n.nonvoter:
			wantRoles[n.name] = "NONVOTER"
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		rs := roles(t, nodes)
		if fmt.Sprint(rs) == fmt.Sprint(wantRoles) {
			break
		}
		if time.Now().After(deadline) {
			for _, n := range nodes {
				if rs[n.name] != wantRoles[n.name] {
					t.Errorf("%s reports role %s, want %s", n.name, rs[n.name], wantRoles[n.name])
				}
			}
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range nodes {
		ms, err := members(ctxT(t, 5*time.Second), n.client())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range nodes {
			suffrage := "VOTER"
			if m.nonvoter {
				suffrage = "NONVOTER"
			}
			want := map[string]string{"node-name": m.name, "address": m.addr, "raft-address": m.raft, "suffrage": suffrage}
			for k, v := range want {
				if ms[m.name][k] != v {
					t.Errorf("%s lists member %s with %s %q, want %q", n.name, m.name, k, ms[m.name][k], v)
				}
			}
		}
	}

	// Scenario 1 set on a follower is readable there as soon as the Set
	// returns, and soon everywhere.
	var follower *cnode
	for _, n := range nodes {
		if n != leader && !n.nonvoter {
			follower = n
			break
		}
	}
	loadScenario(t, follower.client())
	got, err := configLeaves(ctxT(t, 5*time.Second), follower.client())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string][]json.RawMessage
	if err := json.Unmarshal(readScenario(t), &doc); err != nil {
		t.Fatal(err)
	}
	for module, list := range map[string]string{"patronus-sites:sites": "site", "patronus-paths:paths": "path", "patronus-policies:policies": "policy"} {
		want := len(doc[module][list])
		have := 0
		for k := range got {
			if strings.HasSuffix(k, "/config/name") && strings.Contains(k, "/"+list+"[") && strings.Count(k, "[") == 1 {
				have++
			}
		}
		if have != want {
			t.Errorf("right after the Set returned on follower %s it has %d %s entries, want %d", follower.name, have, list, want)
		}
	}
	for _, n := range nodes {
		if n == follower {
			continue
		}
		deadline := time.Now().Add(3 * time.Second)
		for {
			other, err := configLeaves(ctxT(t, 5*time.Second), n.client())
			if err == nil && len(other) == len(got) && func() bool {
				for k, v := range got {
					if other[k] != v {
						return false
					}
				}
				return true
			}() {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s does not have scenario 1 as set on %s after 3s (err %v, %d leaves, want %d)", n.name, follower.name, err, len(other), len(got))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// A Set on the non-voter works too, and reads back there at once.
	var edge *cnode
	for _, n := range nodes {
		if n.nonvoter {
			edge = n
		}
	}
	if err := setLeaf(ctxT(t, 10*time.Second), edge.client(), siteDescPath(t, "hq"), strVal("set on the non-voter")); err != nil {
		t.Fatalf("Set on the non-voter %s: %v", edge.name, err)
	}
	if v, err := desc(ctxT(t, 5*time.Second), edge.client(), "hq"); err != nil || v != "set on the non-voter" {
		t.Errorf("right after its Set, the non-voter reads hq description %q (%v)", v, err)
	}
	for _, n := range nodes {
		waitDescs(t, n, map[string]string{"hq": "set on the non-voter"}, 3*time.Second)
	}
	// The non-voter never stands for election.
	if rs := roles(t, nodes); rs[edge.name] == "LEADER" || rs[edge.name] == "CANDIDATE" {
		t.Errorf("non-voter %s has role %s", edge.name, rs[edge.name])
	}
	// Those Sets, one at a time, reached every node as the writes the
	// leader evaluated (write-set entries), not to be evaluated again.
	for _, n := range nodes {
		_, scrape := httpGet(t, n.http, "/metrics")
		if v, ok := metricValue(scrape, `patronus_raft_sets_applied_total{how="write_set"}`); !ok || v < 2 {
			t.Errorf("%s applied %v Sets by their writes (present: %v), want 2 or more", n.name, v, ok)
		}
	}
}

// ---------------------------------------------------------------------------
// 2. Killing the leader under load, checked with porcupine.

// regInput is an operation on one register (a site's description).
type regInput struct {
	key   string
	write bool
	value string // written value
}

// regModel is a register per key; reads return "" for an absent key.
var regModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(regInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.write {
			return fmt.Sprintf("write(%s, %q)", in.key, in.value)
		}
		return fmt.Sprintf("read(%s) -> %q", in.key, output)
	},
	DescribeState: func(state any) string { return fmt.Sprintf("%q", state) },
}

// opRec is one client operation of the load test.
type opRec struct {
	client, node int
	key, value   string // value written, or read
	write        bool
	call, ret    time.Duration // since the test's start
	err          error
}

// forever is the return time of an operation whose outcome is unknown: it
// may take effect at any point after its call, or never.
const forever = time.Duration(1 << 62)

func TestLeaderKillUnderLoad(t *testing.T) {
	// Not parallel: the failover time is measured without other clusters
	// competing for the CPU.
	for _, killAfter := range []time.Duration{1500 * time.Millisecond, 700 * time.Millisecond, 2300 * time.Millisecond} {
		t.Run(fmt.Sprintf("kill-after-%v", killAfter), func(t *testing.T) {
			leaderKillUnderLoad(t, killAfter)
		})
	}
}

func leaderKillUnderLoad(t *testing.T, killAfter time.Duration) {
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	const (
		clients  = 64
		keys     = 32
		runAfter = 2 * time.Second
	)
	keyName := func(i int) string { return fmt.Sprintf("lk-%02d", i) }

	t0 := time.Now()
	var (
		mu     sync.Mutex
		hist   []opRec
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		killed = -1
		killAt time.Duration
	)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(c)*7919 + int64(killAfter)))
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				ni := rng.Intn(len(nodes))
				rec := opRec{client: c, node: ni, key: keyName(rng.Intn(keys))}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				rec.call = time.Since(t0)
				if rng.Intn(8) == 0 {
					// A linearizable read from any node.
					rec.value, rec.err = desc(linearizable(ctx), nodes[ni].client(), rec.key)
				} else {
					rec.write = true
					rec.value = fmt.Sprintf("c%d-%d", c, seq)
					p, _ := pathNoT("/sites/site[name=" + rec.key + "]/config/description")
					rec.err = setLeaf(ctx, nodes[ni].client(), p, strVal(rec.value))
				}
				rec.ret = time.Since(t0)
				cancel()
				mu.Lock()
				hist = append(hist, rec)
				mu.Unlock()
				if rec.err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}

	time.Sleep(killAfter)
	for i, n := range nodes {
		if n == leader {
			killed = i
		}
	}
	// The leader may have changed under load; kill the current one.
	if st, err := clusterState(ctxT(t, 2*time.Second), nodes[killed].client()); err != nil || st.Role != "LEADER" {
		t.Logf("%s is no longer leader (%v %v); finding the current one", leader.name, st, err)
		st, err := clusterState(ctxT(t, 2*time.Second), nodes[(killed+1)%3].client())
		if err != nil {
			t.Fatal(err)
		}
		leader = byName(nodes, st.Leader)
		for i, n := range nodes {
			if n == leader {
				killed = i
			}
		}
	}
	mu.Lock()
	killAt = time.Since(t0)
	mu.Unlock()
	if err := nodes[killed].d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-nodes[killed].d.done
	time.Sleep(runAfter)
	close(stop)
	wg.Wait()
	stopAt := time.Since(t0)

	var survivors []*cnode
	for i, n := range nodes {
		if i != killed {
			survivors = append(survivors, n)
		}
	}

	// Summarise the history and build porcupine's.
	var (
		ops                                []porcupine.Operation
		okW, unknownW, deadW, okR, failedR int
		codesSeen                          = map[string]int{}
		failover                           = time.Duration(-1)
		unknownMsgs                        = map[string]int{}
	)
	for _, r := range hist {
		if r.err != nil {
			st, _ := status.FromError(r.err)
			codesSeen[st.Code().String()]++
			msg := st.Message()
			if len(msg) > 90 {
				msg = msg[:90]
			}
			unknownMsgs[st.Code().String()+": "+msg]++
		}
		if !r.write {
			if r.err != nil {
				failedR++
				continue
			}
			okR++
			ops = append(ops, porcupine.Operation{ClientId: r.client, Input: regInput{key: r.key}, Output: r.value,
				Call: int64(r.call), Return: int64(r.ret)})
			continue
		}
		ret := r.ret
		switch {
		case r.err == nil:
			okW++
			if r.call > killAt && (failover < 0 || r.ret-killAt < failover) {
				failover = r.ret - killAt
			}
		case r.node == killed && r.call > killAt:
			// Sent to a dead process: it cannot have applied.
			deadW++
			continue
		default:
			unknownW++
			ret = forever
		}
		ops = append(ops, porcupine.Operation{ClientId: r.client, Input: regInput{key: r.key, write: true, value: r.value},
			Call: int64(r.call), Return: int64(ret)})
	}
	t.Logf("killed leader %s at %v, stopped at %v: %d acknowledged Sets, %d with unknown outcome, %d to the dead node, %d linearizable reads (%d failed); errors by code %v",
		nodes[killed].name, killAt.Round(time.Millisecond), stopAt.Round(time.Millisecond), okW, unknownW, deadW, okR, failedR, codesSeen)
	var msgs []string
	for m, c := range unknownMsgs {
		msgs = append(msgs, fmt.Sprintf("%5d %s", c, m))
	}
	sort.Strings(msgs)
	t.Logf("error messages:\n%s", strings.Join(msgs, "\n"))
	// A Set that a live node answers with an error must tell the client
	// whether it may have applied: "outcome is unknown" or "nothing was
	// changed" (the server's own wording). A transport error that a
	// follower got forwarding to the dead leader says neither.
	unclear := map[string]int{}
	for _, r := range hist {
		if !r.write || r.err == nil || r.node == killed {
			continue
		}
		st, _ := status.FromError(r.err)
		if st.Code() == codes.DeadlineExceeded || strings.Contains(st.Message(), "outcome is unknown") || strings.Contains(st.Message(), "nothing was changed") {
			continue
		}
		msg := st.Message()
		if len(msg) > 110 {
			msg = msg[:110]
		}
		unclear[fmt.Sprintf("%s from %s: %s", st.Code(), nodes[r.node].name, msg)]++
	}
	if len(unclear) > 0 {
		var lines []string
		for m, c := range unclear {
			lines = append(lines, fmt.Sprintf("%5d× %s", c, m))
		}
		sort.Strings(lines)
		t.Errorf("Sets answered by a live node with an error that says neither \"outcome is unknown\" nor \"nothing was changed\":\n%s", strings.Join(lines, "\n"))
	}
	if failover < 0 {
		t.Fatalf("no Set invoked after the kill was acknowledged within %v", runAfter)
	}
	t.Logf("FAILOVER: %v from SIGKILL of the leader to the first acknowledged Set invoked after it", failover.Round(time.Millisecond))
	if okW == 0 {
		t.Fatal("no Set was acknowledged")
	}

	// Finish each key with a linearizable read.
	final := map[string]string{}
	for k := 0; k < keys; k++ {
		key := keyName(k)
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			call := time.Since(t0)
			v, err := desc(linearizable(ctx), survivors[(k+i)%2].client(), key)
			ret := time.Since(t0)
			cancel()
			if err == nil {
				final[key] = v
				ops = append(ops, porcupine.Operation{ClientId: clients, Input: regInput{key: key}, Output: v, Call: int64(call), Return: int64(ret)})
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("linearizable read of %s on the survivors keeps failing: %v", key, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// A write with an unknown outcome whose (unique) value no read returned
	// can be left out: it is linearizable with it (as the last operation)
	// exactly when it is without it. This keeps the search small.
	observed := map[string]bool{}
	for _, op := range ops {
		if in := op.Input.(regInput); !in.write {
			observed[in.key+"\x00"+op.Output.(string)] = true
		}
	}
	kept := ops[:0]
	pruned := 0
	for _, op := range ops {
		if in := op.Input.(regInput); in.write && op.Return == int64(forever) && !observed[in.key+"\x00"+in.value] {
			pruned++
			continue
		}
		kept = append(kept, op)
	}
	ops = kept
	t.Logf("porcupine: %d unknown-outcome writes never observed by a read left out", pruned)
	res, info := porcupine.CheckOperationsVerbose(regModel, ops, 20*time.Second)
	switch res {
	case porcupine.Ok:
		t.Logf("porcupine: %d operations on %d keys are linearizable", len(ops), keys)
	case porcupine.Unknown:
		t.Logf("porcupine: no verdict within its time limit (%d operations)", len(ops))
	case porcupine.Illegal:
		f := filepath.Join(os.TempDir(), fmt.Sprintf("patronus-porcupine-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(regModel, info, f); err == nil {
			t.Logf("visualization: %s", f)
		}
		t.Errorf("porcupine: the history is NOT linearizable")
		reportIllegal(t, ops, killAt)
	}

	// Every survivor serves the final values (plain reads, soon).
	for _, n := range survivors {
		waitDescs(t, n, final, 5*time.Second)
	}

	// The killed node comes back on its data dir and catches up.
	dead := nodes[killed]
	dead.launch()
	if err := dead.ready(); err != nil {
		t.Fatalf("restarting %s: %v", dead.name, err)
	}
	took := waitDescs(t, dead, final, 20*time.Second)
	t.Logf("restarted %s served %v after launch and had every key %v later", dead.name, dead.readyAt.Sub(dead.launchedAt).Round(time.Millisecond), took.Round(time.Millisecond))
	for _, line := range strings.Split(dead.d.stderr.String(), "\n") {
		if strings.Contains(line, "catching up") || strings.Contains(line, "patronusd serving") {
			t.Logf("restarted %s: %s", dead.name, line)
		}
	}
	waitCluster(t, nodes, 3, 5*time.Second)
}

// reportIllegal logs the operations on the keys whose history alone is not
// linearizable.
func reportIllegal(t *testing.T, ops []porcupine.Operation, killAt time.Duration) {
	for _, part := range regModel.Partition(ops) {
		if porcupine.CheckOperationsTimeout(porcupine.Model{Init: regModel.Init, Step: regModel.Step}, part, 5*time.Second) != porcupine.Illegal {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		var b strings.Builder
		for _, op := range part {
			ret := "unknown"
			if op.Return != int64(forever) {
				ret = fmt.Sprintf("%8.1fms", float64(op.Return)/1e6)
			}
			fmt.Fprintf(&b, "  [%8.1fms .. %s] client %2d %s\n", float64(op.Call)/1e6, ret, op.ClientId, regModel.DescribeOperation(op.Input, op.Output))
		}
		t.Errorf("key %s is not linearizable (leader killed at %.1fms):\n%s", part[0].Input.(regInput).key, float64(killAt)/1e6, b.String())
	}
}

// ---------------------------------------------------------------------------
// 3. Killing every node.

func TestKillAllAndRestart(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	acked := writeDescs(t, nodes, "ka", 120)

	restartAll := func(round int) {
		t.Helper()
		for _, n := range nodes {
			n.d.kill()
		}
		for _, n := range nodes {
			n.launch()
		}
		var wg sync.WaitGroup
		errs := make([]error, len(nodes))
		for i, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Wait longer than ready's 10 s, to measure how long
				// each node takes to serve.
				for {
					errs[i] = n.ready()
					if errs[i] == nil || n.d.exited() || time.Since(n.launchedAt) > 25*time.Second {
						return
					}
				}
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %s does not serve: %v", round, nodes[i].name, err)
			}
		}
		for _, n := range nodes {
			took := n.readyAt.Sub(n.launchedAt)
			t.Logf("round %d: %s served %v after launch", round, n.name, took.Round(time.Millisecond))
			if took > 5*time.Second {
				t.Errorf("round %d: %s took %v to serve after a restart of the whole cluster (waits for WaitCaughtUp's 15 s bound?)", round, n.name, took.Round(time.Millisecond))
			}
		}
	}

	// Round 1: the log ends with the last acknowledged Set.
	restartAll(1)
	for _, n := range nodes {
		waitDescs(t, n, acked, 10*time.Second)
	}
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	t.Logf("round 1: %s leads after the restart", leader.name)

	// Rounds 2 and 3: restarted as an operator would once the nodes have
	// joined, without --join (a node with Raft state does not need it). In
	// round 1 the joiners re-sent their member requests, so the logs ended
	// with commands; after round 2 nothing is written, so every log ends with
	// the round-2 leader's no-op entry. Round 3 must come back as fast.
	for _, n := range nodes {
		n.join = ""
	}
	restartAll(2)
	for _, n := range nodes {
		waitDescs(t, n, acked, 10*time.Second)
	}
	waitCluster(t, nodes, 3, 5*time.Second)
	restartAll(3)
	for _, n := range nodes {
		waitDescs(t, n, acked, 10*time.Second)
	}
	waitCluster(t, nodes, 3, 5*time.Second)
	// And it still takes writes.
	more := writeDescs(t, nodes, "kb", 10)
	for _, n := range nodes {
		waitDescs(t, n, more, 5*time.Second)
	}
}

// ---------------------------------------------------------------------------
// 4. A restarted follower and a wiped one catch up (by snapshot).

// snapshotIndex is the index of the newest Raft snapshot in a node's data
// dir, 0 if it has none.
func snapshotIndex(t testing.TB, n *cnode) uint64 {
	t.Helper()
	metas, _ := filepath.Glob(filepath.Join(n.dir, "raft", "snapshots", "*", "meta.json"))
	var max uint64
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			continue // being written or removed
		}
		var meta struct{ Index uint64 }
		if json.Unmarshal(b, &meta) == nil && meta.Index > max {
			max = meta.Index
		}
	}
	return max
}

// waitSnapshot waits until a node has a snapshot at index min or later.
func waitSnapshot(t testing.TB, n *cnode, min uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for snapshotIndex(t, n) < min {
		if time.Now().After(deadline) {
			t.Fatalf("%s has no snapshot at index %d or later after %v (newest: %d)", n.name, min, timeout, snapshotIndex(t, n))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWipedFollowerCatchesUpBySnapshot(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0, "--raft-snapshot-threshold", "50", "--raft-trailing-logs", "10")
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	followers := followersOf(nodes, leader)
	acked := writeDescs(t, nodes, "ws", 300)
	for _, n := range nodes {
		waitDescs(t, n, acked, 5*time.Second)
	}
	// Raft looks at the threshold every 1 to 2 s (SnapshotInterval).
	for _, n := range nodes {
		waitSnapshot(t, n, 100, 20*time.Second)
	}

	t.Run("restarted-follower", func(t *testing.T) {
		// Restart a follower that has applied every Set: it must not serve
		// less than it had before the restart.
		f := followers[0]
		if code, err := f.d.stop(syscall.SIGTERM, 10*time.Second); err != nil || code != 0 {
			t.Fatalf("stopping %s: exit %d, %v", f.name, code, err)
		}
		f.launch()
		if err := f.ready(); err != nil {
			t.Fatal(err)
		}
		got, err := descs(ctxT(t, 5*time.Second), f.client())
		if err != nil {
			t.Fatal(err)
		}
		if diff := diffDescs(got, acked); len(diff) > 0 {
			t.Errorf("%s served a store older than before its restart: %d of %d descriptions it had applied are missing or old right after the restart, e.g. %v",
				f.name, len(diff), len(acked), diff[:min(3, len(diff))])
		}
		took := waitDescs(t, f, acked, 15*time.Second)
		t.Logf("restarted follower %s served %v after launch and had every Set %v later", f.name, f.readyAt.Sub(f.launchedAt).Round(time.Millisecond), took.Round(time.Millisecond))

		// Stopped while the others write more (beyond the trailing logs).
		if code, err := f.d.stop(syscall.SIGTERM, 10*time.Second); err != nil || code != 0 {
			t.Fatalf("stopping %s: exit %d, %v", f.name, code, err)
		}
		live := []*cnode{leader, followers[1]}
		for k, v := range writeDescs(t, live, "wt", 100) {
			acked[k] = v
		}
		f.launch()
		if err := f.ready(); err != nil {
			t.Fatal(err)
		}
		took = waitDescs(t, f, acked, 15*time.Second)
		t.Logf("follower %s, restarted after missing 100 Sets, had them %v after serving", f.name, took.Round(time.Millisecond))
		if t.Failed() {
			return
		}
	})

	t.Run("wiped-follower", func(t *testing.T) {
		f := followers[1]
		f.d.kill()
		if err := os.RemoveAll(f.dir); err != nil {
			t.Fatal(err)
		}
		live := []*cnode{leader, followers[0]}
		// raft-wal keeps serving head-truncated entries while they are in
		// its unsealed tail segment (64 MiB), so a follower is caught up by
		// a snapshot only once a whole segment below the snapshot is gone:
		// push more than 64 MiB through the log (one key, overwritten, so
		// the store and the snapshots stay small), then enough small Sets
		// for a snapshot past it.
		big := strings.Repeat("x", 1<<20)
		start := time.Now()
		for i := 0; i < 70; i++ {
			v := fmt.Sprintf("%03d %s", i, big)
			ctx := ctxT(t, 20*time.Second)
			if err := retryIdempotent(ctx, func() error { return setLeaf(ctx, leader.client(), siteDescPath(t, "big"), strVal(v)) }); err != nil {
				t.Fatalf("big Set %d: %v", i, err)
			}
			acked["big"] = v
		}
		t.Logf("70 MiB of Sets took %v", time.Since(start).Round(time.Millisecond))
		lst, err := clusterState(ctxT(t, 5*time.Second), leader.client())
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range writeDescs(t, live, "wu", 60) {
			acked[k] = v
		}
		// The generous bound is for a loaded CI machine: the snapshot first
		// syncs the store, which has just taken 70 MiB.
		waitSnapshot(t, leader, lst.AppliedIndex+20, 30*time.Second)
		// Same name and addresses, no Raft state: it joins through a live
		// member, which finds its member entry already there.
		f.join = leader.addr
		f.launch()
		if err := f.ready(); err != nil {
			t.Fatal(err)
		}
		took := waitDescs(t, f, acked, 20*time.Second)
		t.Logf("wiped follower %s had all %d Sets %v after serving; it installed a snapshot at index %d", f.name, len(acked), took.Round(time.Millisecond), snapshotIndex(t, f))
		if snapshotIndex(t, f) == 0 {
			t.Errorf("wiped follower %s caught up without a snapshot: the test did not exercise InstallSnapshot", f.name)
		}
		// With nothing written since, its /system/cluster/state (refreshed
		// every 500 ms) reports the same applied index as the leader's.
		deadline := time.Now().Add(2 * time.Second)
		for {
			lst, err1 := clusterState(ctxT(t, 5*time.Second), leader.client())
			fst, err2 := clusterState(ctxT(t, 5*time.Second), f.client())
			if err1 == nil && err2 == nil && fst.AppliedIndex == lst.AppliedIndex && fst.CommitIndex == lst.CommitIndex {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("after catching up by snapshot, wiped follower %s reports %+v, the leader %+v (%v %v)", f.name, fst, lst, err1, err2)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		l := waitCluster(t, nodes, 3, 5*time.Second)
		if rs := roles(t, nodes); rs[f.name] != "FOLLOWER" && l != f {
			t.Errorf("wiped follower %s has role %s", f.name, rs[f.name])
		}
		// It takes part in writes again.
		more := writeDescs(t, nodes, "wv", 9)
		for _, n := range nodes {
			waitDescs(t, n, more, 5*time.Second)
		}
		st, err := clusterState(ctxT(t, 5*time.Second), f.client())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("wiped follower's state: %+v", st)
	})

	if t.Failed() {
		return // the cluster is not in the state the last step assumes
	}
	t.Run("restarted-without-quorum", func(t *testing.T) {
		// Every node has applied every Set and holds snapshots older than
		// that. Stop them all and restart one alone: it cannot reach a
		// quorum, so it either waits (the 15 s bound) or serves what it
		// had applied: never an older store than before the restart.
		// The last Sets (fewer than the snapshot threshold) are in the
		// logs and the stores, not in any snapshot.
		for k, v := range writeDescs(t, nodes, "wq", 20) {
			acked[k] = v
		}
		for _, n := range nodes {
			waitDescs(t, n, acked, 5*time.Second)
		}
		var appliedBefore uint64
		f := followers[0]
		deadline := time.Now().Add(2 * time.Second)
		for {
			// /system/cluster/state is refreshed every 500 ms.
			st, err := clusterState(ctxT(t, 5*time.Second), f.client())
			if err != nil {
				t.Fatal(err)
			}
			if appliedBefore = st.AppliedIndex; appliedBefore > snapshotIndex(t, f) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A clean stop (SIGTERM) of every node, as for maintenance.
		for _, n := range nodes {
			if code, err := n.d.stop(syscall.SIGTERM, 10*time.Second); err != nil || code != 0 {
				t.Fatalf("stopping %s: exit %d, %v", n.name, code, err)
			}
		}
		t.Logf("%s before the stop: applied index %d, newest snapshot at index %d", f.name, appliedBefore, snapshotIndex(t, f))
		f.launch()
		if err := f.ready(); err != nil {
			t.Logf("%s alone did not serve within 10 s (waiting for a quorum): %v", f.name, err)
		} else {
			got, err := descs(ctxT(t, 5*time.Second), f.client())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s alone served %v after launch", f.name, f.readyAt.Sub(f.launchedAt).Round(time.Millisecond))
			if diff := diffDescs(got, acked); len(diff) > 0 {
				t.Errorf("%s, restarted without a quorum, served %v after launch a store older than the one it had applied before: %d of %d descriptions missing or old, e.g. %v",
					f.name, f.readyAt.Sub(f.launchedAt).Round(time.Millisecond), len(diff), len(acked), diff[:min(3, len(diff))])
			}
		}
		// With the others back it has everything.
		for _, n := range nodes {
			if n != f {
				n.launch()
			}
		}
		for _, n := range nodes {
			if n != f {
				if err := n.ready(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if !f.alive() || f.d.Client == nil {
			if err := f.ready(); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes {
			waitDescs(t, n, acked, 10*time.Second)
		}
	})
}

// ---------------------------------------------------------------------------
// 5. Removing members.

func memberPathT(t testing.TB, name string) *gpb.Path {
	return path(t, "/system/cluster/members/member[node-name="+name+"]")
}

func waitMembers(t testing.TB, nodes []*cnode, want []string, timeout time.Duration) {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for {
			ms, err := members(ctxT(t, 5*time.Second), n.client())
			var got []string
			for name := range ms {
				got = append(got, name)
			}
			sort.Strings(got)
			if err == nil && strings.Join(got, ",") == strings.Join(want, ",") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s lists members %v (%v), want %v", n.name, got, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestRemoveMember(t *testing.T) {
	t.Parallel()

	t.Run("follower", func(t *testing.T) {
		t.Parallel()
		nodes := startCluster(t, 3, 0)
		leader := waitCluster(t, nodes, 3, 5*time.Second)
		victim := byName(nodes, "n3")
		if victim == leader {
			victim = byName(nodes, "n2")
		}
		var via *cnode
		for _, n := range nodes {
			if n != leader && n != victim {
				via = n
			}
		}
		if via == nil {
			t.Fatal("no follower to send the delete to")
		}
		if _, err := via.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Delete: []*gpb.Path{memberPathT(t, victim.name)}}); err != nil {
			t.Fatalf("deleting member %s through follower %s: %v", victim.name, via.name, err)
		}
		rest := []*cnode{leader, via}
		waitMembers(t, rest, []string{leader.name, via.name}, 5*time.Second)
		waitCluster(t, rest, 2, 5*time.Second)
		more := writeDescs(t, rest, "rm", 10)
		for _, n := range rest {
			waitDescs(t, n, more, 5*time.Second)
		}
		// The cluster keeps working without the removed node running.
		victim.d.kill()
		more = writeDescs(t, rest, "rn", 10)
		for _, n := range rest {
			waitDescs(t, n, more, 5*time.Second)
		}
	})

	t.Run("leader", func(t *testing.T) {
		t.Parallel()
		nodes := startCluster(t, 3, 0)
		leader := waitCluster(t, nodes, 3, 5*time.Second)
		var via *cnode
		var rest []*cnode
		for _, n := range nodes {
			if n != leader {
				rest = append(rest, n)
				via = n
			}
		}
		_, err := via.client().Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Delete: []*gpb.Path{memberPathT(t, leader.name)}})
		if err != nil {
			t.Errorf("deleting the leader's member entry (%s) through follower %s: %v", leader.name, via.name, err)
		}
		// However the Set ended, the remaining members must agree with the
		// Raft configuration: either the leader is gone from both, or from
		// neither.
		wantMembers := 2
		if err != nil {
			wantMembers = 3 // a failed Set changes nothing
		}
		newLeader := waitCluster(t, rest, wantMembers, 10*time.Second)
		ms, _ := members(ctxT(t, 5*time.Second), newLeader.client())
		_, listed := ms[leader.name]
		t.Logf("after the delete: Set error %v; %s leads; %s listed in members: %v", err, newLeader.name, leader.name, listed)
		if listed {
			// Still a member, so it must still follow the cluster.
			deadline := time.Now().Add(3 * time.Second)
			for {
				st, serr := clusterState(ctxT(t, 5*time.Second), leader.client())
				if serr == nil && st.Leader == newLeader.name {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s is still listed in /system/cluster/members but no longer takes part in the cluster: its state is %+v (%v) while %s leads the others",
						leader.name, st, serr, newLeader.name)
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		more := writeDescs(t, rest, "rl", 10)
		for _, n := range rest {
			waitDescs(t, n, more, 5*time.Second)
		}
	})
}

// contacts reads every member's reachable and last-contact leaves as one
// node sees them.
func contacts(ctx context.Context, c gpb.GNMIClient) (map[string]bool, map[string]uint64, error) {
	p, _ := pathNoT("/system/cluster/members/member[node-name=*]/state")
	resp, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, nil, err
	}
	reach, last := map[string]bool{}, map[string]uint64{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			name := elems[3].GetKey()["node-name"]
			switch elems[len(elems)-1].GetName() {
			case "reachable":
				reach[name] = u.GetVal().GetBoolVal()
			case "last-contact":
				last[name] = u.GetVal().GetUintVal()
			}
		}
	}
	return reach, last, nil
}

// waitReachable polls node n until it reports want for every member named.
func waitReachable(t testing.TB, n *cnode, want map[string]bool, timeout time.Duration) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		reach, last, err := contacts(ctxT(t, 5*time.Second), n.client())
		ok := err == nil
		for name, w := range want {
			if r, has := reach[name]; !has || r != w {
				ok = false
			}
		}
		if ok {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s reports reachability %v (%v), want %v", n.name, reach, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMemberReachability(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	all := map[string]bool{"n1": true, "n2": true, "n3": true}
	for _, n := range nodes {
		last := waitReachable(t, n, all, 5*time.Second)
		for name := range all {
			if d := time.Since(time.Unix(0, int64(last[name]))); d < 0 || d > 3*time.Second {
				t.Errorf("%s reports %s last contacted %v ago, want within 3s", n.name, name, d)
			}
		}
	}
	var victim, other *cnode
	for _, n := range nodes {
		if n != leader {
			if victim == nil {
				victim = n
			} else {
				other = n
			}
		}
	}
	killedAt := time.Now()
	victim.d.kill()
	down := map[string]bool{leader.name: true, other.name: true, victim.name: false}
	// The leader judges by its heartbeats; the other follower takes the
	// leader's word (copied once a second).
	lastL := waitReachable(t, leader, down, 3*time.Second)
	t.Logf("leader %s saw %s unreachable %v after the kill", leader.name, victim.name, time.Since(killedAt).Round(time.Millisecond))
	waitReachable(t, other, down, 5*time.Second)
	stale := time.Unix(0, int64(lastL[victim.name]))
	if stale.After(killedAt.Add(time.Second)) || stale.Before(killedAt.Add(-3*time.Second)) {
		t.Errorf("leader reports the killed %s last contacted at %v, killed at %v", victim.name, stale, killedAt)
	}
	// Once the leader's heartbeats have failed for a while, the last
	// contact stays where the member last answered.
	st1, err1 := clusterState(ctxT(t, 5*time.Second), leader.client())
	_, settled, err := contacts(ctxT(t, 5*time.Second), leader.client())
	if err != nil || err1 != nil {
		t.Fatal(err, err1)
	}
	time.Sleep(1500 * time.Millisecond)
	_, last, err := contacts(ctxT(t, 5*time.Second), leader.client())
	st2, err2 := clusterState(ctxT(t, 5*time.Second), leader.client())
	switch {
	case err != nil || err2 != nil:
		t.Fatal(err, err2)
	case st1.Role != "LEADER" || st2.Role != "LEADER" || st1.Term != st2.Term:
		// A new leader starts its own judgement; on a machine loaded
		// enough for an election the check is moot.
		t.Logf("leadership moved during the check (%+v, then %+v): last-contact not judged", st1, st2)
	case last[victim.name] != settled[victim.name]:
		t.Errorf("the killed member's last-contact moved on the leader: %d, then %d", settled[victim.name], last[victim.name])
	}
	victim.launch()
	if err := victim.ready(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		waitReachable(t, n, all, 5*time.Second)
	}
}

// ---------------------------------------------------------------------------
// 6. Linearizable reads on followers.

func TestLinearizableGetOnFollower(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	var followers []*cnode
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	// Write on one node, read the instant after on a follower that is not
	// the writer: the linearizable read must see the write.
	writers := []*cnode{leader, followers[0], followers[1]}
	stale := 0
	var lastIndex uint64 // of the last Set, from the patronus-index header
	for i := 0; i < 60; i++ {
		w := writers[i%3]
		r := followers[(i+1)%2]
		if r == w {
			r = followers[i%2]
		}
		val := fmt.Sprintf("v%d", i)
		var hdr metadata.MD
		ctx := ctxT(t, 10*time.Second)
		if err := retryIdempotent(ctx, func() error {
			_, err := w.client().Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: siteDescPath(t, "lin"), Val: strVal(val)}}}, grpc.Header(&hdr))
			return err
		}); err != nil {
			t.Fatalf("Set on %s: %v", w.name, err)
		}
		if v := hdr.Get("patronus-index"); len(v) > 0 {
			fmt.Sscan(v[0], &lastIndex)
		}
		got, err := desc(linearizable(ctxT(t, 5*time.Second)), r.client(), "lin")
		if err != nil {
			t.Fatalf("linearizable Get on follower %s: %v", r.name, err)
		}
		if got != val {
			t.Errorf("linearizable Get on follower %s right after the Set on %s returned %q, want %q", r.name, w.name, got, val)
		}
		// For contrast: a plain read on the other follower may lag.
		if got, _ := desc(ctxT(t, 5*time.Second), followers[0].client(), "lin"); got != val && followers[0] != w {
			stale++
		}
	}
	t.Logf("plain reads on a follower were stale %d of 60 times", stale)

	// After a failover, once the new leader has committed its first entry
	// (Raft's no-op, past the last Set's index) and before anything is
	// written in the new term, a linearizable read still answers promptly.
	if lastIndex == 0 {
		t.Fatal("Set responses carry no patronus-index header")
	}
	leader.d.kill()
	deadline := time.Now().Add(5 * time.Second)
	var newLeader *cnode
	for newLeader == nil {
		for _, f := range followers {
			if st, err := clusterState(ctxT(t, time.Second), f.client()); err == nil && st.Role == "LEADER" && st.CommitIndex > lastIndex {
				newLeader = f
				t.Logf("new leader %s: %+v; the last Set was index %d", f.name, st, lastIndex)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader with a commit index past the last Set within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, f := range followers {
		start := time.Now()
		got, err := desc(linearizable(ctxT(t, 3*time.Second)), f.client(), "lin")
		t.Logf("after failover, linearizable Get on %s (new leader %s): %q, %v in %v", f.name, newLeader.name, got, err, time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Errorf("linearizable Get on %s after the failover, with no write since: %v", f.name, err)
		} else if got != "v59" {
			t.Errorf("linearizable Get on %s after the failover returned %q, want %q", f.name, got, "v59")
		}
	}
	// Once something is written in the new term, it answers.
	if err := setLeaf(ctxT(t, 10*time.Second), followers[0].client(), siteDescPath(t, "lin"), strVal("after")); err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		if got, err := desc(linearizable(ctxT(t, 3*time.Second)), f.client(), "lin"); err != nil || got != "after" {
			t.Errorf("linearizable Get on %s after a write in the new term: %q, %v", f.name, got, err)
		}
	}
}

// TestCommitConfirmedSurvivesLeaderKill: a confirmed commit made through a
// follower, whose leader is then killed, is still rolled back on time by the
// new leader, on every node.
func TestCommitConfirmedSurvivesLeaderKill(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	follower := followersOf(nodes, leader)[0]
	if _, err := follower.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: siteDescPath(t, "cc"), Val: strVal("before")}}}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	const window = 2 * time.Second
	start := time.Now()
	ext := []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Commit{Commit: &gnmi_ext.Commit{
		Id:     "risky",
		Action: &gnmi_ext.Commit_Commit{Commit: &gnmi_ext.CommitRequest{RollbackDuration: durationpb.New(window)}},
	}}}}
	if _, err := follower.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: siteDescPath(t, "cc"), Val: strVal("after")}}, Extension: ext}); err != nil {
		t.Fatalf("confirmed commit: %v", err)
	}
	leader.d.kill()
	var survivors []*cnode
	for _, n := range nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	// During the window the change holds; after it, every survivor has the
	// old value back.
	if got, err := desc(linearizable(ctxT(t, 5*time.Second)), survivors[0].client(), "cc"); err != nil || got != "after" {
		t.Fatalf("during the window: description %q, %v; want \"after\"", got, err)
	}
	for _, n := range survivors {
		for {
			got, err := desc(ctxT(t, 2*time.Second), n.client(), "cc")
			if err == nil && got == "before" {
				break
			}
			if time.Since(start) > window+5*time.Second {
				t.Fatalf("%s: description %q, %v %v after the commit; want the rollback to \"before\"", n.name, got, err, time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if took := time.Since(start); took < window {
		t.Fatalf("rolled back after %v, before the %v window ended", took, window)
	} else {
		t.Logf("rolled back %v after the commit (window %v), across a leader kill", took, window)
	}
}
