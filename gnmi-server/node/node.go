// Package node wires one Patronus node together: the store, the change feed,
// the Set engine and the gNMI server, with the node's own state in /system.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"

	"github.com/patronus-sdwan/patronus/collector/history"
	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/dataplane/agent"
	"github.com/patronus-sdwan/patronus/gnmi-server/audit"
	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/cluster"
	"github.com/patronus-sdwan/patronus/gnmi-server/clusterca"
	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/metrics"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Version is the software version reported in /system/state/version.
var Version = "0.1.0-dev"

// Config configures a node.
type Config struct {
	DataDir           string
	NodeName          string
	MinSampleInterval time.Duration
	Logger            *slog.Logger
	// FeedSlots and FeedBytes bound the change feed: the commits it holds
	// and about the memory their changes take (defaults 16,384 and 64 MiB).
	// Within them the feed keeps a commit while an open cursor (a
	// subscriber's, from the snapshot of its initial sync on, or the
	// dataplane agent's) has not read it, or while it is less than
	// FeedRetain (at least feed.DefaultRetain, 2 s) older than the newest
	// commit: the bounds are what lagging readers may hold. A STREAM subscriber that falls further behind is
	// caught up from a snapshot of the store and the feed's record of deletes
	// (FeedBytes/4 more), and closed with RESOURCE_EXHAUSTED only beyond
	// that record. 64 MiB hold about 13 s of what the collector writes for
	// the scale set, and with less gnmibench's memory row's 50
	// subscribers, which lag up to 11 s behind on a machine the clients
	// share, were cut off before catch-ups existed (at 32 MiB, 30 of
	// them); with catch-ups a smaller feed trades memory for more of them.
	// The slots bound a feed of small commits (one Set each, the fixed
	// cost of a slot is 48 bytes); 16,384 of them are 15 s of one-leaf
	// Sets.
	FeedSlots, FeedBytes int
	FeedRetain           time.Duration
	// Cluster, if set, replicates the store with Raft; without it the node
	// commits Sets to its store alone.
	Cluster *ClusterConfig
	// Site, if set, is the site this node serves: it runs the site's
	// dataplane (classifier, routing, probes, collectors).
	Site string
	// CollectInterval is how often the dataplane writes measured state
	// (default 1 s).
	CollectInterval time.Duration
	// Auth, if set, turns authentication and authorization on: the node's
	// Auth then authenticates requests (its interceptors must be installed
	// on the gRPC server), and the server authorizes them and hides
	// /system/aaa from all but admins. Its Store, Engine, NodeName and
	// Logger are filled in by Open. Without it every request is allowed
	// (in-process tests).
	Auth *auth.Config
}

// ClusterConfig configures replication.
type ClusterConfig struct {
	// RaftAddr is the Raft transport's address; GNMIAddr is this node's
	// gNMI address as other members reach it.
	RaftAddr, GNMIAddr string
	// Join, if set, is the gNMI address of a member to join through;
	// without it a node with no Raft state bootstraps a new cluster.
	Join     string
	Nonvoter bool
	Timing   replication.Timing
	// SnapshotThreshold and TrailingLogs tune Raft snapshots (0: defaults).
	SnapshotThreshold, TrailingLogs uint64
	// Dial connects to another member's gNMI server, with opts added to
	// its own options (the member credentials, with authentication on).
	Dial func(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error)
	// CA, if set, is the cluster CA's manager: Open loads or makes the CA
	// before Raft starts, Raft goes over mutual TLS with its certificates,
	// a member certificate authenticates a member's gNMI calls (with Auth),
	// and the leader commits the CA when the store has none. Dial's
	// transport should be its TransportCredentials. Without it Raft is
	// plain TCP.
	CA *clusterca.Manager
}

// StreamWorkers is the gRPC server option that serves RPCs on long-lived
// worker goroutines instead of a new goroutine per RPC, whose stack then
// grows through the interceptors, the server and Pebble on every call
// (runtime.copystack was 13% of a Get's CPU). A stream that finds every
// worker busy (long Subscribes) gets a goroutine of its own, as before.
func StreamWorkers() grpc.ServerOption {
	return grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0)))
}

// Node is a running node.
type Node struct {
	Schema *schema.Schema
	Store  *store.Store
	Feed   *feed.Feed
	// Publisher publishes the store's commits into Feed; a reader of Feed
	// says what it reads with Publisher.Want (the flow table is published
	// only while one wants it).
	Publisher *server.Publisher
	Engine    *txn.Engine
	Server    *server.Server

	Repl    *replication.Node
	Cluster *cluster.Cluster
	Agent   *agent.Agent // nil unless the node serves a site
	// Auth authenticates requests; nil unless Config.Auth was set.
	Auth *auth.Authenticator
	// Metrics is the node's Prometheus registry (Metrics.Handler serves
	// it). Its interceptors must be chained first on the gRPC server.
	Metrics *metrics.Metrics

	ca        *clusterca.Manager // nil without one
	committer server.Committer
	audit     *audit.Recorder
	cancel    context.CancelFunc
	name      string
	log       *slog.Logger
	loops     sync.WaitGroup // the background loops below
}

// Open opens the node's store in cfg.DataDir and records the node's state.
func Open(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FeedSlots == 0 {
		cfg.FeedSlots = 1 << 14
	}
	if cfg.FeedBytes == 0 {
		cfg.FeedBytes = 64 << 20
	}
	sch, err := schema.Load()
	if err != nil {
		return nil, err
	}
	f := feed.New(cfg.FeedSlots, cfg.FeedBytes)
	if cfg.FeedRetain > 0 {
		f.SetRetain(cfg.FeedRetain)
	}
	pub := server.NewPublisher(sch, f)
	// The flow table (collector/telemetry) reaches the feed only while a
	// subscription wants it.
	pub.Quiet("flows")
	onCommit := pub.OnCommit
	changes := &auth.Changes{}
	if cfg.Auth != nil {
		// The authenticator hears of every commit, so that no request is
		// served from a verification made before its user changed.
		onCommit = func(c store.Commit) {
			changes.Observe(c)
			pub.OnCommit(c)
		}
	}
	// With replication the Raft log is the durable record (see
	// store.Options.NoSync).
	st, err := store.Open(cfg.DataDir, store.Options{OnCommit: onCommit, NoSync: cfg.Cluster != nil,
		DiskOnly: [][]byte{[]byte(history.KeyPrefix)}, Packed: append(txn.PackedPrefixes(), telemetry.PackedPrefixes()...)})
	if err != nil {
		return nil, err
	}
	eng := txn.New(sch)
	n := &Node{Schema: sch, Store: st, Feed: f, Publisher: pub, Engine: eng, Metrics: metrics.New()}
	n.Metrics.Known(gpb.GNMI_ServiceDesc)
	scfg := server.Config{
		Schema: sch, Store: st, Feed: f, Publisher: pub, Engine: eng, NodeName: cfg.NodeName,
		MinSampleInterval: cfg.MinSampleInterval, Logger: cfg.Logger,
	}
	// Refused requests are audited through the committer, once it exists.
	n.audit = audit.New(audit.Config{Node: cfg.NodeName, Logger: cfg.Logger,
		Write: func(ctx context.Context, rej txn.Rejection) error { return n.committer.Reject(ctx, rej) }})
	scfg.Rejected = n.audit.Record
	var authn *auth.Authenticator
	if cfg.Auth != nil {
		ac := *cfg.Auth
		ac.Store, ac.Engine, ac.NodeName, ac.Logger, ac.Changes = st, eng, cfg.NodeName, cfg.Logger, changes
		ac.Audit = n.audit.Record
		if cfg.Cluster != nil && cfg.Cluster.CA != nil {
			ac.ClusterCA = cfg.Cluster.CA.Cert
		}
		authn = auth.New(ac)
		n.Auth = authn
		scfg.Authorize, scfg.Visible, scfg.User, scfg.IsMember = authn.Authorize, authn.Visible, authn.UserName, authn.IsMember
	}
	if c := cfg.Cluster; c != nil {
		rcfg := replication.Config{
			Dir: filepath.Join(cfg.DataDir, "raft"), NodeName: cfg.NodeName, RaftAddr: c.RaftAddr,
			Bootstrap: c.Join == "", Store: st, Engine: eng, Schema: sch, Timing: c.Timing, Logger: cfg.Logger,
			SnapshotThreshold: c.SnapshotThreshold, TrailingLogs: c.TrailingLogs,
		}
		if c.CA != nil {
			// The CA and this node's certificate exist before Raft listens,
			// so that a new cluster never takes a plaintext connection.
			has, err := replication.HasState(rcfg.Dir)
			if err == nil {
				err = c.CA.Open(st, c.Join != "", has)
			}
			if err != nil {
				n.audit.Close()
				st.Close()
				return nil, err
			}
			rcfg.TLS = c.CA.RaftTLS
		}
		n.Repl, err = replication.Open(rcfg)
		if err != nil {
			n.audit.Close()
			st.Close()
			return nil, err
		}
		ccfg := cluster.Config{
			NodeName: cfg.NodeName, GNMIAddr: c.GNMIAddr, RaftAddr: c.RaftAddr, Nonvoter: c.Nonvoter,
			Repl: n.Repl, Store: st, Engine: eng, Logger: cfg.Logger,
		}
		ccfg.Dial = func(addr string) (*grpc.ClientConn, error) { return c.Dial(addr) }
		if authn != nil {
			creds := authn.MemberCredentials(cfg.NodeName)
			ccfg.Dial = func(addr string) (*grpc.ClientConn, error) { return c.Dial(addr, grpc.WithPerRPCCredentials(creds)) }
			ccfg.Bootstrap = authn.Bootstrap
		}
		n.Cluster = cluster.Start(ccfg)
		scfg.Committer, scfg.Reads = n.Cluster, n.Cluster
		if c.CA != nil {
			n.ca = c.CA
			cl := n.Cluster
			c.CA.Start(n.Repl, func(ctx context.Context) ([]byte, error) {
				var b []byte
				err := cl.AskMembers(ctx, func(ctx context.Context, cc grpc.ClientConnInterface) (err error) {
					b, err = clusterca.Fetch(ctx, cc)
					return err
				})
				return b, err
			})
		}
	}
	scfg.History = history.NewReader(st)
	if scfg.Committer == nil {
		scfg.Committer = server.LocalCommitter{Store: st, Engine: eng}
	}
	n.committer = scfg.Committer
	n.name, n.log = cfg.NodeName, cfg.Logger
	n.Server = server.New(scfg)
	if err := n.boot(cfg); err != nil {
		n.closeParts()
		return nil, err
	}
	if cfg.Site != "" {
		n.Agent, err = agent.Start(agent.Config{Site: cfg.Site, NodeName: cfg.NodeName, Store: st, Feed: n.Feed, Engine: eng,
			Interval: cfg.CollectInterval, Logger: cfg.Logger, OnCollect: n.Metrics.ObserveCollect})
		if err != nil {
			n.closeParts()
			return nil, err
		}
	}
	src := metrics.Sources{Subscriptions: n.Server, Store: st, Ready: n.Ready}
	if n.Repl != nil {
		src.Raft = n.Repl
	}
	if n.Auth != nil {
		src.Auth = n.Auth
	}
	if n.Agent != nil {
		src.Dataplane = n.Agent
	}
	n.Metrics.Watch(src)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.loops.Add(3)
	go n.clock(ctx)
	go n.record(ctx)
	go n.rollbacks(ctx)
	return n, nil
}

// MaxReadyLag is how many committed Raft entries a follower may have left
// to apply and still be ready: one batch of appended entries. A follower
// that keeps up applies each batch as it arrives; one further behind is
// catching up (a restart, a snapshot) and would serve an old view.
const MaxReadyLag = 256

// Ready returns nil when the node can serve consistent reads and writes,
// else an error that says in one line why not. A node without replication
// is ready while its store is open. A member of a cluster also needs a
// leader it knows (a Set is forwarded to it, a linearizable Get confirmed
// with it) and, unless it is the leader, to have applied all but
// MaxReadyLag of the entries it knows are committed.
func (n *Node) Ready() error {
	if n.Store.Closed() {
		return errors.New("the store is closed")
	}
	if n.Repl == nil {
		return nil
	}
	st := n.Repl.Stats()
	switch {
	case st.Role == "SHUTDOWN":
		return errors.New("raft has shut down")
	case st.Leader == "":
		return fmt.Errorf("no leader known (role %s, term %d)", st.Role, st.Term)
	case st.Role != "LEADER" && st.ApplyLag() > MaxReadyLag:
		return fmt.Errorf("catching up with the cluster log: applied %d of %d committed entries", st.AppliedIndex, st.CommitIndex)
	}
	return nil
}

// Close stops the node's background work and closes the store.
func (n *Node) Close() error {
	n.cancel()
	n.loops.Wait()
	return n.closeParts()
}

func (n *Node) closeParts() error {
	n.audit.Close()
	var errs []error
	if n.Agent != nil {
		errs = append(errs, n.Agent.Close())
	}
	if n.ca != nil {
		n.ca.Close()
	}
	if n.Cluster != nil {
		n.Cluster.Close()
	}
	if n.Repl != nil {
		errs = append(errs, n.Repl.Close())
	}
	errs = append(errs, n.Store.Close())
	return errors.Join(errs...)
}

func sysState(name string) []*gpb.PathElem {
	return []*gpb.PathElem{{Name: "system"}, {Name: "state"}, {Name: name}}
}

func str(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}
func u64(u uint64) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}}
}

// boot records /system/state and fills the defaults of /system/stats-history.
func (n *Node) boot(cfg Config) error {
	now := uint64(time.Now().UnixNano())
	return n.Store.Update(context.Background(), func(tx store.Tx) error {
		set := func(elems []*gpb.PathElem, tv *gpb.TypedValue) {
			tx.Set(pathkey.Encode(elems), txn.EncodeValue(tv))
		}
		set(sysState("node-name"), str(cfg.NodeName))
		if cfg.Site != "" {
			set(sysState("site"), str(cfg.Site))
		} else {
			tx.Delete(pathkey.Encode(sysState("site")))
		}
		set(sysState("version"), str(Version))
		set(sysState("boot-time"), u64(now))
		set(sysState("current-datetime"), u64(now))
		if cfg.Cluster != nil {
			// Replicated defaults are committed through the cluster.
			return nil
		}
		for _, leaf := range []string{"interval", "retention"} {
			for _, c := range []string{"config", "state"} {
				elems := []*gpb.PathElem{{Name: "system"}, {Name: "stats-history"}, {Name: c}, {Name: leaf}}
				if _, ok, err := tx.Get(pathkey.Encode(elems)); err != nil {
					return err
				} else if !ok {
					def := n.Schema.Lookup([]*gpb.PathElem{{Name: "system"}, {Name: "stats-history"}, {Name: "config"}, {Name: leaf}}).Default
					if def == nil {
						return fmt.Errorf("node: /system/stats-history/config/%s has no default", leaf)
					}
					set(elems, def)
				}
			}
		}
		return nil
	})
}

// clock keeps /system/state/current-datetime fresh to the minute; it is a
// coarse liveness signal, not a time service.
func (n *Node) clock(ctx context.Context) {
	defer n.loops.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			_ = n.Store.Update(ctx, func(tx store.Tx) error {
				tx.Set(pathkey.Encode(sysState("current-datetime")), txn.EncodeValue(u64(uint64(now.UnixNano()))))
				return nil
			})
		}
	}
}

// record samples the node's measured state into its history every
// /system/stats-history/config/interval and trims what is older than the
// retention.
func (n *Node) record(ctx context.Context) {
	defer n.loops.Done()
	rec := history.NewRecorder(n.Store, n.Schema)
	// The interval is read every second, so that a change applies at once.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		var now time.Time
		select {
		case <-ctx.Done():
			return
		case now = <-tick.C:
		}
		if now.Sub(last) < time.Duration(n.setting("interval", 10))*time.Second {
			continue
		}
		last = now
		if err := rec.Sample(ctx, now); err != nil && ctx.Err() == nil {
			n.log.Warn("recording stats history", "err", err)
		}
		retention := time.Duration(n.setting("retention", 604800)) * time.Second
		if err := rec.Trim(ctx, now.Add(-retention)); err != nil && ctx.Err() == nil {
			n.log.Warn("trimming stats history", "err", err)
		}
	}
}

// setting reads a /system/stats-history/config leaf in seconds.
func (n *Node) setting(leaf string, def uint64) uint64 {
	b, ok, err := n.Store.Get(pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "stats-history"}, {Name: "config"}, {Name: leaf}}))
	if err != nil || !ok {
		return def
	}
	tv, err := txn.DecodeValue(b)
	if err != nil || tv.GetUintVal() == 0 {
		return def
	}
	return tv.GetUintVal()
}

// rollbacks rolls back a confirmed commit that was not confirmed by its
// deadline. The deadline is in the replicated store, so when the leader
// changes during the window the new leader rolls back on time.
func (n *Node) rollbacks(ctx context.Context) {
	defer n.loops.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n.Repl != nil && !n.Repl.IsLeader() {
				continue
			}
			p, err := txn.ReadPending(n.Store)
			if err != nil || p == nil || now.UnixNano() < p.Deadline {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = n.committer.Commit(cctx, nil, txn.Meta{User: cluster.InternalUser, Node: n.name, Commit: &txn.CommitAction{Kind: txn.CommitRollback, ID: p.ID}})
			cancel()
			if err != nil {
				n.log.Warn("rolling back an unconfirmed commit", "id", p.ID, "err", err)
			} else {
				n.log.Info("rolled back an unconfirmed commit", "id", p.ID)
			}
		}
	}
}
