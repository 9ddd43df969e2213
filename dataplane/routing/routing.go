// Package routing steers marked traffic onto WAN links with Linux policy
// routing.
//
// For every local path (a path whose source endpoint belongs to the site this
// node serves) the package installs, over rtnetlink:
//
//   - one routing table, Table(pathIndex), holding a default route through the
//     endpoint's gateway and interface, or a device route out of the
//     interface when the endpoint has no gateway; and
//   - one rule per address family, "fwmark Mark(pathIndex)/0xffffffff lookup
//     Table(pathIndex)", at priority RulePriority.
//
// The classifier sets Mark(pathIndex) on the packets of a flow it steers onto
// a path; the rule sends them to that path's table and so out of its link.
// Unmarked traffic never meets these rules and follows ordinary routing.
//
// Everything installed lives in reserved ranges, which is how the package
// recognizes its own objects, including the leftovers of a crashed run:
// rules with a priority in [PriorityMin, PriorityMax], a mark whose upper 16
// bits are MarkBase and a table in [TableBase, TableBase+0xffff]; routes in a
// table of that range whose rtm_protocol is Protocol. Nothing outside these
// ranges is ever changed or removed.
//
// A route through a link that goes down is removed by the kernel. Until the
// link is up again, traffic carrying that path's mark finds an empty table and
// falls through to the main table, which is ordinary routing: the behaviour
// the policy model asks for when a path is down. Apply does not try to install
// routes through a link that is down; the reconciler calls Apply again on link
// events, and that call restores them. See DESIGN.md.
package routing

import (
	"fmt"
	"net/netip"
)

const (
	// MarkBase is the fwmark carried by every packet Patronus steers, in
	// its upper 16 bits; the lower 16 bits carry the path index.
	MarkBase uint32 = 0x50A70000
	// MarkMask selects the MarkBase bits of a mark.
	MarkMask uint32 = 0xFFFF0000
	// PathIndexMask selects the path index bits of a mark.
	PathIndexMask uint32 = 0x0000FFFF

	// TableBase is the first routing table of the reserved range
	// [TableBase, TableBase+0xffff]. A path's table number equals its mark,
	// which keeps `ip rule` output readable and stays clear of the small
	// numbers operators and other tools pick (wg-quick uses 51820).
	TableBase uint32 = 0x50A70000

	// RulePriority is the priority of every rule Apply installs. Rules of
	// different paths never match the same packet (each matches one exact
	// mark), so they need no order among themselves.
	RulePriority = 9000
	// PriorityMin and PriorityMax bound the rule priorities reserved for
	// Patronus. Cleanup considers rules anywhere in this band; it lies well
	// before the main table's rule at 32766.
	PriorityMin = 9000
	PriorityMax = 9099

	// Protocol is the rtm_protocol value set on every route and rule the
	// package installs (80, ASCII 'P'); iproute2 shows it as "proto 80".
	Protocol = 0x50
)

// Mark returns the fwmark the classifier sets on packets steered onto the
// path with the given index.
func Mark(pathIndex uint16) uint32 {
	return MarkBase | uint32(pathIndex)
}

// Table returns the routing table that holds the route of the path with the
// given index.
func Table(pathIndex uint16) uint32 {
	return TableBase + uint32(pathIndex)
}

// Route is the routing of one local path: traffic marked Mark(PathIndex)
// leaves through Interface, via Gateway.
type Route struct {
	// PathIndex identifies the path; it selects the mark and the table.
	PathIndex uint16
	// Interface is the name of the netdev carrying the path's link.
	Interface string
	// Gateway is the next hop. Its family selects the routes' family: an
	// IPv4 gateway gives an IPv4 default route and rule, an IPv6 gateway
	// the IPv6 ones. An IPv4-mapped IPv6 address counts as IPv4 and a zone
	// is ignored (Interface names the link). The zero Addr means no
	// gateway: a device route out of Interface, for IPv4 and for IPv6
	// (IPv6 is left out when it is disabled on the interface).
	Gateway netip.Addr
}

func (r Route) String() string {
	if !r.Gateway.IsValid() {
		return fmt.Sprintf("path %d dev %s", r.PathIndex, r.Interface)
	}
	return fmt.Sprintf("path %d via %s dev %s", r.PathIndex, r.Gateway, r.Interface)
}

// gateway returns the gateway in the form the kernel reports it: unmapped
// and without a zone.
func (r Route) gateway() netip.Addr {
	if !r.Gateway.IsValid() {
		return netip.Addr{}
	}
	return r.Gateway.Unmap().WithZone("")
}

// family is an address family, as rtnetlink numbers them.
type family int

const (
	familyV4 family = 2  // AF_INET
	familyV6 family = 10 // AF_INET6
)

func (f family) String() string {
	if f == familyV4 {
		return "IPv4"
	}
	return "IPv6"
}

// families returns the address families the route is installed in.
func (r Route) families() []family {
	gw := r.gateway()
	switch {
	case !gw.IsValid():
		return []family{familyV4, familyV6}
	case gw.Is4():
		return []family{familyV4}
	default:
		return []family{familyV6}
	}
}

// pathIndexOfTable reports the path index whose table is t, and whether t is
// in the reserved range at all.
func pathIndexOfTable(t int) (uint16, bool) {
	if t < 0 || uint64(t) < uint64(TableBase) || uint64(t) > uint64(TableBase)+0xFFFF {
		return 0, false
	}
	return uint16(uint32(t) - TableBase), true
}
