// Package plan turns the replicated configuration into what one site's
// dataplane must do: which endpoints and paths are local, which policies
// classify traffic and in what order, and, given the measured health of the
// paths, which path each policy steers onto.
//
// It is pure: it reads a store.Reader and touches no kernel object, so the
// rules of tree.md ("STEER sends it on the first path in paths that is UP
// and within the SLA; if none is, the first that is not DOWN; if all are
// DOWN, ordinary routing") are tested here without privileges.
package plan

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Defaults of tree.md.
const (
	DefaultPort          = 4784
	DefaultProbeInterval = 200 * time.Millisecond
)

// Endpoint is one WAN link.
type Endpoint struct {
	Site, Name string
	Address    netip.Addr
	Port       uint16
	Interface  string     // local netdev; only meaningful on the node serving Site
	Gateway    netip.Addr // next hop for steered traffic; invalid if none
	Bandwidth  uint64     // kbit/s; 0 if not configured
}

// AddrPort is the endpoint's probe responder address.
func (e Endpoint) AddrPort() netip.AddrPort { return netip.AddrPortFrom(e.Address, e.Port) }

// Path is a path whose source endpoint belongs to the local site.
type Path struct {
	Name          string
	Index         uint16 // stable while the path exists; selects its fwmark and table
	Src, Dst      Endpoint
	Enabled       bool
	ProbeInterval time.Duration
	Cost          uint32
}

// Bandwidth is the smaller provisioned bandwidth of the two endpoints (0 if
// neither has one).
func (p *Path) Bandwidth() uint64 {
	switch {
	case p.Src.Bandwidth == 0:
		return p.Dst.Bandwidth
	case p.Dst.Bandwidth == 0:
		return p.Src.Bandwidth
	}
	return min(p.Src.Bandwidth, p.Dst.Bandwidth)
}

// Action is what a policy does with the traffic it matches.
type Action string

// Actions of tree.md.
const (
	Steer Action = "STEER"
	Drop  Action = "DROP"
	Pass  Action = "PASS"
)

// PortRange is an inclusive range; the zero value matches any port.
type PortRange struct{ Lo, Hi uint16 }

// Any reports whether r matches every port.
func (r PortRange) Any() bool { return r.Lo == 0 && r.Hi == 0 }

// SLA bounds a steered path's measured quality; zero fields do not bound.
type SLA struct {
	MaxLatency, MaxJitter time.Duration
	MaxLoss               float64 // percent
}

// Policy is one traffic policy.
type Policy struct {
	Name     string
	ID       uint32 // stable while the policy exists; indexes its counters
	Priority uint32
	Enabled  bool
	Src, Dst netip.Prefix // invalid: any
	Protocol int          // -1: any
	SrcPorts PortRange
	DstPorts PortRange
	DSCP     int // -1: any
	Action   Action
	// Paths are the policy's preferred paths that are local to this site,
	// in preference order; paths of other sites are left out.
	Paths   []string
	SetDSCP int // -1: none
	SLA     SLA
}

// Plan is the dataplane's desired state for one site.
type Plan struct {
	Site          string
	LANInterfaces []string
	Endpoints     []Endpoint       // the site's own endpoints
	Paths         map[string]*Path // local paths by name
	Policies      []Policy         // by priority, lowest first

	tightest map[string]SLA // by local path; see TightestSLA
}

// PathsByIndex returns the local paths ordered by index.
func (p *Plan) PathsByIndex() []*Path {
	out := make([]*Path, 0, len(p.Paths))
	for _, x := range p.Paths {
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b *Path) int { return cmp.Compare(a.Index, b.Index) })
	return out
}

// IDs hands out small stable numbers to names: a name keeps its number for
// as long as it is in every set passed to Assign, and a freed number is
// reused only by a later name.
type IDs struct {
	first uint32
	byKey map[string]uint32
}

// NewIDs returns an allocator whose first number is first.
func NewIDs(first uint32) *IDs { return &IDs{first: first, byKey: map[string]uint32{}} }

// Assign keeps the numbers of names already known, drops the others, and
// numbers new names with the lowest free numbers.
func (ids *IDs) Assign(names []string) map[string]uint32 {
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	used := map[uint32]bool{}
	for n, id := range ids.byKey {
		if !keep[n] {
			delete(ids.byKey, n)
			continue
		}
		used[id] = true
	}
	next := ids.first
	for _, n := range slices.Sorted(slices.Values(names)) {
		if _, ok := ids.byKey[n]; ok {
			continue
		}
		for used[next] {
			next++
		}
		ids.byKey[n] = next
		used[next] = true
	}
	out := make(map[string]uint32, len(ids.byKey))
	for n, id := range ids.byKey {
		out[n] = id
	}
	return out
}

// entry collects one list entry's leaves, by path below the entry (such as
// "config/address" or "match/config/protocol").
type entry map[string]*gpb.TypedValue

func (e entry) str(k string) string { return e[k].GetStringVal() }

func (e entry) uint(k string) (uint64, bool) {
	tv, ok := e[k]
	if !ok {
		return 0, false
	}
	return tv.GetUintVal(), true
}

func (e entry) bool(k string, def bool) bool {
	tv, ok := e[k]
	if !ok {
		return def
	}
	return tv.GetBoolVal()
}

// readList reads, in one scan, every entry of the list at elems (a list's
// container) and of the lists nested in it down to depth levels, keyed by
// the entry's key values joined with "/" ("hq" for a site, "hq/inet" for one
// of its endpoints); each entry holds its own leaves by path below it.
func readList(r store.Reader, elems []*gpb.PathElem, depth int) (map[string]entry, error) {
	prefix := pathkey.Encode(elems)
	out := map[string]entry{}
	var dec pathkey.Decoder
	err := r.Scan(prefix, func(key, value []byte) error {
		es, err := dec.Decode(key)
		if err != nil {
			return err
		}
		var keys, leaf []string
		for _, e := range es[len(elems):] {
			if len(e.GetKey()) > 0 && len(keys) < depth {
				for _, k := range slices.Sorted(maps.Keys(e.GetKey())) {
					keys = append(keys, e.GetKey()[k])
				}
				leaf = leaf[:0]
				continue
			}
			leaf = append(leaf, e.GetName())
		}
		if len(keys) == 0 {
			return nil
		}
		tv, err := txn.DecodeValue(value)
		if err != nil {
			return fmt.Errorf("plan: %s: %w", pathkey.String(es), err)
		}
		id := strings.Join(keys, "/")
		if out[id] == nil {
			out[id] = entry{}
		}
		out[id][strings.Join(leaf, "/")] = tv
		return nil
	})
	return out, err
}

func elems(names ...string) []*gpb.PathElem {
	out := make([]*gpb.PathElem, len(names))
	for i, n := range names {
		out[i] = &gpb.PathElem{Name: n}
	}
	return out
}

func addr(e entry, k string) netip.Addr {
	a, err := netip.ParseAddr(e.str(k))
	if err != nil {
		return netip.Addr{}
	}
	return a
}

func prefix(e entry, k string) netip.Prefix {
	p, err := netip.ParsePrefix(e.str(k))
	if err != nil {
		return netip.Prefix{}
	}
	return p.Masked()
}

// ParsePortRange parses tree.md's port-range: "N" or "N..M".
func ParsePortRange(s string) (PortRange, error) {
	if s == "" {
		return PortRange{}, nil
	}
	lo, hi, found := strings.Cut(s, "..")
	if !found {
		hi = lo
	}
	l, err1 := strconv.ParseUint(lo, 10, 16)
	h, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || l > h {
		return PortRange{}, fmt.Errorf("plan: bad port range %q", s)
	}
	return PortRange{uint16(l), uint16(h)}, nil
}

// Read builds the plan of site from the configuration in r. paths and
// policies number the local paths (from 1) and the policies (from 0).
func Read(r store.Reader, site string, pathIDs, policyIDs *IDs) (*Plan, error) {
	p := &Plan{Site: site, Paths: map[string]*Path{}}
	sites, err := readList(r, elems("sites"), 2)
	if err != nil {
		return nil, err
	}
	if s, ok := sites[site]; ok {
		if ll, ok := s["config/lan-interface"]; ok {
			for _, v := range ll.GetLeaflistVal().GetElement() {
				p.LANInterfaces = append(p.LANInterfaces, v.GetStringVal())
			}
		}
	}
	endpoints := map[string]Endpoint{}
	for id, e := range sites {
		siteName, name, isEndpoint := strings.Cut(id, "/")
		if !isEndpoint {
			continue
		}
		ep := Endpoint{Site: siteName, Name: name, Address: addr(e, "config/address"), Port: DefaultPort,
			Interface: e.str("config/interface"), Gateway: addr(e, "config/gateway")}
		if port, ok := e.uint("config/port"); ok {
			ep.Port = uint16(port)
		}
		ep.Bandwidth, _ = e.uint("config/bandwidth")
		endpoints[id] = ep
		if siteName == site {
			p.Endpoints = append(p.Endpoints, ep)
		}
	}
	slices.SortFunc(p.Endpoints, func(a, b Endpoint) int { return cmp.Compare(a.Name, b.Name) })

	paths, err := readList(r, elems("paths"), 1)
	if err != nil {
		return nil, err
	}
	var local []string
	for name, e := range paths {
		if e.str("config/source-site") != site {
			continue
		}
		src, ok1 := endpoints[site+"/"+e.str("config/source-endpoint")]
		dst, ok2 := endpoints[e.str("config/destination-site")+"/"+e.str("config/destination-endpoint")]
		if !ok1 || !ok2 {
			continue // the leafrefs make this impossible in a validated tree
		}
		pa := &Path{Name: name, Src: src, Dst: dst, Enabled: e.bool("config/enabled", true), ProbeInterval: DefaultProbeInterval}
		if ms, ok := e.uint("config/probe-interval"); ok && ms > 0 {
			pa.ProbeInterval = time.Duration(ms) * time.Millisecond
		}
		if c, ok := e.uint("config/cost"); ok {
			pa.Cost = uint32(c)
		}
		p.Paths[name] = pa
		local = append(local, name)
	}
	for name, id := range pathIDs.Assign(local) {
		p.Paths[name].Index = uint16(id)
	}

	pols, err := readList(r, elems("policies"), 1)
	if err != nil {
		return nil, err
	}
	var names []string
	for name, e := range pols {
		pol := Policy{Name: name, Enabled: e.bool("config/enabled", true), Protocol: -1, DSCP: -1, SetDSCP: -1,
			Action: Action(e.str("action/config/type")), Src: prefix(e, "match/config/source-prefix"), Dst: prefix(e, "match/config/destination-prefix")}
		if pr, ok := e.uint("config/priority"); ok {
			pol.Priority = uint32(pr)
		}
		if v, ok := e.uint("match/config/protocol"); ok {
			pol.Protocol = int(v)
		}
		if v, ok := e.uint("match/config/dscp"); ok {
			pol.DSCP = int(v)
		}
		if v, ok := e.uint("action/config/set-dscp"); ok {
			pol.SetDSCP = int(v)
		}
		if pol.SrcPorts, err = ParsePortRange(e.str("match/config/source-port")); err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		if pol.DstPorts, err = ParsePortRange(e.str("match/config/destination-port")); err != nil {
			return nil, fmt.Errorf("policy %s: %w", name, err)
		}
		if ll, ok := e["action/config/paths"]; ok {
			for _, v := range ll.GetLeaflistVal().GetElement() {
				if _, local := p.Paths[v.GetStringVal()]; local {
					pol.Paths = append(pol.Paths, v.GetStringVal())
				}
			}
		}
		if v, ok := e.uint("action/sla/config/max-latency"); ok {
			pol.SLA.MaxLatency = time.Duration(v) * time.Microsecond
		}
		if v, ok := e.uint("action/sla/config/max-jitter"); ok {
			pol.SLA.MaxJitter = time.Duration(v) * time.Microsecond
		}
		if tv, ok := e["action/sla/config/max-loss"]; ok {
			pol.SLA.MaxLoss = percent(tv)
		}
		p.Policies = append(p.Policies, pol)
		names = append(names, name)
	}
	ids := policyIDs.Assign(names)
	for i := range p.Policies {
		p.Policies[i].ID = ids[p.Policies[i].Name]
	}
	slices.SortFunc(p.Policies, func(a, b Policy) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.Name, b.Name))
	})
	p.tightest = map[string]SLA{}
	for name := range p.Paths {
		p.tightest[name] = p.tightestSLA(name)
	}
	return p, nil
}

// percent reads a percentage leaf (decimal64 with 3 fraction digits).
func percent(tv *gpb.TypedValue) float64 {
	if d := tv.GetDecimalVal(); d != nil {
		f := float64(d.GetDigits())
		for range d.GetPrecision() {
			f /= 10
		}
		return f
	}
	if f, err := strconv.ParseFloat(tv.GetStringVal(), 64); err == nil {
		return f
	}
	return tv.GetDoubleVal()
}
