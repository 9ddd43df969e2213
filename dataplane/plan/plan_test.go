package plan

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

func scenario(t *testing.T) []byte {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "testdata", "scenario1", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func set(t *testing.T, n *nodetest.Node, req *gpb.SetRequest) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.Client.Set(ctx, req); err != nil {
		t.Fatal(err)
	}
}

func loaded(t *testing.T) *nodetest.Node {
	n := nodetest.Start(t, nodetest.Options{})
	set(t, n, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(scenario(t))}}})
	set(t, n, &gpb.SetRequest{Update: []*gpb.Update{
		{Path: nodetest.Path(t, "/sites/site[name=hq]/config"), Val: nodetest.JSONIETF([]byte(`{"lan-interface":["lan0"]}`))},
		{Path: nodetest.Path(t, "/sites/site[name=hq]/endpoints/endpoint[name=mpls]/config"), Val: nodetest.JSONIETF([]byte(`{"interface":"wan-mpls","gateway":"198.51.100.254","port":5000}`))},
		{Path: nodetest.Path(t, "/paths/path[name=hq-inet--branch-1-inet]/config"), Val: nodetest.JSONIETF([]byte(`{"probe-interval":50,"cost":7}`))},
	}})
	return n
}

func TestReadScenario(t *testing.T) {
	n := loaded(t)
	pathIDs, polIDs := NewIDs(1), NewIDs(0)
	p, err := Read(n.Store, "hq", pathIDs, polIDs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lan0"}, p.LANInterfaces); diff != "" {
		t.Errorf("lan interfaces (-want +got):\n%s", diff)
	}
	mpls := Endpoint{Site: "hq", Name: "mpls", Address: netip.MustParseAddr("198.51.100.1"), Port: 5000, Interface: "wan-mpls",
		Gateway: netip.MustParseAddr("198.51.100.254"), Bandwidth: 200000}
	if len(p.Endpoints) != 2 || p.Endpoints[1] != mpls {
		t.Errorf("endpoints: got %+v, want inet and %+v", p.Endpoints, mpls)
	}
	var local []string
	for _, pa := range p.PathsByIndex() {
		local = append(local, pa.Name)
		if pa.Src.Site != "hq" {
			t.Errorf("path %s has source site %s", pa.Name, pa.Src.Site)
		}
	}
	want := []string{"hq-inet--branch-1-inet", "hq-inet--branch-2-inet", "hq-inet--branch-2-lte", "hq-mpls--branch-1-mpls"}
	if diff := cmp.Diff(want, local); diff != "" {
		t.Errorf("local paths by index (-want +got):\n%s", diff)
	}
	inet := p.Paths["hq-inet--branch-1-inet"]
	if inet.ProbeInterval != 50*time.Millisecond || inet.Cost != 7 || !inet.Enabled || inet.Dst.Address != netip.MustParseAddr("203.0.113.11") || inet.Dst.Port != DefaultPort {
		t.Errorf("path hq-inet--branch-1-inet: %+v", inet)
	}
	if bw := inet.Bandwidth(); bw != 100000 {
		t.Errorf("bandwidth of hq-inet--branch-1-inet: %d, want the smaller of the two endpoints (100000)", bw)
	}
	if p.Paths["hq-mpls--branch-1-mpls"].ProbeInterval != DefaultProbeInterval {
		t.Errorf("default probe interval not applied")
	}

	byName := map[string]Policy{}
	var order []string
	for _, pol := range p.Policies {
		byName[pol.Name] = pol
		order = append(order, pol.Name)
	}
	for i := 1; i < len(p.Policies); i++ {
		if p.Policies[i-1].Priority > p.Policies[i].Priority {
			t.Errorf("policies out of priority order: %v", order)
		}
	}
	sip := byName["voice-sip"]
	if sip.Protocol != 17 || sip.DstPorts != (PortRange{5060, 5061}) || !sip.SrcPorts.Any() || sip.DSCP != -1 || sip.Action != Steer {
		t.Errorf("voice-sip: %+v", sip)
	}
	if diff := cmp.Diff([]string{"hq-mpls--branch-1-mpls", "hq-inet--branch-1-inet"}, sip.Paths); diff != "" {
		t.Errorf("voice-sip local paths (-want +got):\n%s", diff)
	}
	if sip.SLA != (SLA{MaxLatency: 150 * time.Millisecond, MaxJitter: 30 * time.Millisecond, MaxLoss: 1}) {
		t.Errorf("voice-sip SLA: %+v", sip.SLA)
	}
	if rtp := byName["voice-rtp"]; rtp.DSCP != 46 || rtp.Protocol != -1 && rtp.Protocol != 17 {
		t.Errorf("voice-rtp: %+v", rtp)
	}
	if bulk := byName["bulk"]; bulk.SetDSCP != 10 || bulk.DstPorts != (PortRange{445, 445}) {
		t.Errorf("bulk: %+v", bulk)
	}
	if d := byName["block-telnet"]; d.Action != Drop {
		t.Errorf("block-telnet: %+v", d)
	}

	// The numbers stay with their names across reads; a removed path frees
	// its number for a later one.
	before := p.Paths["hq-mpls--branch-1-mpls"].Index
	set(t, n, &gpb.SetRequest{Delete: []*gpb.Path{nodetest.Path(t, "/paths/path[name=hq-inet--branch-1-inet]")}})
	p2, err := Read(n.Store, "hq", pathIDs, polIDs)
	if err != nil {
		t.Fatal(err)
	}
	if got := p2.Paths["hq-mpls--branch-1-mpls"].Index; got != before {
		t.Errorf("index of hq-mpls--branch-1-mpls moved from %d to %d when another path was deleted", before, got)
	}
	if _, ok := p2.Paths["hq-inet--branch-1-inet"]; ok {
		t.Errorf("deleted path still planned")
	}
	if byName["voice-sip"].ID != func() uint32 {
		for _, pol := range p2.Policies {
			if pol.Name == "voice-sip" {
				return pol.ID
			}
		}
		return 1 << 31
	}() {
		t.Errorf("policy id of voice-sip changed between reads")
	}

	// Another site sees only its own paths.
	b1, err := Read(n.Store, "branch-1", NewIDs(1), NewIDs(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(b1.Paths) != 2 || b1.Paths["branch-1-inet--hq-inet"] == nil {
		t.Errorf("branch-1 paths: %v", b1.Paths)
	}
	for _, pol := range b1.Policies {
		if pol.Name == "voice-sip" && len(pol.Paths) != 0 {
			t.Errorf("branch-1 plans voice-sip onto %v, paths of another site", pol.Paths)
		}
	}
}

func TestIDs(t *testing.T) {
	ids := NewIDs(1)
	a := ids.Assign([]string{"b", "a", "c"})
	if diff := cmp.Diff(map[string]uint32{"a": 1, "b": 2, "c": 3}, a); diff != "" {
		t.Errorf("first assignment (-want +got):\n%s", diff)
	}
	b := ids.Assign([]string{"c", "d"})
	if diff := cmp.Diff(map[string]uint32{"c": 3, "d": 1}, b); diff != "" {
		t.Errorf("after dropping a and b (-want +got):\n%s", diff)
	}
}

func TestChoose(t *testing.T) {
	p := &Plan{Paths: map[string]*Path{"m": {Name: "m", Enabled: true}, "i": {Name: "i", Enabled: true}, "off": {Name: "off"}}}
	voice := Policy{Name: "voice", Enabled: true, Action: Steer, Paths: []string{"off", "m", "i"}, SLA: SLA{MaxLoss: 1, MaxLatency: 150 * time.Millisecond}}
	loose := Policy{Name: "video", Enabled: true, Action: Steer, Paths: []string{"m", "i"}, SLA: SLA{MaxLoss: 10}}
	p.Policies = []Policy{voice, loose}
	p.tightest = map[string]SLA{"m": p.tightestSLA("m"), "i": p.tightestSLA("i")}
	up := Health{Status: "UP"}
	for _, tc := range []struct {
		name   string
		pol    Policy
		health map[string]Health
		want   string
	}{
		{"both up: first", voice, map[string]Health{"m": up, "i": up}, "m"},
		{"disabled path skipped", voice, map[string]Health{"off": up, "m": up}, "m"},
		{"first down", voice, map[string]Health{"m": {Status: "DOWN"}, "i": up}, "i"},
		{"first degraded", voice, map[string]Health{"m": {Status: "DEGRADED", Loss: 5}, "i": up}, "i"},
		{"looser SLA keeps a degraded path within it", loose, map[string]Health{"m": {Status: "DEGRADED", Loss: 5}, "i": up}, "m"},
		{"looser SLA breached too", loose, map[string]Health{"m": {Status: "DEGRADED", Loss: 15}, "i": up}, "i"},
		{"none up: first not down", voice, map[string]Health{"m": {Status: "DOWN"}, "i": {Status: "DEGRADED", Loss: 5}}, "i"},
		{"no health yet: first usable", voice, nil, "m"},
		{"all down: ordinary routing", voice, map[string]Health{"m": {Status: "DOWN"}, "i": {Status: "DOWN"}}, ""},
		{"not a steer policy", Policy{Action: Pass, Paths: []string{"m"}}, map[string]Health{"m": up}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Choose(tc.pol, tc.health); got != tc.want {
				t.Errorf("Choose = %q, want %q", got, tc.want)
			}
		})
	}
	if got := p.TightestSLA("m"); got != (SLA{MaxLoss: 1, MaxLatency: 150 * time.Millisecond}) {
		t.Errorf("TightestSLA(m) = %+v", got)
	}
	if !p.Degraded("m", Health{Status: "UP", Loss: 2}) || p.Degraded("m", Health{Status: "UP", Loss: 0.5}) {
		t.Errorf("Degraded does not follow voice's 1%% loss bound")
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]PortRange{"": {}, "23": {23, 23}, "5060..5061": {5060, 5061}} {
		if got, err := ParsePortRange(in); err != nil || got != want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "9..1", "1..70000"} {
		if _, err := ParsePortRange(bad); err == nil {
			t.Errorf("ParsePortRange(%q) accepted", bad)
		}
	}
}
