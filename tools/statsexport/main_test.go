package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/collector/history"
	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

func TestExportCSVAndJSON(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	ctx := context.Background()
	b, err := os.ReadFile("../../testdata/scenario1/config.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.Set(ctx, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(b)}}}); err != nil {
		t.Fatal(err)
	}
	w, rec := telemetry.NewWriter(n.Store), history.NewRecorder(n.Store, n.Schema)
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Second).UTC()
	counts := []uint64{10, 20, 35}
	for i, c := range counts {
		snap := &telemetry.Snapshot{
			Policies: map[string]telemetry.Policy{"voice-sip": {PacketsMatched: c, BytesMatched: c * 100}},
			Paths:    map[string]telemetry.Path{"hq-mpls--branch-1-mpls": {Health: "UP", Latency: time.Duration(i+1) * time.Millisecond, Loss: 0.5}},
		}
		if err := w.Write(ctx, snap); err != nil {
			t.Fatal(err)
		}
		if err := rec.Sample(ctx, base.Add(time.Duration(i)*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	from, to := base.Format(time.RFC3339), base.Add(3*time.Minute).Format(time.RFC3339)

	var out, errOut bytes.Buffer
	code := run([]string{"-addr", n.Addr, "-insecure", "-from", from, "-to", to, "-path", "/policies/policy[name=voice-sip]/state/counters/packets-matched"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	records, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatalf("not valid CSV: %v\n%s", err, out.String())
	}
	if len(records) != 1+len(counts) || records[0][0] != "time" {
		t.Fatalf("CSV has %d records, want a header and %d rows:\n%v", len(records), len(counts), records)
	}
	for i, r := range records[1:] {
		ts, err := time.Parse(time.RFC3339Nano, r[0])
		if err != nil || !ts.Equal(base.Add(time.Duration(i)*time.Minute)) {
			t.Errorf("row %d time %q, want %v", i, r[0], base.Add(time.Duration(i)*time.Minute))
		}
		if r[1] != "/policies/policy[name=voice-sip]/state/counters/packets-matched" || r[2] != strconv.FormatUint(counts[i], 10) {
			t.Errorf("row %d = %v, want packets-matched %d", i, r, counts[i])
		}
	}

	out.Reset()
	code = run([]string{"-addr", n.Addr, "-insecure", "-from", from, "-to", to, "-format", "json",
		"-path", "/paths/path[name=hq-mpls--branch-1-mpls]/state/latency", "-path", "/paths/path[name=hq-mpls--branch-1-mpls]/state/loss"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var doc struct {
		Rows []struct {
			Time  time.Time `json:"time"`
			Path  string    `json:"path"`
			Value float64   `json:"value"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not valid JSON: %v\n%s", err, out.String())
	}
	latency := map[time.Time]float64{}
	for _, r := range doc.Rows {
		switch r.Path {
		case "/paths/path[name=hq-mpls--branch-1-mpls]/state/latency":
			latency[r.Time] = r.Value
		case "/paths/path[name=hq-mpls--branch-1-mpls]/state/loss":
			if r.Value != 0.5 {
				t.Errorf("loss %v at %v, want 0.5", r.Value, r.Time)
			}
		default:
			t.Errorf("unexpected path %s", r.Path)
		}
	}
	for i := range counts {
		if got := latency[base.Add(time.Duration(i)*time.Minute)]; got != float64((i+1)*1000) {
			t.Errorf("latency at sample %d = %v µs, want %d", i, got, (i+1)*1000)
		}
	}

	if code := run([]string{"-format", "xml"}, &out, &errOut); code != 2 {
		t.Errorf("a bad -format exits %d, want 2", code)
	}
}
