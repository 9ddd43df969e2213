package scale_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/patronus-sdwan/patronus/gen/model"
)

const scenario1 = "../../../testdata/scenario1"

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(scenario1, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestScenario1Config(t *testing.T) {
	d := load(t, readFile(t, "config.json"))

	sites := d.GetSites().Site
	if len(sites) != 3 {
		t.Errorf("%d sites, want 3", len(sites))
	}
	eps := 0
	for _, s := range sites {
		eps += len(s.GetEndpoints().Endpoint)
	}
	if eps != 6 {
		t.Errorf("%d endpoints, want 6", eps)
	}
	if got := sites["hq"].GetConfig().GetLocation(); got != "Frankfurt" {
		t.Errorf("hq location %q, want Frankfurt", got)
	}
	lte := sites["branch-2"].GetEndpoints().Endpoint["lte"].GetConfig()
	if lte.GetAddress() != "192.0.2.21" || lte.GetTransport() != model.PatronusSites_Transport_LTE || lte.GetBandwidth() != 20000 {
		t.Errorf("branch-2 lte endpoint = %+v", lte)
	}
	// scenario.md's pairing rule (hq-inet<->branch-1-inet,
	// hq-mpls<->branch-1-mpls, hq-inet<->branch-2-inet,
	// hq-inet<->branch-2-lte, both directions) gives 8 paths, although its
	// text says 10; see testdata/README.md.
	wantPaths := []string{
		"hq-inet--branch-1-inet", "branch-1-inet--hq-inet",
		"hq-mpls--branch-1-mpls", "branch-1-mpls--hq-mpls",
		"hq-inet--branch-2-inet", "branch-2-inet--hq-inet",
		"hq-inet--branch-2-lte", "branch-2-lte--hq-inet",
	}
	paths := d.GetPaths().Path
	if len(paths) != len(wantPaths) {
		t.Errorf("%d paths, want %d", len(paths), len(wantPaths))
	}
	for _, name := range wantPaths {
		if paths[name] == nil {
			t.Errorf("path %s missing", name)
		}
	}
	pols := d.GetPolicies().Policy
	if len(pols) != 6 {
		t.Errorf("%d policies, want 6", len(pols))
	}
	want := map[string]uint32{"voice-sip": 10, "voice-rtp": 11, "video": 20, "block-telnet": 30, "bulk": 40, "default": 1000}
	for name, prio := range want {
		if got := pols[name].GetConfig().GetPriority(); got != prio {
			t.Errorf("policy %s priority %d, want %d", name, got, prio)
		}
	}
	if got := pols["voice-sip"].GetAction().GetSla().GetConfig().GetMaxLoss(); got != 1 {
		t.Errorf("voice-sip max-loss %v, want 1", got)
	}
}

// TestScenario1Files checks that the per-part files and the gnmic request
// file carry exactly the content of config.json. The request file replaces
// /sites, /paths and /policies (one SetRequest, one transaction) rather than
// /, which would also delete the configuration under /system.
func TestScenario1Files(t *testing.T) {
	var cfg map[string]any
	if err := json.Unmarshal(readFile(t, "config.json"), &cfg); err != nil {
		t.Fatal(err)
	}
	for file, key := range map[string]string{
		"sites.json":    "patronus-sites:sites",
		"paths.json":    "patronus-paths:paths",
		"policies.json": "patronus-policies:policies",
	} {
		var part any
		if err := json.Unmarshal(readFile(t, file), &part); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !reflect.DeepEqual(part, cfg[key]) {
			t.Errorf("%s differs from %q in config.json", file, key)
		}
	}
	var req struct {
		Replaces []struct {
			Path     string `json:"path"`
			Encoding string `json:"encoding"`
			Value    any    `json:"value"`
		} `json:"replaces"`
	}
	if err := json.Unmarshal(readFile(t, "set-request.json"), &req); err != nil {
		t.Fatal(err)
	}
	want := []struct{ path, key string }{
		{"/sites", "patronus-sites:sites"},
		{"/paths", "patronus-paths:paths"},
		{"/policies", "patronus-policies:policies"},
	}
	if len(req.Replaces) != len(want) {
		t.Fatalf("set-request.json: %d replaces, want %d", len(req.Replaces), len(want))
	}
	for i, w := range want {
		r := req.Replaces[i]
		if r.Path != w.path || r.Encoding != "json_ietf" {
			t.Errorf("set-request.json replace %d: path %q encoding %q, want %q json_ietf", i, r.Path, r.Encoding, w.path)
		}
		if !reflect.DeepEqual(r.Value, cfg[w.key]) {
			t.Errorf("set-request.json replace of %s differs from %q in config.json", w.path, w.key)
		}
	}
}
