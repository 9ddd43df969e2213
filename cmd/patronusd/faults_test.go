// Fault tests that need root: a real network partition built from network
// namespaces, and a data directory on a tmpfs that runs out of space.
package main_test

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("skipped: needs root to %s (running as uid %d)", what, os.Geteuid())
	}
}

// sh runs a command and returns its combined output, or an error that
// includes it.
func sh(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ---------------------------------------------------------------------------
// A network of namespaces.

// netLab is a bridge in a "hub" namespace, one namespace per node attached
// to it by a veth pair, and one more veth pair from the test's own
// namespace into the hub, so that the test reaches every node directly.
//
//	root ns: ptr<sfx> 198.18.R.254 ──┐
//	                                 hub ns: br0 ── p1 ── eth0 198.18.R.1 (node ns 1)
//	                                              ── p2 ── eth0 198.18.R.2 (node ns 2)
//	                                              ── p3 ── eth0 198.18.R.3 (node ns 3)
type netLab struct {
	t       *testing.T
	sfx     string
	subnet  string // "198.18.R."
	hub     string
	nodeNS  []string // index i is node i+1
	rootDev string
}

func newNetLab(t *testing.T, nodes int) *netLab {
	t.Helper()
	sfx := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	l := &netLab{t: t, sfx: sfx, hub: "pth-" + sfx, rootDev: "ptr" + sfx}
	// A /24 of the benchmark range that no interface here uses yet.
	for attempt := 0; ; attempt++ {
		r := rand.IntN(256)
		out, err := sh("ip", "-o", "addr", "show", "to", fmt.Sprintf("198.18.%d.0/24", r))
		if err == nil && strings.TrimSpace(out) == "" {
			l.subnet = fmt.Sprintf("198.18.%d.", r)
			break
		}
		if attempt == 20 {
			t.Fatalf("no free /24 in 198.18.0.0/16: %v", err)
		}
	}
	for i := 1; i <= nodes; i++ {
		l.nodeNS = append(l.nodeNS, fmt.Sprintf("ptn%d-%s", i, sfx))
	}
	// Registered first, so it runs after the daemons' cleanups have killed
	// the processes in the namespaces.
	t.Cleanup(l.destroy)

	must := func(args ...string) {
		t.Helper()
		if _, err := sh("ip", args...); err != nil {
			t.Fatalf("building the test network: %v", err)
		}
	}
	must("netns", "add", l.hub)
	must("-n", l.hub, "link", "set", "lo", "up")
	must("-n", l.hub, "link", "add", "br0", "type", "bridge")
	must("-n", l.hub, "link", "set", "br0", "up")
	for i, ns := range l.nodeNS {
		port := fmt.Sprintf("p%d", i+1)
		must("netns", "add", ns)
		must("-n", ns, "link", "set", "lo", "up")
		must("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", l.hub)
		must("-n", ns, "addr", "add", l.ip(i+1)+"/24", "dev", "eth0")
		must("-n", ns, "link", "set", "eth0", "up")
		must("-n", l.hub, "link", "set", port, "master", "br0")
		must("-n", l.hub, "link", "set", port, "up")
	}
	must("link", "add", l.rootDev, "type", "veth", "peer", "name", "p0", "netns", l.hub)
	must("addr", "add", l.subnet+"254/24", "dev", l.rootDev)
	must("link", "set", l.rootDev, "up")
	must("-n", l.hub, "link", "set", "p0", "master", "br0")
	must("-n", l.hub, "link", "set", "p0", "up")
	return l
}

// ip is node i's address (i from 1).
func (l *netLab) ip(i int) string { return fmt.Sprintf("%s%d", l.subnet, i) }

func (l *netLab) destroy() {
	for _, ns := range append([]string{l.hub}, l.nodeNS...) {
		if _, err := sh("ip", "netns", "del", ns); err != nil {
			l.t.Logf("cleanup: %v", err)
		}
	}
	// Deleting the hub deletes the root end of its veth pair with it.
	if _, err := sh("ip", "link", "show", l.rootDev); err == nil {
		if _, err := sh("ip", "link", "del", l.rootDev); err != nil {
			l.t.Logf("cleanup: %v", err)
		}
	}
}

// bogusMAC is where a cut link sends its frames: no interface has it, so
// the bridge floods them and every receiver drops them, silently, the way
// a dead link loses packets (no error reaches the sender).
func bogusMAC(i int) string { return fmt.Sprintf("02:de:ad:be:ef:%02x", i) }

// cut stops all traffic between nodes a and b (from 1), in both
// directions, by pinning each one's neighbour entry for the other to a MAC
// nobody has. The test's own namespace still reaches both.
func (l *netLab) cut(a, b int) error {
	for _, p := range [][2]int{{a, b}, {b, a}} {
		if _, err := sh("ip", "-n", l.nodeNS[p[0]-1], "neigh", "replace", l.ip(p[1]), "lladdr", bogusMAC(p[1]), "dev", "eth0", "nud", "permanent"); err != nil {
			return err
		}
	}
	return nil
}

// heal undoes cut: the nodes resolve each other's addresses again by ARP.
func (l *netLab) heal(a, b int) error {
	for _, p := range [][2]int{{a, b}, {b, a}} {
		if _, err := sh("ip", "-n", l.nodeNS[p[0]-1], "neigh", "del", l.ip(p[1]), "dev", "eth0"); err != nil {
			return err
		}
	}
	return nil
}

// launchIn is launch for a daemon run in network namespace ns (by ip netns
// exec, which execs patronusd in place, so the daemon's process is
// patronusd itself).
func launchIn(t testing.TB, ns, name string, args []string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, stderr: &lockedBuffer{}, done: make(chan struct{})}
	args = withAdminPassword(args, nil)
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, patronusdBin}, args...)...)
	d.cmd.Stderr = d.stderr
	d.cmd.Stdout = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting patronusd in %s: %v", ns, err)
	}
	go func() {
		_ = d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		d.kill()
		if d.conn != nil {
			d.conn.Close()
		}
		if t.Failed() {
			t.Logf("patronusd %s (in %s, %v) stderr:\n%s", d.name, ns, args, d.stderr.String())
		}
	})
	return d
}

// ---------------------------------------------------------------------------
// 1. A partitioned leader.

// setOutcome is the result of a Set sent to the partitioned old leader.
type setOutcome struct {
	site, val string
	err       error
	took      time.Duration
}

func setSite(c gpb.GNMIClient, site, val string, timeout time.Duration) setOutcome {
	start := time.Now()
	p, _ := pathNoT("/sites/site[name=" + site + "]/config/description")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := setLeaf(ctx, c, p, strVal(val))
	return setOutcome{site: site, val: val, err: err, took: time.Since(start)}
}

func TestPartitionedLeader(t *testing.T) {
	needRoot(t, "create network namespaces, veth pairs and a bridge")
	testStart := time.Now()
	lab := newNetLab(t, 3)
	t.Logf("network: hub %s, nodes %v on %s0/24, test at %s254", lab.hub, lab.nodeNS, lab.subnet, lab.subnet)

	nodes := make([]*cnode, 3)
	for i := range nodes {
		ip := lab.ip(i + 1)
		n := &cnode{t: t, name: fmt.Sprintf("n%d", i+1), addr: ip + ":9339", http: ip + ":9341", raft: ip + ":9340",
			dir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1))}
		if i > 0 {
			n.join = nodes[0].addr
		}
		nodes[i] = n
	}
	ns := func(n *cnode) string { return lab.nodeNS[n.name[1]-'1'] }
	idx := func(n *cnode) int { return int(n.name[1] - '0') }
	startNode := func(n *cnode) {
		t.Helper()
		// Plaintext on the test's own namespaces and bridge.
		n.d = launchIn(t, ns(n), n.name, append(n.args(), "--insecure-non-loopback-dangerous"))
		n.d.Addr, n.d.HTTP, n.d.Dir = n.addr, n.http, n.dir
		if err := n.ready(); err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
	}
	for _, n := range nodes {
		startNode(n) // n1 bootstraps; the others join through it
	}
	leader := waitCluster(t, nodes, 3, 15*time.Second)
	acked := writeDescs(t, nodes, "pa", 30)
	var majority []*cnode
	for _, n := range nodes {
		if n != leader {
			majority = append(majority, n)
		}
	}
	for _, n := range nodes {
		waitDescs(t, n, acked, 5*time.Second)
	}
	t.Logf("cluster formed, %s leads, 30 Sets acknowledged: %v since the start", leader.name, time.Since(testStart).Round(time.Millisecond))

	// Partition: the old leader loses the other two; the test still reaches
	// all three. (If the test stops early, deleting the namespaces undoes
	// it.)
	for _, m := range majority {
		if err := lab.cut(idx(leader), idx(m)); err != nil {
			t.Fatal(err)
		}
	}
	cutAt := time.Now()

	// A Set sent to the old leader at once, while it may still believe it
	// leads: it cannot be committed, so it must not be acknowledged.
	first := make(chan setOutcome, 1)
	go func() { first <- setSite(leader.client(), "part-old-1", "unacked 1", 4*time.Second) }()

	// The majority elects a new leader.
	var newLeader *cnode
	for newLeader == nil {
		var seen []string
		agree := ""
		for i, m := range majority {
			st, err := clusterState(ctxT(t, time.Second), m.client())
			seen = append(seen, fmt.Sprintf("%s: %+v %v", m.name, st, err))
			if err != nil || st.Leader == "" || st.Leader == leader.name || (i > 0 && st.Leader != agree) {
				agree = ""
				break
			}
			agree = st.Leader
		}
		if agree != "" {
			newLeader = byName(nodes, agree)
			break
		}
		if time.Since(cutAt) > 5*time.Second {
			t.Fatalf("5s after cutting off leader %s the other two have not agreed on a new leader: %v", leader.name, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
	electedIn := time.Since(cutAt)
	t.Logf("%s cut off; the majority agrees that %s leads after %v", leader.name, newLeader.name, electedIn.Round(time.Millisecond))

	// Sets sent to the majority succeed (writeDescs fails the test on any
	// error).
	t0 := time.Now()
	for k, v := range writeDescs(t, majority, "pb", 20) {
		acked[k] = v
	}
	t.Logf("20 Sets on the majority took %v", time.Since(t0).Round(time.Millisecond))

	// A second Set to the old leader, now that the majority has moved on.
	second := setSite(leader.client(), "part-old-2", "unacked 2", 3*time.Second)
	outcomes := []setOutcome{<-first, second}
	oldSt, oldErr := clusterState(ctxT(t, 2*time.Second), leader.client())
	t.Logf("old leader %s during the partition: %+v %v", leader.name, oldSt, oldErr)
	var unacked []string
	for _, o := range outcomes {
		code := status.Code(o.err)
		t.Logf("Set %s on the cut-off old leader %s: %v after %v (%v)", o.site, leader.name, code, o.took.Round(time.Millisecond), o.err)
		switch code {
		case codes.OK:
			t.Errorf("a Set of %s sent to the cut-off old leader %s was acknowledged: it cannot have been committed by a majority", o.site, leader.name)
			acked[o.site] = o.val
		case codes.Unavailable, codes.DeadlineExceeded:
			unacked = append(unacked, o.site)
		default:
			t.Errorf("a Set of %s sent to the cut-off old leader %s failed with %v, want UNAVAILABLE or DEADLINE_EXCEEDED: %v", o.site, leader.name, code, o.err)
			unacked = append(unacked, o.site)
		}
	}
	absent := func(n *cnode, when string) {
		t.Helper()
		for _, site := range unacked {
			got, err := desc(linearizable(ctxT(t, 5*time.Second)), n.client(), site)
			if err != nil {
				t.Errorf("%s: reading %s %s: %v", n.name, site, when, err)
			} else if got != "" {
				t.Errorf("%s has %s = %q %s, but that Set was never acknowledged", n.name, site, got, when)
			}
		}
	}
	for _, m := range majority {
		absent(m, "during the partition")
		waitDescs(t, m, acked, 5*time.Second)
	}

	// Heal: the old leader follows the new one and has every acknowledged
	// value.
	for _, m := range majority {
		if err := lab.heal(idx(leader), idx(m)); err != nil {
			t.Fatal(err)
		}
	}
	healAt := time.Now()
	deadline := healAt.Add(10 * time.Second)
	for {
		st, err := clusterState(ctxT(t, 2*time.Second), leader.client())
		var diff []string
		var derr error
		if err == nil && st.Leader == newLeader.name {
			var got map[string]string
			if got, derr = descs(ctxT(t, 2*time.Second), leader.client()); derr == nil {
				if diff = diffDescs(got, acked); len(diff) == 0 {
					t.Logf("after healing, old leader %s follows %s (%s) and has all %d acknowledged values after %v",
						leader.name, st.Leader, st.Role, len(acked), time.Since(healAt).Round(time.Millisecond))
					break
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("10s after healing, old leader %s reports %+v (%v); descriptions: %v missing or old, read error %v",
				leader.name, st, err, diff[:min(5, len(diff))], derr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, n := range nodes {
		absent(n, "after healing")
	}
	// The old leader takes part in writes again.
	more := writeDescs(t, []*cnode{leader}, "pc", 5)
	for _, n := range nodes {
		waitDescs(t, n, more, 5*time.Second)
	}
	t.Logf("TestPartitionedLeader took %v", time.Since(testStart).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// 2. A full disk.

// diskSize is the tmpfs the data dir lives on. raft-wal preallocates each
// 64 MiB log segment (fallocate), so a smaller file system cannot even
// start a node (it exits with "open raft-wal: no space left on device").
// The leader refuses entries once less than 80 MiB (room for the next
// log segment and Pebble, plus the entry) would be left: on a 256 MiB
// disk, after about 1,500 64 KiB Sets, which fill the first log segment.
// (What raft-wal does when it meets the full disk anyway is
// TestLogStoreFullDisk's, in gnmi-server/replication.)
const diskSize = "256m"

// mountTmpfs mounts a tmpfs of size (as mount's size= takes it) on a new
// directory, unmounted when the test ends. Call it before starting the
// daemons that use it: its cleanup then runs after they are killed.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	needRoot(t, "mount a tmpfs")
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := sh("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := sh("umount", dir); err != nil {
			t.Logf("cleanup: %v; unmounting lazily", err)
			sh("umount", "-l", dir)
		}
	})
	return dir
}

func TestDiskFull(t *testing.T) {
	testStart := time.Now()
	dir := mountTmpfs(t, diskSize)
	data := filepath.Join(dir, "data")
	d := start(t, data)

	// Fill the disk with 64 KiB descriptions on distinct sites until a Set
	// fails.
	big := strings.Repeat("0123456789abcdef", 4096)
	acked := map[string]string{}
	var failure error
	var failedSite string
	for i := 0; i < 4000; i++ {
		site := fmt.Sprintf("df-%04d", i)
		val := fmt.Sprintf("%04d %s", i, big)
		o := setSite(d.Client, site, val, 10*time.Second)
		if o.err != nil {
			failure, failedSite = o.err, site
			break
		}
		acked[site] = val
	}
	df, _ := sh("df", "-k", dir)
	if failure == nil {
		t.Fatalf("%d Sets of 64 KiB all succeeded on a %s tmpfs:\n%s", len(acked), diskSize, df)
	}
	code := status.Code(failure)
	t.Logf("after %d acknowledged Sets (%v), Set %s failed: %v: %v\n%s", len(acked), time.Since(testStart).Round(time.Millisecond), failedSite, code, failure, df)
	if code != codes.ResourceExhausted && code != codes.Unavailable {
		t.Errorf("a Set on a full disk failed with %v, want RESOURCE_EXHAUSTED or UNAVAILABLE: %v", code, failure)
	}

	// Does the process keep serving reads, or exit with a clear error?
	time.Sleep(500 * time.Millisecond)
	if d.exited() {
		stderr := d.stderr.String()
		t.Logf("REPORT: patronusd exited on the full disk (%v); stderr:\n%s", d.state, firstLines(stderr, 40))
		if !strings.Contains(stderr, "no space left on device") {
			t.Errorf("patronusd exited on a full disk without saying so (no \"no space left on device\" in its stderr)")
		}
		if strings.Contains(stderr, "goroutine ") || d.state.ExitCode() == 2 {
			t.Errorf("patronusd crashed on a full disk (%v, a Go panic with a stack dump) instead of refusing the Set with RESOURCE_EXHAUSTED or exiting with a one-line error", d.state)
		}
	} else {
		got, err := descs(ctxT(t, 10*time.Second), d.Client)
		if err != nil {
			t.Errorf("patronusd is running on the full disk but a Get fails: %v", err)
		} else if diff := diffDescs(got, acked); len(diff) > 0 {
			t.Errorf("on the full disk, %d of %d acknowledged values are missing or old, e.g. %v", len(diff), len(acked), shorten(diff[:min(3, len(diff))]))
		} else {
			t.Logf("REPORT: patronusd keeps running on the full disk and serves Gets: all %d acknowledged values readable", len(acked))
		}
		// A small Set on the full disk is refused at once (not held
		// until its deadline), or accepted.
		o := setSite(d.Client, "df-small", "small", 5*time.Second)
		t.Logf("a small Set on the full disk: %v (%v)", status.Code(o.err), o.err)
		if o.err == nil {
			acked["df-small"] = "small"
		} else if c := status.Code(o.err); c != codes.ResourceExhausted && c != codes.Unavailable {
			t.Errorf("a small Set on the full disk failed with %v, want RESOURCE_EXHAUSTED or UNAVAILABLE: %v", c, o.err)
		}
	}

	// Free space. No hand repair: the same data dir, restarted only if the
	// process is gone.
	if _, err := sh("mount", "-o", "remount,size=448m", dir); err != nil {
		t.Fatal(err)
	}
	restarted := false
	if d.exited() {
		d = start(t, data)
		restarted = true
	}
	// New Sets succeed (allowing the server a few seconds to notice the
	// space), then every acknowledged value is there.
	var lastErr error
	recovered := false
	freedAt := time.Now()
	for i := 0; !recovered && time.Since(freedAt) < 10*time.Second && !d.exited(); i++ {
		o := setSite(d.Client, fmt.Sprintf("df-after-%d", i), "after", 3*time.Second)
		if o.err != nil {
			lastErr = o.err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		acked[o.site] = o.val
		recovered = true
		t.Logf("after the space was freed (restarted: %v), the first Set succeeded %v later; %d failed before it (last: %v)", restarted, time.Since(freedAt).Round(time.Millisecond), i, lastErr)
	}
	if d.exited() {
		t.Fatalf("after the space was freed patronusd exited (%v): %s", d.state, tail(d.stderr.String(), 15))
	}
	if !recovered {
		t.Errorf("after the space was freed (restarted: %v), no Set succeeded within 10s without hand repair: last error %v", restarted, lastErr)
	}
	for i := 0; i < 5; i++ {
		o := setSite(d.Client, fmt.Sprintf("df-more-%d", i), fmt.Sprintf("more %d %s", i, big), 5*time.Second)
		if o.err != nil {
			t.Errorf("Set %s after the space was freed (restarted: %v): %v", o.site, restarted, o.err)
			continue
		}
		acked[o.site] = o.val
	}
	got, err := descs(ctxT(t, 10*time.Second), d.Client)
	if err != nil {
		t.Fatalf("Get after the space was freed: %v", err)
	}
	// The Set that failed was not acknowledged: it may or may not have
	// been applied (with replication it may be in the Raft log already).
	if v, ok := got[failedSite]; ok {
		t.Logf("the Set of %s that failed on the full disk was applied after all (%d bytes): its outcome was unknown, which UNAVAILABLE allows", failedSite, len(v))
	} else {
		t.Logf("the Set of %s that failed on the full disk was not applied", failedSite)
	}
	if diff := diffDescs(got, acked); len(diff) > 0 {
		t.Errorf("after the space was freed (restarted: %v), %d of %d acknowledged values are missing or old, e.g. %v", restarted, len(diff), len(acked), shorten(diff[:min(3, len(diff))]))
	}
	// And they survive a restart.
	if code, err := d.stop(os.Interrupt, 10*time.Second); err != nil || code != 0 {
		t.Errorf("stopping patronusd after the disk-full episode: exit %d, %v: %s", code, err, tail(d.stderr.String(), 10))
	}
	d = start(t, data)
	if got, err = descs(ctxT(t, 10*time.Second), d.Client); err != nil {
		t.Fatalf("Get after a restart: %v", err)
	}
	if diff := diffDescs(got, acked); len(diff) > 0 {
		t.Errorf("after a clean restart, %d of %d acknowledged values are missing or old, e.g. %v", len(diff), len(acked), shorten(diff[:min(3, len(diff))]))
	}
	t.Logf("TestDiskFull took %v; %d acknowledged values checked (restarted after the disk filled: %v)", time.Since(testStart).Round(time.Millisecond), len(acked), restarted)
}

// TestMemberDiskFull: one member's disk fills while the cluster takes
// writes. The full member refuses Sets with RESOURCE_EXHAUSTED at once and
// falls behind without failing; the others go on acknowledging writes (a
// full leader hands leadership over); once space is freed the full member
// catches up with every acknowledged write and takes Sets again, without a
// restart.
func TestMemberDiskFull(t *testing.T) {
	t.Run("follower", func(t *testing.T) { memberDiskFull(t, false) })
	t.Run("leader", func(t *testing.T) { memberDiskFull(t, true) })
}

// memberDiskFull fills the disk of the leader, n1, or of a follower, n3.
func memberDiskFull(t *testing.T, leader bool) {
	testStart := time.Now()
	disk := mountTmpfs(t, "256m")
	fullName := "n3"
	if leader {
		fullName = "n1"
	}
	// Each node is described once the one before it listens: a free
	// address chosen earlier could be chosen again.
	var nodes, others []*cnode
	var full *cnode
	for _, name := range []string{"n1", "n2", "n3"} {
		join := ""
		if len(nodes) > 0 {
			join = nodes[0].addr
		}
		n := newNode(t, name, join)
		if name == fullName {
			n.dir, full = filepath.Join(disk, name), n
		} else {
			others = append(others, n)
		}
		if err := n.startFresh(); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	n2 := nodes[1]
	if l := waitCluster(t, nodes, 3, 15*time.Second); (l == full) != leader {
		t.Fatalf("%s leads; the test wants %s, whose disk it fills, leading: %v", l.name, full.name, leader)
	}
	before := writeDescs(t, nodes, "fd-before", 20)
	waitDescs(t, full, before, 10*time.Second)

	// Fill the disk to 40 MiB free: below the 80 MiB a log keeps.
	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	filler := filepath.Join(disk, "filler")
	if out, err := sh("fallocate", "-l", fmt.Sprint(free-40<<20), filler); err != nil {
		t.Fatalf("fallocate: %v: %s", err, out)
	}

	if leader {
		// A Set sent to a member with room goes through: the full
		// leader sends it back, hands leadership over, and the Set is
		// retried on the new leader.
		o := setSite(n2.client(), "fd-via-n2", "taken", 10*time.Second)
		if o.err != nil {
			t.Fatalf("a Set on n2 while the leader's disk is full: %v", o.err)
		}
		before[o.site] = o.val
		t.Logf("a Set on n2 while the leader's disk is full took %v", o.took.Round(time.Millisecond))
	}
	// A Set sent to the full member is refused at once for its disk.
	o := setSite(full.client(), "fd-full", "refused", 10*time.Second)
	if c := status.Code(o.err); c != codes.ResourceExhausted {
		t.Errorf("a Set on %s with the full disk: %v (%v), want RESOURCE_EXHAUSTED", full.name, c, o.err)
	} else {
		t.Logf("a Set on %s with the full disk, refused in %v: %v", full.name, o.took.Round(time.Millisecond), o.err)
	}
	if leader {
		// Refusing it, the full leader hands leadership over.
		l := waitCluster(t, nodes, 3, 15*time.Second)
		for deadline := time.Now().Add(15 * time.Second); l == full && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			l = waitCluster(t, nodes, 3, 15*time.Second)
		}
		if l == full {
			t.Fatalf("%s, out of room, still leads after 15s", full.name)
		}
		t.Logf("%s, out of room, handed leadership to %s", full.name, l.name)
	}
	// The others go on acknowledging writes.
	during := writeDescs(t, others, "fd-during", 40)
	if !full.alive() {
		t.Fatalf("%s exited on its full disk: %s", full.name, tail(full.d.stderr.String(), 15))
	}
	_, scrape := httpGet(t, full.http, "/metrics")
	if v, ok := metricValue(scrape, "patronus_raft_log_full"); !ok || v != 1 {
		t.Errorf("%s's patronus_raft_log_full on its full disk = %v (present: %v), want 1", full.name, v, ok)
	}

	// Space freed: the full member catches up and takes Sets again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	want := maps.Clone(before)
	maps.Copy(want, during)
	took := waitDescs(t, full, want, 30*time.Second)
	t.Logf("%s had every write acknowledged while its disk was full %v after space was freed", full.name, took.Round(time.Millisecond))
	var after setOutcome
	for time.Since(freedAt) < 30*time.Second {
		if after = setSite(full.client(), "fd-after", "taken", 5*time.Second); after.err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if after.err != nil {
		t.Fatalf("a Set on %s after space was freed: %v", full.name, after.err)
	}
	want[after.site] = after.val
	_, scrape = httpGet(t, full.http, "/metrics")
	if v, ok := metricValue(scrape, "patronus_raft_log_full"); !ok || v != 0 {
		t.Errorf("%s's patronus_raft_log_full after space was freed = %v (present: %v), want 0", full.name, v, ok)
	}
	for _, n := range nodes {
		waitDescs(t, n, want, 10*time.Second)
	}
	t.Logf("took %v", time.Since(testStart).Round(time.Millisecond))
}

// firstLines returns the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// shorten trims long values in diffDescs output.
func shorten(diff []string) []string {
	out := make([]string, len(diff))
	for i, d := range diff {
		if len(d) > 120 {
			d = d[:120] + "…"
		}
		out[i] = d
	}
	return out
}
