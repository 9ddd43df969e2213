// Package classifier is the eBPF traffic classifier of the Patronus
// dataplane: a tcx ingress program on the LAN-facing interfaces that matches
// every packet against the priority-ordered policy table (/policies), then
// steers it onto a path by setting skb->mark, drops it, or leaves it to
// ordinary routing, optionally rewriting its DSCP. It keeps per-policy and
// per-path counters and LRU flow tables (/flows), one per address family,
// whose entries pin a flow to its path while that path stays eligible. A
// per-CPU cache of recent flows in front of the flow tables decides most
// packets and holds their counts until user space adds them up (Flows) or
// the flow leaves the cache.
//
// Nothing is pinned in bpffs: every program, map and tcx link belongs to the
// process, so a crashed run leaves nothing behind in the kernel and there is
// no leftover state to look for at start-up.
//
// This is the only package of Patronus that imports cilium/ebpf.
package classifier

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type rule4 -type rule6 -type ruleset -type flow4_key -type flow6_key -type flow_val -type slot -type cached4 -type cached6 -type cache_counts -type counter -type clock_sample classifier bpf/classifier.c -- -I/usr/include/x86_64-linux-gnu

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"runtime"
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

// cacheSlots is the number of slots of the flow cache, per CPU and family;
// it must agree with CACHE_SLOTS in bpf/classifier.c.
const cacheSlots = 1024

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
	// epoch is the kernel's epoch of cached decisions (see bumpEpoch).
	epoch uint32
	// eligible is what SetEligible last set for each path index.
	eligible [MaxPaths]bool
	closed   bool

	holdMu  sync.Mutex
	holders int // Flows calls holding the flow cache (see walkFlows)
}

// New loads the program and its maps into the kernel without attaching
// them anywhere. Until SetRules is called every packet passes untouched.
//
// The per-CPU flow cache is used on amd64 only: how user space and the
// program hand over its epoch and slots relies on x86's ordering of plain
// loads and stores (see bumpEpoch and Flows). Elsewhere every packet looks
// its flow up in the flow tables, as with the cache turned off.
func New() (*Classifier, error) {
	return load(loadOptions{noCache: runtime.GOARCH != "amd64"})
}

// loadOptions are knobs of the kernel program that only tests and
// benchmarks turn; they are fixed at load time, so the verifier removes
// the code they turn off.
type loadOptions struct {
	// noFlowCache: no flow table and no cache, every packet walks the
	// rule table (benchmarks of the miss path).
	noFlowCache bool
	// noCache: the flow tables without the per-CPU cache in front, every
	// packet looks up and counts in its flow's entry (to compare the two).
	noCache bool
	// cacheSlots, a power of two from 2 to cacheSlots, uses that many
	// slots of the cache instead of all (tests that force evictions); 0:
	// all.
	cacheSlots int
	// noTick: a cache slot stays valid across kernel ticks, for tests of
	// what the epoch alone does (flows' last_seen is then not kept up).
	noTick bool
}

// load loads the objects, with the knobs o.
func load(o loadOptions) (*Classifier, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("classifier: remove memlock limit: %w", err)
	}
	spec, err := loadClassifier()
	if err != nil {
		return nil, fmt.Errorf("classifier: load spec: %w", err)
	}
	set := map[string]uint32{}
	if o.noFlowCache {
		set["no_flow_cache"] = 1
	}
	if o.noCache {
		set["no_cache"] = 1
	}
	if o.noTick {
		set["no_tick"] = 1
	}
	if n := o.cacheSlots; n != 0 {
		if n < 2 || n > cacheSlots || n&(n-1) != 0 {
			return nil, fmt.Errorf("classifier: %d cache slots: not a power of two from 2 to %d", n, cacheSlots)
		}
		set["cache_shift"] = uint32(64 - bits.TrailingZeros(uint(n)))
	}
	for name, v := range set {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("classifier: set %s: %w", name, err)
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
func (c *Classifier) SetRules(rules []Rule) (err error) {
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
	// Whatever this changes in the kernel, even if it fails halfway, no
	// cached decision may outlive it.
	defer func() {
		if eerr := c.bumpEpoch(); err == nil {
			err = eerr
		}
	}()
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

// bumpEpoch moves the kernel's epoch of cached decisions on, after a change
// that may change what a flow's next packet gets (a rule set, a mark, an
// eligibility, deleted flows): a slot of the flow cache is used only while
// its epoch is current, so every flow's next packet on every CPU takes the
// slow path, which sees the change. Its caller holds c.mu.
//
// The epoch is written after the change, and the program reads it before
// anything it depends on (the generation, the flow table, the maps): a
// packet that read the new epoch sees the change; one that read the old
// one caches a decision of the old epoch, which no later packet uses.
// (x86 keeps stores in order and loads in order.)
func (c *Classifier) bumpEpoch() error {
	e := c.epoch + 1
	if e == 0 {
		e = 1 // 0 means no rule set yet
	}
	if err := c.objs.Epoch.Set(e); err != nil {
		return fmt.Errorf("classifier: publish cache epoch: %w", err)
	}
	c.epoch = e
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
	return c.bumpEpoch()
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	if c.eligible[i] == ok {
		return nil // called on every steering round; cached flows stay
	}
	if err := c.objs.Eligible.Put(uint32(i), v); err != nil {
		return fmt.Errorf("classifier: set eligibility of path %d: %w", i, err)
	}
	c.eligible[i] = ok
	if c.generation == 0 {
		return nil // nothing is cached before the first rule set
	}
	return c.bumpEpoch()
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
// reported at most once. A flow's packets and bytes are exact: those its
// entry holds plus those the per-CPU flow caches hold for it.
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
	more, err := walkFlows(c.objs.Flows4, c.objs.Cache4, split4, c.hold, func(k *classifierFlow4Key, v *classifierFlowVal) bool {
		src := netip.AddrPortFrom(netip.AddrFrom4(unword4(k.Saddr)), k.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom4(unword4(k.Daddr)), k.Dport)
		return fn(flow(v, k.Proto, src, dst))
	})
	if err != nil {
		return fmt.Errorf("classifier: IPv4 flows: %w", err)
	}
	if !more {
		return nil
	}
	_, err = walkFlows(c.objs.Flows6, c.objs.Cache6, split6, c.hold, func(k *classifierFlow6Key, v *classifierFlowVal) bool {
		src := netip.AddrPortFrom(netip.AddrFrom16(unwords(k.Src)), k.Sport)
		dst := netip.AddrPortFrom(netip.AddrFrom16(unwords(k.Dst)), k.Dport)
		return fn(flow(v, k.Proto, src, dst))
	})
	if err != nil {
		return fmt.Errorf("classifier: IPv6 flows: %w", err)
	}
	return nil
}

func split4(c *classifierCached4) (classifierFlow4Key, *classifierSlot) { return c.Key, &c.S }
func split6(c *classifierCached6) (classifierFlow6Key, *classifierSlot) { return c.Key, &c.S }

// walkFlows calls fn for each entry of the flow table flows, with the
// pending counts of the flow cache cache added, until fn returns false; it
// returns whether fn always returned true.
//
// A slot gives its pending counts to its flow's entry when it takes
// another flow (in the kernel, at any time), and its seq is odd while it
// does. So the cache is read before and after the entries, and a slot's
// counts are added to an entry only if its seq was the same even number
// in both reads: no slot changed flow or gave counts back from the first
// read to the last, so the counts read in between are neither in the entry
// yet nor lost. An entry one of whose slots moved meanwhile is read again
// on its own (reread), with the slots held (hold): while they are, they
// keep their flows and counts, so the reread is stable once the kernel is
// done with the slot changes it had begun.
func walkFlows[K comparable, C any](flows, cache *ebpf.Map, split func(*C) (K, *classifierSlot), hold func(bool) error, fn func(*K, *classifierFlowVal) bool) (bool, error) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return false, err
	}
	before, err := readCache[C](cache, cpus)
	if err != nil {
		return false, err
	}
	mid, err := readCache[C](cache, cpus)
	if err != nil {
		return false, err
	}
	type entry struct {
		k      K
		v      classifierFlowVal
		moved  bool
		gone   bool
		slotAt int
	}
	var (
		entries []entry
		k       K
		v       classifierFlowVal
	)
	it := flows.Iterate()
	for it.Next(&k, &v) {
		entries = append(entries, entry{k: k, v: v})
	}
	if err := it.Err(); err != nil {
		return false, err
	}
	after, err := readCache[C](cache, cpus)
	if err != nil {
		return false, err
	}
	// Where each key is cached: slots of mid, as slot*cpus+cpu.
	at := make(map[K][]int)
	for i := range mid {
		if k, s := split(&mid[i]); s.Id != 0 {
			at[k] = append(at[k], i)
		}
	}
	moved := 0
	for j := range entries {
		e := &entries[j]
		for _, i := range at[e.k] {
			_, s := split(&mid[i])
			if s.Id != e.v.Id {
				continue // counts of an earlier entry of the same key
			}
			_, s0 := split(&before[i])
			_, s1 := split(&after[i])
			if s0.Seq != s1.Seq || s0.Seq&1 != 0 {
				e.moved, e.slotAt = true, i/cpus
				moved++
				break
			}
			e.v.Packets += s.Packets
			e.v.Bytes += s.Bytes
		}
	}
	if moved > 0 {
		if err := hold(true); err != nil {
			return false, err
		}
		for j := range entries {
			if e := &entries[j]; e.moved {
				if e.v, e.gone, err = reread(flows, cache, split, e.k, uint32(e.slotAt)); err != nil {
					break
				}
			}
		}
		if herr := hold(false); err == nil {
			err = herr
		}
		if err != nil {
			return false, err
		}
	}
	for j := range entries {
		if e := &entries[j]; !e.gone && !fn(&e.k, &e.v) {
			return false, nil
		}
	}
	return true, nil
}

// rereadTries bounds the attempts of reread. With the slots held, a slot
// moves only to finish a change the kernel had begun before, so the second
// attempt is nearly always stable.
const rereadTries = 100

// reread returns the entry of k in flows with its pending counts in cache,
// whose slot is slot: as walkFlows, for one entry, with the slots held.
// gone is true if the entry is gone.
func reread[K comparable, C any](flows, cache *ebpf.Map, split func(*C) (K, *classifierSlot), k K, slot uint32) (v classifierFlowVal, gone bool, err error) {
	var before, mid, after []C
	for range rereadTries {
		if err := cache.Lookup(slot, &before); err != nil {
			return v, false, err
		}
		if err := cache.Lookup(slot, &mid); err != nil {
			return v, false, err
		}
		if err := flows.Lookup(&k, &v); errors.Is(err, ebpf.ErrKeyNotExist) {
			return v, true, nil
		} else if err != nil {
			return v, false, err
		}
		if err := cache.Lookup(slot, &after); err != nil {
			return v, false, err
		}
		stable := true
		for cpu := range mid {
			mk, s := split(&mid[cpu])
			if mk != k || s.Id != v.Id {
				continue
			}
			_, s0 := split(&before[cpu])
			_, s1 := split(&after[cpu])
			if s0.Seq != s1.Seq || s0.Seq&1 != 0 {
				stable = false
				break
			}
			v.Packets += s.Packets
			v.Bytes += s.Bytes
		}
		if stable {
			return v, false, nil
		}
	}
	return v, false, fmt.Errorf("flow cache slot %d still changing after %d reads", slot, rereadTries)
}

// hold sets the kernel's cache_hold (see walkFlows); holders are counted.
func (c *Classifier) hold(on bool) error {
	c.holdMu.Lock()
	defer c.holdMu.Unlock()
	was := c.holders > 0
	if on {
		c.holders++
	} else {
		c.holders--
	}
	if now := c.holders > 0; now != was {
		var v uint32
		if now {
			v = 1
		}
		if err := c.objs.CacheHold.Set(v); err != nil {
			return fmt.Errorf("hold flow cache: %w", err)
		}
	}
	return nil
}

// readCache reads every slot of a flow cache on every CPU, as slot*cpus+cpu.
func readCache[C any](m *ebpf.Map, cpus int) ([]C, error) {
	n := int(m.MaxEntries())
	keys := make([]uint32, n)
	vals := make([]C, n*cpus)
	var cursor ebpf.MapBatchCursor
	got, err := m.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, fmt.Errorf("read flow cache: %w", err)
	}
	if got != n {
		return nil, fmt.Errorf("read flow cache: %d of %d slots", got, n)
	}
	for i, k := range keys {
		if k != uint32(i) {
			return nil, fmt.Errorf("read flow cache: slot %d read as %d", k, i)
		}
	}
	return vals, nil
}

// OrphanedFlowCounts returns the packets and bytes that the flow caches
// counted for a flow whose flow table entry was gone when the cache gave
// them back: the entry had been expired (the counts belonged to it and were
// reported with it until then) or evicted from a full table (they are lost
// with the rest of its counts, as without the cache).
func (c *Classifier) OrphanedFlowCounts() (Counter, error) {
	var vals []classifierCacheCounts
	if err := c.objs.CacheStats.Lookup(uint32(0), &vals); err != nil {
		return Counter{}, fmt.Errorf("classifier: orphaned flow counts: %w", err)
	}
	var s Counter
	for _, v := range vals {
		s.Packets += v.OrphanPackets
		s.Bytes += v.OrphanBytes
	}
	return s, nil
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
	n4, err4 := expire[classifierFlow4Key](c.objs.Flows4, cutoff)
	n6, err := expire[classifierFlow6Key](c.objs.Flows6, cutoff)
	if err != nil {
		err = fmt.Errorf("classifier: expire IPv6 flows: %w", err)
	}
	if err4 != nil {
		err = errors.Join(fmt.Errorf("classifier: expire IPv4 flows: %w", err4), err)
	}
	if n4+n6 > 0 {
		// A slot of a deleted flow must not take another packet for it:
		// its next packet takes the slow path, finds no entry, and makes
		// a new one. (The cached counts of a deleted flow go with it.)
		c.mu.Lock()
		if c.closed {
			err = errors.Join(err, errClosed)
		} else if eerr := c.bumpEpoch(); eerr != nil {
			err = errors.Join(err, eerr)
		}
		c.mu.Unlock()
	}
	return n4 + n6, err
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
