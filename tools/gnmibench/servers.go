package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/openconfig/gnmi/cache"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/subscribe"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/patronus-sdwan/patronus/gnmi-server/node"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// target names the device in every request's prefix: the reference server
// refuses a subscription without one, Patronus echoes it.
const target = "bench"

// numPolicies is how many policies carry the changing counters: the scale
// set's 1,000 and as many more as it takes to reach 10,000 leaves.
const numPolicies = 5000

// counters are the leaves written under each policy's state/counters.
var counters = []string{"packets-matched", "bytes-matched"}

// countersPath is the subtree every subscriber asks for: it holds exactly
// the changing leaves (active-flows is never written).
var countersPath = &gpb.Path{Elem: []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": "*"}},
	{Name: "state"}, {Name: "counters"}}}

func policyName(i int) string { return fmt.Sprintf("policy-%04d", i) }

// leafSet is the changing leaves, in the order the writer cycles through
// them: the two counters of one policy are adjacent.
type leafSet struct {
	paths []*gpb.Path // full paths, as the reference stores them
	keys  []string    // Patronus store keys of the same leaves
}

func newLeafSet(policies int) *leafSet {
	ls := &leafSet{}
	for i := range policies {
		for _, c := range counters {
			elems := []*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": policyName(i)}},
				{Name: "state"}, {Name: "counters"}, {Name: c}}
			ls.paths = append(ls.paths, &gpb.Path{Elem: elems})
			ls.keys = append(ls.keys, string(pathkey.Encode(elems)))
		}
	}
	return ls
}

func (ls *leafSet) len() int { return len(ls.keys) }

// system is one gNMI server under test, served on loopback, with the
// in-process write path its telemetry comes in by.
type system interface {
	name() string
	addr() string
	// write gives n leaves, from index from on, a new value (one more than
	// the last value written by this system) in one commit.
	write(from, n int) error
	close()
}

// serve serves on a random loopback port, with opts, the services that
// register registers.
func serve(register func(*grpc.Server), opts ...grpc.ServerOption) (*grpc.Server, net.Listener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(64 << 20)}, opts...)...)
	register(gs)
	go gs.Serve(lis)
	return gs, lis, nil
}

// patronus is a single node (no cluster: every commit is local and
// fsynced) in a temporary data dir, served on loopback as patronusd serves
// it but without TLS and authentication (the reference has neither).
type patronus struct {
	dir    string
	node   *node.Node
	gs     *grpc.Server
	lis    net.Listener
	leaves *leafSet
	gen    uint64 // the last value written
}

var _ system = (*patronus)(nil)

// openPatronus opens a node in a new directory under dir and serves it.
func openPatronus(dir string, leaves *leafSet) (*patronus, error) {
	d, err := os.MkdirTemp(dir, "gnmibench-patronus-")
	if err != nil {
		return nil, err
	}
	n, err := node.Open(node.Config{DataDir: d, NodeName: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		os.RemoveAll(d)
		return nil, err
	}
	// Served as patronusd serves it, but for TLS and authentication: on
	// stream workers, with the metrics interceptors.
	gs, lis, err := serve(func(gs *grpc.Server) { gpb.RegisterGNMIServer(gs, n.Server) }, node.StreamWorkers(),
		grpc.ChainUnaryInterceptor(n.Metrics.UnaryInterceptor()), grpc.ChainStreamInterceptor(n.Metrics.StreamInterceptor()))
	if err != nil {
		n.Close()
		os.RemoveAll(d)
		return nil, err
	}
	return &patronus{dir: d, node: n, gs: gs, lis: lis, leaves: leaves}, nil
}

func (p *patronus) name() string { return "patronus" }
func (p *patronus) addr() string { return p.lis.Addr().String() }

func (p *patronus) close() {
	p.node.Server.Shutdown()
	p.gs.Stop()
	p.node.Close()
	os.RemoveAll(p.dir)
}

// write commits the leaves with store.Update, the node-local path the
// collectors write measured state by; the Publisher turns the commit into
// subscribers' changes.
func (p *patronus) write(from, n int) error {
	p.gen++
	// One encoded value for the batch: the store keeps the slice and
	// nothing modifies it.
	v := txn.AppendUint(nil, p.gen)
	keys := p.leaves.keys[from : from+n]
	return p.node.Store.Update(context.Background(), func(tx store.Tx) error {
		for _, k := range keys {
			tx.SetVolatile(k, v)
		}
		return nil
	})
}

// setJSON sends a Set that updates path with a JSON_IETF document.
func setJSON(ctx context.Context, c gpb.GNMIClient, path *gpb.Path, doc any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	_, err = c.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: path,
		Val: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: b}}}}})
	return err
}

// loadScale loads the scale set (tools/scalegen, seed 1) with one Set, as
// an operator would.
func (p *patronus) loadScale(ctx context.Context) error {
	conn, err := dial(p.addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := setJSON(ctx, gpb.NewGNMIClient(conn), &gpb.Path{}, scale.Generate(1).Config); err != nil {
		return fmt.Errorf("loading the scale set: %w", err)
	}
	return nil
}

// addPolicies creates policies from..to-1 (priority i+1, the default
// action) with one Set; the scale set holds the first 1,000.
func (p *patronus) addPolicies(ctx context.Context, from, to int) error {
	conn, err := dial(p.addr())
	if err != nil {
		return err
	}
	defer conn.Close()
	var list []any
	for i := from; i < to; i++ {
		list = append(list, map[string]any{"name": policyName(i), "config": map[string]any{"name": policyName(i), "priority": i + 1}})
	}
	path := &gpb.Path{Elem: []*gpb.PathElem{{Name: "policies"}}}
	if err := setJSON(ctx, gpb.NewGNMIClient(conn), path, map[string]any{"policy": list}); err != nil {
		return fmt.Errorf("adding policies: %w", err)
	}
	return nil
}

// reference is the reference gNMI Subscribe server of openconfig/gnmi: a
// cache with one target, served by subscribe.Server.
type reference struct {
	cache  *cache.Cache
	gs     *grpc.Server
	lis    net.Listener
	leaves *leafSet
	gen    uint64 // the last value written
}

var _ system = (*reference)(nil)

func openReference(leaves *leafSet) (*reference, error) {
	c := cache.New(nil)
	c.Add(target)
	srv, err := subscribe.NewServer(c)
	if err != nil {
		return nil, err
	}
	c.SetClient(srv.Update)
	// gRPC's standard health service beside it: its Check, an RPC that
	// does nothing, is the get-leaf rows' reference (the floor of an RPC
	// on this machine with this client).
	gs, lis, err := serve(func(gs *grpc.Server) {
		gpb.RegisterGNMIServer(gs, srv)
		healthpb.RegisterHealthServer(gs, health.NewServer())
	})
	if err != nil {
		return nil, err
	}
	return &reference{cache: c, gs: gs, lis: lis, leaves: leaves}, nil
}

func (r *reference) name() string { return "reference" }
func (r *reference) addr() string { return r.lis.Addr().String() }
func (r *reference) close()       { r.gs.Stop() }

// write hands the cache one Notification of n updates, as a collector
// feeding it does. The cache keeps the updates, so each is new; the paths
// are shared and never modified.
func (r *reference) write(from, n int) error {
	r.gen++
	nt := &gpb.Notification{Timestamp: time.Now().UnixNano(), Prefix: &gpb.Path{Target: target}, Update: make([]*gpb.Update, n)}
	for i := range n {
		nt.Update[i] = &gpb.Update{Path: r.leaves.paths[from+i], Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: r.gen}}}
	}
	return r.cache.GnmiUpdate(nt)
}

// writeAll writes every leaf once, in batches.
func writeAll(s system, total, batch int) error {
	for from := 0; from < total; from += batch {
		if err := s.write(from, min(batch, total-from)); err != nil {
			return fmt.Errorf("%s: writing the leaves: %w", s.name(), err)
		}
	}
	return nil
}
