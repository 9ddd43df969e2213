package classifier

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// benchFrame and benchFrame6 are 128-byte UDP frames over IPv4 and IPv6.
var (
	benchFrame  = pkt{src: v4a, dst: v4b, proto: protoUDP, sport: 4000, dport: 443, payload: 86}.frame()
	benchFrame6 = pkt{src: v6a, dst: v6b, proto: protoUDP, sport: 4000, dport: 443, payload: 66}.frame()
)

// benchProgram reports the kernel's mean time per run of prog over frame
// as ns/op.
func benchProgram(b *testing.B, prog *ebpf.Program, frame []byte, want uint32) {
	b.Helper()
	ret, d, err := prog.Benchmark(frame, b.N, nil)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("program returned %#x, want %#x", ret, want)
	}
	b.ReportMetric(float64(d.Nanoseconds()), "ns/op")
}

// BenchmarkEmpty is the baseline: a tc program that only returns.
func BenchmarkEmpty(b *testing.B) {
	requireRoot(b)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, -1),
			asm.Return(),
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	benchProgram(b, prog, benchFrame, retNext)
}

// BenchmarkFlowHit measures a packet of a known flow on a steered rule,
// over IPv4 and IPv6: a hit in the flow cache, and (nocache) a hit in the
// flow table of a classifier without the cache.
func BenchmarkFlowHit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		frame []byte
		opts  loadOptions
	}{
		{"v4", benchFrame, loadOptions{}},
		{"v6", benchFrame6, loadOptions{}},
		{"v4-nocache", benchFrame, loadOptions{noCache: true}},
		{"v6-nocache", benchFrame6, loadOptions{noCache: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newTestClassifierWith(b, bc.opts)
			rules := benchRules(64)
			rules = append(rules, Rule{ID: 1000, Priority: 1000, Action: Steer, Mark: Mark(3), SetDSCP: -1})
			if err := c.SetRules(rules); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.objs.Classify.Test(bc.frame); err != nil {
				b.Fatal(err)
			}
			benchProgram(b, c.objs.Classify, bc.frame, retNext)
		})
	}
}

// BenchmarkMiss measures a packet that walks the whole table without
// matching, with the flow cache off.
func BenchmarkMiss(b *testing.B) {
	for _, n := range []int{16, 64, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := newTestClassifier(b, true)
			if err := c.SetRules(benchRules(n)); err != nil {
				b.Fatal(err)
			}
			benchProgram(b, c.objs.Classify, benchFrame, retNext)
		})
	}
}

// benchRules returns n rules on TCP to 192.0.2.0/24 port ranges: every
// field is compared and none matches benchFrame.
func benchRules(n int) []Rule {
	rules := make([]Rule, n)
	for i := range rules {
		rules[i] = Rule{
			ID: uint32(i), Priority: uint32(i), Action: Steer, Mark: Mark(1), SetDSCP: -1,
			Src:      netip.MustParsePrefix("10.0.0.0/8"),
			Dst:      netip.MustParsePrefix("192.0.2.0/24"),
			Protocol: u8(protoTCP),
			DstPorts: PortRange{uint16(i), uint16(i) + 1},
		}
	}
	return rules
}
