// Package agent runs the dataplane of the site a node serves (patronusd
// --site): it follows the replicated configuration and the measured health
// of the site's paths, and makes the kernel match them.
//
// It owns the eBPF classifier on the site's LAN interfaces, the policy
// routing of its local paths, a probe responder on each of its endpoints and
// a prober on each of its enabled paths. A health change re-chooses the path
// of every policy at once (failover swaps one map entry per policy) and is
// written to /system/events; every Interval it writes counters, the flow
// table, path quality and link state into the tree through
// collector/telemetry. Close removes everything it installed.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/vishvananda/netlink"

	"github.com/patronus-sdwan/patronus/collector/probe"
	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/dataplane/classifier"
	"github.com/patronus-sdwan/patronus/dataplane/plan"
	"github.com/patronus-sdwan/patronus/dataplane/routing"
	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Config configures an Agent.
type Config struct {
	Site     string
	NodeName string
	Store    *store.Store
	Feed     *feed.Feed
	Engine   *txn.Engine
	// Interval is how often measured state is written into the tree
	// (default 1 s).
	Interval time.Duration
	// FlowIdle is how long a flow may be idle before it leaves the flow
	// table (default 30 s).
	FlowIdle time.Duration
	Logger   *slog.Logger
	// OnCollect, if set, is called after every collection with how long
	// it took, on the agent's goroutine; it must not block.
	OnCollect func(time.Duration)
}

// PathStats is the probing of one local path, as of the last collection.
// A prober restarted by a change of its path's configuration starts its
// counters again from zero.
type PathStats struct {
	Path   string
	Health probe.Health
	// ProbesSent, ProbesReceived, ProbesLate and ProbesLost are the
	// prober's counters (see probe.Stats).
	ProbesSent, ProbesReceived, ProbesLate, ProbesLost uint64
}

// Stats is what the agent measures, for metrics.
type Stats struct {
	// Paths are the enabled local paths, by name, as of the last
	// collection.
	Paths []PathStats
	// Failovers counts the times a policy moved to another path (or to
	// ordinary routing): each FAILOVER event.
	Failovers uint64
	// Orphaned counts, as of the last collection, what the classifier's
	// flow caches counted for flows whose flow table entry was gone: in
	// the policy and path counters but in no flow (see
	// classifier.OrphanedFlowCounts).
	Orphaned classifier.Counter
}

// Agent is a running dataplane.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	cls    *classifier.Classifier
	routes *routing.Manager
	writer *telemetry.Writer

	pathIDs, policyIDs *plan.IDs

	healthCh chan struct{} // a prober's health changed
	cancel   context.CancelFunc
	done     chan struct{}

	failovers atomic.Uint64
	statsMu   sync.Mutex
	paths     []PathStats        // as of the last collection; guarded by statsMu
	orphaned  classifier.Counter // likewise

	// The fields below are owned by the run loop.
	plan       *plan.Plan
	pathByIdx  map[uint16]string // the plan's local paths by index
	policyByID map[uint32]string // the plan's policies by ID
	attached   map[string]int    // LAN interface → ifindex
	responders map[netip.AddrPort]*probe.Responder
	probers    map[string]*running // by path
	chosen     map[string]string   // policy → path it steers onto
	health     map[string]plan.Health
	linkUp     map[string]bool // interface → oper up
}

type running struct {
	key    proberKey
	p      *probe.Prober
	cancel context.CancelFunc
	done   chan struct{}
}

// proberKey is what a running prober was made from; a change restarts it.
type proberKey struct {
	local     netip.Addr
	device    string
	remote    netip.AddrPort
	interval  time.Duration
	sla       plan.SLA
	enabled   bool
	pathIndex uint16
}

// Start loads the classifier, removes what a crashed run left behind, and
// starts following the configuration.
func Start(cfg Config) (*Agent, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.FlowIdle <= 0 {
		cfg.FlowIdle = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Agent{cfg: cfg, log: cfg.Logger.With("site", cfg.Site), pathIDs: plan.NewIDs(1), policyIDs: plan.NewIDs(0),
		healthCh: make(chan struct{}, 1), done: make(chan struct{}),
		attached: map[string]int{}, responders: map[netip.AddrPort]*probe.Responder{}, probers: map[string]*running{},
		chosen: map[string]string{}, health: map[string]plan.Health{}, linkUp: map[string]bool{}}
	var err error
	if a.routes, err = routing.New(routing.Options{Logger: a.log}); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	if err := a.routes.Cleanup(); err != nil {
		a.routes.Close()
		return nil, fmt.Errorf("dataplane: removing an earlier run's routes: %w", err)
	}
	if a.cls, err = classifier.New(); err != nil {
		a.routes.Close()
		return nil, fmt.Errorf("dataplane: loading the classifier: %w", err)
	}
	a.writer = telemetry.NewWriter(cfg.Store)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go a.run(ctx)
	return a, nil
}

// Close stops the agent and removes everything it installed: classifier
// links, routes and rules, probe sockets, and its measured leaves.
func (a *Agent) Close() error {
	a.cancel()
	<-a.done
	for _, r := range a.probers {
		r.cancel()
		<-r.done
	}
	for _, r := range a.responders {
		r.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(a.cls.Close(), a.routes.Close(), a.writer.Close(ctx))
}

func (a *Agent) run(ctx context.Context) {
	defer close(a.done)
	cur := a.cfg.Feed.FromRaw(a.cfg.Feed.Last())
	commits := make(chan bool, 1)
	go func() {
		defer func() { cur.Close() }()
		var buf []feed.Commit
		for {
			var err error
			buf, err = cur.Next(ctx, nil, buf[:0])
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, feed.ErrTooSlow) {
				cur.Close()
				cur = a.cfg.Feed.FromRaw(a.cfg.Feed.Last())
			}
			if err != nil || touchesConfig(buf) {
				select {
				case commits <- true:
				default:
				}
			}
			clear(buf) // the commits' changes go once the feed drops them
		}
	}()
	links := make(chan netlink.LinkUpdate, 64)
	linkDone := make(chan struct{})
	defer close(linkDone)
	if err := netlink.LinkSubscribe(links, linkDone); err != nil {
		a.log.Warn("dataplane: not following link state", "err", err)
	}

	a.reconcile(ctx)
	tick := time.NewTicker(a.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-commits:
			// Let a burst of commits settle into one reconcile.
			time.Sleep(20 * time.Millisecond)
			a.reconcile(ctx)
		case <-a.healthCh:
			a.steer(ctx)
		case u := <-links:
			name := u.Attrs().Name
			up := u.Attrs().OperState == netlink.OperUp || (u.Attrs().OperState == netlink.OperUnknown && u.Attrs().Flags&net.FlagUp != 0)
			if was, ok := a.linkUp[name]; !ok || was != up {
				a.linkUp[name] = up
				if up {
					a.applyRoutes()
				}
			}
		case <-tick.C:
			a.collect(ctx)
		}
	}
}

// touchesConfig reports whether commits changed configuration the
// dataplane follows.
func touchesConfig(commits []feed.Commit) bool {
	for _, c := range commits {
		for _, ch := range c.Raw {
			if configKey(ch.Key) {
				return true
			}
		}
		for _, ch := range c.Changes {
			if configKey(ch.Key) {
				return true
			}
		}
	}
	return false
}

// configRoots are the encoded keys of the subtrees a plan reads.
var configRoots = [][]byte{
	pathkey.Encode([]*gpb.PathElem{{Name: "sites"}}),
	pathkey.Encode([]*gpb.PathElem{{Name: "paths"}}),
	pathkey.Encode([]*gpb.PathElem{{Name: "policies"}}),
}

// configElem is how an element named config, with no keys, is encoded
// after the end of the element before it (see package pathkey).
var configElem = []byte("\x00config\x00")

// configKey reports whether key is in a config container under one of
// configRoots. It reads the key's bytes without decoding them (the agent
// sees every commit, the collectors' too): a key value holding an escaped
// NUL followed by "config" may make it say yes wrongly, which costs one
// reconcile.
func configKey(key []byte) bool {
	for _, r := range configRoots {
		if bytes.HasPrefix(key, r) {
			return bytes.Contains(key[len(r)-1:], configElem)
		}
	}
	return false
}

// reconcile reads the plan and makes the kernel, the responders and the
// probers match it.
func (a *Agent) reconcile(ctx context.Context) {
	p, err := plan.Read(a.cfg.Store, a.cfg.Site, a.pathIDs, a.policyIDs)
	if err != nil {
		a.log.Error("dataplane: reading the configuration", "err", err)
		return
	}
	a.plan = p
	a.pathByIdx, a.policyByID = map[uint16]string{}, map[uint32]string{}
	for _, pa := range p.Paths {
		a.pathByIdx[pa.Index] = pa.Name
	}
	for _, pol := range p.Policies {
		a.policyByID[pol.ID] = pol.Name
	}
	a.attach()
	a.applyRoutes()
	a.respond(ctx)
	a.probe()
	for name := range a.health {
		if _, ok := p.Paths[name]; !ok {
			delete(a.health, name)
		}
	}
	if err := a.cls.SetRules(a.rules()); err != nil {
		a.log.Error("dataplane: loading the policies into the classifier", "err", err)
	}
	a.steer(ctx)
	a.collect(ctx)
}

func (a *Agent) attach() {
	want := map[string]bool{}
	for _, name := range a.plan.LANInterfaces {
		want[name] = true
		if _, ok := a.attached[name]; ok {
			continue
		}
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			a.log.Warn("dataplane: LAN interface not found; traffic on it is not classified", "interface", name, "err", err)
			continue
		}
		if err := a.cls.Attach(ifc.Index); err != nil {
			a.log.Error("dataplane: attaching the classifier", "interface", name, "err", err)
			continue
		}
		a.attached[name] = ifc.Index
		a.log.Info("dataplane: classifying traffic", "interface", name)
	}
	for name, idx := range a.attached {
		if !want[name] {
			if err := a.cls.Detach(idx); err != nil {
				a.log.Warn("dataplane: detaching the classifier", "interface", name, "err", err)
			}
			delete(a.attached, name)
		}
	}
}

func (a *Agent) applyRoutes() {
	if a.plan == nil {
		return
	}
	var routes []routing.Route
	for _, p := range a.plan.PathsByIndex() {
		if !p.Enabled || p.Src.Interface == "" {
			continue
		}
		routes = append(routes, routing.Route{PathIndex: p.Index, Interface: p.Src.Interface, Gateway: p.Src.Gateway})
	}
	if err := a.routes.Apply(routes); err != nil {
		a.log.Warn("dataplane: installing path routes", "err", err)
	}
}

// respond runs a probe responder on each of the site's endpoints.
func (a *Agent) respond(ctx context.Context) {
	want := map[netip.AddrPort]bool{}
	for _, ep := range a.plan.Endpoints {
		if !ep.Address.IsValid() {
			continue
		}
		ap := ep.AddrPort()
		want[ap] = true
		if a.responders[ap] != nil {
			continue
		}
		r, err := probe.Listen(ctx, ap, probe.ResponderOptions{})
		if err != nil {
			a.log.Warn("dataplane: cannot answer probes on this endpoint (is its address on this node?)", "endpoint", ep.Name, "address", ap, "err", err)
			continue
		}
		a.responders[ap] = r
	}
	for ap, r := range a.responders {
		if !want[ap] {
			r.Close()
			delete(a.responders, ap)
		}
	}
}

// probe runs a prober on each enabled local path.
func (a *Agent) probe() {
	for name, p := range a.plan.Paths {
		k := proberKey{local: p.Src.Address, device: p.Src.Interface, remote: p.Dst.AddrPort(), interval: p.ProbeInterval,
			sla: a.plan.TightestSLA(name), enabled: p.Enabled, pathIndex: p.Index}
		if r := a.probers[name]; r != nil && r.key == k {
			continue
		}
		a.stopProber(name)
		if !p.Enabled {
			continue
		}
		pr := probe.New(probe.Config{Path: name, Local: k.local, Device: k.device, Remote: k.remote, Interval: k.interval,
			SLA: probe.SLA{MaxLatency: k.sla.MaxLatency, MaxJitter: k.sla.MaxJitter, MaxLoss: k.sla.MaxLoss},
			OnChange: func(probe.Stats) {
				select {
				case a.healthCh <- struct{}{}:
				default:
				}
			}})
		ctx, cancel := context.WithCancel(context.Background())
		r := &running{key: k, p: pr, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(r.done); pr.Run(ctx) }()
		a.probers[name] = r
	}
	for name := range a.probers {
		if p := a.plan.Paths[name]; p == nil {
			a.stopProber(name)
		}
	}
}

func (a *Agent) stopProber(name string) {
	if r := a.probers[name]; r != nil {
		r.cancel()
		<-r.done
		delete(a.probers, name)
	}
}

// rules turns the plan's policies into classifier rules, each steering onto
// the path chosen now.
func (a *Agent) rules() []classifier.Rule {
	var out []classifier.Rule
	for _, pol := range a.plan.Policies {
		if pol.ID >= classifier.MaxRules {
			a.log.Warn("dataplane: too many policies; this one is not classified", "policy", pol.Name)
			continue
		}
		r := classifier.Rule{ID: pol.ID, Priority: pol.Priority, Disabled: !pol.Enabled, Src: pol.Src, Dst: pol.Dst,
			SrcPorts: classifier.PortRange(pol.SrcPorts), DstPorts: classifier.PortRange(pol.DstPorts), SetDSCP: pol.SetDSCP}
		if pol.Protocol >= 0 {
			v := uint8(pol.Protocol)
			r.Protocol = &v
		}
		if pol.DSCP >= 0 {
			v := uint8(pol.DSCP)
			r.DSCP = &v
		}
		switch pol.Action {
		case plan.Steer:
			r.Action = classifier.Steer
			r.Mark = a.mark(a.plan.Choose(pol, a.health))
		case plan.Drop:
			r.Action = classifier.Drop
		default:
			r.Action = classifier.Pass
		}
		out = append(out, r)
	}
	return out
}

func (a *Agent) mark(path string) uint32 {
	if p := a.plan.Paths[path]; p != nil {
		return classifier.Mark(p.Index)
	}
	return 0
}

// steer reads the probers' health and, where a policy's choice changed,
// moves it (and the flows pinned to a path that went down) in one map
// update per policy.
func (a *Agent) steer(ctx context.Context) {
	if a.plan == nil {
		return
	}
	now := time.Now()
	for name, r := range a.probers {
		st := r.p.Stats()
		h := plan.Health{Status: st.Health.String(), Latency: st.Latency, Jitter: st.Jitter, Loss: st.Loss}
		old, had := a.health[name]
		a.health[name] = h
		if had && old.Status != h.Status {
			sev, typ := "INFO", "PATH_UP"
			switch h.Status {
			case "DOWN":
				sev, typ = "WARNING", "PATH_DOWN"
			case "DEGRADED":
				sev, typ = "WARNING", "PATH_DEGRADED"
			}
			a.event(ctx, txn.Event{Severity: sev, Type: typ, Subject: pathSubject(name),
				Message: fmt.Sprintf("path %s is %s (was %s): latency %v, jitter %v, loss %.3f%%", name, h.Status, old.Status, h.Latency.Round(time.Microsecond), h.Jitter.Round(time.Microsecond), h.Loss)})
		}
	}
	// Flows stay pinned to a path only while it is UP: a flow on a path
	// that degrades or goes down follows its policy's new choice.
	for _, p := range a.plan.Paths {
		ok := p.Enabled && a.health[p.Name].Status == "UP"
		if err := a.cls.SetEligible(p.Index, ok); err != nil {
			a.log.Warn("dataplane: path eligibility", "path", p.Name, "err", err)
		}
	}
	for _, pol := range a.plan.Policies {
		if pol.Action != plan.Steer || pol.ID >= classifier.MaxRules {
			delete(a.chosen, pol.Name)
			continue
		}
		to := a.plan.Choose(pol, a.health)
		from, had := a.chosen[pol.Name]
		if had && from == to {
			continue
		}
		if err := a.cls.SetMark(pol.ID, a.mark(to)); err != nil {
			a.log.Error("dataplane: steering", "policy", pol.Name, "err", err)
			continue
		}
		a.chosen[pol.Name] = to
		if had {
			a.failovers.Add(1)
			a.event(ctx, txn.Event{Severity: "WARNING", Type: "FAILOVER", Subject: pathSubject(to),
				Message: fmt.Sprintf("policy %s moved from %s to %s at %s", pol.Name, orRouting(from), orRouting(to), now.UTC().Format(time.RFC3339Nano))})
		}
	}
	for name := range a.chosen {
		if !slices.ContainsFunc(a.plan.Policies, func(p plan.Policy) bool { return p.Name == name }) {
			delete(a.chosen, name)
		}
	}
}

func orRouting(path string) string {
	if path == "" {
		return "ordinary routing"
	}
	return path
}

func pathSubject(name string) string {
	if name == "" {
		return ""
	}
	return pathkey.String([]*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": name}}})
}

func (a *Agent) event(ctx context.Context, ev txn.Event) {
	ev.Node = a.cfg.NodeName
	a.log.Info("dataplane event", "type", ev.Type, "message", ev.Message)
	if err := telemetry.Event(ctx, a.cfg.Store, a.cfg.Engine, ev); err != nil {
		a.log.Warn("dataplane: recording an event", "err", err)
	}
}

// Stats returns the agent's measurements; it may be called from any
// goroutine.
func (a *Agent) Stats() Stats {
	a.statsMu.Lock()
	defer a.statsMu.Unlock()
	return Stats{Paths: slices.Clone(a.paths), Failovers: a.failovers.Load(), Orphaned: a.orphaned}
}

// collect writes the measured state into the tree and expires idle flows.
func (a *Agent) collect(ctx context.Context) {
	if a.plan == nil {
		return
	}
	if a.cfg.OnCollect != nil {
		start := time.Now()
		defer func() { a.cfg.OnCollect(time.Since(start)) }()
	}
	if _, err := a.cls.ExpireFlows(a.cfg.FlowIdle); err != nil {
		a.log.Warn("dataplane: expiring flows", "err", err)
	}
	rc, err1 := a.cls.RuleCounters()
	pc, err2 := a.cls.PathCounters()
	if err := errors.Join(err1, err2); err != nil {
		a.log.Warn("dataplane: reading counters", "err", err)
		return
	}
	snap := &telemetry.Snapshot{Paths: map[string]telemetry.Path{}, Policies: map[string]telemetry.Policy{}}
	active := map[string]uint64{}
	err := a.cls.Flows(func(f classifier.Flow) bool {
		pol, ok := a.policyByID[f.RuleID]
		if !ok {
			return true // unmatched traffic is cached in the kernel but is not a policy's flow
		}
		active[pol]++
		tf := telemetry.Flow{Protocol: f.Protocol, Src: f.Src, Dst: f.Dst, Policy: pol, Packets: f.Packets, Bytes: f.Bytes, FirstSeen: f.FirstSeen, LastSeen: f.LastSeen}
		if i, ok := classifier.PathIndex(f.Mark); ok {
			tf.Path = a.pathByIdx[i]
		}
		snap.Flows = append(snap.Flows, tf)
		return true
	})
	if err != nil {
		a.log.Warn("dataplane: reading flows", "err", err)
	}
	paths := make([]PathStats, 0, len(a.probers))
	for name, r := range a.probers {
		p := a.plan.Paths[name]
		st := r.p.Stats()
		c := pc[p.Index]
		snap.Paths[name] = telemetry.Path{Health: st.Health.String(), Latency: st.Latency, Jitter: st.Jitter, Loss: st.Loss,
			Bandwidth: p.Bandwidth(), LastChange: st.LastChange, ProbesSent: st.ProbesSent, ProbesReceived: st.ProbesReceived,
			TxPackets: c.Packets, TxBytes: c.Bytes}
		paths = append(paths, PathStats{Path: name, Health: st.Health, ProbesSent: st.ProbesSent, ProbesReceived: st.ProbesReceived,
			ProbesLate: st.ProbesLate, ProbesLost: st.ProbesLost})
	}
	slices.SortFunc(paths, func(x, y PathStats) int { return strings.Compare(x.Path, y.Path) })
	orphaned, err := a.cls.OrphanedFlowCounts()
	if err != nil {
		a.log.Warn("dataplane: reading orphaned flow counts", "err", err)
	}
	a.statsMu.Lock()
	a.paths = paths
	if err == nil {
		a.orphaned = orphaned
	}
	a.statsMu.Unlock()
	for _, pol := range a.plan.Policies {
		c := rc[pol.ID]
		snap.Policies[pol.Name] = telemetry.Policy{ActivePath: a.chosen[pol.Name], PacketsMatched: c.Packets, BytesMatched: c.Bytes, ActiveFlows: active[pol.Name]}
	}
	for _, ep := range a.plan.Endpoints {
		if ep.Interface == "" {
			continue
		}
		up, ok := a.linkUp[ep.Interface]
		if !ok {
			l, err := netlink.LinkByName(ep.Interface)
			if err != nil {
				continue
			}
			up = l.Attrs().OperState == netlink.OperUp || (l.Attrs().OperState == netlink.OperUnknown && l.Attrs().Flags&net.FlagUp != 0)
			a.linkUp[ep.Interface] = up
		}
		snap.Endpoints = append(snap.Endpoints, telemetry.Endpoint{Site: ep.Site, Name: ep.Name, Up: up})
	}
	if err := a.writer.Write(ctx, snap); err != nil && ctx.Err() == nil {
		a.log.Warn("dataplane: writing measured state", "err", err)
	}
}
