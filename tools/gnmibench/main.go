// Command gnmibench compares Patronus's gNMI server with the reference gNMI
// Subscribe server (the subscribe and cache packages of
// github.com/openconfig/gnmi) on the same telemetry workloads, in one run.
//
// Both servers run in this process, each on its own random loopback port
// over real gRPC (plaintext; Patronus as patronusd serves it, on stream
// workers with the metrics interceptors, but without TLS and
// authentication), and both are fed the same 10,000 changing
// leaves by an in-process writer: packets-matched and bytes-matched of 5,000
// policies, uint64 counters that grow with every write, written in batches
// of -batch leaves. Patronus is a real node (node.Open on a fresh data dir
// under -dir, no cluster: every commit is local) holding the
// scale set (tools/scalegen) and 4,000 more policies; its writer commits
// each batch with store.Update and SetVolatile, the node-local path the
// collectors write measured state by. The reference is cache.New with one target served by
// subscribe.NewServer; its writer hands it one Notification per batch with
// cache.GnmiUpdate. The same client code measures both: one gRPC connection
// per subscriber, a subscription to /policies/policy[name=*]/state/counters
// in PROTO encoding. The subscribers count leaf updates off the wire
// (protowire) without building messages: with every response decoded in full
// (-decode, what gnmic or Telegraf do), the clients' decoding took about 40%
// of the run's CPU on 2 cores, and a fan-out row measured the clients more
// than the servers.
//
// Workloads, one group of rows each (select with -only REGEXP):
//
//   - fanout-on_change-N (N = 1, 10, 50, 200), fanout-sample-N (1 s
//     interval; N = 1, 10, 50): N STREAM subscribers (updates_only: the
//     sync rows measure the initial sync) and the writer flat out,
//     measured for -duration once every subscriber has had its first
//     update. Writer ingest (leaf updates written per second), leaf
//     updates delivered to all subscribers per second (both servers
//     coalesce writes for a subscriber that lags, so this counts what
//     arrives, not what was written) and, for ON_CHANGE, p50 and p99
//     latency: receipt time minus the notification's timestamp, per leaf
//     update. Patronus stamps the store's commit time (taken as the commit
//     group starts, before its fsync); the reference writer stamps the
//     Notification just before GnmiUpdate. A subscriber cut off with
//     RESOURCE_EXHAUSTED stops counting and is reported in a note. Each
//     row also gives the p99 of the Go scheduler's latency over the window
//     (runtime/metrics /sched/latencies): servers, writers and clients
//     share this process's cores, and a p99 of many ms says the row is
//     CPU-bound. The reference has no SAMPLE mode: it streams every change.
//   - paced-R-on_change-N (R = -rate: N = 1, 10, 50; R = -rate/10: N =
//     50): the same with the writer at R leaf updates/s on a fixed
//     schedule, where latency means something.
//   - sync-N (N = 1, 10, 50): N connected clients subscribe at once; the
//     time until all have their sync_response, and the fewest leaves one
//     got before it (all 10,000 expected).
//   - get-leaf-C (C = 1, 16 clients), get-policies-1, set-leaf-1, set-100-1:
//     unary RPCs against a node holding the scale set alone. C callers,
//     four to a connection (a load generator multiplexes its calls over a
//     few connections), each calling again as soon as it is answered: a
//     closed loop, so with C calls in flight the mean latency is C over
//     the rate (16 callers at 20,000/s wait 0.8 ms on average). Besides
//     RPCs/s and latency, each row gives the CPU time this process spent
//     per RPC, servers and clients alike: it does not depend on what else
//     runs on the machine, and 20,000 Gets/s on 2 cores leave 100 µs. The
//     earlier rows' node and the reference stay open, without writer or
//     subscribers (the node's history recorder still samples its counters
//     every 10 s); -only get runs without them. The reference serves only
//     Subscribe; the row says what it answered. In the get-leaf rows the
//     reference is instead the floor of any unary RPC here: the same
//     callers calling gRPC's health Check, which does nothing, on the
//     reference's plain grpc.Server (no interceptors).
//   - memory: a child process (this program again) runs a Patronus node
//     alone with the scale set, the measured state of its paths, policies
//     and 10,000 flows written by collector/telemetry's Writer once a
//     second, and -memory-subs STREAM subscribers on the paths' and
//     policies' state; after -memory-for (30 s: what the node keeps of
//     its recent commits reaches its steady size in seconds, a leak shows
//     in tens of them), its VmRSS and VmHWM, and its Go heap: in use, and
//     live (what a collection leaves; GOGC=100 lets the heap grow to
//     twice that before the next). The child inherits the environment:
//     GOMEMLIMIT=75MiB measures a node given that soft memory limit.
//
// It prints a table (ratio = Patronus/reference, the goals beside
// the rows they concern), writes the rows as JSON to -out and shows its
// progress on stderr unless -quiet.
//
//	make gnmibench ARGS='-duration 3s'
//	go run ./tools/gnmibench -duration 3s -only 'fanout|sync' -cpuprofile cpu.out -out bin/gnmibench.json
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"
)

// config is what the workloads are run with.
type config struct {
	duration    time.Duration
	batch       int
	rate        float64 // of the paced writer, leaf updates/s
	sampleEvery time.Duration
	fanout      []int
	sample      []int
	paced       []paced
	sync        []int
	getClients  []int
	memorySubs  int
	// memoryFor is how long the memory row's collector writes before the
	// node's memory is read (0: duration).
	memoryFor  time.Duration
	memProfile string
	// decode makes the subscribers decode every response in full.
	decode bool
	// collectEvery is how often the memory row's collector writes.
	collectEvery time.Duration
	dir          string
	only         *regexp.Regexp
}

func defaultConfig() *config {
	return &config{
		duration:    5 * time.Second,
		batch:       100,
		rate:        10000,
		sampleEvery: time.Second,
		fanout:      []int{1, 10, 50, 200},
		sample:      []int{1, 10, 50},
		// At 50 subscribers the full rate asks for 500,000 leaf updates/s
		// delivered, more than two cores decode; a tenth of it shows the
		// latency of a server that keeps up.
		paced:        []paced{{1, 1}, {10, 1}, {50, 1}, {50, 0.1}},
		sync:         []int{1, 10, 50},
		getClients:   []int{1, 16},
		memorySubs:   50,
		memoryFor:    30 * time.Second,
		collectEvery: time.Second,
		dir:          os.TempDir(),
	}
}

func main() {
	if _, ok := os.LookupEnv(envMemoryChild); ok {
		if err := memoryChild(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "gnmibench: memory child:", err)
			os.Exit(1)
		}
		return
	}
	cfg := defaultConfig()
	fs := flag.NewFlagSet("gnmibench", flag.ExitOnError)
	fs.DurationVar(&cfg.duration, "duration", cfg.duration, "how long each workload measures")
	only := fs.String("only", "", "run only the workloads whose name matches this regular expression")
	out := fs.String("out", "bin/gnmibench.json", "where to write the results as JSON")
	quiet := fs.Bool("quiet", false, "show no progress bar")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (servers, writers and clients) to this file")
	fs.IntVar(&cfg.batch, "batch", cfg.batch, "leaves per write: per store.Update, per Notification to the reference")
	fs.Float64Var(&cfg.rate, "rate", cfg.rate, "leaf updates/s of the paced writer (one paced row at 50 subscribers uses a tenth of it)")
	fs.IntVar(&cfg.memorySubs, "memory-subs", cfg.memorySubs, "subscribers of the memory row (0: skip it)")
	fs.DurationVar(&cfg.memoryFor, "memory-for", cfg.memoryFor, "how long the memory row's collector writes before the node's memory is read (0: -duration)")
	fs.StringVar(&cfg.memProfile, "memprofile", "", "write a heap profile of the memory row's server process to this file")
	fs.BoolVar(&cfg.decode, "decode", false, "subscribers decode every response into messages (as gnmic or Telegraf do) instead of reading them off the wire")
	fs.Func("get-clients", "comma-separated caller counts of the get-leaf rows (default 1,16)", func(v string) error {
		cfg.getClients = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("%q is not a caller count", f)
			}
			cfg.getClients = append(cfg.getClients, n)
		}
		return nil
	})
	fs.StringVar(&cfg.dir, "dir", cfg.dir, "where the Patronus nodes' data dirs are made (a tmpfs such as /dev/shm takes fsync out)")
	fs.Parse(os.Args[1:])
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gnmibench: -only:", err)
			os.Exit(2)
		}
		cfg.only = re
	}
	var progress io.Writer = os.Stderr
	if *quiet {
		progress = nil
	}
	if err := profiled(*cpuprofile, func() error { return runAll(cfg, os.Stdout, progress, *out) }); err != nil {
		fmt.Fprintln(os.Stderr, "gnmibench:", err)
		os.Exit(1)
	}
}

// profiled runs fn, with a CPU profile written to file if it is not empty.
func profiled(file string, fn func() error) error {
	if file == "" {
		return fn()
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return fn()
}

// runAll runs the workloads, prints the table to w and writes the JSON
// report to out.
func runAll(cfg *config, w, progress io.Writer, out string) error {
	rep, err := run(cfg, progress)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "gnmibench: %d leaves (2 counters × %d policies), %d leaves per write, %v per workload, Patronus data under %s, GOMAXPROCS %d\n",
		rep.Leaves, numPolicies, cfg.batch, cfg.duration, cfg.dir, runtime.GOMAXPROCS(0))
	printTable(w, rep.Rows)
	fmt.Fprintf(w, "this process's peak RSS (both servers, all clients): %s MB; results in %s\n", num(rep.VmHWMMB), out)
	return writeJSON(out, rep)
}

// run runs every workload cfg selects and returns the report.
func run(cfg *config, progress io.Writer) (*Report, error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	// The reference logs every subscription through glog, which writes
	// files; keep them out of the way.
	logDir, err := os.MkdirTemp(cfg.dir, "gnmibench-glog-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(logDir)
	if err := flag.Set("log_dir", logDir); err != nil {
		return nil, err
	}

	leaves := newLeafSet(numPolicies)
	rep := &Report{Started: time.Now().UTC(), GoVersion: runtime.Version(), NumCPU: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Duration: cfg.duration.String(), Leaves: leaves.len(), Batch: cfg.batch, PacedRate: cfg.rate, DataDir: cfg.dir}
	ws := workloads(cfg)
	bar := &bar{w: progress}
	for _, x := range ws {
		bar.total += x.steps
	}
	e := &env{cfg: cfg, leaves: leaves}
	defer e.close()
	for _, x := range ws {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rows, err := x.run(ctx, e, func(side string) { bar.step(x.name + " " + side) })
		if err != nil {
			bar.done()
			return nil, fmt.Errorf("%s: %w", x.name, err)
		}
		rep.Rows = append(rep.Rows, rows...)
	}
	bar.done()
	applyGoals(rep.Rows)
	if st, err := procStatus("VmHWM"); err == nil {
		rep.VmHWMMB = float64(st[0]) / 1024
	}
	return rep, nil
}

// bar is the progress bar: [#####.....] 12/40 fanout-on_change-50 patronus
type bar struct {
	w        io.Writer // nil: quiet
	total, n int       // steps in all, steps begun
	width    int       // of the last line drawn
}

// step draws the bar as step what begins.
func (b *bar) step(what string) {
	b.n++
	if b.w == nil {
		return
	}
	const cells = 20
	filled := cells * (b.n - 1) / max(b.total, 1)
	line := fmt.Sprintf("[%s%s] %d/%d %s", strings.Repeat("#", filled), strings.Repeat(".", cells-filled), b.n, b.total, what)
	fmt.Fprintf(b.w, "\r%-*s", b.width, line)
	b.width = len(line)
}

// done clears the bar.
func (b *bar) done() {
	if b.w != nil && b.width > 0 {
		fmt.Fprintf(b.w, "\r%*s\r", b.width, "")
		b.width = 0
	}
}
