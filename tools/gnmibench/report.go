package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
)

// Metric names; a workload's rows use these, and the goals find rows by
// them.
const (
	mIngest    = "writer ingest, leaf upd/s"
	mDelivered = "delivered to all subs, leaf upd/s"
	mP50       = "latency p50, ms"
	mP99       = "latency p99, ms"
	mAllSynced = "all synced, ms"
	mMedSynced = "median sub synced, ms"
	mMinLeaves = "fewest leaves at sync"
	mOps       = "RPCs/s"
	mUpdates   = "updates/s"
	mRSS       = "server VmRSS, MB"
	mHWM       = "server VmHWM (peak), MB"
	mHeap      = "server Go heap in use, MB"
	mLive      = "server Go heap live (after GC), MB"
	mStreamed  = "leaf upd streamed (collector)"
	mSched     = "Go sched latency p99, ms"
	mCPU       = "process CPU per RPC, µs"
)

// Row is one line of the table: one metric of one workload on both
// servers. A nil value means the server cannot do it (Note says why).
type Row struct {
	Workload  string   `json:"workload"`
	Metric    string   `json:"metric"`
	Patronus  *float64 `json:"patronus"`
	Reference *float64 `json:"reference"`
	// Ratio is Patronus/reference, where the two measure the same thing.
	Ratio   *float64 `json:"ratio"`
	Goal    string   `json:"goal,omitempty"`
	GoalMet *bool    `json:"goal_met,omitempty"`
	Note    string   `json:"note,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// pair is a row with both values and their ratio.
func pair(workload, metric string, p, r float64) Row {
	row := Row{Workload: workload, Metric: metric, Patronus: ptr(p), Reference: ptr(r)}
	if r != 0 {
		row.Ratio = ptr(p / r)
	}
	return row
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// outcome describes the subscribers of one server that did not last.
func outcome(side string, subs, cut, failed int, firstErr string) string {
	var parts []string
	if cut > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d subs cut off (RESOURCE_EXHAUSTED)", cut, subs))
	}
	if failed > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d subs failed", failed, subs))
	}
	if len(parts) == 0 {
		return ""
	}
	return side + ": " + strings.Join(parts, ", ") + ": " + firstErr
}

func joinNotes(notes ...string) string {
	var out []string
	for _, n := range notes {
		if n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, "; ")
}

// streamRows reports a fan-out workload over leaves changing leaves,
// sampled every interval in SAMPLE mode.
func streamRows(name string, spec streamSpec, leaves int, every time.Duration, p, r streamResult) []Row {
	ingest := pair(name, mIngest, p.ingest, r.ingest)
	if spec.rate > 0 {
		ingest.Note = fmt.Sprintf("writer paced at %s leaf upd/s", num(spec.rate))
	}
	ingest.Note = joinNotes(ingest.Note, outcome("patronus", spec.subs, p.cut, p.failed, p.firstErr),
		outcome("reference", spec.subs, r.cut, r.failed, r.firstErr))
	delivered := pair(name, mDelivered, p.delivered, r.delivered)
	rows := []Row{ingest, delivered}
	if spec.mode == gpb.SubscriptionMode_SAMPLE {
		rows = append(rows, pair(name, mSched, ms(p.sched), ms(r.sched)))
		rows[1].Ratio = nil
		rows[1].Note = fmt.Sprintf("a full sample for every subscriber every interval would be %s/s; the reference has no SAMPLE mode: it streams every change",
			num(float64(spec.subs*leaves)/every.Seconds()))
		return rows
	}
	return append(rows,
		pair(name, mP50, ms(p.lat.quantile(0.50)), ms(r.lat.quantile(0.50))),
		pair(name, mP99, ms(p.lat.quantile(0.99)), ms(r.lat.quantile(0.99))),
		pair(name, mSched, ms(p.sched), ms(r.sched)))
}

func syncRows(name string, leaves int, p, r syncResult) []Row {
	rows := []Row{
		pair(name, mAllSynced, ms(p.all), ms(r.all)),
		pair(name, mMedSynced, ms(p.p50), ms(r.p50)),
		pair(name, mMinLeaves, float64(p.minLeaves), float64(r.minLeaves)),
	}
	for _, x := range []struct {
		side string
		n    int
	}{{"patronus", p.minLeaves}, {"reference", r.minLeaves}} {
		if x.n != leaves {
			rows[2].Note = joinNotes(rows[2].Note, fmt.Sprintf("%s: a subscriber got %d of %d leaves", x.side, x.n, leaves))
		}
	}
	return rows
}

// unaryRows reports a unary workload; refErr is why the reference could
// not do it (nil if it could).
func unaryRows(name string, p, r unaryResult, refErr error) []Row {
	rows := []Row{
		pair(name, mOps, p.ops, r.ops),
		pair(name, mP50, ms(p.lat.quantile(0.50)), ms(r.lat.quantile(0.50))),
		pair(name, mP99, ms(p.lat.quantile(0.99)), ms(r.lat.quantile(0.99))),
		pair(name, mCPU, us(p.cpu), us(r.cpu)),
	}
	if p.updates != p.ops {
		rows = append(rows, pair(name, mUpdates, p.updates, r.updates))
	}
	if refErr != nil {
		for i := range rows {
			rows[i].Reference, rows[i].Ratio = nil, nil
		}
		rows[0].Note = "reference: " + refErr.Error()
	}
	return rows
}

func memoryRows(m memoryResult, subs int) []Row {
	one := func(metric string, v float64) Row {
		return Row{Workload: "memory", Metric: metric, Patronus: ptr(v)}
	}
	rows := []Row{
		one(mRSS, m.rss),
		one(mHWM, m.hwm),
		one(mHeap, m.heap),
		one(mLive, m.live),
		one(mAllSynced, ms(m.synced)),
		one(mMinLeaves, float64(m.minLeaves)),
		one(mStreamed, float64(m.delivered)),
	}
	rows[0].Note = joinNotes(fmt.Sprintf("Patronus alone: scale set + its 10,000 flows, collector writing 1/s for %v, %d subs on /paths/path/state and /policies/policy/state", m.ran, subs),
		outcome("patronus", subs, m.cut, m.failed, m.firstErr))
	return rows
}

// applyGoals sets the goals on the rows they apply to.
func applyGoals(rows []Row) {
	find := func(workload, metric string) *Row {
		for i := range rows {
			if rows[i].Workload == workload && rows[i].Metric == metric {
				return &rows[i]
			}
		}
		return nil
	}
	set := func(r *Row, goal string, met bool) {
		if r != nil && r.Patronus != nil {
			r.Goal, r.GoalMet = goal, ptr(met)
		}
	}
	for _, n := range []string{"10", "50"} {
		if r := find("fanout-on_change-"+n, mDelivered); r != nil && r.Reference != nil {
			set(r, "≥ 2× ref", *r.Patronus >= 2**r.Reference)
		}
	}
	if r, one := find("fanout-on_change-50", mIngest), find("fanout-on_change-1", mIngest); r != nil && one != nil {
		share := *r.Patronus / *one.Patronus
		set(r, fmt.Sprintf("≥ 50%% of 1 sub (%.0f%%)", 100*share), share >= 0.5)
	}
	if r := find("sync-50", mAllSynced); r != nil {
		set(r, "≤ 1000 ms", *r.Patronus <= 1000)
	}
	for i := range rows {
		r := &rows[i]
		if strings.HasPrefix(r.Workload, "paced-") && strings.HasSuffix(r.Workload, "-on_change-50") && r.Metric == mP99 {
			set(r, "≤ 10 ms", *r.Patronus <= 10)
		}
	}
	for i := range rows {
		r := &rows[i]
		if strings.HasPrefix(r.Workload, "get-leaf-") {
			switch r.Metric {
			case mOps:
				set(r, "≥ 20,000/s", *r.Patronus >= 20000)
				if r.Reference != nil {
					r.Note = joinNotes(r.Note, "reference: the gRPC floor, the same clients calling grpc.health.v1 Check (an RPC that does nothing) on a plain grpc.Server")
				}
			case mP99:
				set(r, "≤ 1 ms", *r.Patronus <= 1)
			case mCPU:
				procs := runtime.GOMAXPROCS(0)
				r.Note = joinNotes(r.Note, fmt.Sprintf("the CPU of servers and clients alike: 20,000/s on %d cores leaves %s µs", procs, num(float64(procs)*1e6/20000)))
			}
		}
	}
	for _, m := range []string{mRSS, mHWM} {
		if r := find("memory", m); r != nil {
			set(r, "≤ 100 MB", *r.Patronus <= 100)
		}
	}
}

// num formats v with thousands separators, or with 2 significant
// decimals below 100.
func num(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return fmt.Sprint(v)
	case math.Abs(v) >= 1000:
		s := fmt.Sprintf("%d", int64(math.Round(v)))
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 && s[i-1] != '-' {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func cell(v *float64) string {
	if v == nil {
		return "-"
	}
	return num(*v)
}

// printTable writes the rows as a table; notes follow their workload.
func printTable(w io.Writer, rows []Row) {
	const format = "%-20s %-34s %12s %12s %7s  %s\n"
	fmt.Fprintf(w, format, "WORKLOAD", "METRIC", "PATRONUS", "REFERENCE", "P/REF", "GOAL")
	var notes []string
	flush := func() {
		for _, n := range notes {
			fmt.Fprintf(w, "%20s   note: %s\n", "", n)
		}
		notes = nil
	}
	last := ""
	for _, r := range rows {
		name := r.Workload
		if name == last {
			name = ""
		} else {
			flush()
		}
		last = r.Workload
		ratio := "-"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.2f", *r.Ratio)
		}
		goal := r.Goal
		if r.GoalMet != nil {
			if *r.GoalMet {
				goal += ": ok"
			} else {
				goal += ": MISSED"
			}
		}
		fmt.Fprintf(w, format, name, r.Metric, cell(r.Patronus), cell(r.Reference), ratio, goal)
		if r.Note != "" {
			notes = append(notes, r.Note)
		}
	}
	flush()
}

// Report is the JSON written to -out.
type Report struct {
	Started    time.Time `json:"started"`
	GoVersion  string    `json:"go_version"`
	NumCPU     int       `json:"num_cpu"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	Duration   string    `json:"duration_per_workload"`
	Leaves     int       `json:"leaves"`
	Batch      int       `json:"leaves_per_write"`
	PacedRate  float64   `json:"paced_rate"`
	DataDir    string    `json:"data_dir"`
	// VmHWMMB is this process's peak RSS: both servers and every client.
	VmHWMMB float64 `json:"process_vmhwm_mb"`
	Rows    []Row   `json:"rows"`
}

func writeJSON(name string, rep *Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}
