package classifier

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	gocmp "github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// classify1 runs one frame through the program and returns its return
// code, mark and frame as the program left them.
func classify1(t testing.TB, c *Classifier, frame []byte) (ret, mark uint32, out []byte) {
	t.Helper()
	var ctxOut skbCtx
	out = make([]byte, len(frame)+256)
	ret, err := c.objs.Classify.Run(&ebpf.RunOptions{
		Data:       frame,
		DataOut:    out,
		Context:    skbCtx{},
		ContextOut: &ctxOut,
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return ret, ctxOut.Mark, out[:len(frame)]
}

// pinCPU keeps the calling goroutine on its thread and the thread on one
// CPU, so that test runs use one CPU's cache, until the returned function is
// called.
func pinCPU(t testing.TB) func() {
	t.Helper()
	return pinNthCPU(t, 0)
}

// allowedCPUs returns how many CPUs the process may run on.
func allowedCPUs(t testing.TB) int {
	t.Helper()
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	return set.Count()
}

// pinNthCPU is pinCPU onto the nth CPU the process may run on.
func pinNthCPU(t testing.TB, nth int) func() {
	t.Helper()
	runtime.LockOSThread()
	var old, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	for cpu := range 1024 {
		if old.IsSet(cpu) {
			if nth == 0 {
				one.Set(cpu)
				break
			}
			nth--
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	return func() {
		if err := unix.SchedSetaffinity(0, &old); err != nil {
			t.Error(err) // the thread stays locked, and dies with its goroutine
			return
		}
		runtime.UnlockOSThread()
	}
}

// flowKey names a flow in a test.
type flowKey struct {
	proto    uint8
	src, dst netip.AddrPort
}

func keyOf(f Flow) flowKey { return flowKey{f.Protocol, f.Src, f.Dst} }

func (p pkt) key() flowKey {
	return flowKey{p.proto, netip.AddrPortFrom(p.src, p.sport), netip.AddrPortFrom(p.dst, p.dport)}
}

// flowsOf returns the flows of c by key.
func flowsOf(t testing.TB, c *Classifier) map[flowKey]Flow {
	t.Helper()
	out := map[flowKey]Flow{}
	if err := c.Flows(func(f Flow) bool {
		if _, dup := out[keyOf(f)]; dup {
			t.Errorf("flow %v reported twice", keyOf(f))
		}
		out[keyOf(f)] = f
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// tableCounts returns the counts that the flow table entries hold
// themselves, without those pending in the cache.
func tableCounts(t testing.TB, c *Classifier) map[flowKey]Counter {
	t.Helper()
	out := map[flowKey]Counter{}
	var (
		k4 classifierFlow4Key
		k6 classifierFlow6Key
		v  classifierFlowVal
	)
	it := c.objs.Flows4.Iterate()
	for it.Next(&k4, &v) {
		src := netip.AddrPortFrom(netip.AddrFrom4(unword4(k4.Saddr)), k4.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom4(unword4(k4.Daddr)), k4.Dport)
		out[flowKey{k4.Proto, src, dst}] = Counter{v.Packets, v.Bytes}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	it = c.objs.Flows6.Iterate()
	for it.Next(&k6, &v) {
		src := netip.AddrPortFrom(netip.AddrFrom16(unwords(k6.Src)), k6.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom16(unwords(k6.Dst)), k6.Dport)
		out[flowKey{k6.Proto, src, dst}] = Counter{v.Packets, v.Bytes}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func orphans(t testing.TB, c *Classifier) Counter {
	t.Helper()
	o, err := c.OrphanedFlowCounts()
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// testFlows returns n4 IPv4 and n6 IPv6 UDP flows to port 2000 whose
// frames have different lengths.
func testFlows(n4, n6 int) []pkt {
	var ps []pkt
	for i := range n4 + n6 {
		p := pkt{src: v4a, dst: v4b, proto: protoUDP, sport: uint16(1000 + i), dport: 2000, payload: i % 37}
		if i >= n4 {
			p.src, p.dst = v6a, v6b
		}
		ps = append(ps, p)
	}
	return ps
}

// TestCacheHit checks that a flow's packets are counted in the cache, not in
// its flow table entry, and that Flows adds them up.
func TestCacheHit(t *testing.T) {
	c := newTestClassifier(t, false)
	if err := c.SetRules([]Rule{{ID: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range testFlows(1, 1) {
		f := p.frame()
		// On one CPU, so that every packet but the first of a tick is a
		// cache hit.
		unpin := pinCPU(t)
		for range 100 {
			classify1(t, c, f)
		}
		unpin()
		got := flowsOf(t, c)[p.key()]
		if want := (Counter{100, 100 * uint64(len(f))}); (Counter{got.Packets, got.Bytes}) != want {
			t.Errorf("%v: Flows reports %d packets, %d bytes; want %+v", p.key(), got.Packets, got.Bytes, want)
		}
		// A tick is at least 1 ms; 100 test runs take far less than 100
		// ticks, so most packets are pending in the cache.
		if tc := tableCounts(t, c)[p.key()]; tc.Packets > 50 {
			t.Errorf("%v: the flow table entry counted %d of 100 packets itself: the cache is not used", p.key(), tc.Packets)
		}
	}
}

// TestCacheEvictions sends packets of more flows than the cache has slots,
// so that they take each other's slots all the time, and checks that
// every count is exact: in Flows while packets are pending, and in the
// flow table entries themselves once other flows took every slot.
func TestCacheEvictions(t *testing.T) {
	for _, slots := range []int{2, 4, cacheSlots} {
		t.Run(fmt.Sprint(slots), func(t *testing.T) {
			c := newTestClassifierWith(t, loadOptions{cacheSlots: slots})
			if err := c.SetRules([]Rule{
				{ID: 1, Priority: 1, Protocol: u8(protoUDP), DstPorts: PortRange{2000, 2000}, Action: Steer, Mark: Mark(1), SetDSCP: -1},
				{ID: 2, Priority: 2, Action: Pass, SetDSCP: -1},
			}); err != nil {
				t.Fatal(err)
			}
			flows := testFlows(40, 24)
			frames := make([][]byte, len(flows))
			for i, p := range flows {
				frames[i] = p.frame()
			}
			want := map[flowKey]Counter{}
			var total Counter
			rng := rand.New(rand.NewPCG(1, uint64(slots)))
			send := func(i int) {
				ret, mark, _ := classify1(t, c, frames[i])
				if ret != retNext || mark != Mark(1) {
					t.Fatalf("flow %d: ret %#x mark %#x", i, ret, mark)
				}
				w := want[flows[i].key()]
				w.Packets++
				w.Bytes += uint64(len(frames[i]))
				want[flows[i].key()] = w
				total.Packets++
				total.Bytes += uint64(len(frames[i]))
			}
			check := func(what string) {
				t.Helper()
				got := map[flowKey]Counter{}
				for k, f := range flowsOf(t, c) {
					got[k] = Counter{f.Packets, f.Bytes}
				}
				if diff := gocmp.Diff(want, got); diff != "" {
					t.Fatalf("%s: flow counts (-want +got):\n%s", what, diff)
				}
				rc, err := c.RuleCounters()
				if err != nil {
					t.Fatal(err)
				}
				if rc[1] != total {
					t.Fatalf("%s: rule counter %+v, want %+v", what, rc[1], total)
				}
				if o := orphans(t, c); o != (Counter{}) {
					t.Fatalf("%s: orphaned counts %+v", what, o)
				}
			}
			for round := range 5 {
				// Bursts of one flow (hits) between flows taking each
				// other's slots.
				for range 400 {
					i := rng.IntN(len(flows))
					for range 1 + rng.IntN(4) {
						send(i)
					}
				}
				check(fmt.Sprintf("round %d", round))
			}

			// Flush: other flows take every slot on this CPU, giving
			// back what the test flows had pending there.
			defer pinCPU(t)()
			for i := range flows {
				send(i) // now cached on this CPU, with one packet pending
			}
			var other []pkt
			for i := range 4 * slots {
				p := pkt{src: netip.MustParseAddr("10.7.0.1"), dst: v4b, proto: protoUDP, sport: uint16(i), dport: 2000}
				if i%2 == 1 {
					p.src = netip.MustParseAddr("2001:db8:7::1")
					p.dst = v6b
				}
				other = append(other, p)
			}
			for _, p := range other {
				classify1(t, c, p.frame())
				classify1(t, c, p.frame()) // counted in its slot
			}
			// The test flows are out of this CPU's cache now, but a
			// slot of another CPU may still hold some: compare the
			// entries only for flows in no slot.
			cached := map[flowKey]bool{}
			for _, m := range []*ebpf.Map{c.objs.Cache4, c.objs.Cache6} {
				cpus, err := ebpf.PossibleCPU()
				if err != nil {
					t.Fatal(err)
				}
				if m == c.objs.Cache4 {
					slots, err := readCache[classifierCached4](m, cpus)
					if err != nil {
						t.Fatal(err)
					}
					for _, s := range slots {
						if s.S.Id != 0 && s.S.Packets != 0 {
							k := s.Key
							cached[flowKey{k.Proto, netip.AddrPortFrom(netip.AddrFrom4(unword4(k.Saddr)), k.Sport), netip.AddrPortFrom(netip.AddrFrom4(unword4(k.Daddr)), k.Dport)}] = true
						}
					}
				} else {
					slots, err := readCache[classifierCached6](m, cpus)
					if err != nil {
						t.Fatal(err)
					}
					for _, s := range slots {
						if s.S.Id != 0 && s.S.Packets != 0 {
							k := s.Key
							cached[flowKey{k.Proto, netip.AddrPortFrom(netip.AddrFrom16(unwords(k.Src)), k.Sport), netip.AddrPortFrom(netip.AddrFrom16(unwords(k.Dst)), k.Dport)}] = true
						}
					}
				}
			}
			tc := tableCounts(t, c)
			flushed := 0
			for _, p := range flows {
				if cached[p.key()] {
					continue
				}
				flushed++
				if tc[p.key()] != want[p.key()] {
					t.Errorf("%v: entry holds %+v after its slot went to another flow, want %+v", p.key(), tc[p.key()], want[p.key()])
				}
			}
			if slots < len(flows) && flushed < len(flows)/2 {
				t.Errorf("only %d of %d flows left the cache", flushed, len(flows))
			}
			for _, p := range other {
				w := want[p.key()]
				w.Packets += 2
				w.Bytes += 2 * uint64(len(p.frame()))
				want[p.key()] = w
				total.Packets += 2
				total.Bytes += 2 * uint64(len(p.frame()))
			}
			check("after the flush")
		})
	}
}

// TestCacheRuleSetChange checks that a new rule set replaces the decision of
// a cached flow at its next packet, as without the cache. (A rule set takes
// longer to install than a tick, so the cache's slots are made to outlive
// ticks.)
func TestCacheRuleSetChange(t *testing.T) {
	c := newTestClassifierWith(t, loadOptions{noTick: true})
	defer pinCPU(t)()
	for _, p := range testFlows(1, 1) {
		f := p.frame()
		rules := []Rule{
			{ID: 1, Priority: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1},
			{ID: 2, Priority: 2, Action: Steer, Mark: Mark(2), SetDSCP: -1},
		}
		if err := c.SetRules(rules); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if v, _ := run(t, c, f); v != (verdict{retNext, Mark(1), 1}) {
				t.Fatalf("%v: %+v, want rule 1 steering", p.key(), v)
			}
		}
		// Rule 1 now drops.
		rules[0].Action = Drop
		if err := c.SetRules(rules); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if v, _ := run(t, c, f); v != (verdict{retDrop, 0, 1}) {
				t.Fatalf("%v after rule 1 became DROP: %+v", p.key(), v)
			}
		}
		// Rule 1 goes behind rule 2; rule 2 rewrites the DSCP.
		rules[0].Priority = 3
		rules[1].SetDSCP = 46
		if err := c.SetRules(rules); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			v, out := run(t, c, f)
			if v != (verdict{retNext, Mark(2), 2}) || tosOf(out)>>2 != 46 {
				t.Fatalf("%v after rule 2 moved first: %+v, DSCP %d", p.key(), v, tosOf(out)>>2)
			}
			if p.src.Is4() {
				if sum := ipv4Checksum(out[14:34]); sum != uint16(out[24])<<8|uint16(out[25]) {
					t.Fatalf("IPv4 checksum wrong after the DSCP rewrite")
				}
			}
		}
		// No rule matches.
		if err := c.SetRules([]Rule{{ID: 3, Protocol: u8(protoTCP), Action: Drop, SetDSCP: -1}}); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if v, out := run(t, c, f); v != (verdict{retNext, 0, NoRule}) || tosOf(out) != 0 {
				t.Fatalf("%v without a matching rule: %+v", p.key(), v)
			}
		}
		fl := flowsOf(t, c)[p.key()]
		if fl.RuleID != NoRule || fl.Packets != 12 || fl.Bytes != 12*uint64(len(f)) {
			t.Errorf("flow: %+v", fl)
		}
		for i := range 6 {
			r := Rule{ID: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1}
			want := verdict{retNext, Mark(1), 1}
			if i%2 == 1 {
				r.Action, want = Drop, verdict{retDrop, 0, 1}
			}
			if err := c.SetRules([]Rule{r}); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if v, _ := run(t, c, f); v != want {
					t.Fatalf("%v, change %d: %+v, want %+v", p.key(), i, v, want)
				}
			}
		}
	}
}

// TestCacheEligibility checks path pinning of cached flows: a flow stays on
// an eligible path when its rule moves, and follows the rule once the path
// is no longer eligible.
func TestCacheEligibility(t *testing.T) {
	for _, o := range []loadOptions{{}, {noTick: true}} {
		t.Run(fmt.Sprintf("noTick=%v", o.noTick), func(t *testing.T) { testCacheEligibility(t, o) })
	}
}

func testCacheEligibility(t *testing.T, o loadOptions) {
	c := newTestClassifierWith(t, o)
	defer pinCPU(t)()
	if err := c.SetRules([]Rule{{ID: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	ps := testFlows(1, 1)
	mark := func(p pkt) uint32 {
		t.Helper()
		_, m, _ := classify1(t, c, p.frame())
		return m
	}
	expect := func(what string, want uint32) {
		t.Helper()
		for _, p := range ps {
			for range 3 { // the first may be a slow path, the others hits
				if got := mark(p); got != want {
					t.Fatalf("%s: %v has mark %#x, want %#x", what, p.key(), got, want)
				}
			}
		}
	}
	expect("start", Mark(1))
	if err := c.SetEligible(1, true); err != nil {
		t.Fatal(err)
	}
	expect("path 1 eligible", Mark(1))
	if err := c.SetMark(1, Mark(2)); err != nil {
		t.Fatal(err)
	}
	expect("rule moved while path 1 is eligible", Mark(1))
	if err := c.SetEligible(1, false); err != nil {
		t.Fatal(err)
	}
	expect("path 1 no longer eligible", Mark(2))
	if err := c.SetEligible(1, true); err != nil {
		t.Fatal(err)
	}
	expect("path 1 eligible again", Mark(2))
	if err := c.SetMark(1, 0); err != nil {
		t.Fatal(err)
	}
	expect("rule without path", 0)
	if err := c.SetMark(1, Mark(1)); err != nil {
		t.Fatal(err)
	}
	expect("rule back on path 1", Mark(1))
	for _, p := range ps {
		if f := flowsOf(t, c)[p.key()]; f.Mark != Mark(1) || f.Packets != 7*3 {
			t.Errorf("%v: %+v", p.key(), f)
		}
	}
}

// TestCacheExpiry checks that expiring a cached flow leaves nothing in the
// cache that counts for it: its next packet makes a new flow.
func TestCacheExpiry(t *testing.T) {
	c := newTestClassifier(t, false)
	defer pinCPU(t)()
	if err := c.SetRules([]Rule{{ID: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	ps := testFlows(1, 1)
	var pending Counter
	for _, p := range ps {
		f := p.frame()
		for range 5 {
			classify1(t, c, f)
		}
		if fl := flowsOf(t, c)[p.key()]; fl.Packets != 5 {
			t.Fatalf("%v: %d packets before expiry, want 5", p.key(), fl.Packets)
		}
		tc := tableCounts(t, c)[p.key()]
		pending.Packets += 5 - tc.Packets
		pending.Bytes += 5*uint64(len(f)) - tc.Bytes
	}
	if pending.Packets == 0 {
		t.Fatal("nothing pending in the cache")
	}
	time.Sleep(20 * time.Millisecond)
	if n, err := c.ExpireFlows(time.Millisecond); err != nil || n != len(ps) {
		t.Fatalf("ExpireFlows = %d, %v; want %d", n, err, len(ps))
	}
	if got := flowsOf(t, c); len(got) != 0 {
		t.Fatalf("flows after expiry: %v", got)
	}
	for _, p := range ps {
		f := p.frame()
		for range 3 {
			if _, m, _ := classify1(t, c, f); m != Mark(1) {
				t.Fatalf("%v: mark %#x after expiry", p.key(), m)
			}
		}
		if fl := flowsOf(t, c)[p.key()]; fl.Packets != 3 || fl.Bytes != 3*uint64(len(f)) {
			t.Errorf("%v after expiry: %d packets %d bytes, want 3, %d: counts of the expired flow came back", p.key(), fl.Packets, fl.Bytes, 3*len(f))
		}
	}
	// The expired flows' pending counts went with them.
	if o := orphans(t, c); o != pending {
		t.Errorf("orphaned counts %+v, want the expired flows' pending %+v", o, pending)
	}
}

// TestCacheExpiryOtherCPU checks that the counts a CPU's cache holds for an
// expired flow are not added to the new flow of the same key that a packet
// on another CPU makes.
func TestCacheExpiryOtherCPU(t *testing.T) {
	c := newTestClassifier(t, false)
	if allowedCPUs(t) < 2 {
		t.Skip("needs two CPUs")
	}
	if err := c.SetRules([]Rule{{ID: 1, Action: Pass, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	p := testFlows(1, 0)[0]
	f := p.frame()
	sendOn := func(cpu, n int) {
		t.Helper()
		defer pinNthCPU(t, cpu)()
		for range n {
			classify1(t, c, f)
		}
	}
	packets := func() uint64 {
		t.Helper()
		return flowsOf(t, c)[p.key()].Packets
	}
	sendOn(0, 5) // one in the new entry, four pending in CPU 0's slot
	if got := packets(); got != 5 {
		t.Fatalf("%d packets, want 5", got)
	}
	time.Sleep(20 * time.Millisecond)
	if n, err := c.ExpireFlows(time.Millisecond); err != nil || n != 1 {
		t.Fatalf("ExpireFlows = %d, %v; want 1", n, err)
	}
	sendOn(1, 1) // a new entry; CPU 0's slot still holds the old one's four
	if got := packets(); got != 1 {
		t.Fatalf("new flow has %d packets, want 1", got)
	}
	sendOn(0, 2) // CPU 0's slot gives the four up, and counts the new flow's
	if got := packets(); got != 3 {
		t.Fatalf("new flow has %d packets, want 3", got)
	}
	if o := orphans(t, c); o != (Counter{4, 4 * uint64(len(f))}) {
		t.Errorf("orphaned counts %+v, want 4 packets", o)
	}
}

// TestCacheHold checks that held slots (see walkFlows) keep their flows and
// counts: packets of flows not in their slot are counted in their entries.
func TestCacheHold(t *testing.T) {
	c := newTestClassifierWith(t, loadOptions{cacheSlots: 2})
	defer pinCPU(t)()
	if err := c.SetRules([]Rule{{ID: 1, Action: Pass, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	flows := testFlows(4, 4)
	send := func(n int) {
		t.Helper()
		for range n {
			for _, p := range flows {
				classify1(t, c, p.frame())
			}
		}
	}
	if err := c.hold(true); err != nil {
		t.Fatal(err)
	}
	send(10)
	tc := tableCounts(t, c)
	for _, p := range flows {
		if want := (Counter{10, 10 * uint64(len(p.frame()))}); tc[p.key()] != want {
			t.Errorf("held: %v: entry holds %+v, want %+v", p.key(), tc[p.key()], want)
		}
	}
	if err := c.hold(false); err != nil {
		t.Fatal(err)
	}
	send(5)
	tc = tableCounts(t, c)
	inEntries := 0
	for _, p := range flows {
		if f := flowsOf(t, c)[p.key()]; f.Packets != 15 {
			t.Errorf("%v: %d packets, want 15", p.key(), f.Packets)
		}
		if tc[p.key()].Packets == 15 {
			inEntries++
		}
	}
	if inEntries == len(flows) {
		t.Errorf("released, the cache still counts nothing")
	}
}

// TestCacheSameAsNoCache runs one random sequence of packets and control
// changes (rule sets, marks, eligibility) through a classifier with a small
// cache and one without, and checks that every packet gets the same
// verdict, mark and rewrite, and that the counters and flows agree.
func TestCacheSameAsNoCache(t *testing.T) {
	cached := newTestClassifierWith(t, loadOptions{cacheSlots: 4})
	plain := newTestClassifierWith(t, loadOptions{noCache: true})
	both := func(f func(c *Classifier) error) {
		t.Helper()
		e1, e2 := f(cached), f(plain)
		if (e1 == nil) != (e2 == nil) {
			t.Fatalf("errors differ: %v / %v", e1, e2)
		}
	}
	udp, tcp := u8(protoUDP), u8(protoTCP)
	rules := []Rule{
		{ID: 1, Priority: 1, Protocol: udp, DstPorts: PortRange{53, 53}, Action: Drop, SetDSCP: -1},
		{ID: 2, Priority: 2, Protocol: udp, DstPorts: PortRange{100, 199}, Action: Pass, SetDSCP: 46},
		{ID: 3, Priority: 3, DstPorts: PortRange{200, 299}, Action: Steer, Mark: Mark(1), SetDSCP: -1},
		{ID: 4, Priority: 4, Dst: netip.MustParsePrefix("2001:db8:2::/48"), Action: Steer, Mark: Mark(2), SetDSCP: 10},
		{ID: 5, Priority: 5, Protocol: tcp, Action: Steer, Mark: Mark(3), SetDSCP: -1},
	}
	var flows []pkt
	for i := range 48 {
		p := pkt{src: v4a, dst: v4b, proto: protoUDP, sport: uint16(3000 + i), tos: uint8(i%4) << 2, payload: i}
		if i%3 == 0 {
			p.src, p.dst = v6a, v6b
		}
		if i%7 == 0 {
			p.proto = protoTCP
		}
		p.dport = []uint16{53, 150, 250, 7000}[i%4]
		flows = append(flows, p)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	both(func(c *Classifier) error { return c.SetRules(rules) })
	defer pinCPU(t)()
	compare := func(step int) {
		t.Helper()
		for _, get := range []func(*Classifier) (any, error){
			func(c *Classifier) (any, error) { return c.RuleCounters() },
			func(c *Classifier) (any, error) { return c.PathCounters() },
		} {
			a, err1 := get(cached)
			b, err2 := get(plain)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if diff := gocmp.Diff(b, a); diff != "" {
				t.Fatalf("step %d: counters differ (-without +with cache):\n%s", step, diff)
			}
		}
		list := func(c *Classifier) []Flow {
			var fs []Flow
			for _, f := range flowsOf(t, c) {
				f.FirstSeen, f.LastSeen = time.Time{}, time.Time{}
				fs = append(fs, f)
			}
			slices.SortFunc(fs, func(a, b Flow) int {
				return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), a.Src.Compare(b.Src), a.Dst.Compare(b.Dst))
			})
			return fs
		}
		if diff := gocmp.Diff(list(plain), list(cached), flowOpts...); diff != "" {
			t.Fatalf("step %d: flows differ (-without +with cache):\n%s", step, diff)
		}
	}
	for step := range 3000 {
		switch r := rng.IntN(100); {
		case r < 2:
			// A rule set change: shuffle priorities, flip rule 1
			// between DROP and PASS, move rule marks back.
			for i := range rules {
				rules[i].Priority = uint32(rng.IntN(10))
			}
			rules[0].Action = []Action{Drop, Pass}[rng.IntN(2)]
			both(func(c *Classifier) error { return c.SetRules(rules) })
		case r < 6:
			id, m := uint32(3+rng.IntN(3)), uint32(0)
			if i := rng.IntN(5); i > 0 {
				m = Mark(uint16(i))
			}
			both(func(c *Classifier) error { return c.SetMark(id, m) })
		case r < 10:
			i, ok := uint16(1+rng.IntN(4)), rng.IntN(2) == 0
			both(func(c *Classifier) error { return c.SetEligible(i, ok) })
		default:
			p := flows[rng.IntN(len(flows))]
			f := p.frame()
			for range 1 + rng.IntN(3) {
				r1, m1, o1 := classify1(t, cached, f)
				r2, m2, o2 := classify1(t, plain, f)
				if r1 != r2 || m1 != m2 || !slices.Equal(o1, o2) {
					t.Fatalf("step %d: %v: with cache ret %#x mark %#x, without ret %#x mark %#x (frames equal: %v)",
						step, p.key(), r1, m1, r2, m2, slices.Equal(o1, o2))
				}
			}
		}
		if step%250 == 0 {
			compare(step)
		}
	}
	compare(3000)
}

// TestCacheConcurrentReads classifies packets of flows that take each
// other's slots on every CPU while Flows reads them, and checks that every
// read is exact: a flow's count is at least the packets of its that were
// classified before the read began, and at most those whose classification
// had begun when it ended.
func TestCacheConcurrentReads(t *testing.T) {
	c := newTestClassifierWith(t, loadOptions{cacheSlots: 2})
	if err := c.SetRules([]Rule{{ID: 1, Action: Steer, Mark: Mark(1), SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}
	flows := testFlows(12, 6)
	frames := make([][]byte, len(flows))
	started := make([]atomic.Uint64, len(flows))
	done := make([]atomic.Uint64, len(flows))
	for i, p := range flows {
		frames[i] = p.frame()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// One worker per CPU, each held on its own: a slot is its CPU's, and
	// its plain adds assume one packet at a time per CPU, as tc runs them
	// (BPF_PROG_TEST_RUN only keeps a run from migrating, and a kernel
	// with full preemption could interleave two runs on one CPU).
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	for w := range 1024 {
		if !cpus.IsSet(w) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var set unix.CPUSet
			set.Set(w)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				t.Error(err)
				return
			}
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				// One run at a time: a run of several repetitions
				// that a signal interrupts is run again whole.
				i := rng.IntN(len(flows))
				started[i].Add(1)
				if _, err := c.objs.Classify.Run(&ebpf.RunOptions{Data: frames[i]}); err != nil {
					t.Error(err)
					return
				}
				done[i].Add(1)
			}
		}()
	}
	deadline := time.Now().Add(2 * time.Second)
	reads := 0
	for time.Now().Before(deadline) && !t.Failed() {
		lo := make([]uint64, len(flows))
		for i := range flows {
			lo[i] = done[i].Load()
		}
		got := flowsOf(t, c)
		for i, p := range flows {
			hi := started[i].Load()
			// (Packets and bytes are two counters: a read may see a
			// packet in one and not yet in the other.)
			f, n := got[p.key()], uint64(len(frames[i]))
			if f.Packets < lo[i] || f.Packets > hi || f.Bytes < lo[i]*n || f.Bytes > hi*n {
				t.Errorf("read %d: %v: %d packets, %d bytes; want %d..%d packets of %d bytes", reads, p.key(), f.Packets, f.Bytes, lo[i], hi, n)
			}
		}
		reads++
	}
	close(stop)
	wg.Wait()
	got := flowsOf(t, c)
	var total uint64
	for i, p := range flows {
		total += done[i].Load()
		if f := got[p.key()]; f.Packets != done[i].Load() || f.Bytes != f.Packets*uint64(len(frames[i])) {
			t.Errorf("at rest: %v: %d packets, %d bytes; want %d packets of %d bytes", p.key(), f.Packets, f.Bytes, done[i].Load(), len(frames[i]))
		}
	}
	if o := orphans(t, c); o != (Counter{}) {
		t.Errorf("orphaned counts %+v", o)
	}
	t.Logf("%d reads while %d packets were classified", reads, total)
}
