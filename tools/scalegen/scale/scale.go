// Package scale generates scenario 2 of the Patronus reference scenarios, the
// scale set: 100 sites with 4 endpoints each, 1,000 paths, 1,000 policies
// with unique priorities 1..1000 and mixed matches, and 10,000 active flows
// classified by those policies.
//
// The set is generated deterministically from a seed (math/rand/v2 with
// rand.NewPCG(seed, seed)): the same seed always gives byte-identical
// output. Every address and prefix is taken from the benchmark range
// 198.18.0.0/15 (RFC 2544) or the documentation range 2001:db8::/32
// (RFC 3849), so nothing generated can collide with a real network.
//
// The configuration is a JSON_IETF document for the root path "/", with
// module-qualified top-level containers ("patronus-sites:sites",
// "patronus-paths:paths", "patronus-policies:policies"), config containers
// only, and 64-bit integers and decimal64 values encoded as strings as
// RFC 7951 requires.
package scale

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
)

// Sizes of the scale set, as scenario 2 of the spec fixes them.
const (
	NumSites               = 100
	EndpointsPerSite       = 4
	NumPaths               = 1000
	NumPolicies            = 1000
	NumFlows               = 10000
	ProtocolTCP      uint8 = 6
	ProtocolUDP      uint8 = 17
	ProtocolICMP     uint8 = 1
)

// transports are cycled over the endpoints of a site: endpoint eN has
// transports[N]. Paths only join endpoints with the same index, so both
// ends of a path always share a transport and an address family.
var transports = [EndpointsPerSite]string{"INTERNET", "MPLS", "LTE", "SATELLITE"}

var bandwidths = []uint64{10000, 20000, 50000, 100000, 200000, 500000, 1000000}

var dscps = []uint8{0, 10, 12, 14, 18, 20, 22, 26, 34, 46}

// Flow is one active flow of the scale set: its five-tuple and the policy
// and path that classify and carry it. Path is empty when the policy does
// not steer (DROP or PASS).
type Flow struct {
	Protocol           uint8  `json:"protocol"`
	SourceAddress      string `json:"source-address"`
	SourcePort         uint16 `json:"source-port"`
	DestinationAddress string `json:"destination-address"`
	DestinationPort    uint16 `json:"destination-port"`
	Policy             string `json:"policy"`
	Path               string `json:"path"`
}

// Set is a generated scale set.
type Set struct {
	// Config is the JSON_IETF document for the root path "/".
	Config map[string]any
	// Flows are the active flows, each classified by the first matching
	// enabled policy in priority order.
	Flows []Flow
}

// JSON returns Config encoded as indented JSON_IETF.
func (s *Set) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(s.Config, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// FlowsJSON returns Flows encoded as an indented JSON array.
func (s *Set) FlowsJSON() ([]byte, error) {
	b, err := json.MarshalIndent(s.Flows, "", " ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

type policy struct {
	name     string
	priority uint32
	srcPfx   netip.Prefix // invalid: absent
	dstPfx   netip.Prefix
	proto    uint8 // 0: absent (any)
	srcPort  string
	dstPort  string
	dscp     int // -1: absent
	action   string
	paths    []string
	setDSCP  int // -1: absent
	sla      map[string]any
}

type gen struct {
	r *rand.Rand
}

// Generate builds the scale set for seed.
func Generate(seed int64) *Set {
	g := &gen{r: rand.New(rand.NewPCG(uint64(seed), uint64(seed)))}

	sites := g.sites()
	paths, pathNames := g.paths()
	pols := g.policies(pathNames)
	flows := g.flows(pols)

	polList := make([]any, 0, len(pols))
	for _, p := range pols {
		polList = append(polList, p.json())
	}
	return &Set{
		Config: map[string]any{
			"patronus-sites:sites":       map[string]any{"site": sites},
			"patronus-paths:paths":       map[string]any{"path": paths},
			"patronus-policies:policies": map[string]any{"policy": polList},
		},
		Flows: flows,
	}
}

// SiteName is the name of site i.
func SiteName(i int) string { return fmt.Sprintf("site-%03d", i) }

// EndpointName is the name of endpoint j of a site.
func EndpointName(j int) string { return fmt.Sprintf("e%d", j) }

// endpointAddress is the WAN address of endpoint j of site i: IPv4
// 198.18.<i>.<j+1> for e0..e2, IPv6 2001:db8:0:<i in hex>::<j+1> for e3,
// in RFC 5952 form.
func endpointAddress(i, j int) string {
	if j == EndpointsPerSite-1 {
		a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 6: byte(i >> 8), 7: byte(i), 15: byte(j + 1)}
		return netip.AddrFrom16(a).String()
	}
	return netip.AddrFrom4([4]byte{198, 18, byte(i), byte(j + 1)}).String()
}

func (g *gen) sites() []any {
	sites := make([]any, 0, NumSites)
	for i := range NumSites {
		eps := make([]any, 0, EndpointsPerSite)
		for j := range EndpointsPerSite {
			cfg := map[string]any{
				"name":      EndpointName(j),
				"address":   endpointAddress(i, j),
				"transport": transports[j],
				"bandwidth": strconv.FormatUint(bandwidths[g.r.IntN(len(bandwidths))], 10),
				"interface": fmt.Sprintf("wan%d", j),
			}
			eps = append(eps, map[string]any{"name": EndpointName(j), "config": cfg})
		}
		name := SiteName(i)
		sites = append(sites, map[string]any{
			"name": name,
			"config": map[string]any{
				"name":          name,
				"description":   fmt.Sprintf("Scale site %d", i),
				"location":      fmt.Sprintf("Region %d", i/10),
				"lan-interface": []any{"lan0"},
			},
			"endpoints": map[string]any{"endpoint": eps},
		})
	}
	return sites
}

func (g *gen) paths() ([]any, []string) {
	seen := make(map[string]bool, NumPaths)
	paths := make([]any, 0, NumPaths)
	names := make([]string, 0, NumPaths)
	for len(paths) < NumPaths {
		src := g.r.IntN(NumSites)
		dst := g.r.IntN(NumSites - 1)
		if dst >= src {
			dst++
		}
		ep := EndpointName(g.r.IntN(EndpointsPerSite))
		name := fmt.Sprintf("%s-%s--%s-%s", SiteName(src), ep, SiteName(dst), ep)
		if seen[name] {
			continue
		}
		seen[name] = true
		cfg := map[string]any{
			"name":                 name,
			"source-site":          SiteName(src),
			"source-endpoint":      ep,
			"destination-site":     SiteName(dst),
			"destination-endpoint": ep,
		}
		if g.r.IntN(4) == 0 {
			cfg["cost"] = g.r.IntN(100)
		}
		if g.r.IntN(10) == 0 {
			cfg["probe-interval"] = []int{100, 500, 1000}[g.r.IntN(3)]
		}
		paths = append(paths, map[string]any{"name": name, "config": cfg})
		names = append(names, name)
	}
	return paths, names
}

// prefix returns a random prefix inside 198.18.0.0/15 or 2001:db8::/32.
func (g *gen) prefix(v6 bool) netip.Prefix {
	if v6 {
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		bits := []int{48, 56, 64, 64, 128}[g.r.IntN(5)]
		for k := 4; k < 16; k++ {
			b[k] = byte(g.r.IntN(256))
		}
		if bits == 48 || bits == 64 {
			b[4], b[5] = 0, byte(g.r.IntN(NumSites))
		}
		return netip.PrefixFrom(netip.AddrFrom16(b), bits).Masked()
	}
	b := [4]byte{198, 18 + byte(g.r.IntN(2)), byte(g.r.IntN(256)), byte(g.r.IntN(256))}
	bits := []int{20, 24, 24, 24, 28, 32}[g.r.IntN(6)]
	return netip.PrefixFrom(netip.AddrFrom4(b), bits).Masked()
}

func (g *gen) portSpec() string {
	switch g.r.IntN(3) {
	case 0:
		lo := 1024 + g.r.IntN(60000)
		return fmt.Sprintf("%d..%d", lo, lo+g.r.IntN(1000))
	default:
		return strconv.Itoa([]int{22, 23, 53, 80, 123, 443, 445, 993, 1194, 3389, 5060, 8080, 8443}[g.r.IntN(13)])
	}
}

func (g *gen) policies(pathNames []string) []*policy {
	prios := g.r.Perm(NumPolicies)
	pols := make([]*policy, NumPolicies)
	for i := range NumPolicies {
		p := &policy{
			name:     fmt.Sprintf("policy-%04d", i),
			priority: uint32(prios[i] + 1),
			dscp:     -1,
			setDSCP:  -1,
		}
		pols[i] = p
		if p.priority == NumPolicies {
			// The lowest-priority policy is the catch-all.
			p.action = "PASS"
			continue
		}
		v6 := g.r.IntN(5) == 0
		if g.r.IntN(3) == 0 {
			p.srcPfx = g.prefix(v6)
		}
		// Every policy but the catch-all names a destination, so that
		// policies overlap rarely and flows spread over many of them.
		p.dstPfx = g.prefix(v6)
		switch g.r.IntN(3) {
		case 0:
			p.proto = ProtocolTCP
		case 1:
			p.proto = ProtocolUDP
		}
		if p.proto != 0 {
			if g.r.IntN(4) == 0 {
				p.srcPort = g.portSpec()
			}
			if g.r.IntN(3) != 0 {
				p.dstPort = g.portSpec()
			}
		}
		if g.r.IntN(6) == 0 {
			p.dscp = int(dscps[g.r.IntN(len(dscps))])
		}
		switch n := g.r.IntN(20); {
		case n < 12:
			p.action = "STEER"
			k := 1 + g.r.IntN(3)
			for _, idx := range g.r.Perm(len(pathNames))[:k] {
				p.paths = append(p.paths, pathNames[idx])
			}
			if g.r.IntN(5) < 2 {
				p.sla = map[string]any{}
				if g.r.IntN(2) == 0 {
					p.sla["max-latency"] = strconv.Itoa(20000 + 10000*g.r.IntN(30))
				}
				if g.r.IntN(2) == 0 {
					p.sla["max-jitter"] = strconv.Itoa(5000 + 5000*g.r.IntN(10))
				}
				p.sla["max-loss"] = fmt.Sprintf("%d.%03d", g.r.IntN(5), g.r.IntN(1000))
			}
		case n < 15:
			p.action = "DROP"
		default:
			p.action = "PASS"
		}
		if p.action != "DROP" && g.r.IntN(5) == 0 {
			p.setDSCP = int(dscps[g.r.IntN(len(dscps))])
		}
	}
	return pols
}

func (p *policy) json() map[string]any {
	entry := map[string]any{
		"name": p.name,
		"config": map[string]any{
			"name":        p.name,
			"priority":    p.priority,
			"description": fmt.Sprintf("Scale policy %s (%s)", p.name, p.action),
		},
	}
	m := map[string]any{}
	if p.srcPfx.IsValid() {
		m["source-prefix"] = p.srcPfx.String()
	}
	if p.dstPfx.IsValid() {
		m["destination-prefix"] = p.dstPfx.String()
	}
	if p.proto != 0 {
		m["protocol"] = p.proto
	}
	if p.srcPort != "" {
		m["source-port"] = p.srcPort
	}
	if p.dstPort != "" {
		m["destination-port"] = p.dstPort
	}
	if p.dscp >= 0 {
		m["dscp"] = p.dscp
	}
	if len(m) > 0 {
		entry["match"] = map[string]any{"config": m}
	}
	a := map[string]any{"type": p.action}
	if len(p.paths) > 0 {
		ps := make([]any, len(p.paths))
		for i, n := range p.paths {
			ps[i] = n
		}
		a["paths"] = ps
	}
	if p.setDSCP >= 0 {
		a["set-dscp"] = p.setDSCP
	}
	action := map[string]any{"config": a}
	if len(p.sla) > 0 {
		action["sla"] = map[string]any{"config": p.sla}
	}
	entry["action"] = action
	return entry
}

// parsePorts parses a port-range, "N" or "N..M".
func parsePorts(s string) (lo, hi int) {
	a, b, ok := strings.Cut(s, "..")
	lo, _ = strconv.Atoi(a)
	hi = lo
	if ok {
		hi, _ = strconv.Atoi(b)
	}
	return lo, hi
}

func inPorts(spec string, port uint16) bool {
	if spec == "" {
		return true
	}
	lo, hi := parsePorts(spec)
	return int(port) >= lo && int(port) <= hi
}

type packet struct {
	proto            uint8
	src, dst         netip.Addr
	srcPort, dstPort uint16
	dscp             uint8
}

func (p *policy) matches(k packet) bool {
	if p.srcPfx.IsValid() && !p.srcPfx.Contains(k.src) {
		return false
	}
	if p.dstPfx.IsValid() && !p.dstPfx.Contains(k.dst) {
		return false
	}
	if p.proto != 0 && p.proto != k.proto {
		return false
	}
	if !inPorts(p.srcPort, k.srcPort) || !inPorts(p.dstPort, k.dstPort) {
		return false
	}
	return p.dscp < 0 || uint8(p.dscp) == k.dscp
}

// addrIn returns a random address inside pfx.
func (g *gen) addrIn(pfx netip.Prefix) netip.Addr {
	a := pfx.Addr().AsSlice()
	for bit := pfx.Bits(); bit < len(a)*8; bit++ {
		if g.r.IntN(2) == 1 {
			a[bit/8] |= 0x80 >> (bit % 8)
		}
	}
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

var (
	benchV4 = netip.MustParsePrefix("198.18.0.0/15")
	docV6   = netip.MustParsePrefix("2001:db8::/32")
)

func (g *gen) port(spec string) uint16 {
	if spec == "" {
		return uint16(1024 + g.r.IntN(64511))
	}
	lo, hi := parsePorts(spec)
	return uint16(lo + g.r.IntN(hi-lo+1))
}

// flows makes NumFlows distinct flows. Each is drawn to match a randomly
// chosen target policy, then classified by the first matching policy in
// priority order (an earlier policy may shadow the target).
func (g *gen) flows(pols []*policy) []Flow {
	byPrio := make([]*policy, len(pols))
	for _, p := range pols {
		byPrio[p.priority-1] = p
	}
	seen := make(map[packet]bool, NumFlows)
	flows := make([]Flow, 0, NumFlows)
	for len(flows) < NumFlows {
		t := pols[g.r.IntN(len(pols))]
		v6 := g.r.IntN(5) == 0
		if t.srcPfx.IsValid() {
			v6 = t.srcPfx.Addr().Is6()
		} else if t.dstPfx.IsValid() {
			v6 = t.dstPfx.Addr().Is6()
		}
		whole := benchV4
		if v6 {
			whole = docV6
		}
		srcPfx, dstPfx := t.srcPfx, t.dstPfx
		if !srcPfx.IsValid() {
			srcPfx = whole
		}
		if !dstPfx.IsValid() {
			dstPfx = whole
		}
		k := packet{proto: t.proto, src: g.addrIn(srcPfx), dst: g.addrIn(dstPfx)}
		if k.proto == 0 {
			k.proto = []uint8{ProtocolTCP, ProtocolUDP, ProtocolICMP}[g.r.IntN(3)]
		}
		if k.proto != ProtocolICMP {
			k.srcPort = g.port(t.srcPort)
			k.dstPort = g.port(t.dstPort)
		}
		if t.dscp >= 0 {
			k.dscp = uint8(t.dscp)
		}
		key := k
		key.dscp = 0 // flows are keyed by the five-tuple only
		if seen[key] {
			continue
		}
		var hit *policy
		for _, p := range byPrio {
			if p.matches(k) {
				hit = p
				break
			}
		}
		if hit == nil { // unreachable: the catch-all matches everything
			continue
		}
		seen[key] = true
		f := Flow{
			Protocol:           k.proto,
			SourceAddress:      k.src.String(),
			SourcePort:         k.srcPort,
			DestinationAddress: k.dst.String(),
			DestinationPort:    k.dstPort,
			Policy:             hit.name,
		}
		if hit.action == "STEER" {
			f.Path = hit.paths[0]
		}
		flows = append(flows, f)
	}
	return flows
}
