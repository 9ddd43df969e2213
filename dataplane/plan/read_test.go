package plan_test

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

	"github.com/patronus-sdwan/patronus/dataplane/plan"
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
	pathIDs, polIDs := plan.NewIDs(1), plan.NewIDs(0)
	p, err := plan.Read(n.Store, "hq", pathIDs, polIDs)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lan0"}, p.LANInterfaces); diff != "" {
		t.Errorf("lan interfaces (-want +got):\n%s", diff)
	}
	mpls := plan.Endpoint{Site: "hq", Name: "mpls", Address: netip.MustParseAddr("198.51.100.1"), Port: 5000, Interface: "wan-mpls",
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
	if inet.ProbeInterval != 50*time.Millisecond || inet.Cost != 7 || !inet.Enabled || inet.Dst.Address != netip.MustParseAddr("203.0.113.11") || inet.Dst.Port != plan.DefaultPort {
		t.Errorf("path hq-inet--branch-1-inet: %+v", inet)
	}
	if bw := inet.Bandwidth(); bw != 100000 {
		t.Errorf("bandwidth of hq-inet--branch-1-inet: %d, want the smaller of the two endpoints (100000)", bw)
	}
	if p.Paths["hq-mpls--branch-1-mpls"].ProbeInterval != plan.DefaultProbeInterval {
		t.Errorf("default probe interval not applied")
	}

	byName := map[string]plan.Policy{}
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
	if sip.Protocol != 17 || sip.DstPorts != (plan.PortRange{5060, 5061}) || !sip.SrcPorts.Any() || sip.DSCP != -1 || sip.Action != plan.Steer {
		t.Errorf("voice-sip: %+v", sip)
	}
	if diff := cmp.Diff([]string{"hq-mpls--branch-1-mpls", "hq-inet--branch-1-inet"}, sip.Paths); diff != "" {
		t.Errorf("voice-sip local paths (-want +got):\n%s", diff)
	}
	if sip.SLA != (plan.SLA{MaxLatency: 150 * time.Millisecond, MaxJitter: 30 * time.Millisecond, MaxLoss: 1}) {
		t.Errorf("voice-sip SLA: %+v", sip.SLA)
	}
	if rtp := byName["voice-rtp"]; rtp.DSCP != 46 || rtp.Protocol != -1 && rtp.Protocol != 17 {
		t.Errorf("voice-rtp: %+v", rtp)
	}
	if bulk := byName["bulk"]; bulk.SetDSCP != 10 || bulk.DstPorts != (plan.PortRange{445, 445}) {
		t.Errorf("bulk: %+v", bulk)
	}
	if d := byName["block-telnet"]; d.Action != plan.Drop {
		t.Errorf("block-telnet: %+v", d)
	}

	// The numbers stay with their names across reads; a removed path frees
	// its number for a later one.
	before := p.Paths["hq-mpls--branch-1-mpls"].Index
	set(t, n, &gpb.SetRequest{Delete: []*gpb.Path{nodetest.Path(t, "/paths/path[name=hq-inet--branch-1-inet]")}})
	p2, err := plan.Read(n.Store, "hq", pathIDs, polIDs)
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
	b1, err := plan.Read(n.Store, "branch-1", plan.NewIDs(1), plan.NewIDs(0))
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
