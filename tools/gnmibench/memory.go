package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// envMemoryChild, set, makes this program the memory row's server process
// (see memoryChild), with its own flags.
const envMemoryChild = "GNMIBENCH_MEMORY_CHILD"

// memoryPaths are what the memory row's subscribers ask for: the measured
// state an NMS graphs (with the config mirrors beside it).
var memoryPaths = []*gpb.Path{
	{Elem: []*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": "*"}}, {Name: "state"}}},
	{Elem: []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": "*"}}, {Name: "state"}}},
}

// memoryResult is the memory row.
type memoryResult struct {
	// MB: VmRSS and VmHWM of the server process, its Go heap in use and
	// what of it a collection leaves
	rss, hwm, heap, live float64
	synced               time.Duration
	minLeaves            int
	delivered            int64         // leaf updates streamed while the collector ran
	ran                  time.Duration // how long it ran
	endings
}

// runMemory starts the server process, attaches cfg.memorySubs STREAM
// ON_CHANGE subscribers to memoryPaths (with their initial sync), lets the
// node's collector write once a second for cfg.memoryFor and then asks the
// process for its memory.
func runMemory(ctx context.Context, cfg *config) (memoryResult, error) {
	var res memoryResult
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, exe, "-dir", cfg.dir, "-memprofile", cfg.memProfile, "-collect-every", cfg.collectEvery.String())
	cmd.Env = append(os.Environ(), envMemoryChild+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer cmd.Wait()
	// Closing stdin stops the child.
	defer stdin.Close()
	lines := bufio.NewScanner(stdout)
	addr, err := childLine(lines, "addr")
	if err != nil {
		return res, err
	}

	req := streamRequest(gpb.SubscriptionMode_ON_CHANGE, 0, false, memoryPaths...)
	start := time.Now()
	subs, err := startSubscribers(ctx, addr[0], cfg.memorySubs, req, cfg.decode)
	defer func() {
		for _, x := range subs {
			x.stop()
		}
	}()
	if err != nil {
		return res, err
	}
	res.minLeaves = -1
	for _, x := range subs {
		res.synced = max(res.synced, x.syncAt.Sub(start))
		if res.minLeaves < 0 || x.syncLeaves < res.minLeaves {
			res.minLeaves = x.syncLeaves
		}
	}
	wait := cfg.memoryFor
	if wait == 0 {
		wait = cfg.duration
	}
	time.Sleep(wait)
	res.ran = wait
	if _, err := fmt.Fprintln(stdin, "report"); err != nil {
		return res, err
	}
	mem, err := childLine(lines, "mem")
	if err != nil {
		return res, err
	}
	var kb [4]float64
	if len(mem) != len(kb) {
		return res, fmt.Errorf("memory child: %q: want %d numbers", mem, len(kb))
	}
	for i := range kb {
		if kb[i], err = strconv.ParseFloat(mem[i], 64); err != nil {
			return res, fmt.Errorf("memory child: %q: %w", mem, err)
		}
	}
	res.rss, res.hwm, res.heap, res.live = kb[0]/1024, kb[1]/1024, kb[2]/1024, kb[3]/1024
	for _, x := range subs {
		res.delivered += x.updates.Load()
		res.note(x)
	}
	return res, nil
}

// childLine reads the child's next line, which must start with word, and
// returns its other fields.
func childLine(lines *bufio.Scanner, word string) ([]string, error) {
	if !lines.Scan() {
		if err := lines.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("memory child: exited early")
	}
	f := strings.Fields(lines.Text())
	if len(f) < 2 || f[0] != word {
		return nil, fmt.Errorf("memory child: got %q, want a line starting with %q", lines.Text(), word)
	}
	return f[1:], nil
}

// memoryChild is the server process of the memory row: a Patronus node
// alone, so that its RSS counts nothing else (no reference, no clients, no
// earlier rows). It holds the scale set, and its collector
// (telemetry.Writer) writes the measured state of the 1,000 paths, 1,000
// policies and 10,000 flows, all at first, then every -collect-every the
// paths, the policies and a tenth of the flows. It prints "addr ADDR" once
// serving, answers a "report" line on stdin with "mem VmRSS VmHWM
// heap-in-use heap-live" (KiB; live is what a collection run then leaves)
// and a heap profile if asked, and stops when stdin closes.
func memoryChild(args []string) error {
	fs := flag.NewFlagSet("gnmibench memory child", flag.ContinueOnError)
	dir := fs.String("dir", os.TempDir(), "where to make the data dir")
	memProfile := fs.String("memprofile", "", "write a heap profile here when reporting")
	every := fs.Duration("collect-every", time.Second, "how often the collector writes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	p, err := openPatronus(*dir, nil)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.loadScale(ctx); err != nil {
		return err
	}
	snap := collectorSnapshot(scale.Generate(1))
	w := telemetry.NewWriter(p.node.Store)
	if err := w.Write(ctx, snap); err != nil {
		return err
	}
	fmt.Printf("addr %s\n", p.addr())

	cmds := make(chan string)
	go func() {
		defer close(cmds)
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			cmds <- in.Text()
		}
	}()
	tick := time.NewTicker(*every)
	defer tick.Stop()
	for round := 1; ; {
		select {
		case <-tick.C:
			advance(snap, round)
			round++
			if err := w.Write(ctx, snap); err != nil {
				return err
			}
		case c, ok := <-cmds:
			if !ok {
				return nil
			}
			if c == "report" {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				st, err := procStatus("VmRSS", "VmHWM")
				if err != nil {
					return err
				}
				// What a collection leaves is what the node holds; the
				// rest of the heap in use is garbage not yet collected.
				runtime.GC()
				var live runtime.MemStats
				runtime.ReadMemStats(&live)
				fmt.Printf("mem %d %d %d %d\n", st[0], st[1], ms.HeapInuse/1024, live.HeapAlloc/1024)
				if *memProfile != "" {
					if err := writeHeapProfile(*memProfile); err != nil {
						return err
					}
				}
			}
		}
	}
}

// collectorSnapshot is what the collector measures of the scale set: every
// path, policy and flow.
func collectorSnapshot(set *scale.Set) *telemetry.Snapshot {
	now := time.Now()
	snap := &telemetry.Snapshot{Paths: map[string]telemetry.Path{}, Policies: map[string]telemetry.Policy{}}
	for _, p := range set.Config["patronus-paths:paths"].(map[string]any)["path"].([]any) {
		name := p.(map[string]any)["name"].(string)
		snap.Paths[name] = telemetry.Path{Health: "UP", Latency: 20 * time.Millisecond, Jitter: time.Millisecond, LastChange: now}
	}
	for i := range scale.NumPolicies {
		snap.Policies[policyName(i)] = telemetry.Policy{PacketsMatched: 1, BytesMatched: 100}
	}
	for _, f := range set.Flows {
		snap.Flows = append(snap.Flows, telemetry.Flow{
			Protocol: f.Protocol,
			Src:      netip.AddrPortFrom(netip.MustParseAddr(f.SourceAddress), f.SourcePort),
			Dst:      netip.AddrPortFrom(netip.MustParseAddr(f.DestinationAddress), f.DestinationPort),
			Policy:   f.Policy, Path: f.Path, Packets: 1, Bytes: 100, FirstSeen: now, LastSeen: now,
		})
	}
	return snap
}

// advance is one second of traffic: every path probes and sends, its
// latency moves, every policy counts packets, and a tenth of the flows (a
// different tenth each round) are active.
func advance(snap *telemetry.Snapshot, round int) {
	for name, p := range snap.Paths {
		p.ProbesSent += 5
		p.ProbesReceived += 5
		p.TxPackets += 100
		p.TxBytes += 10000
		p.Latency = 20*time.Millisecond + time.Duration(round%7)*100*time.Microsecond
		snap.Paths[name] = p
	}
	for name, p := range snap.Policies {
		p.PacketsMatched += 10
		p.BytesMatched += 1000
		snap.Policies[name] = p
	}
	for i := range snap.Flows {
		if (i+round)%10 == 0 {
			f := &snap.Flows[i]
			f.Packets++
			f.Bytes += 100
			f.LastSeen = f.LastSeen.Add(time.Second)
		}
	}
}

func writeHeapProfile(name string) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// procStatus returns the named fields of /proc/self/status in KiB.
func procStatus(names ...string) ([]int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	out := make([]int64, len(names))
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for i, n := range names {
			if k == n {
				f := strings.Fields(v)
				if len(f) > 0 {
					out[i], _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
		}
	}
	return out, nil
}
