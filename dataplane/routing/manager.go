//go:build linux

package routing

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
)

var (
	// ErrClosed is returned by calls on a Manager after Close.
	ErrClosed = errors.New("routing: manager closed")
	// ErrInterfaceNotFound is wrapped by Apply's error for a route whose
	// interface does not exist.
	ErrInterfaceNotFound = errors.New("interface not found")
)

// ruleMask is the fwmask of every rule: each rule matches one exact mark.
const ruleMask uint32 = 0xFFFFFFFF

// dumpAttempts bounds the retries of a dump the kernel reports as
// interrupted by a concurrent change.
const dumpAttempts = 5

// Options configures a Manager.
type Options struct {
	// Handle is the rtnetlink handle the Manager works through, and so
	// selects the network namespace it manages. Nil opens a handle on the
	// calling thread's current namespace, which Close closes; a handle
	// given here stays the caller's to close.
	Handle *netlink.Handle
	// Logger receives debug records of every change. Nil discards them.
	Logger *slog.Logger
}

// Manager installs and removes the policy routing of local paths. Its
// methods may be called from several goroutines; they run one at a time.
type Manager struct {
	log       *slog.Logger
	ownHandle bool

	// mu serializes every exchange with the kernel, so that the state one
	// call reads is not changed under it by another call. It guards h and
	// closed.
	mu     sync.Mutex
	h      *netlink.Handle
	closed bool
}

// New returns a Manager working through opts.Handle. It changes nothing in
// the kernel; call Cleanup to remove the leftovers of an earlier run.
func New(opts Options) (*Manager, error) {
	m := &Manager{log: opts.Logger, h: opts.Handle}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.h == nil {
		h, err := netlink.NewHandle(syscall.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("routing: open rtnetlink: %w", err)
		}
		m.h, m.ownHandle = h, true
	}
	return m, nil
}

// Cleanup removes every rule and route in the reserved ranges (see the
// package documentation), whoever installed them: meant to be called at
// start, it clears the leftovers of a run that did not stop cleanly. It
// tries every removal and returns the errors of those that failed, joined.
func (m *Manager) Cleanup() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return m.removeAll("cleanup")
}

// Close removes every rule and route in the reserved ranges, as Cleanup
// does, so that a clean stop leaves nothing behind, and releases the handle
// New opened. Later calls return ErrClosed, except Close, which returns nil.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	err := m.removeAll("close")
	if m.ownHandle {
		m.h.Close()
	}
	return err
}

// Apply makes the kernel's policy routing in the reserved ranges match
// routes exactly: it adds what is missing, replaces routes whose gateway or
// interface changed (in place, with no moment without a route), and removes
// rules and routes of paths not in routes. Applying the same routes again
// changes nothing. Nothing outside the reserved ranges is touched.
//
// A route whose interface is down is not installed, and that is not an
// error; its rule is. The kernel removes routes through a link that goes
// down, so Apply must be called again once the link is up: the reconciler
// does so on every link event.
//
// Apply carries on past a route it cannot install and applies the rest. A
// route whose interface does not exist (the error wraps
// ErrInterfaceNotFound) gets nothing installed; of routes sharing a path
// index only the first is applied; a path whose route the kernel refuses
// gets no rule. The traffic of such a path takes ordinary routing. The
// returned error joins one error per failure, each naming the path and,
// where the failure concerns one, its interface.
func (m *Manager) Apply(routes []Route) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}

	links, err := m.links()
	if err != nil {
		return err
	}
	var errs []error
	wantRules := make(map[key]netlink.Rule)
	wantRoutes := make(map[key]netlink.Route)
	seen := make(map[uint16]bool, len(routes))
	for _, r := range routes {
		if seen[r.PathIndex] {
			errs = append(errs, fmt.Errorf("path %d: interface %q: duplicate path index", r.PathIndex, r.Interface))
			continue
		}
		seen[r.PathIndex] = true
		link, ok := links.byName[r.Interface]
		if !ok {
			errs = append(errs, fmt.Errorf("path %d: interface %q: %w", r.PathIndex, r.Interface, ErrInterfaceNotFound))
			continue
		}
		up := link.Flags&net.FlagUp != 0
		for _, fam := range r.families() {
			k := key{r.PathIndex, fam}
			wantRules[k] = newRule(k)
			if up {
				wantRoutes[k] = newRoute(k, r.gateway(), link.Index)
			}
		}
		if !up {
			m.log.Debug("routing: interface down, route deferred", "path", r.PathIndex, "interface", r.Interface)
		}
	}

	st, err := m.read()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	haveRules := make(map[key][]netlink.Rule)
	for _, r := range st.rules {
		k := ruleKey(r)
		haveRules[k] = append(haveRules[k], r)
	}
	haveRoutes := make(map[key][]netlink.Route)
	for _, r := range st.routes {
		k := routeKey(r)
		haveRoutes[k] = append(haveRoutes[k], r)
	}

	// Rules are removed before the routes of their table and added after
	// them, so that no rule points at a table being filled or emptied.
	// Even then, a packet meeting an empty table would only fall through
	// to ordinary routing.
	var addRules []netlink.Rule
	keptRules := make(map[key]netlink.Rule)
	for _, k := range sortedKeys(haveRules) {
		have := haveRules[k]
		want, wanted := wantRules[k]
		kept := false
		for _, h := range have {
			if wanted && !kept && ruleMatches(h, want) {
				kept = true
				keptRules[k] = h
				continue
			}
			errs = appendErr(errs, m.delRule(h), "path %d: remove %s rule", k.index, k.fam)
		}
		if wanted && !kept {
			addRules = append(addRules, want)
		}
	}
	for _, k := range sortedKeys(wantRules) {
		if _, ok := haveRules[k]; !ok {
			addRules = append(addRules, wantRules[k])
		}
	}

	failed := make(map[uint16]bool)
	for _, k := range sortedKeys(wantRoutes) {
		want, have := wantRoutes[k], haveRoutes[k]
		delete(haveRoutes, k)
		keep := slices.IndexFunc(have, func(h netlink.Route) bool { return routeMatches(h, want) })
		if keep < 0 {
			err := m.h.RouteReplace(&want)
			switch {
			case err == nil:
				m.log.Debug("routing: route installed", "path", k.index, "family", k.fam, "route", want.String())
				keep = slices.IndexFunc(have, func(h netlink.Route) bool { return sameSlot(h, want) })
			case want.Gw == nil && k.fam == familyV6 && errors.Is(err, syscall.EACCES):
				m.log.Debug("routing: IPv6 disabled on interface, IPv4 only", "path", k.index, "interface", links.byIndex[want.LinkIndex])
			default:
				failed[k.index] = true
				errs = append(errs, fmt.Errorf("path %d: interface %q: install %s route: %w", k.index, links.byIndex[want.LinkIndex], k.fam, err))
			}
		}
		for i, h := range have {
			if i != keep {
				errs = appendErr(errs, m.delRoute(h), "path %d: remove stale %s route", k.index, k.fam)
			}
		}
	}
	for _, k := range sortedKeys(haveRoutes) {
		for _, h := range haveRoutes[k] {
			errs = appendErr(errs, m.delRoute(h), "path %d: remove %s route", k.index, k.fam)
		}
	}

	for _, k := range sortedKeys(keptRules) {
		if failed[k.index] {
			errs = appendErr(errs, m.delRule(keptRules[k]), "path %d: remove %s rule", k.index, k.fam)
		}
	}
	for _, r := range addRules {
		k := ruleKey(r)
		if failed[k.index] {
			continue
		}
		if err := m.h.RuleAdd(&r); err != nil {
			errs = append(errs, fmt.Errorf("path %d: add %s rule: %w", k.index, k.fam, err))
			continue
		}
		m.log.Debug("routing: rule installed", "path", k.index, "family", k.fam, "rule", r.String())
	}
	return errors.Join(errs...)
}

// Installed reads back from the kernel the routes in the reserved ranges,
// in path index order: for each path, the Route that Apply would have been
// given to install what is there. A path whose state is incomplete, such as
// a rule whose route the kernel removed when its link went down, is left
// out.
func (m *Manager) Installed() ([]Route, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	links, err := m.links()
	if err != nil {
		return nil, err
	}
	st, err := m.read()
	if err != nil {
		return nil, err
	}
	rules := make(map[key]bool)
	for _, r := range st.rules {
		if k := ruleKey(r); ruleMatches(r, newRule(k)) {
			rules[k] = true
		}
	}
	byPath := make(map[uint16]map[family]netlink.Route)
	for _, r := range st.routes {
		k := routeKey(r)
		if byPath[k.index] == nil {
			byPath[k.index] = make(map[family]netlink.Route)
		}
		byPath[k.index][k.fam] = r
	}

	var out []Route
	for index, fams := range byPath {
		first, ok := fams[familyV4]
		if !ok {
			first = fams[familyV6]
		}
		gw, _ := netip.AddrFromSlice(first.Gw)
		r := Route{PathIndex: index, Interface: links.byIndex[first.LinkIndex], Gateway: gw.Unmap()}
		complete := r.Interface != ""
		for fam, have := range fams {
			k := key{index, fam}
			if !slices.Contains(r.families(), fam) || !rules[k] || !routeMatches(have, newRoute(k, r.gateway(), first.LinkIndex)) {
				complete = false
			}
		}
		if complete {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Route) int { return int(a.PathIndex) - int(b.PathIndex) })
	return out, nil
}

// removeAll removes every rule, then every route, in the reserved ranges.
func (m *Manager) removeAll(why string) error {
	st, err := m.read()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range st.rules {
		k := ruleKey(r)
		errs = appendErr(errs, m.delRule(r), "path %d: remove %s rule", k.index, k.fam)
	}
	for _, r := range st.routes {
		k := routeKey(r)
		errs = appendErr(errs, m.delRoute(r), "path %d: remove %s route", k.index, k.fam)
	}
	if len(st.rules)+len(st.routes) > 0 {
		m.log.Info("routing: removed policy routing", "reason", why, "rules", len(st.rules), "routes", len(st.routes))
	}
	return errors.Join(errs...)
}

func (m *Manager) delRule(r netlink.Rule) error {
	err := m.h.RuleDel(&r)
	if isGone(err) {
		return nil
	}
	if err == nil {
		m.log.Debug("routing: rule removed", "rule", r.String())
	}
	return err
}

func (m *Manager) delRoute(r netlink.Route) error {
	err := m.h.RouteDel(&r)
	if isGone(err) {
		return nil
	}
	if err == nil {
		m.log.Debug("routing: route removed", "route", r.String())
	}
	return err
}

// isGone reports whether a removal failed only because the object was
// already gone, as routes are when their link goes down.
func isGone(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT)
}

func appendErr(errs []error, err error, format string, args ...any) []error {
	if err == nil {
		return errs
	}
	return append(errs, fmt.Errorf(format+": %w", append(args, err)...))
}

// key names one path's rule or route in one address family.
type key struct {
	index uint16
	fam   family
}

// sortedKeys returns the keys of m by path index, then family, so that
// changes are made, and errors reported, in a stable order.
func sortedKeys[V any](m map[key]V) []key {
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b key) int {
		if a.index != b.index {
			return cmp.Compare(a.index, b.index)
		}
		return cmp.Compare(a.fam, b.fam)
	})
	return keys
}

func ruleKey(r netlink.Rule) key {
	index, _ := pathIndexOfTable(r.Table)
	return key{index, family(r.Family)}
}

func routeKey(r netlink.Route) key {
	index, _ := pathIndexOfTable(r.Table)
	return key{index, family(r.Family)}
}

// state is what the kernel holds in the reserved ranges.
type state struct {
	rules  []netlink.Rule
	routes []netlink.Route
}

// read dumps the rules and routes of both families and keeps those in the
// reserved ranges. Routes are dumped from every table, as rtnetlink offers
// no portable way to ask for a range of tables.
func (m *Manager) read() (state, error) {
	var st state
	for _, fam := range []family{familyV4, familyV6} {
		rules, err := retryDump(func() ([]netlink.Rule, error) { return m.h.RuleList(int(fam)) })
		if err != nil {
			return state{}, fmt.Errorf("routing: list %s rules: %w", fam, err)
		}
		for _, r := range rules {
			if ownRule(r) {
				st.rules = append(st.rules, r)
			}
		}
		routes, err := retryDump(func() ([]netlink.Route, error) {
			var own []netlink.Route
			err := m.h.RouteListFilteredIter(int(fam), &netlink.Route{}, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
				if ownRoute(r) {
					own = append(own, r)
				}
				return true
			})
			return own, err
		})
		if err != nil {
			return state{}, fmt.Errorf("routing: list %s routes: %w", fam, err)
		}
		st.routes = append(st.routes, routes...)
	}
	return st, nil
}

// linkSet indexes the namespace's links by name and by index.
type linkSet struct {
	byName  map[string]*netlink.LinkAttrs
	byIndex map[int]string
}

func (m *Manager) links() (linkSet, error) {
	links, err := retryDump(m.h.LinkList)
	if err != nil {
		return linkSet{}, fmt.Errorf("routing: list links: %w", err)
	}
	s := linkSet{byName: make(map[string]*netlink.LinkAttrs), byIndex: make(map[int]string)}
	for _, l := range links {
		a := l.Attrs()
		s.byName[a.Name] = a
		s.byIndex[a.Index] = a.Name
	}
	return s, nil
}

func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	var err error
	for range dumpAttempts {
		var v []T
		v, err = dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return nil, err
}

// ownRule reports whether r lies in the reserved ranges.
func ownRule(r netlink.Rule) bool {
	_, inTable := pathIndexOfTable(r.Table)
	return inTable && r.Priority >= PriorityMin && r.Priority <= PriorityMax && r.Mark&MarkMask == MarkBase
}

// ownRoute reports whether r lies in the reserved ranges.
func ownRoute(r netlink.Route) bool {
	_, inTable := pathIndexOfTable(r.Table)
	return inTable && r.Protocol == Protocol
}

// newRule returns the rule sending traffic marked for k's path to its table.
func newRule(k key) netlink.Rule {
	r := netlink.NewRule()
	r.Family = int(k.fam)
	r.Priority = RulePriority
	r.Mark = Mark(k.index)
	mask := ruleMask
	r.Mask = &mask
	r.Table = int(Table(k.index))
	r.Protocol = Protocol
	return *r
}

// ruleMatches reports whether the installed rule have does what want does
// and nothing more.
func ruleMatches(have, want netlink.Rule) bool {
	return have.Family == want.Family && have.Priority == want.Priority &&
		have.Mark == want.Mark && have.Mask != nil && *have.Mask == *want.Mask &&
		have.Table == want.Table && !have.Invert && have.Goto < 0 && have.Tos == 0 &&
		have.Src == nil && have.Dst == nil && have.IifName == "" && have.OifName == "" &&
		have.IPProto == 0 && have.Sport == nil && have.Dport == nil && have.UIDRange == nil &&
		have.TunID == 0 && have.SuppressPrefixlen < 0 && have.SuppressIfgroup < 0
}

// newRoute returns the default route of k's table: via gw out of the link
// with index linkIndex, or a device route out of it when gw is invalid.
func newRoute(k key, gw netip.Addr, linkIndex int) netlink.Route {
	r := netlink.Route{
		Family:    int(k.fam),
		Table:     int(Table(k.index)),
		LinkIndex: linkIndex,
		Protocol:  Protocol,
		Type:      syscall.RTN_UNICAST,
	}
	if k.fam == familyV4 {
		r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	} else {
		// The kernel stores an IPv6 route added with metric 0 at the user
		// default, 1024; asking for it explicitly makes it read back the
		// same.
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		r.Priority = 1024
	}
	if gw.IsValid() {
		r.Gw = net.IP(gw.AsSlice())
	} else if k.fam == familyV4 {
		r.Scope = netlink.SCOPE_LINK
	}
	return r
}

// sameSlot reports whether replacing want overwrites have: both are default
// routes with the same metric.
func sameSlot(have, want netlink.Route) bool {
	return isDefault(have.Dst) && have.Tos == want.Tos && have.Priority == want.Priority
}

// routeMatches reports whether the installed route have does what want
// does and nothing more.
func routeMatches(have, want netlink.Route) bool {
	return sameSlot(have, want) && have.LinkIndex == want.LinkIndex && have.Gw.Equal(want.Gw) &&
		have.Scope == want.Scope && have.Type == want.Type && len(have.MultiPath) == 0 &&
		have.Src == nil && have.Encap == nil && have.Via == nil
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}
