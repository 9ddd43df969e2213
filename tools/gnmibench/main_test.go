package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The memory row runs this test binary again as its server process.
	if _, ok := os.LookupEnv(envMemoryChild); ok {
		if err := memoryChild(os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "memory child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestWorkloads runs every workload briefly against both servers and checks
// that each delivered what it should.
func TestWorkloads(t *testing.T) {
	// The memory row's collector writes every 100 ms: the feed then holds
	// over a second of its rounds, so that subscribers slowed by a loaded
	// machine are not cut off.
	cfg := &config{
		duration: 300 * time.Millisecond, batch: 100, rate: 10000, sampleEvery: 100 * time.Millisecond,
		fanout: []int{2}, sample: []int{2}, paced: []paced{{2, 1}}, sync: []int{2}, getClients: []int{2},
		memorySubs: 2, collectEvery: 100 * time.Millisecond, dir: t.TempDir(),
	}
	checkWorkloads(t, cfg, []string{"fanout-on_change-2", "fanout-sample-2", "paced-10k-on_change-2", "sync-2",
		"get-leaf-2", "get-policies-1", "set-leaf-1", "set-100-1", "memory"})
}

// TestWorkloadsDecoding runs the subscription and Get workloads with clients
// that decode every response (-decode): like the wire readers in
// TestWorkloads, every subscriber must get all 10,000 leaves before its
// sync_response, and every row must have values. (TestWireCountsAsDecoded
// compares the two ways of counting message by message.)
func TestWorkloadsDecoding(t *testing.T) {
	cfg := &config{
		duration: 300 * time.Millisecond, batch: 100, rate: 10000, sampleEvery: 100 * time.Millisecond,
		fanout: []int{2}, sync: []int{2}, getClients: []int{2}, decode: true, dir: t.TempDir(),
		only: regexp.MustCompile(`^(fanout|sync|get-leaf)`),
	}
	checkWorkloads(t, cfg, []string{"fanout-on_change-2", "sync-2", "get-leaf-2"})
}

// checkWorkloads runs cfg's workloads and checks their rows: want lists the
// workloads that must have some.
func checkWorkloads(t *testing.T, cfg *config, want []string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.json")
	var table bytes.Buffer
	if err := runAll(cfg, &table, nil, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	for _, r := range rep.Rows {
		seen[r.Workload] = true
		if strings.Contains(r.Note, "cut off") || strings.Contains(r.Note, "failed") || strings.Contains(r.Note, "a subscriber got") {
			t.Errorf("%s: %s", r.Workload, r.Note)
		}
		unary := strings.HasPrefix(r.Workload, "get-") || strings.HasPrefix(r.Workload, "set-")
		switch {
		case r.Patronus == nil:
			t.Errorf("%s %s: no Patronus value", r.Workload, r.Metric)
		case r.Workload == "memory":
			if *r.Patronus <= 0 {
				t.Errorf("memory %s = %v, want > 0", r.Metric, *r.Patronus)
			}
		case strings.HasPrefix(r.Workload, "get-leaf-"):
			// The reference is the gRPC floor (health Check).
			if r.Reference == nil || *r.Reference <= 0 {
				t.Errorf("%s %s: no gRPC floor as the reference", r.Workload, r.Metric)
			}
		case unary:
			// The reference serves Subscribe alone.
			if r.Reference != nil {
				t.Errorf("%s %s: the reference answered (%v); it has no Get or Set", r.Workload, r.Metric, *r.Reference)
			}
		case r.Reference == nil:
			t.Errorf("%s %s: no reference value", r.Workload, r.Metric)
		case r.Metric == mMinLeaves:
			if *r.Patronus != 10000 || *r.Reference != 10000 {
				t.Errorf("%s: fewest leaves at sync = %v (patronus), %v (reference); want 10000", r.Workload, *r.Patronus, *r.Reference)
			}
		case r.Metric == mIngest || r.Metric == mDelivered:
			if *r.Patronus <= 0 || *r.Reference <= 0 {
				t.Errorf("%s %s = %v (patronus), %v (reference); want both > 0", r.Workload, r.Metric, *r.Patronus, *r.Reference)
			}
		}
		if unary && (r.Metric == mOps || r.Metric == mUpdates) && *r.Patronus <= 0 {
			t.Errorf("%s %s = %v, want > 0", r.Workload, r.Metric, *r.Patronus)
		}
	}
	for _, w := range want {
		if !seen[w] {
			t.Errorf("no rows for workload %s", w)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.add(int64(i)*int64(time.Microsecond), 1)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := got - c.want; d < -c.want/16 || d > c.want/16 {
			t.Errorf("quantile(%v) = %v, want %v ± 1/16", c.q, got, c.want)
		}
	}
}
