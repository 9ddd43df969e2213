// Package telemetry writes what a node measures (path quality and health,
// policy counters and active paths, the flow table, endpoint link state)
// into the node's own part of the data tree, where Get and every
// subscription read it like any other leaf.
//
// Measured state is node-local: it is written straight to the node's store,
// never through Raft. A Writer remembers what it wrote and writes only the
// leaves that changed, in one store transaction per call, so ON_CHANGE
// subscribers see a change once and a quiet network costs nothing.
package telemetry

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
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
	// last holds every key the writer has written and its value.
	last map[string][]byte
}

// NewWriter returns a writer into st. Measured leaves left by an earlier
// run (a crash) are deleted by the first Write, unless it writes them.
func NewWriter(st *store.Store) *Writer { return &Writer{st: st} }

func u64(v uint64) []byte {
	return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: v}})
}

func str(s string) []byte {
	return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}})
}

// percent encodes a percentage (decimal64, 3 fraction digits).
func percent(f float64) []byte {
	return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_DecimalVal{DecimalVal: &gpb.Decimal64{Digits: int64(f*1000 + 0.5), Precision: 3}}})
}

func ts(t time.Time) []byte {
	if t.IsZero() {
		return nil
	}
	return u64(uint64(t.UnixNano()))
}

// keys builds the desired key→value map of a snapshot.
type keys map[string][]byte

func (k keys) put(elems []*gpb.PathElem, v []byte) {
	if v != nil {
		k[string(pathkey.Encode(elems))] = v
	}
}

func at(base []*gpb.PathElem, names ...string) []*gpb.PathElem {
	out := append(base[:len(base):len(base)], make([]*gpb.PathElem, 0, len(names))...)
	for _, n := range names {
		out = append(out, &gpb.PathElem{Name: n})
	}
	return out
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

func (s *Snapshot) keys() keys {
	k := keys{}
	for name, p := range s.Paths {
		base := []*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": name}}, {Name: "state"}}
		k.put(at(base, "health-status"), str(p.Health))
		k.put(at(base, "latency"), u64(uint64(p.Latency/time.Microsecond)))
		k.put(at(base, "jitter"), u64(uint64(p.Jitter/time.Microsecond)))
		k.put(at(base, "loss"), percent(p.Loss))
		if p.Bandwidth > 0 {
			k.put(at(base, "bandwidth"), u64(p.Bandwidth))
		}
		k.put(at(base, "last-change"), ts(p.LastChange))
		k.put(at(base, "counters", "probes-sent"), u64(p.ProbesSent))
		k.put(at(base, "counters", "probes-received"), u64(p.ProbesReceived))
		k.put(at(base, "counters", "tx-packets"), u64(p.TxPackets))
		k.put(at(base, "counters", "tx-bytes"), u64(p.TxBytes))
	}
	for name, p := range s.Policies {
		base := []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": name}}, {Name: "state"}}
		if p.ActivePath != "" {
			k.put(at(base, "active-path"), str(p.ActivePath))
		}
		k.put(at(base, "counters", "packets-matched"), u64(p.PacketsMatched))
		k.put(at(base, "counters", "bytes-matched"), u64(p.BytesMatched))
		k.put(at(base, "counters", "active-flows"), u64(p.ActiveFlows))
	}
	for _, f := range s.Flows {
		key := map[string]string{
			"protocol":            strconv.Itoa(int(f.Protocol)),
			"source-address":      f.Src.Addr().String(),
			"source-port":         strconv.Itoa(int(f.Src.Port())),
			"destination-address": f.Dst.Addr().String(),
			"destination-port":    strconv.Itoa(int(f.Dst.Port())),
		}
		base := []*gpb.PathElem{{Name: "flows"}, {Name: "flow", Key: key}, {Name: "state"}}
		k.put(at(base, "protocol"), u64(uint64(f.Protocol)))
		k.put(at(base, "source-address"), str(f.Src.Addr().String()))
		k.put(at(base, "source-port"), u64(uint64(f.Src.Port())))
		k.put(at(base, "destination-address"), str(f.Dst.Addr().String()))
		k.put(at(base, "destination-port"), u64(uint64(f.Dst.Port())))
		k.put(at(base, "policy"), str(f.Policy))
		if f.Path != "" {
			k.put(at(base, "path"), str(f.Path))
		}
		k.put(at(base, "packets"), u64(f.Packets))
		k.put(at(base, "bytes"), u64(f.Bytes))
		k.put(at(base, "first-seen"), ts(f.FirstSeen))
		k.put(at(base, "last-seen"), ts(f.LastSeen))
	}
	for _, e := range s.Endpoints {
		status := "DOWN"
		if e.Up {
			status = "UP"
		}
		k.put([]*gpb.PathElem{{Name: "sites"}, {Name: "site", Key: map[string]string{"name": e.Site}}, {Name: "endpoints"},
			{Name: "endpoint", Key: map[string]string{"name": e.Name}}, {Name: "state"}, {Name: "oper-status"}}, str(status))
	}
	return k
}

// configKey is the key whose presence says that the list entry a measured
// key belongs to still exists: measured leaves are written only below
// configured paths, policies and endpoints (flows have no config).
func configKey(key []byte) []byte {
	elems, err := pathkey.Decode(key)
	if err != nil || len(elems) < 2 {
		return nil
	}
	switch elems[0].GetName() {
	case "paths", "policies":
		return pathkey.Encode(append(elems[:2:2], &gpb.PathElem{Name: "config"}, &gpb.PathElem{Name: "name"}))
	case "sites":
		if len(elems) >= 4 {
			return pathkey.Encode(append(elems[:4:4], &gpb.PathElem{Name: "config"}, &gpb.PathElem{Name: "name"}))
		}
	}
	return nil
}

// Write makes the measured leaves in the store match s, writing only what
// changed since the last Write. Leaves of a path, policy or endpoint that no
// longer exists in the configuration are not written.
func (w *Writer) Write(ctx context.Context, s *Snapshot) error {
	want := s.keys()
	first := w.last == nil
	if first {
		w.last = map[string][]byte{}
	}
	written := map[string][]byte{}
	deleted := []string{}
	err := w.st.Update(ctx, func(tx store.Tx) error {
		clear(written)
		deleted = deleted[:0]
		if first {
			// What an earlier run measured is stale.
			var dec pathkey.Decoder
			for _, root := range measuredRoots() {
				dec = pathkey.Decoder{}
				if err := tx.Scan(root, func(k, _ []byte) error {
					if elems, err := dec.Decode(k); err == nil && measured(elems) {
						if _, keep := want[string(k)]; !keep {
							deleted = append(deleted, string(k))
						}
					}
					return nil
				}); err != nil {
					return err
				}
			}
			for _, k := range deleted {
				tx.Delete([]byte(k))
			}
		}
		exists := map[string]bool{}
		for k, v := range want {
			if old, ok := w.last[k]; ok && bytes.Equal(old, v) {
				continue
			}
			if ck := configKey([]byte(k)); ck != nil {
				ok, seen := exists[string(ck)]
				if !seen {
					_, ok, _ = tx.Get(ck)
					exists[string(ck)] = ok
				}
				if !ok {
					continue
				}
			}
			tx.Set([]byte(k), v)
			written[k] = v
		}
		for k := range w.last {
			if _, ok := want[k]; !ok {
				tx.Delete([]byte(k))
				deleted = append(deleted, k)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, v := range written {
		w.last[k] = v
	}
	for _, k := range deleted {
		delete(w.last, k)
	}
	return nil
}

// Close deletes every leaf the writer wrote: a node that stops serving its
// site no longer reports measurements.
func (w *Writer) Close(ctx context.Context) error {
	if len(w.last) == 0 {
		return nil
	}
	err := w.st.Update(ctx, func(tx store.Tx) error {
		for k := range w.last {
			tx.Delete([]byte(k))
		}
		return nil
	})
	if err == nil {
		w.last = map[string][]byte{}
	}
	return err
}

// Event appends an event (PATH_UP, PATH_DOWN, FAILOVER …) to the node's
// /system/events.
func Event(ctx context.Context, st *store.Store, eng *txn.Engine, ev txn.Event) error {
	return st.Update(ctx, func(tx store.Tx) error { return eng.AppendEvent(tx, ev) })
}
