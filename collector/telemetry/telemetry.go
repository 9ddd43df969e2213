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
	"net/netip"
	"strconv"
	"strings"
	"time"

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
	// entities holds, for every path, policy, flow and endpoint the writer
	// has written, the leaves it wrote and their values.
	entities map[entityID]*entity
	started  bool
	scratch  []byte
}

// entityID names a path ('p'), policy ('o'), flow ('f', by flow) or
// endpoint ('e').
type entityID struct {
	kind byte
	name string
	flow flowKey
}

type flowKey struct {
	protocol uint8
	src, dst netip.AddrPort
}

type entity struct {
	base   []byte                // encoded key of the entity's state container
	leaves map[string]*leafState // by path relative to base
	seen   bool                  // in the snapshot being written
}

// leafState is a leaf written: its key and the value last written.
type leafState struct {
	key, value []byte
}

// NewWriter returns a writer into st. Measured leaves left by an earlier
// run (a crash) are deleted by the first Write, unless it writes them.
func NewWriter(st *store.Store) *Writer {
	return &Writer{st: st, entities: map[entityID]*entity{}}
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
	key, value []byte
	base       []byte // the entity's state container
}

// batch collects the writes of one Write.
type batch struct {
	w      *Writer
	writes []write
	// fresh lists the entities first written by this Write: their
	// configuration must still exist.
	fresh []entityID
}

func (b *batch) entity(id entityID, base func() []*gpb.PathElem) *entity {
	e := b.w.entities[id]
	if e == nil {
		e = &entity{base: pathkey.Encode(base()), leaves: map[string]*leafState{}}
		b.w.entities[id] = e
		b.fresh = append(b.fresh, id)
	}
	e.seen = true
	return e
}

// leaf records value (nil: absent) for the leaf rel of e if it changed.
func (b *batch) leaf(e *entity, rel string, value []byte) {
	l := e.leaves[rel]
	if value == nil {
		if l != nil {
			delete(e.leaves, rel)
			b.writes = append(b.writes, write{key: l.key, base: e.base})
		}
		return
	}
	if l != nil && bytes.Equal(l.value, value) {
		return
	}
	if l == nil {
		l = &leafState{key: leafKey(e.base, rel)}
		e.leaves[rel] = l
	}
	// The store keeps what it is given: a new slice every time.
	l.value = bytes.Clone(value)
	b.writes = append(b.writes, write{key: l.key, value: l.value, base: e.base})
}

func (b *batch) uint(e *entity, rel string, u uint64) {
	b.w.scratch = txn.AppendUint(b.w.scratch[:0], u)
	b.leaf(e, rel, b.w.scratch)
}

func (b *batch) str(e *entity, rel string, s string) {
	b.w.scratch = txn.AppendString(b.w.scratch[:0], s)
	b.leaf(e, rel, b.w.scratch)
}

// optStr records s for the leaf rel of e, or its absence when s is "".
func (b *batch) optStr(e *entity, rel string, s string) {
	if s == "" {
		b.leaf(e, rel, nil)
		return
	}
	b.str(e, rel, s)
}

func (b *batch) time(e *entity, rel string, t time.Time) {
	if t.IsZero() {
		b.leaf(e, rel, nil)
		return
	}
	b.uint(e, rel, uint64(t.UnixNano()))
}

// leafKey appends the elements of rel ("counters/tx-bytes") to base.
func leafKey(base []byte, rel string) []byte {
	k := append([]byte(nil), base...)
	for {
		name, rest, more := strings.Cut(rel, "/")
		k = pathkey.AppendElem(k, name, nil)
		if !more {
			return k
		}
		rel = rest
	}
}

func (b *batch) add(s *Snapshot) {
	for name, p := range s.Paths {
		e := b.entity(entityID{kind: 'p', name: name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": name}}, {Name: "state"}}
		})
		b.str(e, "health-status", p.Health)
		b.uint(e, "latency", uint64(p.Latency/time.Microsecond))
		b.uint(e, "jitter", uint64(p.Jitter/time.Microsecond))
		b.leaf(e, "loss", percent(p.Loss))
		if p.Bandwidth > 0 {
			b.uint(e, "bandwidth", p.Bandwidth)
		} else {
			b.leaf(e, "bandwidth", nil) // not reported
		}
		b.time(e, "last-change", p.LastChange)
		b.uint(e, "counters/probes-sent", p.ProbesSent)
		b.uint(e, "counters/probes-received", p.ProbesReceived)
		b.uint(e, "counters/tx-packets", p.TxPackets)
		b.uint(e, "counters/tx-bytes", p.TxBytes)
	}
	for name, p := range s.Policies {
		e := b.entity(entityID{kind: 'o', name: name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": name}}, {Name: "state"}}
		})
		b.optStr(e, "active-path", p.ActivePath)
		b.uint(e, "counters/packets-matched", p.PacketsMatched)
		b.uint(e, "counters/bytes-matched", p.BytesMatched)
		b.uint(e, "counters/active-flows", p.ActiveFlows)
	}
	for _, f := range s.Flows {
		id := entityID{kind: 'f', flow: flowKey{f.Protocol, f.Src, f.Dst}}
		e := b.entity(id, func() []*gpb.PathElem {
			key := map[string]string{
				"protocol":            strconv.Itoa(int(f.Protocol)),
				"source-address":      f.Src.Addr().String(),
				"source-port":         strconv.Itoa(int(f.Src.Port())),
				"destination-address": f.Dst.Addr().String(),
				"destination-port":    strconv.Itoa(int(f.Dst.Port())),
			}
			return []*gpb.PathElem{{Name: "flows"}, {Name: "flow", Key: key}, {Name: "state"}}
		})
		if len(e.leaves) == 0 {
			b.uint(e, "protocol", uint64(f.Protocol))
			b.str(e, "source-address", f.Src.Addr().String())
			b.uint(e, "source-port", uint64(f.Src.Port()))
			b.str(e, "destination-address", f.Dst.Addr().String())
			b.uint(e, "destination-port", uint64(f.Dst.Port()))
		}
		b.str(e, "policy", f.Policy)
		b.optStr(e, "path", f.Path)
		b.uint(e, "packets", f.Packets)
		b.uint(e, "bytes", f.Bytes)
		b.time(e, "first-seen", f.FirstSeen)
		b.time(e, "last-seen", f.LastSeen)
	}
	for _, ep := range s.Endpoints {
		e := b.entity(entityID{kind: 'e', name: ep.Site + "\x00" + ep.Name}, func() []*gpb.PathElem {
			return []*gpb.PathElem{{Name: "sites"}, {Name: "site", Key: map[string]string{"name": ep.Site}}, {Name: "endpoints"},
				{Name: "endpoint", Key: map[string]string{"name": ep.Name}}, {Name: "state"}}
		})
		status := "DOWN"
		if ep.Up {
			status = "UP"
		}
		b.str(e, "oper-status", status)
	}
}

// configKey is the key whose presence says that the list entry an entity
// belongs to still exists: measured leaves are written only below
// configured paths, policies and endpoints (flows have no config).
func configKey(id entityID, base []byte) []byte {
	if id.kind == 'f' {
		return nil
	}
	elems, err := pathkey.Decode(base)
	if err != nil {
		return nil
	}
	entry := elems[:len(elems)-1] // drop "state"
	return pathkey.Encode(append(entry[:len(entry):len(entry)], &gpb.PathElem{Name: "config"}, &gpb.PathElem{Name: "name"}))
}

// Write makes the measured leaves in the store match s, writing only the
// leaves that changed since the last Write. A path, policy or endpoint
// whose configuration does not exist when the writer first meets it is not
// written (the agent plans from the same configuration, so one that is
// deleted later leaves the snapshots at its next plan).
func (w *Writer) Write(ctx context.Context, s *Snapshot) error {
	for _, e := range w.entities {
		e.seen = false
	}
	b := &batch{w: w}
	b.add(s)
	var gone []entityID
	for id, e := range w.entities {
		if e.seen {
			continue
		}
		for _, l := range e.leaves {
			b.writes = append(b.writes, write{key: l.key})
		}
		gone = append(gone, id)
	}
	for _, id := range gone {
		delete(w.entities, id)
	}
	first := !w.started
	var skipped []entityID
	err := w.st.Update(ctx, func(tx store.Tx) error {
		skipped = skipped[:0]
		skip := map[string]bool{}
		for _, id := range b.fresh {
			e := w.entities[id]
			if ck := configKey(id, e.base); ck != nil {
				if _, ok, err := tx.Get(ck); err != nil {
					return err
				} else if !ok {
					skip[string(e.base)] = true
					skipped = append(skipped, id)
				}
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
		for _, wr := range b.writes {
			if len(skip) > 0 && skip[string(wr.base)] {
				continue
			}
			if wr.value == nil {
				tx.Delete(wr.key)
			} else {
				tx.SetVolatile(wr.key, wr.value)
			}
		}
		return nil
	})
	if err != nil {
		// Nothing was written: forget what this Write recorded, so that
		// the next one writes it again.
		w.entities = map[entityID]*entity{}
		return err
	}
	w.started = true
	for _, id := range skipped {
		delete(w.entities, id)
	}
	return nil
}

// Close deletes every leaf the writer wrote: a node that stops serving its
// site no longer reports measurements.
func (w *Writer) Close(ctx context.Context) error {
	if len(w.entities) == 0 {
		return nil
	}
	err := w.st.Update(ctx, func(tx store.Tx) error {
		for _, e := range w.entities {
			for _, l := range e.leaves {
				tx.Delete(l.key)
			}
		}
		return nil
	})
	if err == nil {
		w.entities = map[entityID]*entity{}
	}
	return err
}

// Event appends an event (PATH_UP, PATH_DOWN, FAILOVER …) to the node's
// /system/events.
func Event(ctx context.Context, st *store.Store, eng *txn.Engine, ev txn.Event) error {
	return st.Update(ctx, func(tx store.Tx) error { return eng.AppendEvent(tx, ev) })
}
