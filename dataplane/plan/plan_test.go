package plan

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

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
