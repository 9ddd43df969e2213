// Package telemetry writes what a node measures (path quality and health,
// policy counters and active paths, the flow table, endpoint link state)
// into the node's own part of the data tree, where Get and every
// subscription read it like any other leaf.
//
// Measured state is node-local: it is written straight to the node's store,
// never through Raft, and only in memory (store.Tx.SetVolatile): it is
// measured again after a restart, and a flow table's worth of counters
// every second has no business in the write-ahead log. A Writer remembers what it wrote and writes only the
// leaves that changed, in one store transaction per call, so ON_CHANGE
// subscribers see a change once and a quiet network costs nothing.
package telemetry

import (
	"bytes"
	"context"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Path is the measured state of one path.
type Path struct {
	Health         string // UNKNOWN, UP, DEGRADED or DOWN
	Latency        time.Duration
	Jitter         time.Duration
	Loss           float64 // percent
	Bandwidth      uint64  // kbit/s; 0: not reported
	LastChange     time.Time
	ProbesSent     uint64
	ProbesReceived uint64
	TxPackets      uint64
	TxBytes        uint64
}

// Policy is the measured state of one policy.
type Policy struct {
	ActivePath     string // "" when the policy steers nothing on this node
	PacketsMatched uint64
	BytesMatched   uint64
	ActiveFlows    uint64
}

// Flow is one entry of the flow table.
type Flow struct {
	Protocol  uint8
	Src, Dst  netip.AddrPort
	Policy    string
	Path      string // "" when the flow is not steered
	Packets   uint64
	Bytes     uint64
	FirstSeen time.Time
	LastSeen  time.Time
}

// Endpoint is the link state of one of the site's endpoints.
type Endpoint struct {
	Site, Name string
	Up         bool
}

// Snapshot is everything measured at one moment. A path, policy, flow or
// endpoint left out of a snapshot has its measured leaves deleted.
type Snapshot struct {
	Paths     map[string]Path
	Policies  map[string]Policy
	Flows     []Flow
	Endpoints []Endpoint
}

// Writer writes snapshots into a store.
type Writer struct {
	st *store.Store
	// named holds the paths, policies and endpoints the writer has
	// written, flows its flows; flowAt[i] is the entity of the last
	// snapshot's Flows[i], which is most often this one's too.
	named   map[entityID]*entity
	flows   map[flowKey]*entity
	flowAt  []*entity
	gen     uint64 // counts Writes; an entity in the current one has seen == gen
	started bool
	scratch []byte
	pack    store.Packer // builds a flow's packed entry
	packed  []byte       // a flow's packed entry
	// writes is the last Write's, for the next one to reuse; keys is
	// where leaf keys are built.
	writes []write
	keys   []byte
}

// entityID names a path ('p'), policy ('o'), endpoint ('e') or flow ('f',
// by entity.flow).
type entityID struct {
	kind byte
	name string
}

type flowKey struct {
	protocol uint8
	src, dst netip.AddrPort
}

// entity is a path, policy, flow or endpoint the writer has written.
type entity struct {
	base   []byte   // encoded key of the entity's state container
	leaves []string // the leaves of its kind, by index: paths relative to base
	vals   [][]byte // the value last written of each leaf; nil: absent
	keys   []string // the key of each leaf, once built (see batch.leafKey)
	seen   uint64   // the last Write whose snapshot held it
	config []byte   // the key whose presence says it is configured; nil: always
	id     entityID
	flow   flowKey
	gone   bool // forgotten by the writer

	// A flow's leaves are one packed entry (store.Packer) at packKey, its
	// state container, last written as pack; it has no base, leaves, vals
	// or keys.
	packKey string
	pack    []byte
	sum     uint64 // the hash of the Flow last written as pack
}

// The leaves of each kind of entity, by their index in entity.vals.
const (
	pathHealth = iota
	pathLatency
	pathJitter
	pathLoss
	pathBandwidth
	pathLastChange
	pathProbesSent
	pathProbesReceived
	pathTxPackets
	pathTxBytes
)

var pathLeaves = []string{
	pathHealth: "health-status", pathLatency: "latency", pathJitter: "jitter", pathLoss: "loss",
	pathBandwidth: "bandwidth", pathLastChange: "last-change", pathProbesSent: "counters/probes-sent",
	pathProbesReceived: "counters/probes-received", pathTxPackets: "counters/tx-packets", pathTxBytes: "counters/tx-bytes",
}

const (
	policyActivePath = iota
	policyPackets
	policyBytes
	policyFlows
)

var policyLeaves = []string{
	policyActivePath: "active-path", policyPackets: "counters/packets-matched",
	policyBytes: "counters/bytes-matched", policyFlows: "counters/active-flows",
}

const (
	flowProtocol = iota
	flowSrcAddr
	flowSrcPort
	flowDstAddr
	flowDstPort
	flowPolicy
	flowPath
	flowPackets
	flowBytes
	flowFirstSeen
	flowLastSeen
)

var flowLeaves = []string{
	flowProtocol: "protocol", flowSrcAddr: "source-address", flowSrcPort: "source-port",
	flowDstAddr: "destination-address", flowDstPort: "destination-port", flowPolicy: "policy", flowPath: "path",
	flowPackets: "packets", flowBytes: "bytes", flowFirstSeen: "first-seen", flowLastSeen: "last-seen",
}

var endpointLeaves = []string{"oper-status"}

// PackedPrefixes are where the Writer writes packed entries (store.Packer):
// each flow's state is one key. The store it writes to is opened with them as
// store.Options.Packed.
func PackedPrefixes() [][]byte {
	return [][]byte{pathkey.Encode([]*gpb.PathElem{{Name: "flows"}})}
}

// NewWriter returns a writer into st. Measured leaves left by an earlier
// run (a crash) are deleted by the first Write, unless it writes them.
func NewWriter(st *store.Store) *Writer {
	w := &Writer{st: st}
	w.reset()
	return w
}

// reset forgets every entity written.
func (w *Writer) reset() {
	w.named, w.flows, w.flowAt = map[entityID]*entity{}, map[flowKey]*entity{}, nil
}

func percent(f float64) []byte {
	return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_DecimalVal{DecimalVal: &gpb.Decimal64{Digits: int64(f*1000 + 0.5), Precision: 3}}})
}

// measuredRoots are the subtrees holding measured leaves.
func measuredRoots() [][]byte {
	return [][]byte{
		pathkey.Encode([]*gpb.PathElem{{Name: "paths"}}),
		pathkey.Encode([]*gpb.PathElem{{Name: "policies"}}),
		pathkey.Encode([]*gpb.PathElem{{Name: "sites"}}),
		pathkey.Encode([]*gpb.PathElem{{Name: "flows"}}),
	}
}

// measured reports whether elems is a leaf a Writer writes: an earlier run
// left it if the new writer has not written it yet.
func measured(elems []*gpb.PathElem) bool {
	names := make([]string, len(elems))
	for i, e := range elems {
		names[i] = e.GetName()
	}
	switch {
	case len(names) == 0:
		return false
	case names[0] == "flows":
		return true
	case names[0] == "paths" && len(names) >= 4 && names[2] == "state":
		switch names[3] {
		case "health-status", "latency", "jitter", "loss", "bandwidth", "last-change", "counters":
			return true
		}
	case names[0] == "policies" && len(names) >= 4 && names[2] == "state":
		return names[3] == "active-path" || names[3] == "counters"
	case names[0] == "sites":
		return len(names) == 6 && names[2] == "endpoints" && names[4] == "state" && names[5] == "oper-status"
	}
	return false
}

// write is one key to set (value) or delete (nil value).
type write struct {
	key   string
	value []byte
	e     *entity
}

// batch collects the writes of one Write.
type batch struct {
	w      *Writer
	writes []write
	// fresh lists the entities first written by this Write: their
	// configuration must still exist.
	fresh []*entity
	seen  int // entities in the snapshot
}

// newEntity returns a new entity with the state container base.
func (b *batch) newEntity(id entityID, base []*gpb.PathElem, leaves []string) *entity {
	e := &entity{id: id, base: pathkey.Encode(base), leaves: leaves, vals: make([][]byte, len(leaves)),
		keys: make([]string, len(leaves))}
	b.fresh = append(b.fresh, e)
	return e
}

// see marks e as in the snapshot.
func (b *batch) see(e *entity) {
	if e.seen != b.w.gen {
		e.seen = b.w.gen
		b.seen++
	}
}

// named returns the entity id, new if the writer has not written it.
func (b *batch) named(id entityID, base func() []*gpb.PathElem, leaves []string) *entity {
	e := b.w.named[id]
	if e == nil {
		e = b.newEntity(id, base(), leaves)
		e.config = configKey(e.base)
		b.w.named[id] = e
	}
	b.see(e)
	return e
}

// forget removes e from the writer.
func (w *Writer) forget(e *entity) {
	if e.id.kind == 'f' {
		delete(w.flows, e.flow)
	} else {
		delete(w.named, e.id)
	}
	e.vals = nil
	e.gone = true
}

// leafKey returns the key of e's leaf i. It is built once: the store
// keeps the string it is first given, and compares a key it is given again
// by its pointer before its bytes.
func (b *batch) leafKey(e *entity, i int) string {
	if k := e.keys[i]; k != "" {
		return k
	}
	k := append(b.w.keys[:0], e.base...)
	rel := e.leaves[i]
	for {
		name, rest, more := strings.Cut(rel, "/")
		k = pathkey.AppendElem(k, name, nil)
		if !more {
			break
		}
		rel = rest
	}
	b.w.keys = k
	e.keys[i] = string(k)
	return e.keys[i]
}

// leaf records value (nil: absent) for e's leaf i if it changed.
func (b *batch) leaf(e *entity, i int, value []byte) {
	old := e.vals[i]
	if value == nil {
		if old != nil {
			e.vals[i] = nil
			b.writes = append(b.writes, write{key: b.leafKey(e, i), e: e})
		}
		return
	}
	if old != nil && bytes.Equal(old, value) {
		return
	}
	// The store keeps what it is given: a new slice every time.
	v := bytes.Clone(value)
	e.vals[i] = v
	b.writes = append(b.writes, write{key: b.leafKey(e, i), value: v, e: e})
}

func (b *batch) uint(e *entity, i int, u uint64) {
	b.w.scratch = txn.AppendUint(b.w.scratch[:0], u)
	b.leaf(e, i, b.w.scratch)
}

func (b *batch) str(e *entity, i int, s string) {
	b.w.scratch = txn.AppendString(b.w.scratch[:0], s)
	b.leaf(e, i, b.w.scratch)
}

// optStr records s for e's leaf i, or its absence when s is "".
func (b *batch) optStr(e *entity, i int, s string) {
	if s == "" {
		b.leaf(e, i, nil)
		return
	}
	b.str(e, i, s)
}

func (b *batch) time(e *entity, i int, t time.Time) {
	if t.IsZero() {
		b.leaf(e, i, nil)
		return
	}
	b.uint(e, i, uint64(t.UnixNano()))
}

// flowSuffixes are the key suffixes of flowLeaves in a flow's packed entry.
var flowSuffixes = func() [][]byte {
	out := make([][]byte, len(flowLeaves))
	for i, l := range flowLeaves {
		out[i] = pathkey.AppendElem(nil, l, nil)
	}
	return out
}()

// flowSeed seeds the hashes of flows (entity.sum).
var flowSeed = maphash.MakeSeed()

// flow records f as e's packed entry if it changed.
func (b *batch) flow(e *entity, f *Flow) {
	// Most flows of a round are as they were: their hash says so without
	// building their entry.
	sum := maphash.Comparable(flowSeed, *f)
	if e.pack != nil && sum == e.sum {
		return
	}
	e.sum = sum
	p := &b.w.pack
	p.Reset()
	num := func(i int, u uint64) { p.Add(flowSuffixes[i], txn.AppendUint(p.Value(), u)) }
	str := func(i int, s string) { p.Add(flowSuffixes[i], txn.AppendString(p.Value(), s)) }
	addr := func(i int, a netip.Addr) { p.Add(flowSuffixes[i], a.AppendTo(txn.AppendString(p.Value(), ""))) }
	// In suffix order, the order of a packed entry.
	num(flowBytes, f.Bytes)
	addr(flowDstAddr, f.Dst.Addr())
	num(flowDstPort, uint64(f.Dst.Port()))
	if !f.FirstSeen.IsZero() {
		num(flowFirstSeen, uint64(f.FirstSeen.UnixNano()))
	}
	if !f.LastSeen.IsZero() {
		num(flowLastSeen, uint64(f.LastSeen.UnixNano()))
	}
	num(flowPackets, f.Packets)
	if f.Path != "" {
		str(flowPath, f.Path)
	}
	str(flowPolicy, f.Policy) // even ""
	num(flowProtocol, uint64(f.Protocol))
	addr(flowSrcAddr, f.Src.Addr())
	num(flowSrcPort, uint64(f.Src.Port()))
	b.w.packed = p.AppendTo(b.w.packed[:0])
	if bytes.Equal(b.w.packed, e.pack) {
		return
	}
	// The store keeps what it is given: a new slice every time.
	e.pack = bytes.Clone(b.w.packed)
	b.writes = append(b.writes, write{key: e.packKey, value: e.pack, e: e})
}

func (b *batch) add(s *Snapshot) {
	for name, p := range s.Paths {
		e := b.named(entityID{kind: 'p', name: name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": name}}, {Name: "state"}}
		}, pathLeaves)
		b.str(e, pathHealth, p.Health)
		b.uint(e, pathLatency, uint64(p.Latency/time.Microsecond))
		b.uint(e, pathJitter, uint64(p.Jitter/time.Microsecond))
		b.leaf(e, pathLoss, percent(p.Loss))
		if p.Bandwidth > 0 {
			b.uint(e, pathBandwidth, p.Bandwidth)
		} else {
			b.leaf(e, pathBandwidth, nil) // not reported
		}
		b.time(e, pathLastChange, p.LastChange)
		b.uint(e, pathProbesSent, p.ProbesSent)
		b.uint(e, pathProbesReceived, p.ProbesReceived)
		b.uint(e, pathTxPackets, p.TxPackets)
		b.uint(e, pathTxBytes, p.TxBytes)
	}
	for name, p := range s.Policies {
		e := b.named(entityID{kind: 'o', name: name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": name}}, {Name: "state"}}
		}, policyLeaves)
		b.optStr(e, policyActivePath, p.ActivePath)
		b.uint(e, policyPackets, p.PacketsMatched)
		b.uint(e, policyBytes, p.BytesMatched)
		b.uint(e, policyFlows, p.ActiveFlows)
	}
	w := b.w
	for i := range s.Flows {
		f := &s.Flows[i]
		id := flowKey{f.Protocol, f.Src, f.Dst}
		var e *entity
		if i < len(w.flowAt) {
			if k := w.flowAt[i]; k.flow == id && !k.gone {
				e = k
			}
		}
		if e == nil {
			e = w.flows[id]
		}
		if e == nil {
			key := map[string]string{
				"protocol":            strconv.Itoa(int(f.Protocol)),
				"source-address":      f.Src.Addr().String(),
				"source-port":         strconv.Itoa(int(f.Src.Port())),
				"destination-address": f.Dst.Addr().String(),
				"destination-port":    strconv.Itoa(int(f.Dst.Port())),
			}
			state := pathkey.Encode([]*gpb.PathElem{{Name: "flows"}, {Name: "flow", Key: key}, {Name: "state"}})
			e = &entity{id: entityID{kind: 'f'}, packKey: string(state), flow: id}
			w.flows[id] = e
		}
		b.see(e)
		if i < len(w.flowAt) {
			w.flowAt[i] = e
		} else {
			w.flowAt = append(w.flowAt, e)
		}
		b.flow(e, f)
	}
	w.flowAt = w.flowAt[:min(len(w.flowAt), len(s.Flows))]
	for _, ep := range s.Endpoints {
		e := b.named(entityID{kind: 'e', name: ep.Site + "\x00" + ep.Name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "sites"}, {Name: "site", Key: map[string]string{"name": ep.Site}}, {Name: "endpoints"},
				{Name: "endpoint", Key: map[string]string{"name": ep.Name}}, {Name: "state"}}
		}, endpointLeaves)
		status := "DOWN"
		if ep.Up {
			status = "UP"
		}
		b.str(e, 0, status)
	}
}

// configKey is the key whose presence says that the list entry an entity
// belongs to still exists: measured leaves are written only below
// configured paths, policies and endpoints (flows have no config).
func configKey(base []byte) []byte {
	elems, err := pathkey.Decode(base)
	if err != nil {
		return nil
	}
	entry := elems[:len(elems)-1] // drop "state"
	return pathkey.Encode(append(entry[:len(entry):len(entry)], &gpb.PathElem{Name: "config"}, &gpb.PathElem{Name: "name"}))
}

// gone appends the deletions of the leaves of the entities not in the
// snapshot to b, and forgets those entities.
func (b *batch) gone() {
	w := b.w
	if b.seen == len(w.named)+len(w.flows) {
		return
	}
	var gone []*entity
	for _, e := range w.named {
		if e.seen != w.gen {
			gone = append(gone, e)
		}
	}
	for _, e := range w.flows {
		if e.seen != w.gen {
			gone = append(gone, e)
		}
	}
	for _, e := range gone {
		b.deleteAll(e)
		w.forget(e)
	}
}

// deleteAll records the deletion of every leaf of e.
func (b *batch) deleteAll(e *entity) {
	if e.packKey != "" {
		if e.pack != nil {
			b.writes = append(b.writes, write{key: e.packKey, e: e})
		}
		return
	}
	for i, v := range e.vals {
		if v != nil {
			b.writes = append(b.writes, write{key: b.leafKey(e, i)})
		}
	}
}

// Write makes the measured leaves in the store match s, writing only the
// leaves that changed since the last Write. A path, policy or endpoint
// whose configuration does not exist when the writer first meets it is not
// written (the agent plans from the same configuration, so one that is
// deleted later leaves the snapshots at its next plan).
func (w *Writer) Write(ctx context.Context, s *Snapshot) error {
	w.gen++
	b := &batch{w: w, writes: w.writes[:0]}
	defer func() {
		clear(b.writes)
		w.writes = b.writes[:0]
	}()
	b.add(s)
	b.gone()
	first := !w.started
	var skipped []*entity
	err := w.st.Update(ctx, func(tx store.Tx) error {
		skipped = skipped[:0]
		for _, e := range b.fresh {
			if e.config == nil {
				continue
			}
			if _, ok, err := tx.Get(e.config); err != nil {
				return err
			} else if !ok {
				skipped = append(skipped, e)
			}
		}
		if first {
			// What an earlier run measured is stale.
			var stale [][]byte
			var dec pathkey.Decoder
			for _, root := range measuredRoots() {
				dec = pathkey.Decoder{}
				if err := tx.Scan(root, func(k, _ []byte) error {
					if elems, err := dec.Decode(k); err == nil && measured(elems) {
						stale = append(stale, bytes.Clone(k))
					}
					return nil
				}); err != nil {
					return err
				}
			}
			for _, k := range stale {
				tx.Delete(k)
			}
		}
		var skip map[*entity]bool
		if len(skipped) > 0 {
			skip = map[*entity]bool{}
			for _, e := range skipped {
				skip[e] = true
			}
		}
		for _, wr := range b.writes {
			if skip != nil && skip[wr.e] {
				continue
			}
			if wr.value == nil {
				tx.Delete(keyBytes(wr.key))
			} else {
				tx.SetVolatile(wr.key, wr.value)
			}
		}
		return nil
	})
	if err != nil {
		// Nothing was written: forget what this Write recorded, so that
		// the next one writes it again.
		w.reset()
		return err
	}
	w.started = true
	for _, e := range skipped {
		w.forget(e)
	}
	return nil
}

// Close deletes every leaf the writer wrote: a node that stops serving its
// site no longer reports measurements.
func (w *Writer) Close(ctx context.Context) error {
	if len(w.named)+len(w.flows) == 0 {
		return nil
	}
	b := &batch{w: w}
	for _, e := range w.named {
		b.deleteAll(e)
	}
	for _, e := range w.flows {
		b.deleteAll(e)
	}
	err := w.st.Update(ctx, func(tx store.Tx) error {
		for _, wr := range b.writes {
			tx.Delete(keyBytes(wr.key))
		}
		return nil
	})
	if err == nil {
		w.reset()
	}
	return err
}

// keyBytes returns the bytes of k, for the store to read (and copy).
func keyBytes(k string) []byte { return unsafe.Slice(unsafe.StringData(k), len(k)) }

// Event appends an event (PATH_UP, PATH_DOWN, FAILOVER …) to the node's
// /system/events.
func Event(ctx context.Context, st *store.Store, eng *txn.Engine, ev txn.Event) error {
	return st.Update(ctx, func(tx store.Tx) error { return eng.AppendEvent(tx, ev) })
}
