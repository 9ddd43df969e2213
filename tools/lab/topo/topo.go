// Package topo builds the Patronus lab (scenario 3 of the spec) for the
// three sites of scenario 1 out of network namespaces, with iproute2.
//
// Every packet of the lab stays inside the namespaces it creates: a "wan"
// namespace stands for the Internet and MPLS clouds, each site has a router
// namespace (where patronusd runs) and a LAN host namespace behind it, and a
// "mgmt" namespace bridges the routers' management interfaces for gNMI and
// Raft. Nothing in the caller's namespace is changed. The addressing plan is
// in DESIGN.md.
package topo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Cloud is one of the WAN clouds of the wan namespace. Its value is the
// routing table that holds its routes there.
type Cloud int

// The clouds. An endpoint joins the cloud of its transport: INTERNET and
// LTE links the Internet, MPLS links the MPLS cloud.
const (
	Internet Cloud = 100
	MPLS     Cloud = 200
)

func (c Cloud) String() string {
	switch c {
	case Internet:
		return "INTERNET"
	case MPLS:
		return "MPLS"
	}
	return fmt.Sprintf("Cloud(%d)", int(c))
}

// Endpoint is one WAN link of a site: a veth between the site's router
// (named Name) and the wan namespace (named WANIface()).
type Endpoint struct {
	// Site is the name of the site in the scenario ("branch-1").
	Site string
	// Name is the endpoint's name in the scenario and the name of the
	// router's interface ("inet", "mpls", "lte").
	Name string
	// Addr is the endpoint's WAN address, /32 on the router's interface.
	Addr  netip.Addr
	Cloud Cloud
	// Link numbers the link, 1..255: its transit network is
	// 100.64.Link.0/30 and its source-routing table on the router is
	// 100+Link.
	Link int
	// short is the site's short name, the prefix of WANIface.
	short string
}

// WANIface is the name of the link's interface in the wan namespace,
// e.g. "b1-mpls".
func (e Endpoint) WANIface() string { return e.short + "-" + e.Name }

// Gateway is the wan side's address on the link: the endpoint's next hop.
func (e Endpoint) Gateway() netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(e.Link), 1}) }

// Transit is the router's address on the link's /30 transit network.
func (e Endpoint) Transit() netip.Addr { return netip.AddrFrom4([4]byte{100, 64, byte(e.Link), 2}) }

// Table is the router's routing table for replies from Addr.
func (e Endpoint) Table() int { return 100 + e.Link }

// Site is one site of scenario 1 as the lab wires it.
type Site struct {
	// Name is the site's name in the scenario and its patronusd node name.
	Name string
	// Short names its namespaces and wan interfaces ("hq", "b1", "b2").
	Short string
	// Index numbers the site, 1..: its LAN is 10.Index.0.0/24 and its
	// management address 10.255.0.Index.
	Index     int
	Endpoints []Endpoint
}

// LAN is the site's LAN prefix.
func (s Site) LAN() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(s.Index), 0, 0}), 24)
}

// RouterLAN is the router's address on the LAN, the hosts' default gateway.
func (s Site) RouterLAN() netip.Addr { return netip.AddrFrom4([4]byte{10, byte(s.Index), 0, 1}) }

// Host is the LAN host's address.
func (s Site) Host() netip.Addr { return netip.AddrFrom4([4]byte{10, byte(s.Index), 0, 2}) }

// Mgmt is the router's address on the management network.
func (s Site) Mgmt() netip.Addr { return netip.AddrFrom4([4]byte{10, 255, 0, byte(s.Index)}) }

// Endpoint returns the site's endpoint called name.
func (s Site) Endpoint(name string) (Endpoint, bool) {
	for _, e := range s.Endpoints {
		if e.Name == name {
			return e, true
		}
	}
	return Endpoint{}, false
}

// Names of the lab's interfaces that are not WAN links.
const (
	// LANIface is the router's LAN interface, the site's lan-interface.
	LANIface = "lan0"
	// HostIface is the LAN host's interface.
	HostIface = "eth0"
	// MgmtIface is the router's management interface.
	MgmtIface = "mgmt0"
	// MgmtBridge is the bridge of the mgmt namespace.
	MgmtBridge = "br0"
)

// MgmtGateway is the mgmt namespace's address on the management network.
var MgmtGateway = netip.MustParseAddr("10.255.0.254")

// mgmtBits is the prefix length of the management network.
const mgmtBits = 24

func ep(site, short, name, addr string, c Cloud, link int) Endpoint {
	return Endpoint{Site: site, short: short, Name: name, Addr: netip.MustParseAddr(addr), Cloud: c, Link: link}
}

// Sites are the three sites of scenario 1.
var Sites = []Site{
	{Name: "hq", Short: "hq", Index: 1, Endpoints: []Endpoint{
		ep("hq", "hq", "inet", "203.0.113.1", Internet, 1),
		ep("hq", "hq", "mpls", "198.51.100.1", MPLS, 2),
	}},
	{Name: "branch-1", Short: "b1", Index: 2, Endpoints: []Endpoint{
		ep("branch-1", "b1", "inet", "203.0.113.11", Internet, 3),
		ep("branch-1", "b1", "mpls", "198.51.100.11", MPLS, 4),
	}},
	{Name: "branch-2", Short: "b2", Index: 3, Endpoints: []Endpoint{
		ep("branch-2", "b2", "inet", "203.0.113.21", Internet, 5),
		ep("branch-2", "b2", "lte", "192.0.2.21", Internet, 6),
	}},
}

// SiteByName returns the site called name ("branch-1") or with the short
// name name ("b1").
func SiteByName(name string) (Site, bool) {
	for _, s := range Sites {
		if s.Name == name || s.Short == name {
			return s, true
		}
	}
	return Site{}, false
}

// ErrExists is returned by Build when a namespace of the lab already exists.
var ErrExists = errors.New("topo: lab namespace already exists")

// Topology names the namespaces of one lab. A Topology made by Build owns
// them and Close deletes them; one made by New only names them.
type Topology struct {
	Prefix string
	// created lists the namespaces Build made, in creation order.
	created []string
}

// New returns the Topology of the lab with the given prefix without
// creating or checking anything; its Close does nothing.
func New(prefix string) *Topology { return &Topology{Prefix: prefix} }

// WAN is the wan namespace.
func (t *Topology) WAN() string { return t.Prefix + "wan" }

// MgmtNS is the management namespace.
func (t *Topology) MgmtNS() string { return t.Prefix + "mgmt" }

// Router is the router namespace of s.
func (t *Topology) Router(s Site) string { return t.Prefix + s.Short }

// LANHost is the LAN host namespace of s.
func (t *Topology) LANHost(s Site) string { return t.Prefix + s.Short + "-lan" }

// Namespaces lists every namespace of the lab, in creation order.
func (t *Topology) Namespaces() []string {
	ns := []string{t.WAN(), t.MgmtNS()}
	for _, s := range Sites {
		ns = append(ns, t.Router(s), t.LANHost(s))
	}
	return ns
}

// Build creates the lab's namespaces with the given prefix and wires them.
// It fails with ErrExists, creating nothing, when one of them exists
// already. On any other failure it deletes what it created.
func Build(ctx context.Context, prefix string) (*Topology, error) {
	t := New(prefix)
	for _, ns := range t.Namespaces() {
		if Exists(ns) {
			return nil, fmt.Errorf("%w: %s", ErrExists, ns)
		}
	}
	if err := t.build(ctx); err != nil {
		if cerr := t.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	return t, nil
}

// Exists reports whether the named network namespace exists.
func Exists(ns string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", ns))
	return err == nil
}

func (t *Topology) build(ctx context.Context) error {
	for _, ns := range t.Namespaces() {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return err
		}
		t.created = append(t.created, ns)
		// Before any interface exists, so that they all inherit it:
		// paths are asymmetric on purpose (a probe's reply may come
		// back on another link than ordinary routing would choose).
		// The lab is IPv4 only; without IPv6 no neighbour discovery or
		// MLD traffic muddies the interface counters.
		sysctls := map[string]string{
			"net/ipv4/conf/all/rp_filter":        "0",
			"net/ipv4/conf/default/rp_filter":    "0",
			"net/ipv6/conf/all/disable_ipv6":     "1",
			"net/ipv6/conf/default/disable_ipv6": "1",
		}
		if !strings.HasSuffix(ns, "-lan") && ns != t.MgmtNS() {
			sysctls["net/ipv4/ip_forward"] = "1"
		}
		if err := InNS(ns, func() error { return writeSysctls(sysctls) }); err != nil {
			return fmt.Errorf("topo: sysctls of %s: %w", ns, err)
		}
	}

	var wan, mgmt batch
	wan.add("link set lo up")
	for _, c := range []Cloud{Internet, MPLS} {
		// A destination outside its cloud is unreachable rather than
		// looked up in the main table (which knows the transit nets).
		wan.add("route add unreachable default table %d", c)
	}
	mgmt.add("link set lo up")
	mgmt.add("link add %s type bridge", MgmtBridge)
	mgmt.add("addr add %s/%d dev %s", MgmtGateway, mgmtBits, MgmtBridge)
	mgmt.add("link set %s up", MgmtBridge)
	for _, s := range Sites {
		for _, e := range s.Endpoints {
			wan.add("link add %s type veth peer name %s netns %s", e.WANIface(), e.Name, t.Router(s))
			wan.add("addr add %s/30 dev %s", e.Gateway(), e.WANIface())
			wan.add("link set %s up", e.WANIface())
			wan.add("rule add iif %s lookup %d pref 1000", e.WANIface(), e.Cloud)
		}
		mgmt.add("link add %s-mgmt type veth peer name %s netns %s", s.Short, MgmtIface, t.Router(s))
		mgmt.add("link set %s-mgmt master %s up", s.Short, MgmtBridge)
	}
	// Every cloud routes its endpoint addresses and, through each site's
	// first link in the cloud, the site's LAN.
	for _, s := range Sites {
		lanDone := map[Cloud]bool{}
		for _, e := range s.Endpoints {
			wan.add("route add %s/32 via %s dev %s table %d", e.Addr, e.Transit(), e.WANIface(), e.Cloud)
			if !lanDone[e.Cloud] {
				wan.add("route add %s via %s dev %s table %d", s.LAN(), e.Transit(), e.WANIface(), e.Cloud)
				lanDone[e.Cloud] = true
			}
		}
	}
	if err := wan.run(ctx, t.WAN()); err != nil {
		return err
	}
	if err := mgmt.run(ctx, t.MgmtNS()); err != nil {
		return err
	}

	for _, s := range Sites {
		var r, h batch
		r.add("link set lo up")
		for _, e := range s.Endpoints {
			r.add("addr add %s/32 dev %s", e.Addr, e.Name)
			r.add("addr add %s/30 dev %s", e.Transit(), e.Name)
			r.add("link set %s up", e.Name)
			// Replies from an endpoint address leave by its link.
			r.add("route add default via %s dev %s src %s table %d", e.Gateway(), e.Name, e.Addr, e.Table())
			r.add("rule add from %s lookup %d pref 1000", e.Addr, e.Table())
		}
		inet, ok := s.Endpoint("inet")
		if !ok {
			return fmt.Errorf("topo: site %s has no inet endpoint", s.Name)
		}
		r.add("route add default via %s dev %s src %s", inet.Gateway(), inet.Name, inet.Addr)
		r.add("link add %s type veth peer name %s netns %s", LANIface, HostIface, t.LANHost(s))
		r.add("addr add %s/24 dev %s", s.RouterLAN(), LANIface)
		r.add("link set %s up", LANIface)
		r.add("addr add %s/%d dev %s", s.Mgmt(), mgmtBits, MgmtIface)
		r.add("link set %s up", MgmtIface)
		if err := r.run(ctx, t.Router(s)); err != nil {
			return err
		}
		h.add("link set lo up")
		h.add("addr add %s/24 dev %s", s.Host(), HostIface)
		h.add("link set %s up", HostIface)
		h.add("route add default via %s", s.RouterLAN())
		if err := h.run(ctx, t.LANHost(s)); err != nil {
			return err
		}
	}
	return nil
}

// Close deletes every namespace Build created, with everything in it. It
// is safe to call more than once.
func (t *Topology) Close() error {
	var errs []error
	for i := len(t.created) - 1; i >= 0; i-- {
		if err := deleteNS(t.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	t.created = nil
	return errors.Join(errs...)
}

// Remove deletes every namespace of the lab with the given prefix that
// exists, whoever created it.
func Remove(prefix string) error {
	var errs []error
	for _, ns := range New(prefix).Namespaces() {
		if Exists(ns) {
			if err := deleteNS(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func deleteNS(ns string) error {
	// No context: deletion must happen even when the caller's has ended.
	if err := run(context.Background(), "ip", "netns", "del", ns); err != nil && Exists(ns) {
		return err
	}
	return nil
}

// batch collects `ip` commands for one namespace.
type batch struct{ b bytes.Buffer }

func (b *batch) add(format string, args ...any) {
	fmt.Fprintf(&b.b, format, args...)
	b.b.WriteByte('\n')
}

// run runs the batch in namespace ns with `ip -batch`, which stops at the
// first command that fails and names it.
func (b *batch) run(ctx context.Context, ns string) error {
	cmd := exec.CommandContext(ctx, "ip", "-n", ns, "-batch", "-")
	cmd.Stdin = &b.b
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("topo: ip -n %s -batch: %w: %s", ns, err, bytes.TrimSpace(out))
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("topo: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// writeSysctls writes /proc/sys entries, which belong to the network
// namespace of the calling thread.
func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Exec returns a command that runs name in namespace ns (ip netns exec).
// Like every process started by ip netns exec, it sees a /sys of that
// namespace.
func Exec(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// InNS runs fn on an OS thread that is in namespace ns, and returns its
// error. Sockets fn creates belong to ns for their whole life, wherever
// they are used afterwards. Goroutines started inside fn are not in ns,
// and neither is /sys (its view is fixed when it is mounted): use Exec or
// LinkStats for that.
//
// fn runs on a goroutine of its own whose thread is locked; the thread
// goes back to the caller's namespace afterwards, or, if that fails, is
// destroyed with the goroutine rather than reused.
func InNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- inNS(ns, fn)
	}()
	return <-errc
}

// inNS runs fn in ns on the calling locked thread and unlocks it only when
// it is back in its original namespace.
func inNS(ns string, fn func() error) error {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("topo: current namespace: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		return fmt.Errorf("topo: namespace %s: %w", ns, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("topo: enter namespace %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		return errors.Join(ferr, fmt.Errorf("topo: leave namespace %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Dialer returns a dial function for grpc.WithContextDialer that makes
// its TCP socket in namespace ns: a process in another namespace (a test
// in the root namespace) reaches patronusd on the management network
// through it, and no packet passes through the caller's namespace.
func Dialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNS(ns, func() (err error) {
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// Counters are an interface's counters.
type Counters struct {
	RxPackets, RxBytes, TxPackets, TxBytes, RxDropped, TxDropped uint64
}

// LinkStats returns the counters of interface ifname in namespace ns.
func LinkStats(ctx context.Context, ns, ifname string) (Counters, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-j", "-s", "link", "show", "dev", ifname).Output()
	if err != nil {
		return Counters{}, fmt.Errorf("topo: stats of %s in %s: %w", ifname, ns, err)
	}
	type dir struct {
		Bytes, Packets, Dropped uint64
	}
	var links []struct {
		Stats64 struct{ Rx, Tx dir } `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return Counters{}, fmt.Errorf("topo: stats of %s in %s: unexpected output %q: %v", ifname, ns, out, err)
	}
	s := links[0].Stats64
	return Counters{RxPackets: s.Rx.Packets, RxBytes: s.Rx.Bytes, TxPackets: s.Tx.Packets, TxBytes: s.Tx.Bytes,
		RxDropped: s.Rx.Dropped, TxDropped: s.Tx.Dropped}, nil
}

// Ifindex returns the index of interface ifname in namespace ns.
func Ifindex(ns, ifname string) (int, error) {
	var i int
	err := InNS(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		i = ifc.Index
		return nil
	})
	return i, err
}

// Wiring returns the site wiring of the lab as a JSON_IETF value for a gNMI
// Update at /sites: each site's lan-interface ["lan0"], and each
// endpoint's interface (the router's interface of that name) and gateway.
// It is meant to go in the same SetRequest that loads scenario 1.
func Wiring() []byte {
	type epConfig struct {
		Name      string `json:"name"`
		Interface string `json:"interface"`
		Gateway   string `json:"gateway"`
	}
	type endpoint struct {
		Name   string   `json:"name"`
		Config epConfig `json:"config"`
	}
	type siteConfig struct {
		Name         string   `json:"name"`
		LANInterface []string `json:"lan-interface"`
	}
	type site struct {
		Name      string     `json:"name"`
		Config    siteConfig `json:"config"`
		Endpoints struct {
			Endpoint []endpoint `json:"endpoint"`
		} `json:"endpoints"`
	}
	var doc struct {
		Site []site `json:"site"`
	}
	for _, s := range Sites {
		js := site{Name: s.Name, Config: siteConfig{Name: s.Name, LANInterface: []string{LANIface}}}
		for _, e := range s.Endpoints {
			js.Endpoints.Endpoint = append(js.Endpoints.Endpoint, endpoint{Name: e.Name,
				Config: epConfig{Name: e.Name, Interface: e.Name, Gateway: e.Gateway().String()}})
		}
		doc.Site = append(doc.Site, js)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err) // only strings and slices of them
	}
	return b
}
