// Package classifier is the eBPF traffic classifier of the Patronus
// dataplane: a tcx ingress program on the LAN-facing interfaces that matches
// every packet against the priority-ordered policy table (/policies), then
// steers it onto a path by setting skb->mark, drops it, or leaves it to
// ordinary routing, optionally rewriting its DSCP. It keeps per-policy and
// per-path counters and LRU flow tables (/flows), one per address family,
// whose entries pin a flow to its path while that path stays eligible.
//
// Nothing is pinned in bpffs: every program, map and tcx link belongs to the
// process, so a crashed run leaves nothing behind in the kernel and there is
// no leftover state to look for at start-up.
//
// This is the only package of Patronus that imports cilium/ebpf.
package classifier

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type rule4 -type rule6 -type ruleset -type flow4_key -type flow6_key -type flow_val -type counter -type clock_sample classifier bpf/classifier.c -- -I/usr/include/x86_64-linux-gnu

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Limits of the kernel tables. They must agree with bpf/classifier.c.
const (
	// MaxRules bounds both the number of rules and every Rule.ID.
	MaxRules = 1024
	// MaxPaths bounds every path index.
	MaxPaths = 1024
	// MaxFlows is the size of each family's LRU flow table (IPv4 and
	// IPv6 flows are kept apart); the least recently used flow of the
	// family is evicted when its table is full.
	MaxFlows = 65536
)

// Packet marks of steered traffic are MarkBase | pathIndex. The upper half
// tags the mark as Patronus's so that routing rules (ip rule fwmark
// MARK/0xFFFF0000) and other users of skb->mark can tell it apart.
const (
	MarkBase uint32 = 0x50A70000
	MarkMask uint32 = 0x0000FFFF
)

// NoRule is the RuleID of a flow that matched no rule; such flows are
// cached too so that unmatched traffic does not walk the table per packet.
const NoRule uint32 = 0xFFFFFFFF

// Mark returns the packet mark that steers onto path index i.
func Mark(i uint16) uint32 { return MarkBase | uint32(i) }

// PathIndex returns the path index carried by mark. ok is false when mark
// is not a Patronus mark (including 0, "no path") or its index is not below
// MaxPaths.
func PathIndex(mark uint32) (i uint16, ok bool) {
	if mark&^MarkMask != MarkBase || mark&MarkMask >= MaxPaths {
		return 0, false
	}
	return uint16(mark & MarkMask), true
}

// Action is what happens to a packet that matches a rule.
type Action uint8

// Actions. Their values are shared with bpf/classifier.c.
const (
	// Pass leaves the packet to ordinary routing.
	Pass Action = iota
	// Steer sets the packet's mark to the rule's current path mark, or
	// behaves as Pass while that mark is 0.
	Steer
	// Drop discards the packet.
	Drop
)

func (a Action) String() string {
	switch a {
	case Pass:
		return "PASS"
	case Steer:
		return "STEER"
	case Drop:
		return "DROP"
	}
	return fmt.Sprintf("Action(%d)", uint8(a))
}

// PortRange is an inclusive range of ports. The zero value matches any
// port, including the port 0 that packets other than TCP and UDP carry.
type PortRange struct{ Lo, Hi uint16 }

func (p PortRange) any() bool { return p == PortRange{} }

// Rule is one policy. Fields left at their zero value (invalid prefix, nil
// pointer, zero PortRange) match anything. A rule with a source or
// destination prefix matches only packets of that prefix's address family;
// when both prefixes are set they must be of the same family.
type Rule struct {
	// ID is a stable identifier below MaxRules that the caller assigns; it
	// keys the rule's counters and failover mark across SetRules calls.
	ID uint32
	// Priority orders the rules: lower is evaluated first; equal
	// priorities are ordered by ID.
	Priority uint32
	// Disabled rules never match but keep their counters.
	Disabled bool
	Src, Dst netip.Prefix
	// Protocol is the IP protocol (IPv6: the fixed header's next header);
	// nil matches any.
	Protocol *uint8
	SrcPorts PortRange
	DstPorts PortRange
	// DSCP matches the packet's DSCP (0..63); nil matches any.
	DSCP   *uint8
	Action Action
	// Mark is the rule's initial path mark for Steer (0 or MarkBase|index);
	// SetMark changes it later without rewriting the rules.
	Mark uint32
	// SetDSCP, when 0..63, rewrites the DSCP of Pass and Steer packets,
	// keeping their ECN bits; -1 leaves it. Note that the zero value
	// rewrites to DSCP 0.
	SetDSCP int
}

// Counter counts packets and their bytes. Bytes are whole frames as seen at
// tc ingress, Ethernet header included.
type Counter struct {
	Packets, Bytes uint64
}

// Flow is one entry of the flow table.
type Flow struct {
	Protocol uint8
	// Src and Dst carry port 0 for protocols other than TCP and UDP and for
	// IPv4 fragments after the first.
	Src, Dst netip.AddrPort
	// RuleID is the rule that decided the flow, or NoRule.
	RuleID uint32
	Action Action
	// Mark is the flow's path mark, 0 when it is not steered.
	Mark           uint32
	Packets, Bytes uint64
	// FirstSeen and LastSeen have the resolution of a kernel tick.
	FirstSeen, LastSeen time.Time
}

// Classifier owns the loaded program and maps and the tcx links it made.
// Its methods are safe for concurrent use.
type Classifier struct {
	objs      classifierObjects
	innerSpec *ebpf.MapSpec

	mu sync.Mutex // guards the fields below and serializes rule-set changes
	// links holds the tcx link attached to each ifindex.
	links map[int]link.Link
	// ids is the set of rule IDs of the current rule set.
	ids map[uint32]bool
	// generation numbers rule sets; flows decided under another one are
	// re-evaluated.
	generation uint32
	closed     bool
}

// New loads the program and its maps into the kernel without attaching
// them anywhere. Until SetRules is called every packet passes untouched.
func New() (*Classifier, error) {
	return newClassifier(false)
}

// newClassifier loads the objects; noFlowCache makes every packet walk the
// rule table, for benchmarks of the miss path.
func newClassifier(noFlowCache bool) (*Classifier, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("classifier: remove memlock limit: %w", err)
	}
	spec, err := loadClassifier()
	if err != nil {
		return nil, fmt.Errorf("classifier: load spec: %w", err)
	}
	if noFlowCache {
		if err := spec.Variables["no_flow_cache"].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("classifier: %w", err)
		}
	}
	outer, ok := spec.Maps["rulesets"]
	if !ok || outer.InnerMap == nil {
		return nil, errors.New("classifier: spec has no rulesets map-in-map")
	}
	c := &Classifier{
		innerSpec: outer.InnerMap.Copy(),
		links:     make(map[int]link.Link),
		ids:       make(map[uint32]bool),
	}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("classifier: load objects: %+v", ve)
		}
		return nil, fmt.Errorf("classifier: load objects: %w", err)
	}
	return c, nil
}

// Attach attaches the classifier to the tcx ingress of the interface with
// index ifindex, resolved in the network namespace of the calling thread.
// Attaching an ifindex that is already attached does nothing.
func (c *Classifier) Attach(ifindex int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if _, ok := c.links[ifindex]; ok {
		return nil
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   c.objs.Classify,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return fmt.Errorf("classifier: attach to ifindex %d: %w", ifindex, err)
	}
	c.links[ifindex] = l
	return nil
}

// Detach removes the classifier from the interface with index ifindex.
// Detaching an interface that is not attached does nothing.
func (c *Classifier) Detach(ifindex int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l, ok := c.links[ifindex]
	if !ok {
		return nil
	}
	delete(c.links, ifindex)
	if err := l.Close(); err != nil {
		return fmt.Errorf("classifier: detach from ifindex %d: %w", ifindex, err)
	}
	return nil
}

// Close detaches every link Attach made and frees the program and maps.
// Nothing of the classifier is left in the kernel afterwards.
func (c *Classifier) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for ifindex, l := range c.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach from ifindex %d: %w", ifindex, err))
		}
		delete(c.links, ifindex)
	}
	if err := c.objs.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("classifier: close: %w", err)
	}
	return nil
}

var errClosed = errors.New("classifier: closed")

// SetRules replaces the rule set. The rules are validated as a whole and
// ordered by priority; on error nothing changes. Packets see either the old
// or the new set, never a mix, and flows decided under the old set are
// re-evaluated at their next packet (keeping their path when the same rule
// still matches and the path is still theirs to keep). Every rule's path
// mark is reset to its Rule.Mark, and rules whose ID is new to the set start
// with zero counters; counters of IDs that stay are kept.
func (c *Classifier) SetRules(rules []Rule) error {
	sorted := slices.Clone(rules)
	slices.SortStableFunc(sorted, func(a, b Rule) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.ID, b.ID))
	})
	ids := make(map[uint32]bool, len(sorted))
	var rs classifierRuleset
	for _, r := range sorted {
		if err := r.validate(); err != nil {
			return fmt.Errorf("classifier: rule %d: %w", r.ID, err)
		}
		if ids[r.ID] {
			return fmt.Errorf("classifier: rule %d: duplicate id", r.ID)
		}
		ids[r.ID] = true
		if r.Disabled {
			continue
		}
		r4, r6 := r.encode()
		if r4 != nil {
			rs.Rules4[rs.Count4] = *r4
			rs.Count4++
		}
		if r6 != nil {
			rs.Rules6[rs.Count6] = *r6
			rs.Count6++
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	zero := make([]classifierCounter, ebpf.MustPossibleCPU())
	for _, r := range sorted {
		if !c.ids[r.ID] {
			if err := c.objs.RuleStats.Put(r.ID, zero); err != nil {
				return fmt.Errorf("classifier: reset counters of rule %d: %w", r.ID, err)
			}
		}
		if err := c.objs.Steer.Put(r.ID, r.Mark); err != nil {
			return fmt.Errorf("classifier: set mark of rule %d: %w", r.ID, err)
		}
	}
	gen := c.generation + 1
	if gen == 0 {
		gen = 1
	}
	rs.Generation = gen
	inner, err := ebpf.NewMap(c.innerSpec)
	if err != nil {
		return fmt.Errorf("classifier: create rule set: %w", err)
	}
	defer inner.Close() // the outer map holds its own reference
	if err := inner.Put(uint32(0), &rs); err != nil {
		return fmt.Errorf("classifier: write rule set: %w", err)
	}
	if err := c.objs.Rulesets.Put(uint32(0), inner); err != nil {
		return fmt.Errorf("classifier: install rule set: %w", err)
	}
	// Flows check their cached decision against this copy of the
	// generation; until it is written they keep the old decisions.
	if err := c.objs.Generation.Set(gen); err != nil {
		return fmt.Errorf("classifier: publish rule set generation: %w", err)
	}
	c.generation = gen
	c.ids = ids
	return nil
}

func (r *Rule) validate() error {
	if r.ID >= MaxRules {
		return fmt.Errorf("id not below %d", MaxRules)
	}
	for _, p := range []netip.Prefix{r.Src, r.Dst} {
		if p != (netip.Prefix{}) && !p.IsValid() {
			return fmt.Errorf("invalid prefix %v", p)
		}
	}
	if r.Src.IsValid() && r.Dst.IsValid() && r.Src.Addr().Is4() != r.Dst.Addr().Is4() {
		return fmt.Errorf("source %v and destination %v are of different families", r.Src, r.Dst)
	}
	for _, pr := range []PortRange{r.SrcPorts, r.DstPorts} {
		if pr.Lo > pr.Hi {
			return fmt.Errorf("port range %d..%d is empty", pr.Lo, pr.Hi)
		}
	}
	if r.DSCP != nil && *r.DSCP > 63 {
		return fmt.Errorf("dscp %d out of range 0..63", *r.DSCP)
	}
	if r.SetDSCP < -1 || r.SetDSCP > 63 {
		return fmt.Errorf("set-dscp %d out of range -1..63", r.SetDSCP)
	}
	if r.Action > Drop {
		return fmt.Errorf("unknown action %v", r.Action)
	}
	if err := checkMark(r.Mark); err != nil {
		return err
	}
	return nil
}

func checkMark(mark uint32) error {
	if _, ok := PathIndex(mark); mark != 0 && !ok {
		return fmt.Errorf("mark %#x is neither 0 nor MarkBase|index below %d", mark, MaxPaths)
	}
	return nil
}

const noDSCP = 0xFF

// ruleMatch is what the kernel compares besides addresses, in the form
// bpf/classifier.c tests it: protocol and DSCP as one masked 16-bit word,
// ports as (port - lo) <= span.
type ruleMatch struct {
	pd, pdMask                             uint16
	sportLo, sportSpan, dportLo, dportSpan uint16
}

func (r *Rule) match() ruleMatch {
	m := ruleMatch{sportSpan: 0xFFFF, dportSpan: 0xFFFF}
	if r.Protocol != nil {
		m.pd |= uint16(*r.Protocol)
		m.pdMask |= 0x00FF
	}
	if r.DSCP != nil {
		m.pd |= uint16(*r.DSCP) << 8
		m.pdMask |= 0xFF00
	}
	if !r.SrcPorts.any() {
		m.sportLo, m.sportSpan = r.SrcPorts.Lo, r.SrcPorts.Hi-r.SrcPorts.Lo
	}
	if !r.DstPorts.any() {
		m.dportLo, m.dportSpan = r.DstPorts.Lo, r.DstPorts.Hi-r.DstPorts.Lo
	}
	return m
}

// encode returns the rule as the kernel's IPv4 and IPv6 tables hold it; a
// rule with prefixes is nil in the other family's table.
func (r *Rule) encode() (*classifierRule4, *classifierRule6) {
	fam4, fam6 := true, true
	for _, p := range []netip.Prefix{r.Src, r.Dst} {
		if p.IsValid() {
			fam4, fam6 = p.Addr().Is4(), !p.Addr().Is4()
		}
	}
	m := r.match()
	setDSCP := uint8(noDSCP)
	if r.SetDSCP >= 0 {
		setDSCP = uint8(r.SetDSCP)
	}
	var (
		r4 *classifierRule4
		r6 *classifierRule6
	)
	if fam4 {
		r4 = &classifierRule4{
			Pd: m.pd, PdMask: m.pdMask,
			SportLo: m.sportLo, SportSpan: m.sportSpan,
			DportLo: m.dportLo, DportSpan: m.dportSpan,
			Id: r.ID, Action: uint8(r.Action), SetDscp: setDSCP,
		}
		r4.Src, r4.SrcMask = encodePrefix4(r.Src)
		r4.Dst, r4.DstMask = encodePrefix4(r.Dst)
	}
	if fam6 {
		r6 = &classifierRule6{
			Pd: m.pd, PdMask: m.pdMask,
			SportLo: m.sportLo, SportSpan: m.sportSpan,
			DportLo: m.dportLo, DportSpan: m.dportSpan,
			Id: r.ID, Action: uint8(r.Action), SetDscp: setDSCP,
		}
		r6.Src, r6.SrcMask = encodePrefix6(r.Src)
		r6.Dst, r6.DstMask = encodePrefix6(r.Dst)
	}
	return r4, r6
}

// prefixMask returns the first bits bits set of n bytes.
func prefixMask(bits, n int) []byte {
	m := make([]byte, n)
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// encodePrefix4 returns an IPv4 prefix's masked address and mask as the
// kernel compares them: 4 bytes in network order read as a native-endian
// word. An invalid prefix has mask 0: any.
func encodePrefix4(p netip.Prefix) (addr, mask uint32) {
	if !p.IsValid() {
		return 0, 0
	}
	a := p.Masked().Addr().As4()
	return binary.LittleEndian.Uint32(a[:]), binary.LittleEndian.Uint32(prefixMask(p.Bits(), 4))
}

// encodePrefix6 returns an IPv6 prefix's masked address and mask as the
// kernel compares them: 16 bytes in network order read as two
// native-endian words. An invalid prefix has mask 0: any.
func encodePrefix6(p netip.Prefix) (addr, mask [2]uint64) {
	if !p.IsValid() {
		return
	}
	return words(p.Masked().Addr().As16()), words([16]byte(prefixMask(p.Bits(), 16)))
}

func words(b [16]byte) [2]uint64 {
	return [2]uint64{binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])}
}

func unwords(w [2]uint64) [16]byte {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], w[0])
	binary.LittleEndian.PutUint64(b[8:], w[1])
	return b
}

func unword4(w uint32) [4]byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], w)
	return b
}

// SetMark sets the path mark of one rule (0: no eligible path, the rule
// passes). New flows of the rule take it at once; existing flows move to it
// at their next packet unless they are on a path that SetEligible has
// declared eligible, which they keep (no flapping back after a recovery).
func (c *Classifier) SetMark(ruleID uint32, mark uint32) error {
	if err := checkMark(mark); err != nil {
		return fmt.Errorf("classifier: rule %d: %w", ruleID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if !c.ids[ruleID] {
		return fmt.Errorf("classifier: rule %d is not in the rule set", ruleID)
	}
	if err := c.objs.Steer.Put(ruleID, mark); err != nil {
		return fmt.Errorf("classifier: set mark of rule %d: %w", ruleID, err)
	}
	return nil
}

// SetEligible declares whether flows already on path index i may stay on
// it. Flows on a path that is not eligible (the initial state of every
// path) follow their rule's current mark. To fail a path over, declare it
// not eligible and SetMark the rules that used it.
func (c *Classifier) SetEligible(i uint16, ok bool) error {
	if i >= MaxPaths {
		return fmt.Errorf("classifier: path index %d not below %d", i, MaxPaths)
	}
	var v uint32
	if ok {
		v = 1
	}
	if err := c.objs.Eligible.Put(uint32(i), v); err != nil {
		return fmt.Errorf("classifier: set eligibility of path %d: %w", i, err)
	}
	return nil
}

// RuleCounters returns the packets and bytes matched by each rule of the
// current rule set, summed over CPUs.
func (c *Classifier) RuleCounters() (map[uint32]Counter, error) {
	c.mu.Lock()
	ids := make([]uint32, 0, len(c.ids))
	for id := range c.ids {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	out := make(map[uint32]Counter, len(ids))
	var vals []classifierCounter
	for _, id := range ids {
		if err := c.objs.RuleStats.Lookup(id, &vals); err != nil {
			return nil, fmt.Errorf("classifier: counters of rule %d: %w", id, err)
		}
		out[id] = sum(vals)
	}
	return out, nil
}

// PathCounters returns the packets and bytes steered onto each path index
// that has carried any, summed over CPUs.
func (c *Classifier) PathCounters() (map[uint16]Counter, error) {
	out := make(map[uint16]Counter)
	var (
		key  uint32
		vals []classifierCounter
	)
	it := c.objs.PathStats.Iterate()
	for it.Next(&key, &vals) {
		if s := sum(vals); s.Packets != 0 {
			out[uint16(key)] = s
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("classifier: path counters: %w", err)
	}
	return out, nil
}

func sum(vals []classifierCounter) Counter {
	var s Counter
	for _, v := range vals {
		s.Packets += v.Packets
		s.Bytes += v.Bytes
	}
	return s
}

// clock converts the kernel's jiffies, in which flow times are kept, to
// wall-clock time.
type clock struct {
	jiffies uint64    // a recent jiffies value ...
	wall    time.Time // ... and the wall-clock time it corresponds to
	tick    time.Duration
}

// now samples jiffies and CLOCK_MONOTONIC together in the kernel (the
// sample_clock program) and relates them to the wall clock. The tick is the
// resolution of CLOCK_MONOTONIC_COARSE, which is one jiffy.
func (c *Classifier) now() (clock, error) {
	var res unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &res); err != nil {
		return clock{}, fmt.Errorf("tick length: %w", err)
	}
	if _, err := c.objs.SampleClock.Run(&ebpf.RunOptions{Data: make([]byte, 14)}); err != nil {
		return clock{}, fmt.Errorf("sample kernel clock: %w", err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return clock{}, fmt.Errorf("read monotonic clock: %w", err)
	}
	wall := time.Now()
	var s classifierClockSample
	if err := c.objs.Clock.Lookup(uint32(0), &s); err != nil {
		return clock{}, fmt.Errorf("read kernel clock sample: %w", err)
	}
	return clock{
		jiffies: s.Jiffies,
		wall:    wall.Add(-time.Duration(ts.Nano() - int64(s.MonoNs))),
		tick:    time.Duration(res.Nano()),
	}, nil
}

func (c clock) time(jiffies uint64) time.Time {
	return c.wall.Add(-time.Duration(int64(c.jiffies-jiffies)) * c.tick)
}

// Flows calls fn for each entry of the flow tables, IPv4 then IPv6, until
// fn returns false. The tables may change during the walk; an entry is
// reported at most once.
func (c *Classifier) Flows(fn func(Flow) bool) error {
	clk, err := c.now()
	if err != nil {
		return fmt.Errorf("classifier: flows: %w", err)
	}
	flow := func(v *classifierFlowVal, proto uint8, src, dst netip.AddrPort) Flow {
		return Flow{
			Protocol:  proto,
			Src:       src,
			Dst:       dst,
			RuleID:    v.RuleId,
			Action:    Action(v.Action),
			Mark:      v.Mark,
			Packets:   v.Packets,
			Bytes:     v.Bytes,
			FirstSeen: clk.time(v.FirstSeen),
			LastSeen:  clk.time(v.LastSeen),
		}
	}
	var (
		k4 classifierFlow4Key
		k6 classifierFlow6Key
		v  classifierFlowVal
	)
	it := c.objs.Flows4.Iterate()
	for it.Next(&k4, &v) {
		src := netip.AddrPortFrom(netip.AddrFrom4(unword4(k4.Saddr)), k4.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom4(unword4(k4.Daddr)), k4.Dport)
		if !fn(flow(&v, k4.Proto, src, dst)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("classifier: IPv4 flows: %w", err)
	}
	it = c.objs.Flows6.Iterate()
	for it.Next(&k6, &v) {
		src := netip.AddrPortFrom(netip.AddrFrom16(unwords(k6.Src)), k6.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom16(unwords(k6.Dst)), k6.Dport)
		if !fn(flow(&v, k6.Proto, src, dst)) {
			return nil
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("classifier: IPv6 flows: %w", err)
	}
	return nil
}

// ExpireFlows deletes the flows that have seen no packet for longer than
// idle and returns how many it deleted. Flow times are kept in jiffies, so
// idle is honoured to within one kernel tick (1 to 10 ms) in its favour:
// a flow is never expired early.
func (c *Classifier) ExpireFlows(idle time.Duration) (int, error) {
	clk, err := c.now()
	if err != nil {
		return 0, fmt.Errorf("classifier: expire flows: %w", err)
	}
	// A flow last seen at jiffy j has been idle at least (now-j-1) ticks.
	var cutoff uint64
	if ticks := uint64(idle/clk.tick) + 1; ticks < clk.jiffies {
		cutoff = clk.jiffies - ticks
	}
	n4, err := expire[classifierFlow4Key](c.objs.Flows4, cutoff)
	if err != nil {
		return n4, fmt.Errorf("classifier: expire IPv4 flows: %w", err)
	}
	n6, err := expire[classifierFlow6Key](c.objs.Flows6, cutoff)
	if err != nil {
		return n4 + n6, fmt.Errorf("classifier: expire IPv6 flows: %w", err)
	}
	return n4 + n6, nil
}

// expire deletes the entries of the flow table m last seen before cutoff
// and returns how many it deleted.
func expire[K any](m *ebpf.Map, cutoff uint64) (int, error) {
	var (
		k     K
		v     classifierFlowVal
		stale []K
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		if v.LastSeen < cutoff {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range stale {
		err := m.Delete(&k)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ebpf.ErrKeyNotExist):
		default:
			return n, err
		}
	}
	return n, nil
}
