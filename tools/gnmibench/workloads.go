package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// env holds the servers the workloads share, started on first use.
type env struct {
	cfg    *config
	leaves *leafSet
	// stream is a Patronus node with the scale set and 4,000 more
	// policies, holding the changing leaves.
	stream *patronus
	// ref is the reference server; filled says it holds the leaves.
	ref    *reference
	filled bool
	// scale is a Patronus node with the scale set alone, for Get and Set.
	scale *patronus
}

// streamSystems returns Patronus and the reference, both holding every
// changing leaf.
func (e *env) streamSystems(ctx context.Context) ([]system, error) {
	if e.stream == nil {
		p, err := openPatronus(e.cfg.dir, e.leaves)
		if err != nil {
			return nil, err
		}
		e.stream = p
		if err := p.loadScale(ctx); err != nil {
			return nil, err
		}
		if err := p.addPolicies(ctx, scale.NumPolicies, numPolicies); err != nil {
			return nil, err
		}
		if err := writeAll(p, e.leaves.len(), e.cfg.batch); err != nil {
			return nil, err
		}
	}
	r, err := e.reference()
	if err != nil {
		return nil, err
	}
	if !e.filled {
		if err := writeAll(r, e.leaves.len(), e.cfg.batch); err != nil {
			return nil, err
		}
		e.filled = true
	}
	return []system{e.stream, r}, nil
}

func (e *env) reference() (*reference, error) {
	if e.ref == nil {
		r, err := openReference(e.leaves)
		if err != nil {
			return nil, err
		}
		e.ref = r
	}
	return e.ref, nil
}

func (e *env) scaleNode(ctx context.Context) (*patronus, error) {
	if e.scale == nil {
		p, err := openPatronus(e.cfg.dir, e.leaves)
		if err != nil {
			return nil, err
		}
		e.scale = p
		if err := p.loadScale(ctx); err != nil {
			return nil, err
		}
	}
	return e.scale, nil
}

func (e *env) close() {
	if e.stream != nil {
		e.stream.close()
	}
	if e.ref != nil {
		e.ref.close()
	}
	if e.scale != nil {
		e.scale.close()
	}
}

// workload is one row of the table.
type workload struct {
	name  string
	steps int // progress steps: one per server it runs against
	run   func(ctx context.Context, e *env, step func(string)) ([]Row, error)
}

// workloads lists every workload cfg asks for, in the order they run.
func workloads(cfg *config) []workload {
	var ws []workload
	stream := func(name string, spec streamSpec) {
		ws = append(ws, workload{name: name, steps: 2, run: func(ctx context.Context, e *env, step func(string)) ([]Row, error) {
			systems, err := e.streamSystems(ctx)
			if err != nil {
				return nil, err
			}
			var res [2]streamResult
			for i, s := range systems {
				step(s.name())
				if res[i], err = runStream(ctx, s, e.leaves.len(), cfg, spec); err != nil {
					return nil, fmt.Errorf("%s: %w", s.name(), err)
				}
			}
			return streamRows(name, spec, e.leaves.len(), cfg.sampleEvery, res[0], res[1]), nil
		}})
	}
	for _, n := range cfg.fanout {
		stream(fmt.Sprintf("fanout-on_change-%d", n), streamSpec{subs: n, mode: gpb.SubscriptionMode_ON_CHANGE})
	}
	for _, n := range cfg.sample {
		stream(fmt.Sprintf("fanout-sample-%d", n), streamSpec{subs: n, mode: gpb.SubscriptionMode_SAMPLE})
	}
	for _, x := range cfg.paced {
		rate := cfg.rate * x.share
		stream(fmt.Sprintf("paced-%s-on_change-%d", rateName(rate), x.subs), streamSpec{subs: x.subs, mode: gpb.SubscriptionMode_ON_CHANGE, rate: rate})
	}
	for _, n := range cfg.sync {
		name := fmt.Sprintf("sync-%d", n)
		ws = append(ws, workload{name: name, steps: 2, run: func(ctx context.Context, e *env, step func(string)) ([]Row, error) {
			systems, err := e.streamSystems(ctx)
			if err != nil {
				return nil, err
			}
			var res [2]syncResult
			for i, s := range systems {
				step(s.name())
				if res[i], err = runSync(ctx, s.addr(), n, cfg.decode); err != nil {
					return nil, fmt.Errorf("%s: %w", s.name(), err)
				}
			}
			return syncRows(name, e.leaves.len(), res[0], res[1]), nil
		}})
	}
	// Get and Set run against the node holding the scale set alone, and
	// against the reference to show whether it serves them at all; the
	// get-leaf rows' reference is the gRPC floor (healthCheck).
	// refDo is what the same clients call on the reference (nil: do).
	unary := func(name string, clients int, do, refDo func(context.Context, *grpc.ClientConn) (int, error)) {
		if refDo == nil {
			refDo = do
		}
		ws = append(ws, workload{name: name, steps: 2, run: func(ctx context.Context, e *env, step func(string)) ([]Row, error) {
			p, err := e.scaleNode(ctx)
			if err != nil {
				return nil, err
			}
			r, err := e.reference()
			if err != nil {
				return nil, err
			}
			step("patronus")
			pr, err := runClients(ctx, p.addr(), clients, cfg.duration, do)
			if err != nil {
				return nil, fmt.Errorf("patronus: %w", err)
			}
			step("reference")
			rr, err := runClients(ctx, r.addr(), clients, cfg.duration, refDo)
			if err != nil && status.Code(err) != codes.Unimplemented {
				return nil, fmt.Errorf("reference: %w", err)
			}
			return unaryRows(name, pr, rr, err), nil
		}})
	}
	for _, c := range cfg.getClients {
		unary(fmt.Sprintf("get-leaf-%d", c), c, getOp(getLeaf, cfg.decode), healthCheck)
	}
	unary("get-policies-1", 1, getOp(getPolicies, cfg.decode), nil)
	unary("set-leaf-1", 1, setOp(1), nil)
	unary("set-100-1", 1, setOp(100), nil)
	if cfg.memorySubs > 0 {
		ws = append(ws, workload{name: "memory", steps: 1, run: func(ctx context.Context, e *env, step func(string)) ([]Row, error) {
			step("patronus")
			m, err := runMemory(ctx, cfg)
			if err != nil {
				return nil, err
			}
			return memoryRows(m, cfg.memorySubs), nil
		}})
	}
	return slices.DeleteFunc(ws, func(w workload) bool { return cfg.only != nil && !cfg.only.MatchString(w.name) })
}

// paced is a paced fan-out workload: subs subscribers, the writer at share
// of the paced rate.
type paced struct {
	subs  int
	share float64
}

// rateName is a rate in a workload's name: 10000 is "10k".
func rateName(r float64) string {
	if r >= 1000 && math.Mod(r, 1000) == 0 {
		return fmt.Sprintf("%.0fk", r/1000)
	}
	return fmt.Sprintf("%.0f", r)
}

// streamSpec is a fan-out workload.
type streamSpec struct {
	subs int
	mode gpb.SubscriptionMode
	rate float64 // writer leaf updates/s; 0: flat out
}

// streamResult is what one server achieved in a fan-out workload.
type streamResult struct {
	ingest    float64 // leaf updates/s the writer completed
	delivered float64 // leaf updates/s received by all subscribers together
	lat       histogram
	sched     time.Duration // p99 of the Go scheduler's latency (the whole process)
	endings
}

// endings counts the subscribers whose stream ended during a workload.
type endings struct {
	cut      int    // cut off with RESOURCE_EXHAUSTED
	failed   int    // ended otherwise
	firstErr string // the first such error
}

// note counts x if its stream has ended.
func (e *endings) note(x *subscriber) {
	ended, err := x.ended()
	if !ended {
		return
	}
	if status.Code(err) == codes.ResourceExhausted {
		e.cut++
	} else {
		e.failed++
	}
	if e.firstErr == "" {
		e.firstErr = fmt.Sprint(err)
	}
}

// runStream attaches spec.subs subscribers and starts the writer. Once
// every subscriber has received something (or after warmUp), it measures
// for cfg.duration what the writer wrote and the subscribers received.
func runStream(ctx context.Context, s system, leaves int, cfg *config, spec streamSpec) (streamResult, error) {
	var res streamResult
	// The subscribers skip the initial sync (the sync rows measure it):
	// what is measured here starts in sync either way.
	req := streamRequest(spec.mode, cfg.sampleEvery, true, countersPath)
	subs, err := startSubscribers(ctx, s.addr(), spec.subs, req, cfg.decode)
	defer func() {
		for _, x := range subs {
			x.stop()
		}
	}()
	if err != nil {
		return res, err
	}
	w := startWriter(s, leaves, cfg.batch, spec.rate)
	warm := time.Now().Add(warmUp)
	for _, x := range subs {
		for x.updates.Load() == 0 && time.Now().Before(warm) {
			if ended, _ := x.ended(); ended {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	var base int64
	for _, x := range subs {
		x.measure.Store(true)
		base += x.updates.Load()
	}
	baseWritten, start, sched := w.written.Load(), time.Now(), schedLatencies()
	time.Sleep(cfg.duration)
	res.sched = schedQuantile(sched, schedLatencies(), 0.99)
	var got int64
	for _, x := range subs {
		got += x.updates.Load()
		x.measure.Store(false)
	}
	written, elapsed := w.written.Load(), time.Since(start)
	if err := w.stop(); err != nil {
		return res, err
	}
	res.ingest = float64(written-baseWritten) / elapsed.Seconds()
	res.delivered = float64(got-base) / elapsed.Seconds()
	for _, x := range subs {
		l := x.latencies()
		res.lat.merge(&l)
		res.note(x)
	}
	return res, nil
}

// warmUp bounds the wait for every subscriber's first update before a
// fan-out workload measures (a SAMPLE subscriber's first sample comes an
// interval after it subscribed).
const warmUp = 30 * time.Second

// startSubscribers connects n subscribers, subscribes them all with req
// and waits until every one has had its sync_response.
func startSubscribers(ctx context.Context, addr string, n int, req *gpb.SubscribeRequest, decode bool) ([]*subscriber, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var subs []*subscriber
	for range n {
		x, err := newSubscriber(ctx, addr, decode)
		if err != nil {
			return subs, err
		}
		subs = append(subs, x)
	}
	for _, x := range subs {
		x.start(req)
	}
	for _, x := range subs {
		if err := x.waitSynced(ctx); err != nil {
			return subs, err
		}
	}
	return subs, nil
}

// writer writes batches of leaves to a system, cycling through all of
// them, until stopped: flat out, or at a rate on a fixed schedule (a late
// batch is written at once; the schedule does not slip).
type writer struct {
	written atomic.Int64 // leaf updates written so far
	quit    chan struct{}
	done    chan error
}

func startWriter(s system, leaves, batch int, rate float64) *writer {
	w := &writer{quit: make(chan struct{}), done: make(chan error, 1)}
	var gap time.Duration
	if rate > 0 {
		gap = time.Duration(float64(batch) / rate * float64(time.Second))
	}
	go func() {
		start := time.Now()
		from := 0
		for k := 0; ; k++ {
			var delay time.Duration
			if gap > 0 {
				delay = time.Until(start.Add(time.Duration(k) * gap))
			}
			if !w.sleep(delay) {
				w.done <- nil
				return
			}
			n := min(batch, leaves-from)
			if err := s.write(from, n); err != nil {
				w.done <- fmt.Errorf("%s: writer: %w", s.name(), err)
				return
			}
			w.written.Add(int64(n))
			from = (from + n) % leaves
		}
	}()
	return w
}

// sleep waits d (not at all if d <= 0) and reports whether the writer is
// to go on.
func (w *writer) sleep(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-w.quit:
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.quit:
		return false
	case <-t.C:
		return true
	}
}

// stop stops the writer and returns why it stopped early, if it did.
func (w *writer) stop() error {
	close(w.quit)
	return <-w.done
}

// syncResult is one initial-sync workload on one server.
type syncResult struct {
	all       time.Duration // until the last subscriber had its sync_response
	p50       time.Duration // the median subscriber's
	minLeaves int           // the fewest leaves a subscriber got before sync_response
}

// runSync connects n subscribers, then starts all their subscriptions at
// once and times their sync_responses.
func runSync(ctx context.Context, addr string, n int, decode bool) (syncResult, error) {
	var res syncResult
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var subs []*subscriber
	defer func() {
		for _, x := range subs {
			x.stop()
		}
	}()
	for range n {
		x, err := newSubscriber(ctx, addr, decode)
		if err != nil {
			return res, err
		}
		subs = append(subs, x)
	}
	req := streamRequest(gpb.SubscriptionMode_ON_CHANGE, 0, false, countersPath)
	start := time.Now()
	for _, x := range subs {
		x.start(req)
	}
	var times []time.Duration
	res.minLeaves = -1
	for _, x := range subs {
		if err := x.waitSynced(ctx); err != nil {
			return res, err
		}
		times = append(times, x.syncAt.Sub(start))
		if res.minLeaves < 0 || x.syncLeaves < res.minLeaves {
			res.minLeaves = x.syncLeaves
		}
	}
	slices.Sort(times)
	res.all, res.p50 = times[len(times)-1], times[len(times)/2]
	return res, nil
}

// unaryResult is a unary RPC workload on one server.
type unaryResult struct {
	ops, updates float64 // RPCs/s and updates/s
	lat          histogram
	// cpu is the CPU time this process (servers and clients) spent per
	// RPC: unlike RPCs/s it does not depend on what else runs on the
	// machine.
	cpu time.Duration
}

// callersPerConn is how many of a unary workload's concurrent callers share
// a connection, as a load generator spreads its callers over a few
// connections (ghz puts them all on one by default) and gNMI clients call
// one target over one: HTTP/2 then carries several calls per read and
// write. Sixteen connections of one caller each cost 40 % more CPU per Get,
// mostly in syscalls.
const callersPerConn = 4

// runClients runs do from clients concurrent callers, callersPerConn to a
// connection, for d and measures every call. do returns how many updates
// the call carried.
func runClients(ctx context.Context, addr string, clients int, d time.Duration, do func(context.Context, *grpc.ClientConn) (int, error)) (unaryResult, error) {
	var res unaryResult
	conns := make([]*grpc.ClientConn, (clients+callersPerConn-1)/callersPerConn)
	for i := range conns {
		conn, err := connect(ctx, addr)
		if err != nil {
			return res, err
		}
		defer conn.Close()
		conns[i] = conn
		// One call first: a server that cannot do it is found out at once.
		if _, err := do(ctx, conns[i]); err != nil {
			return res, err
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ops     int
		updates int
		firstEr error
	)
	start, cpu0 := time.Now(), cpuTime()
	end := start.Add(d)
	for i := range clients {
		c := conns[i%len(conns)]
		wg.Go(func() {
			var h histogram
			n, u := 0, 0
			var err error
			for time.Now().Before(end) {
				t0 := time.Now()
				var k int
				if k, err = do(ctx, c); err != nil {
					break
				}
				h.add(int64(time.Since(t0)), 1)
				n++
				u += k
			}
			mu.Lock()
			defer mu.Unlock()
			res.lat.merge(&h)
			ops += n
			updates += u
			if err != nil && firstEr == nil {
				firstEr = err
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), cpuTime()-cpu0
	res.ops, res.updates = float64(ops)/elapsed.Seconds(), float64(updates)/elapsed.Seconds()
	if ops > 0 {
		res.cpu = cpu / time.Duration(ops)
	}
	return res, firstEr
}

// cpuTime returns the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func mustPath(s string) *gpb.Path {
	p, err := ygot.StringToStructuredPath(s)
	if err != nil {
		panic(err)
	}
	return p
}

// getLeaf is a Get of one configured leaf of the scale set in JSON_IETF.
var getLeaf = &gpb.GetRequest{Prefix: &gpb.Path{Target: target}, Encoding: gpb.Encoding_JSON_IETF,
	Path: []*gpb.Path{mustPath("/sites/site[name=site-042]/endpoints/endpoint[name=e1]/config/address")}}

// getPolicies is a Get of all of /policies (the scale set's 1,000) in
// JSON_IETF.
var getPolicies = &gpb.GetRequest{Prefix: &gpb.Path{Target: target}, Encoding: gpb.Encoding_JSON_IETF,
	Path: []*gpb.Path{mustPath("/policies")}}

// healthCheck calls gRPC's standard health service, an RPC that does
// nothing: on the reference's plain gRPC server, what the get-leaf rows'
// clients achieve with it is the floor of any unary RPC on this machine.
func healthCheck(ctx context.Context, c *grpc.ClientConn) (int, error) {
	if _, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		return 0, err
	}
	return 1, nil
}

// getOp calls Get with req and counts the leaves of the response: off the
// wire, as the subscribers do, or decoded in full if decode.
func getOp(req *gpb.GetRequest, decode bool) func(context.Context, *grpc.ClientConn) (int, error) {
	return func(ctx context.Context, c *grpc.ClientConn) (int, error) {
		n := 0
		if decode {
			resp, err := gpb.NewGNMIClient(c).Get(ctx, req)
			if err != nil {
				return 0, err
			}
			for _, x := range resp.GetNotification() {
				n += leafUpdates(x)
			}
		} else {
			var resp countedGet
			if err := c.Invoke(ctx, gpb.GNMI_Get_FullMethodName, req, &resp, grpc.ForceCodecV2(wireCodec{})); err != nil {
				return 0, err
			}
			n = resp.leaves
		}
		if n == 0 {
			return 0, errors.New("get: empty response")
		}
		return n, nil
	}
}

// setOp is a Set of n updates, the descriptions of n sites (wrapping
// around after 100), with a new value each time.
func setOp(n int) func(context.Context, *grpc.ClientConn) (int, error) {
	paths := make([]*gpb.Path, n)
	for i := range paths {
		paths[i] = mustPath(fmt.Sprintf("/sites/site[name=%s]/config/description", scale.SiteName(i%scale.NumSites)))
	}
	var mu sync.Mutex
	gen := 0
	return func(ctx context.Context, c *grpc.ClientConn) (int, error) {
		mu.Lock()
		gen++
		v := fmt.Sprintf("bench %d", gen)
		mu.Unlock()
		req := &gpb.SetRequest{Prefix: &gpb.Path{Target: target}}
		for _, p := range paths {
			req.Update = append(req.Update, &gpb.Update{Path: p, Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v}}})
		}
		_, err := gpb.NewGNMIClient(c).Set(ctx, req)
		return n, err
	}
}
