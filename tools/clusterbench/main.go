// Command clusterbench compares a three-voter patronusd cluster with a
// three-member etcd cluster on one machine in one run. It builds nothing: it
// starts the given binaries in a temporary directory on free 127.0.0.1 ports
// (patronusd with --insecure, or with TLS as deployed under -tls: Raft and
// the members' calls over mutual TLS), waits for a leader and all members, and then
// measures each cluster in turn with the same concurrency and value size:
// one-leaf writes to the leader by 1 and by -clients clients (a gNMI Set of
// /sites/site[name=s<k>]/config/description; an etcd Put of s<k>); -batch
// updates per request (one SetRequest; one etcd Txn); deleting a site that
// -cascade-paths paths refer to (etcd: one Txn deleting the site and the
// paths, the cascade its client would work out), p50 of -cascade-reps; and
// failover: while a client writes round robin to all members (-write-timeout
// each), SIGKILL the leader and time the first acknowledged write sent after
// the kill (and when the survivors agree on a new leader), then restart the member and wait until it applies a new write,
// -trials times. It prints a table (ratio = patronus/etcd), writes JSON to
// -out, and kills every process it started when it exits, also on Ctrl-C.
//
//	cd tools/clusterbench && go run . -patronusd ../../bin/patronusd -duration 2s -trials 5
package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	flagPatronusd = flag.String("patronusd", "", "path of the patronusd binary (required)")
	flagEtcd      = flag.String("etcd", "/usr/bin/etcd", "path of the etcd binary")
	flagEtcdArgs  = flag.String("etcd-args", "", "extra etcd flags, e.g. \"--heartbeat-interval 50 --election-timeout 250\"")
	flagOut       = flag.String("out", "results.json", "where to write the results as JSON")
	flagDuration  = flag.Duration("duration", 5*time.Second, "how long each throughput workload runs")
	flagValue     = flag.Int("value", 64, "value size in bytes")
	flagClients   = flag.Int("clients", 64, "clients of the concurrent put workload")
	flagKeys      = flag.Int("keys", 1000, "distinct keys (sites) the workloads write")
	flagBatch     = flag.Int("batch", 100, "updates per batch request")
	flagPaths     = flag.Int("cascade-paths", 200, "paths referring to the deleted site")
	flagReps      = flag.Int("cascade-reps", 20, "cascade repetitions")
	flagTrials    = flag.Int("trials", 20, "failover trials")
	flagTimeout   = flag.Duration("write-timeout", 2*time.Second, "timeout of each write in the failover loop")
	flagKeep      = flag.Bool("keep", false, "keep the temporary directory (data and logs)")
	flagTLS       = flag.Bool("tls", false, "run patronusd with TLS, as deployed (Raft and members over mutual TLS with the cluster CA), instead of --insecure")
	flagOnly      = flag.String("only", "", "run only this part, on patronus alone: \"put\" (the concurrent put workload), \"cascade\" (the delete cascade, repeated for -duration), \"patronus\" (every workload) or \"soak\" (the concurrent put workload for -duration, counting elections; fails if there was one)")
	flagProfile   = flag.String("profile", "", "with -only put or cascade: write a CPU profile of each patronus node, taken during the workload, into this directory")
)

// ---------------------------------------------------------------------------
// Processes.

var (
	procsMu sync.Mutex
	procs   []*proc // every process ever started, for cleanup
	tmpDir  string
)

type proc struct {
	name string
	args []string // args[0] is the binary
	cmd  *exec.Cmd
	done chan struct{} // closed once the process is reaped
}

func (p *proc) start() {
	f, err := os.OpenFile(filepath.Join(tmpDir, p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(err, "log file")
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	for _, kv := range os.Environ() { // no stray PATRONUS_* or ETCD_* settings
		if !strings.HasPrefix(kv, "PATRONUS_") && !strings.HasPrefix(kv, "ETCD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// Should clusterbench die without cleaning up, the kernel kills these.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(cmd.Start(), "starting "+p.name)
	done := make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(done) }()
	procsMu.Lock()
	defer procsMu.Unlock()
	p.cmd, p.done = cmd, done
	if !slices.Contains(procs, p) {
		procs = append(procs, p)
	}
}

func (p *proc) alive() bool {
	procsMu.Lock()
	defer procsMu.Unlock()
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill SIGKILLs the process and reaps it.
func (p *proc) kill() {
	procsMu.Lock()
	cmd, done := p.cmd, p.done
	procsMu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	}
}

// tail is the end of p's log.
func tail(p *proc) string {
	b, _ := os.ReadFile(filepath.Join(tmpDir, p.name+".log"))
	return string(b[max(0, len(b)-1500):])
}

var cleanupOnce sync.Once

func cleanup() {
	cleanupOnce.Do(func() {
		procsMu.Lock()
		ps := slices.Clone(procs)
		procsMu.Unlock()
		for _, p := range ps {
			p.kill()
		}
		if *flagKeep {
			fmt.Fprintln(os.Stderr, "kept", tmpDir)
		} else if tmpDir != "" {
			os.RemoveAll(tmpDir)
		}
	})
}

func fatal(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "clusterbench: "+format+"\n", a...)
	cleanup()
	os.Exit(1)
}

func must(err error, what string) {
	if err != nil {
		fatal("%s: %v (logs in %s)", what, err, tmpDir)
	}
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+format+"\n", a...)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err, "free port")
	defer l.Close()
	return l.Addr().String()
}

// poll calls fn until it returns nil or timeout passes.
func poll(timeout time.Duration, what string, fn func() error) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		err := fn()
		if err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %v: %v", what, timeout, err)
		}
	}
}

// adminPassword is the first admin's password of the patronusd cluster
// (patronusd always authenticates; etcd ignores the metadata).
const adminPassword = "clusterbench-admin"

// password sends patronusd's first admin's credentials in the metadata.
type password struct{}

func (password) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"username": "admin", "password": adminPassword}, nil
}

// RequireTransportSecurity is false: without -tls the benchmark runs
// --insecure on loopback.
func (password) RequireTransportSecurity() bool { return false }

func dial(addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	return dialWith(insecure.NewCredentials(), addr, opts...)
}

func dialWith(creds credentials.TransportCredentials, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	// Fail fast, and reconnect quickly to a member that comes back.
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: time.Second,
			Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond}})}, opts...)...)
	must(err, "dial "+addr)
	return cc
}

func tctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// ---------------------------------------------------------------------------
// The two clusters behind one interface. Members are numbered 0 to 2.

type cluster interface {
	members() []*proc
	leader() (int, error)                                     // once every live member agrees on one
	put(ctx context.Context, member int, key, v string) error // one write sent to member
	get(member int, key string) (string, error)               // member's own (local) value of key
	useLeader()                                               // send putN and cascade to the leader
	putN(ctx context.Context, keys []string, v string) error  // len(keys) writes in one request
	cascade() time.Duration                                   // recreate, then time the delete
}

type patronus struct {
	procs []*proc
	addrs []string
	https []string // HTTP (metrics, pprof) addresses
	cs    []gpb.GNMIClient
	lead  gpb.GNMIClient
}

func gpath(s string) *gpb.Path {
	p := &gpb.Path{}
	for _, e := range strings.Split(strings.Trim(s, "/"), "/") {
		name, key, _ := strings.Cut(e, "[")
		pe := &gpb.PathElem{Name: name}
		if k, v, ok := strings.Cut(strings.TrimSuffix(key, "]"), "="); ok {
			pe.Key = map[string]string{k: v}
		}
		p.Elem = append(p.Elem, pe)
	}
	return p
}

func getString(c gpb.GNMIClient, path string) (string, error) {
	ctx, cancel := tctx(2 * time.Second)
	defer cancel()
	r, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{gpath(path)}, Encoding: gpb.Encoding_PROTO})
	for _, n := range r.GetNotification() {
		for _, u := range n.GetUpdate() {
			return u.GetVal().GetStringVal(), nil
		}
	}
	return "", cmp.Or(err, fmt.Errorf("%s: no value", path))
}

func describe(site, v string) *gpb.Update {
	return &gpb.Update{Path: gpath("/sites/site[name=" + site + "]/config/description"),
		Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v}}}
}

func jsonVal(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(s)}}
}

func startPatronus() *patronus {
	c := &patronus{}
	pwFile := filepath.Join(tmpDir, "admin-password")
	must(os.WriteFile(pwFile, []byte(adminPassword+"\n"), 0o600), "admin password file")
	for i := range 3 {
		name, addr, httpAddr := fmt.Sprintf("n%d", i+1), freeAddr(), freeAddr()
		args := []string{*flagPatronusd, "--node-name", name, "--data-dir", filepath.Join(tmpDir, "patronus-"+name),
			"--listen", addr, "--http", httpAddr, "--raft-listen", freeAddr(), "--log-level", "warn",
			"--admin-password-file", pwFile}
		// The benchmark's clients do not verify the generated certificates:
		// everything is on loopback.
		creds := credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}) //nolint:gosec // loopback benchmark
		if !*flagTLS {
			args = append(args, "--insecure")
			creds = insecure.NewCredentials()
		}
		c.https = append(c.https, httpAddr)
		if i > 0 { // they retry until n1 leads
			args = append(args, "--join", c.addrs[0])
		}
		c.procs, c.addrs = append(c.procs, &proc{name: "patronus-" + name, args: args}), append(c.addrs, addr)
		c.cs = append(c.cs, gpb.NewGNMIClient(dialWith(creds, addr, grpc.WithPerRPCCredentials(password{}))))
		c.procs[i].start()
	}
	must(poll(60*time.Second, "patronus cluster of 3", func() error { _, err := c.leader(); return err }), "patronus")
	return c
}

func (c *patronus) members() []*proc { return c.procs }

func (c *patronus) leader() (int, error) {
	leader, addr := "", ""
	for i, p := range c.procs {
		if !p.alive() {
			continue
		}
		l, err := getString(c.cs[i], "/system/cluster/state/leader")
		if err != nil || (leader != "" && l != leader) {
			return -1, fmt.Errorf("%s sees leader %q, others %q: %v", p.name, l, leader, err)
		}
		leader = l
		for j := range c.procs { // every member is recorded on every live node
			a, err := getString(c.cs[i], fmt.Sprintf("/system/cluster/members/member[node-name=n%d]/config/address", j+1))
			if err != nil {
				return -1, fmt.Errorf("%s does not list n%d: %v", p.name, j+1, err)
			} else if fmt.Sprintf("n%d", j+1) == leader {
				addr = a
			}
		}
	}
	if i := slices.Index(c.addrs, addr); i >= 0 && c.procs[i].alive() {
		return i, nil
	}
	return -1, fmt.Errorf("leader %q at %q is not a live member", leader, addr)
}

func (c *patronus) put(ctx context.Context, m int, key, v string) error {
	_, err := c.cs[m].Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{describe(key, v)}})
	return err
}

func (c *patronus) get(m int, key string) (string, error) {
	return getString(c.cs[m], "/sites/site[name="+key+"]/config/description")
}

func (c *patronus) useLeader() {
	l, err := c.leader()
	must(err, "patronus leader")
	c.lead = c.cs[l]
}

func (c *patronus) putN(ctx context.Context, keys []string, v string) error {
	req := &gpb.SetRequest{}
	for _, k := range keys {
		req.Update = append(req.Update, describe(k, v))
	}
	_, err := c.lead.Set(ctx, req)
	return err
}

func (c *patronus) cascade() time.Duration {
	site := `{"name":%q,"config":{"name":%q},"endpoints":{"endpoint":[{"name":"e","config":{"name":"e","address":%q}}]}}`
	sites := fmt.Sprintf(`{"site":[`+site+","+site+"]}", "big", "big", "192.0.2.1", "other", "other", "192.0.2.2")
	paths := make([]string, *flagPaths)
	for i := range paths {
		n := fmt.Sprintf("big-e--other-e-%d", i)
		paths[i] = fmt.Sprintf(`{"name":%q,"config":{"name":%q,"source-site":"big","source-endpoint":"e","destination-site":"other","destination-endpoint":"e"}}`, n, n)
	}
	ctx, cancel := tctx(30 * time.Second)
	defer cancel()
	_, err := c.lead.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: gpath("/sites"), Val: jsonVal(sites)}}})
	must(err, "patronus: creating the sites")
	_, err = c.lead.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{
		{Path: gpath("/paths"), Val: jsonVal(`{"path":[` + strings.Join(paths, ",") + "]}")}}})
	must(err, "patronus: creating the paths")
	// The delete is timed once every member has applied the creation: it
	// measures the delete, not the followers' applying what came before.
	last := fmt.Sprintf("/paths/path[name=big-e--other-e-%d]/config/name", *flagPaths-1)
	for i := range c.cs {
		must(poll(10*time.Second, "the paths on every member", func() error { _, err := getString(c.cs[i], last); return err }), "patronus")
	}
	t0 := time.Now()
	_, err = c.lead.Set(ctx, &gpb.SetRequest{Delete: []*gpb.Path{gpath("/sites/site[name=big]")}})
	d := time.Since(t0)
	must(err, "patronus: deleting the site")
	if _, err := getString(c.lead, "/paths/path[name=big-e--other-e-0]/config/name"); err == nil {
		fatal("patronus: a path of the deleted site survived")
	}
	return d
}

type etcd struct {
	procs []*proc
	urls  []string
	kvs   []pb.KVClient
	mts   []pb.MaintenanceClient
	cli   *clientv3.Client // on the leader
}

func startEtcd() *etcd {
	c := &etcd{}
	var peers, initial []string
	for i := range 3 {
		peers = append(peers, "http://"+freeAddr())
		initial = append(initial, fmt.Sprintf("e%d=%s", i+1, peers[i]))
	}
	for i := range 3 {
		addr := freeAddr()
		url := "http://" + addr
		args := append([]string{*flagEtcd, "--name", fmt.Sprintf("e%d", i+1), "--data-dir", filepath.Join(tmpDir, fmt.Sprintf("etcd-e%d", i+1)),
			"--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "clusterbench",
			"--max-txn-ops", "1024", "--logger", "zap", "--log-level", "warn"}, strings.Fields(*flagEtcdArgs)...)
		p := &proc{name: fmt.Sprintf("etcd-e%d", i+1), args: args}
		p.start()
		cc := dial(addr)
		c.procs, c.urls = append(c.procs, p), append(c.urls, url)
		c.kvs, c.mts = append(c.kvs, pb.NewKVClient(cc)), append(c.mts, pb.NewMaintenanceClient(cc))
	}
	must(poll(60*time.Second, "etcd cluster of 3", func() error { _, err := c.leader(); return err }), "etcd")
	return c
}

func (c *etcd) members() []*proc { return c.procs }

func (c *etcd) leader() (int, error) {
	leader, ids := uint64(0), map[uint64]int{}
	for i, p := range c.procs {
		if !p.alive() {
			continue
		}
		ctx, cancel := tctx(time.Second)
		st, err := c.mts[i].Status(ctx, &pb.StatusRequest{})
		cancel()
		if err != nil || st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return -1, fmt.Errorf("%s sees leader %x, others %x: %v", p.name, st.GetLeader(), leader, err)
		}
		leader, ids[st.Header.MemberId] = st.Leader, i
	}
	if i, ok := ids[leader]; ok {
		return i, nil
	}
	return -1, fmt.Errorf("leader %x is not a live member", leader)
}

func (c *etcd) put(ctx context.Context, m int, key, v string) error {
	_, err := c.kvs[m].Put(ctx, &pb.PutRequest{Key: []byte(key), Value: []byte(v)})
	return err
}

func (c *etcd) get(m int, key string) (string, error) {
	ctx, cancel := tctx(time.Second)
	defer cancel()
	r, err := c.kvs[m].Range(ctx, &pb.RangeRequest{Key: []byte(key), Serializable: true})
	if err != nil || len(r.Kvs) != 1 {
		return "", cmp.Or(err, errors.New("no value"))
	}
	return string(r.Kvs[0].Value), nil
}

func (c *etcd) useLeader() {
	l, err := c.leader()
	must(err, "etcd leader")
	c.cli, err = clientv3.New(clientv3.Config{Endpoints: []string{c.urls[l]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	must(err, "etcd client")
}

func (c *etcd) putN(ctx context.Context, keys []string, v string) error {
	if len(keys) == 1 {
		_, err := c.cli.Put(ctx, keys[0], v)
		return err
	}
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpPut(k, v)
	}
	_, err := c.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

func (c *etcd) cascade() time.Duration {
	ctx, cancel := tctx(30 * time.Second)
	defer cancel()
	puts := []clientv3.Op{clientv3.OpPut("sites/big", `{"endpoint":"e"}`), clientv3.OpPut("sites/other", `{"endpoint":"e"}`)}
	dels := []clientv3.Op{clientv3.OpDelete("sites/big")}
	for i := range *flagPaths {
		k := fmt.Sprintf("paths/big-e--other-e-%d", i)
		puts = append(puts, clientv3.OpPut(k, `{"source-site":"big","source-endpoint":"e","destination-site":"other","destination-endpoint":"e"}`))
		dels = append(dels, clientv3.OpDelete(k))
	}
	_, err := c.cli.Txn(ctx).Then(puts...).Commit()
	must(err, "etcd: creating the sites and paths")
	// As for patronus, the delete is timed once every member has the paths.
	last := fmt.Sprintf("paths/big-e--other-e-%d", *flagPaths-1)
	for m := range c.kvs {
		must(poll(10*time.Second, "the paths on every member", func() error { _, err := c.get(m, last); return err }), "etcd")
	}
	t0 := time.Now()
	_, err = c.cli.Txn(ctx).Then(dels...).Commit()
	d := time.Since(t0)
	must(err, "etcd: deleting the site and paths")
	return d
}

// ---------------------------------------------------------------------------
// Workloads.

type load struct {
	Requests  int     `json:"requests"`
	PerSecond float64 `json:"requests_per_s"`
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	// ServerCPUus is the CPU time (user and system) the cluster's
	// processes spent per request, summed over the members; ClientCPUus
	// this process's, the clients'. Both share the machine's CPUs, so on a
	// busy machine requests/s is about CPUs / (server + client CPU).
	ServerCPUus float64 `json:"server_cpu_us_per_request"`
	ClientCPUus float64 `json:"client_cpu_us_per_request"`
}

// cpuTime returns the CPU time, user and system, that the process pid has
// used, or that this process has (pid 0).
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0 // exited: its time is not counted
	}
	// The fields after the command's name, which ends at the last ')':
	// state is the first, utime and stime the 12th and 13th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / clockTicks
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times: 100
// on every Linux architecture Go supports.
const clockTicks = 100

// cpuOf returns the CPU time the members' processes have used.
func cpuOf(members []*proc) time.Duration {
	var d time.Duration
	for _, p := range members {
		if p.cmd != nil && p.cmd.Process != nil {
			d += cpuTime(p.cmd.Process.Pid)
		}
	}
	return d
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// quantile returns the q-quantile of v, 0 for none.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(v))
	return s[int(q*float64(len(s)-1)+0.5)]
}

// run calls op from clients goroutines for -duration; any error is fatal.
func run(what string, members []*proc, clients int, op func(ctx context.Context, worker, i int) error) load {
	logf("%s", what)
	server0, client0 := cpuOf(members), cpuTime(0)
	var (
		mu    sync.Mutex
		lats  []float64
		first error
		fail  atomic.Bool
		wg    sync.WaitGroup
	)
	start := time.Now()
	for w := range clients {
		wg.Go(func() {
			var mine []float64
			for i := 0; time.Since(start) < *flagDuration && !fail.Load(); i++ {
				ctx, cancel := tctx(10 * time.Second)
				t0 := time.Now()
				err := op(ctx, w, i)
				cancel()
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					fail.Store(true)
					break
				}
				mine = append(mine, ms(time.Since(t0)))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(lats) == 0 {
		first = cmp.Or(first, errors.New("no request completed"))
	}
	must(first, what)
	elapsed := time.Since(start)
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(len(lats)) }
	return load{Requests: len(lats), PerSecond: float64(len(lats)) / elapsed.Seconds(), P50ms: quantile(lats, .5), P99ms: quantile(lats, .99),
		ServerCPUus: per(cpuOf(members) - server0), ClientCPUus: per(cpuTime(0) - client0)}
}

// failover SIGKILLs the leader -trials times while a client writes round robin.
func failover(name string, c cluster, value string) (acks, elections []float64) {
	ps := c.members()
	for t := range *flagTrials {
		var l int
		must(poll(60*time.Second, name+" leader", func() (err error) { l, err = c.leader(); return err }), name)
		var killed atomic.Int64 // when the leader was reaped
		acked := make(chan time.Time)
		go func() { // until a write sent after the kill is acknowledged
			for i := 0; ; i++ {
				t0 := time.Now()
				ctx, cancel := tctx(*flagTimeout)
				err := c.put(ctx, i%len(ps), fmt.Sprintf("s%d", i%*flagKeys), value)
				cancel()
				if k := killed.Load(); err == nil && k != 0 && t0.UnixNano() >= k {
					acked <- time.Now()
					return
				}
			}
		}()
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		ps[l].kill()
		killed.Store(time.Now().UnixNano())
		must(poll(60*time.Second, name+" new leader", func() error { // only the survivors are asked
			_, err := c.leader()
			return err
		}), name)
		elections = append(elections, ms(time.Since(t0)))
		select {
		case at := <-acked:
			acks = append(acks, ms(at.Sub(t0)))
			logf("%s failover %d/%d: killed %s; new leader after %.0f ms, first ack after %.0f ms",
				name, t+1, *flagTrials, ps[l].name, elections[t], acks[t])
		case <-time.After(60 * time.Second):
			fatal("%s: no write acknowledged within 60s of killing %s", name, ps[l].name)
		}
		ps[l].start()
		marker := fmt.Sprintf("trial-%d-%d", t, time.Now().UnixNano())
		must(poll(60*time.Second, ps[l].name+" rejoins", func() error {
			nl, err := c.leader()
			if err != nil {
				return err
			}
			ctx, cancel := tctx(2 * time.Second)
			defer cancel()
			if err := c.put(ctx, nl, "rejoin", marker); err != nil {
				return err
			}
			return poll(5*time.Second, "marker", func() error {
				v, err := c.get(l, "rejoin")
				if err == nil && v != marker {
					err = fmt.Errorf("has %q", v)
				}
				return err
			})
		}), name+" (log: "+tail(ps[l])+")")
	}
	return acks, elections
}

type side struct {
	Put1      load      `json:"put_1_client"`
	PutN      load      `json:"put_n_clients"`
	Batch     load      `json:"batch"`
	CascadeMs []float64 `json:"cascade_delete_ms"`
	FailMs    []float64 `json:"failover_first_ack_ms"`
	ElectMs   []float64 `json:"failover_new_leader_ms"`
}

func bench(name string, c cluster, value string) (s side) {
	c.useLeader()
	put := func(ctx context.Context, w, i int) error {
		return c.putN(ctx, []string{fmt.Sprintf("s%d", (w*7919+i)%*flagKeys)}, value)
	}
	members := c.members()
	s.Put1 = run(name+": put, 1 client", members, 1, put)
	s.PutN = run(fmt.Sprintf("%s: put, %d clients", name, *flagClients), members, *flagClients, put)
	s.Batch = run(fmt.Sprintf("%s: batches of %d, 1 client", name, *flagBatch), members, 1, func(ctx context.Context, _, i int) error {
		keys := make([]string, *flagBatch)
		for j := range keys {
			keys[j] = fmt.Sprintf("s%d", (i**flagBatch+j)%*flagKeys)
		}
		return c.putN(ctx, keys, value)
	})
	logf("%s: cascade, %d paths, %d times", name, *flagPaths, *flagReps)
	for range *flagReps {
		s.CascadeMs = append(s.CascadeMs, ms(c.cascade()))
	}
	s.FailMs, s.ElectMs = failover(name, c, value)
	return s
}

type row struct {
	Workload string  `json:"workload"`
	Unit     string  `json:"unit"`
	Patronus float64 `json:"patronus"`
	Etcd     float64 `json:"etcd"`
	Ratio    float64 `json:"ratio_patronus_over_etcd"`
}

func main() {
	flag.Parse()
	if *flagPatronusd == "" || *flagTrials < 1 || *flagReps < 1 || *flagBatch > *flagKeys {
		fmt.Fprintln(os.Stderr, "clusterbench: -patronusd is required; -trials and -cascade-reps at least 1; -batch at most -keys")
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if tmpDir, err = os.MkdirTemp("", "clusterbench-"); err != nil {
		fatal("%v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	go func() { fatal("%v: stopping", <-sig) }()
	defer cleanup()

	switch *flagOnly {
	case "put":
		putOnly(value(), *flagProfile)
		return
	case "soak":
		soak(value())
		return
	case "cascade":
		cascadeOnly(*flagProfile)
		return
	}
	if *flagOnly != "" && *flagOnly != "patronus" {
		fatal("-only %q: want put or patronus", *flagOnly)
	}
	etcdVersion, _ := exec.Command(*flagEtcd, "--version").Output()
	value := value()
	logf("starting the clusters in %s", tmpDir)
	var ps, es side
	ps = bench("patronus", startPatronus(), value)
	if *flagOnly == "" {
		es = bench("etcd", startEtcd(), value)
	}

	n, b := *flagClients, float64(*flagBatch)
	rows := []row{
		{"put, 1 client", "ops/s", ps.Put1.PerSecond, es.Put1.PerSecond, 0},
		{"put p50 latency, 1 client", "ms", ps.Put1.P50ms, es.Put1.P50ms, 0},
		{fmt.Sprintf("put, %d clients", n), "ops/s", ps.PutN.PerSecond, es.PutN.PerSecond, 0},
		{fmt.Sprintf("put p99 latency, %d clients", n), "ms", ps.PutN.P99ms, es.PutN.P99ms, 0},
		{fmt.Sprintf("put, %d clients: server CPU per put", n), "µs", ps.PutN.ServerCPUus, es.PutN.ServerCPUus, 0},
		{fmt.Sprintf("put, %d clients: client CPU per put", n), "µs", ps.PutN.ClientCPUus, es.PutN.ClientCPUus, 0},
		{fmt.Sprintf("batch of %d, 1 client", *flagBatch), "updates/s", ps.Batch.PerSecond * b, es.Batch.PerSecond * b, 0},
		{"batch speedup over put, 1 client", "x", ps.Batch.PerSecond * b / ps.Put1.PerSecond, es.Batch.PerSecond * b / es.Put1.PerSecond, 0},
		{fmt.Sprintf("site delete cascade (%d paths) p50", *flagPaths), "ms", quantile(ps.CascadeMs, .5), quantile(es.CascadeMs, .5), 0},
		{fmt.Sprintf("failover: first ack, median of %d", *flagTrials), "ms", quantile(ps.FailMs, .5), quantile(es.FailMs, .5), 0},
		{fmt.Sprintf("failover: first ack, max of %d", *flagTrials), "ms", quantile(ps.FailMs, 1), quantile(es.FailMs, 1), 0},
		{fmt.Sprintf("failover: new leader, median of %d", *flagTrials), "ms", quantile(ps.ElectMs, .5), quantile(es.ElectMs, .5), 0},
	}
	fmt.Printf("\n%-40s %-10s %12s %12s %10s\n", "workload", "unit", "patronus", "etcd", "ratio p/e")
	for i := range rows {
		r := &rows[i]
		if *flagOnly != "" {
			fmt.Printf("%-40s %-10s %12.2f %12s %10s\n", r.Workload, r.Unit, r.Patronus, "-", "-")
			continue
		}
		r.Ratio = r.Patronus / r.Etcd
		fmt.Printf("%-40s %-10s %12.2f %12.2f %10.2f\n", r.Workload, r.Unit, r.Patronus, r.Etcd, r.Ratio)
	}
	out, _ := json.MarshalIndent(map[string]any{
		"time": time.Now().UTC().Format(time.RFC3339), "go": runtime.Version(), "cpus": runtime.NumCPU(),
		"etcd_version": strings.TrimSpace(strings.SplitN(string(etcdVersion), "\n", 2)[0]), "etcd_args": *flagEtcdArgs,
		"config": map[string]any{"duration": flagDuration.String(), "value_bytes": *flagValue, "clients": n, "keys": *flagKeys,
			"batch": *flagBatch, "cascade_paths": *flagPaths, "cascade_reps": *flagReps, "trials": *flagTrials, "write_timeout": flagTimeout.String()},
		"rows": rows, "patronus": ps, "etcd": es,
	}, "", "  ")
	if err := os.WriteFile(*flagOut, append(out, '\n'), 0o644); err != nil {
		fatal("%v", err)
	}
	fmt.Println("\nwrote", *flagOut)
}

func value() string { return strings.Repeat("v", *flagValue) }

// soak runs the concurrent put workload for -duration and counts the
// elections held meanwhile: each starts a new term.
func soak(value string) {
	logf("starting patronus in %s", tmpDir)
	c := startPatronus()
	c.useLeader()
	term := func() uint64 {
		var t uint64
		for i := range c.cs { // the highest term any member knows
			ctx, cancel := tctx(2 * time.Second)
			r, err := c.cs[i].Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{gpath("/system/cluster/state/term")}, Encoding: gpb.Encoding_PROTO})
			cancel()
			must(err, "reading the term")
			for _, n := range r.GetNotification() {
				for _, u := range n.GetUpdate() {
					t = max(t, u.GetVal().GetUintVal())
				}
			}
		}
		return t
	}
	t0 := term()
	l := run(fmt.Sprintf("patronus: soak, put, %d clients, %s", *flagClients, *flagDuration), c.members(), *flagClients, func(ctx context.Context, w, i int) error {
		return c.putN(ctx, []string{fmt.Sprintf("s%d", (w*7919+i)%*flagKeys)}, value)
	})
	t1 := term()
	fmt.Printf("soak %s, %d clients: %.0f ops/s, p50 %.2f ms, p99 %.2f ms; term %d -> %d: %d election(s)\n",
		*flagDuration, *flagClients, l.PerSecond, l.P50ms, l.P99ms, t0, t1, t1-t0)
	if t1 != t0 {
		fatal("the cluster held %d election(s) without a fault", t1-t0)
	}
}

// putOnly runs the concurrent put workload on patronus alone, optionally
// with a CPU profile of every node taken while it runs.
func putOnly(value, profileDir string) {
	logf("starting patronus in %s", tmpDir)
	c := startPatronus()
	c.useLeader()
	wait := profile(c, profileDir)
	l := run(fmt.Sprintf("patronus: put, %d clients", *flagClients), c.members(), *flagClients, func(ctx context.Context, w, i int) error {
		return c.putN(ctx, []string{fmt.Sprintf("s%d", (w*7919+i)%*flagKeys)}, value)
	})
	wait()
	leader, _ := c.leader()
	fmt.Printf("put, %d clients: %.0f ops/s, p50 %.2f ms, p99 %.2f ms (leader n%d); CPU per put: servers %.0f µs, clients %.0f µs\n",
		*flagClients, l.PerSecond, l.P50ms, l.P99ms, leader+1, l.ServerCPUus, l.ClientCPUus)
}

// profile starts a CPU profile of every node of c for about -duration,
// written into dir (nothing if dir is empty), and returns a function that
// waits for them.
func profile(c *patronus, dir string) (wait func()) {
	var wg sync.WaitGroup
	if dir != "" {
		must(os.MkdirAll(dir, 0o755), "profile dir")
		secs := max(1, int(flagDuration.Seconds())-1)
		for i, h := range c.https {
			wg.Go(func() {
				resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", h, secs))
				must(err, "profile")
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				must(err, "profile")
				must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("n%d.pprof", i+1)), b, 0o644), "profile")
			})
		}
	}
	return wg.Wait
}

// cascadeOnly repeats the delete cascade on patronus alone for -duration,
// optionally with a CPU profile of every node.
func cascadeOnly(profileDir string) {
	logf("starting patronus in %s", tmpDir)
	c := startPatronus()
	c.useLeader()
	wait := profile(c, profileDir)
	var ds []float64
	for start := time.Now(); time.Since(start) < *flagDuration; {
		ds = append(ds, ms(c.cascade()))
	}
	wait()
	fmt.Printf("cascade, %d paths: %d times, p50 %.2f ms, min %.2f ms, max %.2f ms\n", *flagPaths, len(ds), quantile(ds, .5), quantile(ds, 0), quantile(ds, 1))
}
