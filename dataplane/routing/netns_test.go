//go:build linux

package routing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The tests below work in network namespaces they create and delete; every
// netlink call goes through a handle bound to one of them and every socket
// is opened inside one, so the host's routing is never read or changed.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces and install policy routing in them")
	}
}

// testNS is a network namespace created for one test and deleted after it.
type testNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func newTestNS(t *testing.T) *testNS {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("patronus-rt-%016x", rand.Uint64())
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	ns, err := createNamedNS(name)
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { ns.Close() })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	n := &testNS{name: name, ns: ns, h: h}
	n.up(t, "lo")
	return n
}

// createNamedNS creates a named namespace from a goroutine of its own.
// NewNamed moves the calling thread into the new namespace; the thread is
// unlocked only once it is back, so if it cannot return, the goroutine ends
// locked and the runtime discards the thread.
func createNamedNS(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- result{ns: netns.None(), err: err}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name)
		if serr := netns.Set(orig); serr != nil {
			done <- result{ns: ns, err: errors.Join(err, serr)}
			return
		}
		runtime.UnlockOSThread()
		done <- result{ns: ns, err: err}
	}()
	r := <-done
	return r.ns, r.err
}

// do runs f on a thread inside n, from a goroutine of its own that returns
// the thread to its namespace afterwards (or discards it, as above). Sockets
// opened by f stay in n.
func (n *testNS) do(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			done <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			done <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		done <- ferr
	}()
	return <-done
}

func (n *testNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", n.name, name, err)
	}
	return l
}

func (n *testNS) up(t *testing.T, name string) {
	t.Helper()
	if err := n.h.LinkSetUp(n.link(t, name)); err != nil {
		t.Fatalf("%s: set %s up: %v", n.name, name, err)
	}
}

// veth creates a veth pair, name in n and peerName in peer (or in n too when
// peer is nil), both up.
func (n *testNS) veth(t *testing.T, name string, peer *testNS, peerName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: peerName}
	v.Name = name
	if peer != nil {
		v.PeerNamespace = netlink.NsFd(int(peer.ns))
	} else {
		peer = n
	}
	if err := n.h.LinkAdd(v); err != nil {
		t.Fatalf("%s: add veth %s/%s: %v", n.name, name, peerName, err)
	}
	n.up(t, name)
	peer.up(t, peerName)
}

// addr adds prefix to the link called dev, without duplicate address
// detection so that IPv6 addresses are usable at once.
func (n *testNS) addr(t *testing.T, dev, prefix string) {
	t.Helper()
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if a.IP.To4() == nil {
		a.Flags = syscall.IFA_F_NODAD
	}
	if err := n.h.AddrAdd(n.link(t, dev), a); err != nil {
		t.Fatalf("%s: add %s to %s: %v", n.name, prefix, dev, err)
	}
}

func (n *testNS) manager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Options{Handle: n.h})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

// kRule and kRoute are rules and routes as the tests compare them.
type kRule struct {
	Family, Priority int
	Mark, Mask       uint32
	Table            int
}

type kRoute struct {
	Family, Table, Protocol int
	Dst, Gw, Dev            string
}

func (n *testNS) ifName(index int) string {
	l, err := n.h.LinkByIndex(index)
	if err != nil {
		return fmt.Sprintf("ifindex %d", index)
	}
	return l.Attrs().Name
}

// dump returns the rules and routes that come anywhere near the reserved
// ranges, judged more broadly than the package does: a rule with a priority
// in the band, a Patronus mark or a table in the range, and a route in a
// table of the range or with the Patronus protocol.
func (n *testNS) dump(t *testing.T) ([]kRule, []kRoute) {
	t.Helper()
	var rules []kRule
	var routes []kRoute
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := n.h.RuleList(fam)
		if err != nil {
			t.Fatalf("list rules: %v", err)
		}
		for _, r := range rs {
			inBand := r.Priority >= PriorityMin && r.Priority <= PriorityMax
			inTables := r.Table >= int(TableBase) && r.Table <= int(TableBase)+0xFFFF
			if inBand || inTables || r.Mark&MarkMask == MarkBase {
				var mask uint32
				if r.Mask != nil {
					mask = *r.Mask
				}
				rules = append(rules, kRule{Family: r.Family, Priority: r.Priority, Mark: r.Mark, Mask: mask, Table: r.Table})
			}
		}
		rts, err := n.h.RouteListFiltered(fam, &netlink.Route{}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatalf("list routes: %v", err)
		}
		for _, r := range rts {
			inTables := r.Table >= int(TableBase) && r.Table <= int(TableBase)+0xFFFF
			if inTables || r.Protocol == Protocol {
				kr := kRoute{Family: r.Family, Table: r.Table, Protocol: int(r.Protocol), Dst: r.Dst.String(), Dev: n.ifName(r.LinkIndex)}
				if r.Gw != nil {
					kr.Gw = r.Gw.String()
				}
				routes = append(routes, kr)
			}
		}
	}
	sortK(rules, routes)
	return rules, routes
}

func sortK(rules []kRule, routes []kRoute) {
	slices.SortFunc(rules, func(a, b kRule) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
	slices.SortFunc(routes, func(a, b kRoute) int { return strings.Compare(fmt.Sprint(a), fmt.Sprint(b)) })
}

// expected returns the rules and routes Apply should leave for routes, all
// of whose interfaces are up and IPv6-enabled.
func expected(routes []Route) ([]kRule, []kRoute) {
	var rules []kRule
	var rts []kRoute
	for _, r := range routes {
		fams := []int{netlink.FAMILY_V4, netlink.FAMILY_V6}
		if r.Gateway.IsValid() && r.Gateway.Unmap().Is4() {
			fams = fams[:1]
		} else if r.Gateway.IsValid() {
			fams = fams[1:]
		}
		for _, fam := range fams {
			table := int(TableBase) + int(r.PathIndex)
			rules = append(rules, kRule{Family: fam, Priority: RulePriority, Mark: MarkBase | uint32(r.PathIndex), Mask: 0xFFFFFFFF, Table: table})
			kr := kRoute{Family: fam, Table: table, Protocol: Protocol, Dst: "0.0.0.0/0", Dev: r.Interface}
			if fam == netlink.FAMILY_V6 {
				kr.Dst = "::/0"
			}
			if r.Gateway.IsValid() {
				kr.Gw = r.Gateway.Unmap().WithZone("").String()
			}
			rts = append(rts, kr)
		}
	}
	sortK(rules, rts)
	return rules, rts
}

// foreign adds rules and routes that resemble the package's but lie outside
// its reserved ranges in one respect each; they must survive everything.
func (n *testNS) foreign(t *testing.T) ([]kRule, []kRoute) {
	t.Helper()
	mask := uint32(0xFFFFFFFF)
	rules := []netlink.Rule{
		{Family: netlink.FAMILY_V4, Priority: 9000, Mark: 0x1234, Table: 100},                   // in the band, not a Patronus mark
		{Family: netlink.FAMILY_V4, Priority: 100, Mark: Mark(1), Table: int(Table(1))},         // Patronus mark and table, outside the band
		{Family: netlink.FAMILY_V6, Priority: 9050, Mark: Mark(99), Table: 100, Protocol: 0x50}, // band and mark, table outside the range
	}
	var kRules []kRule
	for _, r := range rules {
		nr := netlink.NewRule()
		nr.Family, nr.Priority, nr.Mark, nr.Mask, nr.Table, nr.Protocol = r.Family, r.Priority, r.Mark, &mask, r.Table, r.Protocol
		if err := n.h.RuleAdd(nr); err != nil {
			t.Fatalf("add foreign rule %v: %v", nr, err)
		}
		kRules = append(kRules, kRule{Family: r.Family, Priority: r.Priority, Mark: r.Mark, Mask: mask, Table: r.Table})
	}
	wan1 := n.link(t, "wan1").Attrs().Index
	zero4 := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	routes := []netlink.Route{
		{Table: 100, Dst: zero4, Gw: net.ParseIP("10.1.0.99"), LinkIndex: wan1, Protocol: Protocol},                          // Patronus protocol, other table
		{Table: int(Table(500)), Dst: zero4, Gw: net.ParseIP("10.1.0.98"), LinkIndex: wan1, Protocol: syscall.RTPROT_STATIC}, // reserved table, other protocol
	}
	var kRoutes []kRoute
	for _, r := range routes {
		if err := n.h.RouteAdd(&r); err != nil {
			t.Fatalf("add foreign route %v: %v", r, err)
		}
		kRoutes = append(kRoutes, kRoute{Family: netlink.FAMILY_V4, Table: r.Table, Protocol: int(r.Protocol), Dst: "0.0.0.0/0", Gw: r.Gw.String(), Dev: "wan1"})
	}
	sortK(kRules, kRoutes)
	return kRules, kRoutes
}

// checkKernel compares the kernel with what Apply(routes) should leave,
// next to the foreign objects.
func (n *testNS) checkKernel(t *testing.T, routes []Route, foreignRules []kRule, foreignRoutes []kRoute) {
	t.Helper()
	wantRules, wantRoutes := expected(routes)
	wantRules = append(wantRules, foreignRules...)
	wantRoutes = append(wantRoutes, foreignRoutes...)
	sortK(wantRules, wantRoutes)
	gotRules, gotRoutes := n.dump(t)
	if diff := cmp.Diff(wantRules, gotRules, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("rules mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRoutes, gotRoutes, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
}

func checkInstalled(t *testing.T, m *Manager, want []Route) {
	t.Helper()
	got, err := m.Installed()
	if err != nil {
		t.Fatalf("Installed: %v", err)
	}
	norm := make([]Route, len(want))
	for i, r := range want {
		norm[i] = Route{PathIndex: r.PathIndex, Interface: r.Interface, Gateway: r.gateway()}
	}
	slices.SortFunc(norm, func(a, b Route) int { return int(a.PathIndex) - int(b.PathIndex) })
	if diff := cmp.Diff(norm, got, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Installed mismatch (-want +got):\n%s", diff)
	}
}

// routeEvents subscribes to n's route changes.
func (n *testNS) routeEvents(t *testing.T) <-chan netlink.RouteUpdate {
	t.Helper()
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	if err := netlink.RouteSubscribeAt(n.ns, ch, done); err != nil {
		t.Fatalf("subscribe to routes: %v", err)
	}
	t.Cleanup(func() { close(done) })
	return ch
}

// drain returns the changes to routes in the reserved tables that arrive
// until no change has for a while. The kernel's own changes elsewhere, such
// as local routes appearing once duplicate address detection ends, are
// dropped.
func drain(ch <-chan netlink.RouteUpdate) []netlink.RouteUpdate {
	var got []netlink.RouteUpdate
	for {
		select {
		case u := <-ch:
			if _, ok := pathIndexOfTable(u.Table); ok {
				got = append(got, u)
			}
		case <-time.After(300 * time.Millisecond):
			return got
		}
	}
}

func gw(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestApply(t *testing.T) {
	r := newTestNS(t)
	r.veth(t, "wan1", nil, "wan1p")
	r.veth(t, "wan2", nil, "wan2p")
	r.addr(t, "wan1", "10.1.0.1/24")
	r.addr(t, "wan1", "fd00:1::1/64")
	r.addr(t, "wan2", "10.2.0.1/24")
	r.addr(t, "wan2", "fd00:2::1/64")
	foreignRules, foreignRoutes := r.foreign(t)
	events := r.routeEvents(t)
	m := r.manager(t)
	if err := m.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}

	steps := []struct {
		name   string
		routes []Route
		// quiet: the step must not change any route. keepRoutes: it may
		// replace routes but must not delete any.
		quiet, keepRoutes bool
	}{
		{
			name: "install",
			routes: []Route{
				{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")},
				{PathIndex: 2, Interface: "wan2", Gateway: gw("fd00:2::254")},
				{PathIndex: 3, Interface: "wan2"},
				{PathIndex: 0xFFFF, Interface: "wan1", Gateway: gw("fe80::1")},
			},
		},
		{
			name: "re-apply is a no-op",
			routes: []Route{
				{PathIndex: 0xFFFF, Interface: "wan1", Gateway: gw("fe80::1")},
				{PathIndex: 3, Interface: "wan2"},
				{PathIndex: 2, Interface: "wan2", Gateway: gw("fd00:2::254")},
				{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")},
			},
			quiet: true,
		},
		{
			name: "gateway and interface changes replace in place",
			routes: []Route{
				{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.253")},
				{PathIndex: 2, Interface: "wan1", Gateway: gw("fd00:1::254")},
				{PathIndex: 3, Interface: "wan1"},
				{PathIndex: 0xFFFF, Interface: "wan1", Gateway: gw("fe80::1")},
			},
			keepRoutes: true,
		},
		{
			name: "family change",
			routes: []Route{
				{PathIndex: 1, Interface: "wan1", Gateway: gw("fd00:1::253")},
				{PathIndex: 2, Interface: "wan1", Gateway: gw("::ffff:10.1.0.252")},
				{PathIndex: 3, Interface: "wan2", Gateway: gw("10.2.0.254")},
				{PathIndex: 0xFFFF, Interface: "wan1", Gateway: gw("fe80::1")},
			},
		},
		{
			name: "removing paths",
			routes: []Route{
				{PathIndex: 2, Interface: "wan1", Gateway: gw("10.1.0.252")},
			},
		},
		{
			name:   "nothing",
			routes: nil,
		},
		{
			name: "install again",
			routes: []Route{
				{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")},
				{PathIndex: 2, Interface: "wan2", Gateway: gw("fd00:2::254")},
				{PathIndex: 3, Interface: "wan2"},
			},
		},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			drain(events)
			if err := m.Apply(s.routes); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			checkInstalled(t, m, s.routes)
			r.checkKernel(t, s.routes, foreignRules, foreignRoutes)
			got := drain(events)
			if s.quiet && len(got) > 0 {
				t.Errorf("Apply changed %d routes, want none; first: %v", len(got), got[0].Route)
			}
			if s.keepRoutes {
				for _, u := range got {
					if u.Type == syscall.RTM_DELROUTE {
						t.Errorf("Apply deleted route %v, want a replacement in place", u.Route)
					}
				}
			}
		})
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r.checkKernel(t, nil, foreignRules, foreignRoutes)
	if err := m.Apply(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestApplyErrors(t *testing.T) {
	r := newTestNS(t)
	r.veth(t, "wan1", nil, "wan1p")
	r.addr(t, "wan1", "10.1.0.1/24")
	m := r.manager(t)
	t.Cleanup(func() { m.Close() })

	good := Route{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")}
	err := m.Apply([]Route{
		good,
		{PathIndex: 2, Interface: "nosuch0", Gateway: gw("10.1.0.254")},
		{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.253")},
		{PathIndex: 3, Interface: "wan1", Gateway: gw("192.0.2.1")}, // not on any link
		{PathIndex: 4, Interface: "wan1", Gateway: gw("2001:db8::1")},
	})
	if err == nil {
		t.Fatal("Apply succeeded, want errors")
	}
	if !errors.Is(err, ErrInterfaceNotFound) {
		t.Errorf("Apply error %q does not wrap ErrInterfaceNotFound", err)
	}
	for _, want := range []string{`path 2: interface "nosuch0"`, "path 1", "duplicate", `path 3: interface "wan1"`, `path 4: interface "wan1"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error %q does not mention %q", err, want)
		}
	}
	checkInstalled(t, m, []Route{good})
	r.checkKernel(t, []Route{good}, nil, nil)
}

func TestCleanupLeftovers(t *testing.T) {
	r := newTestNS(t)
	r.veth(t, "wan1", nil, "wan1p")
	r.addr(t, "wan1", "10.1.0.1/24")
	r.addr(t, "wan1", "fd00:1::1/64")
	foreignRules, foreignRoutes := r.foreign(t)
	routes := []Route{
		{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")},
		{PathIndex: 2, Interface: "wan1", Gateway: gw("fd00:1::254")},
		{PathIndex: 3, Interface: "wan1"},
	}

	crashed := r.manager(t)
	if err := crashed.Apply(routes); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	// The crashed run is dropped without Close. It also left path 1 half
	// done: a rule without its route.
	route1 := netlink.Route{Table: int(Table(1)), Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Protocol: Protocol}
	if err := r.h.RouteDel(&route1); err != nil {
		t.Fatalf("delete path 1's route: %v", err)
	}

	m := r.manager(t)
	checkInstalled(t, m, routes[1:])
	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply over leftovers: %v", err)
	}
	checkInstalled(t, m, routes)
	r.checkKernel(t, routes, foreignRules, foreignRoutes)

	if err := m.Cleanup(); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	checkInstalled(t, m, nil)
	r.checkKernel(t, nil, foreignRules, foreignRoutes)

	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply after Cleanup: %v", err)
	}
	r.checkKernel(t, routes, foreignRules, foreignRoutes)
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	r.checkKernel(t, nil, foreignRules, foreignRoutes)
}

func TestLinkDown(t *testing.T) {
	r := newTestNS(t)
	r.veth(t, "wan1", nil, "wan1p")
	r.veth(t, "wan2", nil, "wan2p")
	r.addr(t, "wan1", "10.1.0.1/24")
	r.addr(t, "wan2", "10.2.0.1/24")
	m := r.manager(t)
	t.Cleanup(func() { m.Close() })
	onWan1 := []Route{
		{PathIndex: 1, Interface: "wan1", Gateway: gw("10.1.0.254")},
		{PathIndex: 2, Interface: "wan1", Gateway: gw("fe80::2")},
		{PathIndex: 3, Interface: "wan1"},
	}
	other := Route{PathIndex: 4, Interface: "wan2", Gateway: gw("10.2.0.254")}
	routes := append(slices.Clone(onWan1), other)
	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkInstalled(t, m, routes)

	wan1 := r.link(t, "wan1")
	if err := r.h.LinkSetDown(wan1); err != nil {
		t.Fatalf("set wan1 down: %v", err)
	}
	checkInstalled(t, m, []Route{other})
	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply with wan1 down: %v", err)
	}
	checkInstalled(t, m, []Route{other})

	if err := r.h.LinkSetUp(wan1); err != nil {
		t.Fatalf("set wan1 up: %v", err)
	}
	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply with wan1 up again: %v", err)
	}
	checkInstalled(t, m, routes)
	r.checkKernel(t, routes, nil, nil)
}

func TestDeviceRouteWithoutIPv6(t *testing.T) {
	r := newTestNS(t)
	r.veth(t, "wan1", nil, "wan1p")
	err := r.do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/wan1/disable_ipv6", []byte("1"), 0)
	})
	if err != nil {
		t.Fatalf("disable IPv6 on wan1: %v", err)
	}
	m := r.manager(t)
	t.Cleanup(func() { m.Close() })
	routes := []Route{{PathIndex: 1, Interface: "wan1"}}
	if err := m.Apply(routes); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	checkInstalled(t, m, routes)
	_, got := r.dump(t)
	want := []kRoute{{Family: netlink.FAMILY_V4, Table: int(Table(1)), Protocol: Protocol, Dst: "0.0.0.0/0", Dev: "wan1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
}

// TestForwarding sends marked datagrams from a router namespace with two
// links, each to a peer namespace holding the same destination address, and
// checks that each arrives at the peer behind its path's link only.
func TestForwarding(t *testing.T) {
	router, peer1, peer2 := newTestNS(t), newTestNS(t), newTestNS(t)
	router.veth(t, "wan1", peer1, "uplink")
	router.veth(t, "wan2", peer2, "uplink")
	router.addr(t, "wan1", "10.11.0.1/24")
	router.addr(t, "wan1", "fd00:11::1/64")
	router.addr(t, "wan2", "10.12.0.1/24")
	router.addr(t, "wan2", "fd00:12::1/64")
	for i, p := range []*testNS{peer1, peer2} {
		p.addr(t, "uplink", fmt.Sprintf("10.1%d.0.2/24", i+1))
		p.addr(t, "uplink", fmt.Sprintf("fd00:1%d::2/64", i+1))
		// The destination sits on the uplink so that a device route can
		// reach it by ARP and neighbour discovery.
		p.addr(t, "uplink", "198.51.100.7/32")
		p.addr(t, "uplink", "2001:db8:7::7/128")
	}

	m := router.manager(t)
	t.Cleanup(func() { m.Close() })
	if err := m.Apply([]Route{
		{PathIndex: 1, Interface: "wan1", Gateway: gw("10.11.0.2")},
		{PathIndex: 2, Interface: "wan2", Gateway: gw("10.12.0.2")},
		{PathIndex: 3, Interface: "wan1", Gateway: gw("fd00:11::2")},
		{PathIndex: 4, Interface: "wan2", Gateway: gw("fd00:12::2")},
		{PathIndex: 5, Interface: "wan2"},
	}); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	const port = 47840
	listen := func(n *testNS, network string, port int) net.PacketConn {
		var c net.PacketConn
		err := n.do(func() (err error) {
			c, err = net.ListenPacket(network, fmt.Sprintf(":%d", port))
			return err
		})
		if err != nil {
			t.Fatalf("%s: listen %s: %v", n.name, network, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	conns := map[*testNS]map[string]net.PacketConn{}
	for _, p := range []*testNS{peer1, peer2} {
		conns[p] = map[string]net.PacketConn{"udp4": listen(p, "udp4", port), "udp6": listen(p, "udp6", port)}
	}
	send := func(t *testing.T, network, dst string, mark uint32, payload string) error {
		t.Helper()
		c := listen(router, network, 0)
		raw, err := c.(*net.UDPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_MARK, int(mark))
		}); err != nil || serr != nil {
			t.Fatalf("set SO_MARK: %v %v", err, serr)
		}
		_, err = c.WriteTo([]byte(payload), &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
		return err
	}
	receive := func(c net.PacketConn, payload string, wait time.Duration) bool {
		buf := make([]byte, 1500)
		deadline := time.Now().Add(wait)
		for {
			c.SetReadDeadline(deadline)
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == payload {
				return true
			}
		}
	}

	tests := []struct {
		name      string
		network   string
		dst       string
		mark      uint32
		want, not *testNS
	}{
		{name: "IPv4 path 1", network: "udp4", dst: "198.51.100.7", mark: Mark(1), want: peer1, not: peer2},
		{name: "IPv4 path 2", network: "udp4", dst: "198.51.100.7", mark: Mark(2), want: peer2, not: peer1},
		{name: "IPv6 path 3", network: "udp6", dst: "2001:db8:7::7", mark: Mark(3), want: peer1, not: peer2},
		{name: "IPv6 path 4", network: "udp6", dst: "2001:db8:7::7", mark: Mark(4), want: peer2, not: peer1},
		{name: "IPv4 device route path 5", network: "udp4", dst: "198.51.100.7", mark: Mark(5), want: peer2, not: peer1},
		{name: "IPv6 device route path 5", network: "udp6", dst: "2001:db8:7::7", mark: Mark(5), want: peer2, not: peer1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := fmt.Sprintf("%s %x", tt.name, rand.Uint64())
			if err := send(t, tt.network, tt.dst, tt.mark, payload); err != nil {
				t.Fatalf("send: %v", err)
			}
			if !receive(conns[tt.want][tt.network], payload, 3*time.Second) {
				t.Errorf("%s did not receive the datagram", tt.want.name)
			}
			if receive(conns[tt.not][tt.network], payload, 300*time.Millisecond) {
				t.Errorf("%s received the datagram, want it only at %s", tt.not.name, tt.want.name)
			}
		})
	}

	t.Run("unmarked traffic takes ordinary routing", func(t *testing.T) {
		for _, mark := range []uint32{0, Mark(6)} {
			err := send(t, "udp4", "198.51.100.7", mark, "unrouted")
			if !errors.Is(err, syscall.ENETUNREACH) {
				t.Errorf("send with mark %#x: %v, want ENETUNREACH (the main table has no route)", mark, err)
			}
		}
	})
}
