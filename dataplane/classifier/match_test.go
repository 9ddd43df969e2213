package classifier

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var flowOpts = []cmp.Option{
	cmpopts.EquateComparable(netip.AddrPort{}),
	cmpopts.IgnoreFields(Flow{}, "FirstSeen", "LastSeen"),
}

const (
	retNext = 0xFFFFFFFF // TCX_NEXT (-1)
	retDrop = 2          // TC_ACT_SHOT
)

func newTestClassifier(t testing.TB, noFlowCache bool) *Classifier {
	t.Helper()
	return newTestClassifierWith(t, loadOptions{noFlowCache: noFlowCache})
}

func newTestClassifierWith(t testing.TB, o loadOptions) *Classifier {
	t.Helper()
	requireRoot(t)
	c, err := load(o)
	if err != nil {
		t.Fatalf("load %+v: %v", o, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// verdict is what the program did with one frame.
type verdict struct {
	Ret  uint32
	Mark uint32
	Rule uint32 // NoRule when no rule counted the packet
}

// run classifies frame with BPF_PROG_TEST_RUN and reports the verdict and
// the frame as the program left it.
func run(t *testing.T, c *Classifier, frame []byte) (verdict, []byte) {
	t.Helper()
	before, err := c.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	ret, mark, out := classify1(t, c, frame)
	after, err := c.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	v := verdict{Ret: ret, Mark: mark, Rule: NoRule}
	for id, a := range after {
		switch d := a.Packets - before[id].Packets; {
		case d == 1 && v.Rule == NoRule:
			v.Rule = id
			if got, want := a.Bytes-before[id].Bytes, uint64(len(frame)); got != want {
				t.Errorf("rule %d counted %d bytes, want %d", id, got, want)
			}
		case d != 0:
			t.Errorf("rule %d counted %d packets for one frame (rule %d counted too)", id, d, v.Rule)
		}
	}
	return v, out
}

func u8(v uint8) *uint8 { return &v }

var (
	v4a = netip.MustParseAddr("10.1.0.1")
	v4b = netip.MustParseAddr("10.2.0.2")
	v6a = netip.MustParseAddr("2001:db8:1::1")
	v6b = netip.MustParseAddr("2001:db8:2::2")
)

func TestMatch(t *testing.T) {
	c := newTestClassifier(t, false)

	udp4 := pkt{src: v4a, dst: v4b, proto: protoUDP, sport: 5000, dport: 53}
	udp6 := pkt{src: v6a, dst: v6b, proto: protoUDP, sport: 5000, dport: 53}
	tcp4 := pkt{src: v4a, dst: v4b, proto: protoTCP, sport: 40000, dport: 443}
	icmp4 := pkt{src: v4a, dst: v4b, proto: protoICMP}
	steer := func(id, prio uint32) Rule {
		return Rule{ID: id, Priority: prio, Action: Steer, Mark: Mark(uint16(id)), SetDSCP: -1}
	}
	with := func(r Rule, f func(*Rule)) Rule { f(&r); return r }
	pass := func(id uint32) verdict { return verdict{Ret: retNext, Rule: id} }
	steered := func(id uint32) verdict { return verdict{Ret: retNext, Mark: Mark(uint16(id)), Rule: id} }
	none := verdict{Ret: retNext, Rule: NoRule}

	tests := []struct {
		name  string
		rules []Rule
		pkt   pkt
		want  verdict
	}{
		{"no rules", nil, udp4, none},
		{"any matches v4", []Rule{steer(1, 1)}, udp4, steered(1)},
		{"any matches v6", []Rule{steer(1, 1)}, udp6, steered(1)},
		{"any matches icmp", []Rule{steer(1, 1)}, icmp4, steered(1)},
		{"src prefix v4", []Rule{with(steer(1, 1), func(r *Rule) { r.Src = netip.MustParsePrefix("10.1.0.0/16") })}, udp4, steered(1)},
		{"src prefix v4 miss", []Rule{with(steer(1, 1), func(r *Rule) { r.Src = netip.MustParsePrefix("10.3.0.0/16") })}, udp4, none},
		{"src prefix /32", []Rule{with(steer(1, 1), func(r *Rule) { r.Src = netip.MustParsePrefix("10.1.0.1/32") })}, udp4, steered(1)},
		{"dst prefix /0 v4 is v4 only", []Rule{with(steer(1, 1), func(r *Rule) { r.Dst = netip.MustParsePrefix("0.0.0.0/0") })}, udp6, none},
		{"dst prefix /0 v6 is v6 only", []Rule{with(steer(1, 1), func(r *Rule) { r.Dst = netip.MustParsePrefix("::/0") })}, udp4, none},
		{"dst prefix v6", []Rule{with(steer(1, 1), func(r *Rule) { r.Dst = netip.MustParsePrefix("2001:db8:2::/48") })}, udp6, steered(1)},
		{"dst prefix v6 miss", []Rule{with(steer(1, 1), func(r *Rule) { r.Dst = netip.MustParsePrefix("2001:db8:3::/48") })}, udp6, none},
		{"v6 prefix odd length", []Rule{with(steer(1, 1), func(r *Rule) { r.Src = netip.MustParsePrefix("2001:db8:1::/63") })}, udp6, steered(1)},
		{"v4 rule never matches v4-mapped v6", []Rule{with(steer(1, 1), func(r *Rule) { r.Src = netip.MustParsePrefix("10.1.0.0/16") })},
			pkt{src: netip.MustParseAddr("::ffff:10.1.0.1"), dst: v6b, proto: protoUDP}, none},
		{"protocol", []Rule{with(steer(1, 1), func(r *Rule) { r.Protocol = u8(protoTCP) })}, tcp4, steered(1)},
		{"protocol miss", []Rule{with(steer(1, 1), func(r *Rule) { r.Protocol = u8(protoTCP) })}, udp4, none},
		{"dst port range", []Rule{with(steer(1, 1), func(r *Rule) { r.DstPorts = PortRange{400, 500} })}, tcp4, steered(1)},
		{"dst port range edge", []Rule{with(steer(1, 1), func(r *Rule) { r.DstPorts = PortRange{443, 443} })}, tcp4, steered(1)},
		{"dst port range miss", []Rule{with(steer(1, 1), func(r *Rule) { r.DstPorts = PortRange{444, 500} })}, tcp4, none},
		{"src port range", []Rule{with(steer(1, 1), func(r *Rule) { r.SrcPorts = PortRange{1024, 65535} })}, udp4, steered(1)},
		{"src port range miss", []Rule{with(steer(1, 1), func(r *Rule) { r.SrcPorts = PortRange{1, 1023} })}, udp4, none},
		{"ports on icmp are 0", []Rule{with(steer(1, 1), func(r *Rule) { r.DstPorts = PortRange{0, 10} })}, icmp4, steered(1)},
		{"later fragment has no ports", []Rule{with(steer(1, 1), func(r *Rule) { r.DstPorts = PortRange{53, 53} })},
			pkt{src: v4a, dst: v4b, proto: protoUDP, sport: 5000, dport: 53, fragOffset: 100}, none},
		{"dscp", []Rule{with(steer(1, 1), func(r *Rule) { r.DSCP = u8(46) })}, pkt{src: v4a, dst: v4b, proto: protoUDP, tos: 46<<2 | 1}, steered(1)},
		{"dscp miss", []Rule{with(steer(1, 1), func(r *Rule) { r.DSCP = u8(46) })}, pkt{src: v4a, dst: v4b, proto: protoUDP, tos: 10 << 2}, none},
		{"dscp v6", []Rule{with(steer(1, 1), func(r *Rule) { r.DSCP = u8(46) })}, pkt{src: v6a, dst: v6b, proto: protoUDP, tos: 46<<2 | 2}, steered(1)},
		{"every field", []Rule{with(steer(1, 1), func(r *Rule) {
			r.Src = netip.MustParsePrefix("10.1.0.0/24")
			r.Dst = netip.MustParsePrefix("10.2.0.0/24")
			r.Protocol = u8(protoTCP)
			r.SrcPorts = PortRange{40000, 40000}
			r.DstPorts = PortRange{443, 443}
			r.DSCP = u8(0)
		})}, tcp4, steered(1)},
		{"priority beats order", []Rule{steer(2, 20), steer(1, 10)}, udp4, steered(1)},
		{"equal priority by id", []Rule{steer(7, 10), steer(3, 10)}, udp4, steered(3)},
		{"first match wins", []Rule{
			with(steer(1, 1), func(r *Rule) { r.Protocol = u8(protoTCP) }),
			steer(2, 2),
			steer(3, 3),
		}, udp4, steered(2)},
		{"disabled skipped", []Rule{with(steer(1, 1), func(r *Rule) { r.Disabled = true }), steer(2, 2)}, udp4, steered(2)},
		{"drop", []Rule{{ID: 1, Action: Drop, SetDSCP: -1}}, udp4, verdict{Ret: retDrop, Rule: 1}},
		{"pass", []Rule{{ID: 1, Action: Pass, SetDSCP: -1, Mark: Mark(1)}}, udp4, pass(1)},
		{"steer without path passes", []Rule{{ID: 1, Action: Steer, SetDSCP: -1}}, udp4, pass(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetRules(tt.rules); err != nil {
				t.Fatal(err)
			}
			got, _ := run(t, c, tt.pkt.frame())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
			// The second packet is decided by the flow table.
			got, _ = run(t, c, tt.pkt.frame())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("cached verdict (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSetDSCP(t *testing.T) {
	c := newTestClassifier(t, false)
	tests := []struct {
		name    string
		pkt     pkt
		action  Action
		setDSCP int
		wantTOS uint8
	}{
		{"v4 steer", pkt{src: v4a, dst: v4b, proto: protoUDP, tos: 10<<2 | 1}, Steer, 46, 46<<2 | 1},
		{"v4 pass keeps ECN CE", pkt{src: v4a, dst: v4b, proto: protoTCP, tos: 3}, Pass, 63, 63<<2 | 3},
		{"v4 to zero", pkt{src: v4a, dst: v4b, proto: protoUDP, tos: 46<<2 | 2}, Pass, 0, 2},
		{"v4 none", pkt{src: v4a, dst: v4b, proto: protoUDP, tos: 46<<2 | 2}, Pass, -1, 46<<2 | 2},
		{"v6 steer", pkt{src: v6a, dst: v6b, proto: protoUDP, tos: 10<<2 | 1}, Steer, 46, 46<<2 | 1},
		{"v6 pass", pkt{src: v6a, dst: v6b, proto: protoTCP, tos: 0xff}, Pass, 8, 8<<2 | 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.SetRules([]Rule{{ID: 5, Action: tt.action, Mark: Mark(2), SetDSCP: tt.setDSCP}}); err != nil {
				t.Fatal(err)
			}
			in := tt.pkt.frame()
			_, out := run(t, c, in)
			if got := tosOf(out); got != tt.wantTOS {
				t.Errorf("TOS = %#x, want %#x", got, tt.wantTOS)
			}
			if tt.pkt.src.Is4() {
				if sum := ipv4Checksum(out[14:34]); sum != binary.BigEndian.Uint16(out[24:]) {
					t.Errorf("IPv4 checksum = %#x, want %#x", binary.BigEndian.Uint16(out[24:]), sum)
				}
			} else if got, want := binary.BigEndian.Uint32(out[14:])&0xF00FFFFF, binary.BigEndian.Uint32(in[14:])&0xF00FFFFF; got != want {
				t.Errorf("IPv6 version/flow label changed: %#x, want %#x", got, want)
			}
			if diff := cmp.Diff(in[34:], out[34:]); tt.pkt.src.Is4() && diff != "" {
				t.Errorf("payload changed (-in +out):\n%s", diff)
			}
		})
	}
}

func TestManyRules(t *testing.T) {
	c := newTestClassifier(t, false)
	rules := make([]Rule, MaxRules)
	for i := range rules {
		rules[i] = Rule{
			ID: uint32(i), Priority: uint32(i), Action: Steer, Mark: Mark(uint16(i)), SetDSCP: -1,
			Dst:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32),
			DstPorts: PortRange{uint16(i), uint16(i)},
		}
	}
	// Reverse order: SetRules must sort by priority.
	for i, j := 0, len(rules)-1; i < j; i, j = i+1, j-1 {
		rules[i], rules[j] = rules[j], rules[i]
	}
	if err := c.SetRules(rules); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 500, 1000, MaxRules - 1} {
		p := pkt{src: v4a, dst: netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), proto: protoUDP, sport: 1, dport: uint16(i)}
		got, _ := run(t, c, p.frame())
		want := verdict{Ret: retNext, Mark: Mark(uint16(i)), Rule: uint32(i)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("packet for rule %d (-want +got):\n%s", i, diff)
		}
	}
	p := pkt{src: v4a, dst: netip.AddrFrom4([4]byte{10, 9, 0, 1}), proto: protoUDP, sport: 1, dport: 2}
	if got, _ := run(t, c, p.frame()); got.Rule != NoRule {
		t.Errorf("unmatched packet counted for rule %d", got.Rule)
	}
	if err := c.SetRules(append(rules, Rule{ID: MaxRules})); err == nil {
		t.Error("SetRules accepted rule id MaxRules")
	}
}

func TestSetRulesValidation(t *testing.T) {
	c := newTestClassifier(t, false)
	bad := []struct {
		name string
		rule Rule
	}{
		{"id", Rule{ID: MaxRules, SetDSCP: -1}},
		{"families", Rule{Src: netip.MustParsePrefix("10.0.0.0/8"), Dst: netip.MustParsePrefix("::/0"), SetDSCP: -1}},
		{"ports", Rule{DstPorts: PortRange{10, 9}, SetDSCP: -1}},
		{"dscp", Rule{DSCP: u8(64), SetDSCP: -1}},
		{"set-dscp", Rule{SetDSCP: 64}},
		{"action", Rule{Action: 3, SetDSCP: -1}},
		{"mark", Rule{Mark: 0x1234, SetDSCP: -1}},
		{"mark index", Rule{Mark: MarkBase | MaxPaths, SetDSCP: -1}},
	}
	for _, tt := range bad {
		if err := c.SetRules([]Rule{tt.rule}); err == nil {
			t.Errorf("%s: SetRules accepted %+v", tt.name, tt.rule)
		}
	}
	if err := c.SetRules([]Rule{{ID: 1, SetDSCP: -1}, {ID: 1, Priority: 2, SetDSCP: -1}}); err == nil {
		t.Error("SetRules accepted a duplicate id")
	}
	if err := c.SetMark(9, Mark(1)); err == nil {
		t.Error("SetMark accepted a rule that is not in the set")
	}
}

func TestFlowsTestRun(t *testing.T) {
	c := newTestClassifier(t, false)
	const (
		pathA = 1
		pathB = 2
	)
	if err := c.SetRules([]Rule{{ID: 4, Action: Steer, Mark: Mark(pathA), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	f := pkt{src: v4a, dst: v4b, proto: protoUDP, sport: 1000, dport: 2000, payload: 100}.frame()
	mark := func() uint32 {
		t.Helper()
		v, _ := run(t, c, f)
		return v.Mark
	}
	if got := mark(); got != Mark(pathA) {
		t.Fatalf("mark = %#x, want path A", got)
	}
	// Failover of a path that is not declared eligible moves the flow.
	if err := c.SetMark(4, Mark(pathB)); err != nil {
		t.Fatal(err)
	}
	if got := mark(); got != Mark(pathB) {
		t.Fatalf("after SetMark: mark = %#x, want path B", got)
	}
	// A flow on an eligible path stays when the rule moves back ...
	if err := c.SetEligible(pathB, true); err != nil {
		t.Fatal(err)
	}
	if err := c.SetMark(4, Mark(pathA)); err != nil {
		t.Fatal(err)
	}
	if got := mark(); got != Mark(pathB) {
		t.Fatalf("eligible flow moved: mark = %#x, want path B", got)
	}
	// ... even across a rule-set change that keeps its rule ...
	if err := c.SetRules([]Rule{{ID: 4, Action: Steer, Mark: Mark(pathA), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	if got := mark(); got != Mark(pathB) {
		t.Fatalf("eligible flow moved by SetRules: mark = %#x, want path B", got)
	}
	// ... and leaves when the path stops being eligible.
	if err := c.SetEligible(pathB, false); err != nil {
		t.Fatal(err)
	}
	if got := mark(); got != Mark(pathA) {
		t.Fatalf("after SetEligible(false): mark = %#x, want path A", got)
	}
	// No eligible path: the flow passes unmarked.
	if err := c.SetMark(4, 0); err != nil {
		t.Fatal(err)
	}
	if got := mark(); got != 0 {
		t.Fatalf("rule without path: mark = %#x, want 0", got)
	}

	var flows []Flow
	if err := c.Flows(func(f Flow) bool { flows = append(flows, f); return true }); err != nil {
		t.Fatal(err)
	}
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1: %+v", len(flows), flows)
	}
	got := flows[0]
	want := Flow{
		Protocol: protoUDP,
		Src:      netip.AddrPortFrom(v4a, 1000),
		Dst:      netip.AddrPortFrom(v4b, 2000),
		RuleID:   4, Action: Steer, Mark: 0,
		Packets: 6, Bytes: 6 * uint64(len(f)),
	}
	if diff := cmp.Diff(want, got, flowOpts...); diff != "" {
		t.Errorf("flow (-want +got):\n%s", diff)
	}
	if d := time.Since(got.FirstSeen); d < 0 || d > time.Minute || got.LastSeen.Before(got.FirstSeen) {
		t.Errorf("flow seen %v .. %v, not within the last minute", got.FirstSeen, got.LastSeen)
	}

	pc, err := c.PathCounters()
	if err != nil {
		t.Fatal(err)
	}
	wantPC := map[uint16]Counter{
		pathA: {2, 2 * uint64(len(f))},
		pathB: {3, 3 * uint64(len(f))},
	}
	if diff := cmp.Diff(wantPC, pc); diff != "" {
		t.Errorf("path counters (-want +got):\n%s", diff)
	}

	if n, err := c.ExpireFlows(time.Hour); err != nil || n != 0 {
		t.Errorf("ExpireFlows(1h) = %d, %v; want 0", n, err)
	}
	time.Sleep(10 * time.Millisecond)
	if n, err := c.ExpireFlows(time.Millisecond); err != nil || n != 1 {
		t.Errorf("ExpireFlows(1ms) = %d, %v; want 1", n, err)
	}
	n := 0
	if err := c.Flows(func(Flow) bool { n++; return true }); err != nil || n != 0 {
		t.Errorf("after expiry: %d flows, %v", n, err)
	}
}

func TestSetRulesCounters(t *testing.T) {
	c := newTestClassifier(t, false)
	f := pkt{src: v4a, dst: v4b, proto: protoUDP, sport: 1, dport: 2}.frame()
	if err := c.SetRules([]Rule{{ID: 1, Priority: 1, SetDSCP: -1}, {ID: 2, Priority: 2, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := run(t, c, f); v.Rule != 1 {
		t.Fatalf("rule %d matched, want 1", v.Rule)
	}
	// Rule 2 moves ahead of rule 1: the cached flow decision must follow;
	// rule 3 is new and starts at zero, rule 1 keeps its count.
	if err := c.SetRules([]Rule{{ID: 1, Priority: 5, SetDSCP: -1}, {ID: 2, Priority: 2, Action: Drop, SetDSCP: -1}, {ID: 3, Priority: 9, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := run(t, c, f); v.Rule != 2 || v.Ret != retDrop {
		t.Fatalf("after swap: %+v, want rule 2 dropping", v)
	}
	got, err := c.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]Counter{1: {1, uint64(len(f))}, 2: {1, uint64(len(f))}, 3: {}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counters (-want +got):\n%s", diff)
	}
	// A removed and re-added id starts from zero.
	if err := c.SetRules([]Rule{{ID: 2, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRules([]Rule{{ID: 1, SetDSCP: -1}, {ID: 2, Priority: 1, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	got, err = c.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	want = map[uint32]Counter{1: {}, 2: {1, uint64(len(f))}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counters after re-add (-want +got):\n%s", diff)
	}
}
