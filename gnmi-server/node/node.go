// Package node wires one Patronus node together: the store, the change feed,
// the Set engine and the gNMI server, with the node's own state in /system.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
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
	// FeedSlots and FeedChanges bound the change feed (commits, changes).
	FeedSlots, FeedChanges int
}

// Node is a running node.
type Node struct {
	Schema *schema.Schema
	Store  *store.Store
	Feed   *feed.Feed
	Engine *txn.Engine
	Server *server.Server

	pub    *server.Publisher
	cancel context.CancelFunc
	done   chan struct{}
}

// Open opens the node's store in cfg.DataDir and records the node's state.
func Open(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FeedSlots == 0 {
		cfg.FeedSlots = 1 << 16
	}
	if cfg.FeedChanges == 0 {
		cfg.FeedChanges = 1 << 20
	}
	sch, err := schema.Load()
	if err != nil {
		return nil, err
	}
	f := feed.New(cfg.FeedSlots, cfg.FeedChanges)
	pub := server.NewPublisher(sch, f)
	st, err := store.Open(cfg.DataDir, store.Options{OnCommit: pub.OnCommit})
	if err != nil {
		pub.Close()
		return nil, err
	}
	eng := txn.New(sch)
	n := &Node{Schema: sch, Store: st, Feed: f, Engine: eng, pub: pub, done: make(chan struct{})}
	n.Server = server.New(server.Config{
		Schema: sch, Store: st, Feed: f, Engine: eng, NodeName: cfg.NodeName,
		MinSampleInterval: cfg.MinSampleInterval, Logger: cfg.Logger,
	})
	if err := n.boot(cfg); err != nil {
		st.Close()
		pub.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go n.clock(ctx, cfg.NodeName)
	return n, nil
}

// Close stops the node's background work and closes the store.
func (n *Node) Close() error {
	n.cancel()
	<-n.done
	err := n.Store.Close()
	n.pub.Close()
	return err
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
		set(sysState("version"), str(Version))
		set(sysState("boot-time"), u64(now))
		set(sysState("current-datetime"), u64(now))
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
func (n *Node) clock(ctx context.Context, name string) {
	defer close(n.done)
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
