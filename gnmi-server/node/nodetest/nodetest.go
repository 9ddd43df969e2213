// Package nodetest starts a real node for tests and benchmarks: a Pebble
// store in a temporary directory and the gNMI server on a loopback port,
// reached through a real gRPC client.
package nodetest

import (
	"context"
	"encoding/json"
	"net"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/node"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Node is a node under test.
type Node struct {
	*node.Node
	Addr   string
	Client gpb.GNMIClient
	Conn   *grpc.ClientConn
	Dir    string
	stop   func()
}

// Options tune Start.
type Options struct {
	// Dir reuses a data directory (to test restarts); empty means a new one.
	Dir               string
	MinSampleInterval time.Duration
	FeedSlots         int
	FeedBytes         int
	FeedRetain        time.Duration
	// Auth, if set, turns authentication on (see node.Config.Auth); the
	// node then has no users until the test adds them (AddUser), and
	// Client carries no credentials (see Dial).
	Auth *auth.Config
}

// Start starts a node and stops it when the test ends.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	n, err := node.Open(node.Config{DataDir: o.Dir, NodeName: "test-node", MinSampleInterval: o.MinSampleInterval, FeedSlots: o.FeedSlots, FeedBytes: o.FeedBytes, FeedRetain: o.FeedRetain, Auth: o.Auth})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// The interceptors are chained as patronusd chains them: metrics
	// first, so that they count the requests authentication refuses.
	sopts := []grpc.ServerOption{grpc.MaxRecvMsgSize(64 << 20), node.StreamWorkers(),
		grpc.ChainUnaryInterceptor(n.Metrics.UnaryInterceptor()), grpc.ChainStreamInterceptor(n.Metrics.StreamInterceptor())}
	if n.Auth != nil {
		sopts = append(sopts, grpc.ChainUnaryInterceptor(n.Auth.UnaryInterceptor()), grpc.ChainStreamInterceptor(n.Auth.StreamInterceptor()))
	}
	gs := grpc.NewServer(sopts...)
	gpb.RegisterGNMIServer(gs, n.Server)
	go gs.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	tn := &Node{Node: n, Addr: lis.Addr().String(), Client: gpb.NewGNMIClient(conn), Conn: conn, Dir: o.Dir}
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		conn.Close()
		gs.Stop()
		n.Close()
	}
	tn.stop = stop
	t.Cleanup(stop)
	return tn
}

// Dial returns a client of the node with opts (such as
// grpc.WithPerRPCCredentials) added; it is closed when the test ends.
func (n *Node) Dial(t testing.TB, opts ...grpc.DialOption) gpb.GNMIClient {
	t.Helper()
	conn, err := grpc.NewClient(n.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return gpb.NewGNMIClient(conn)
}

// As returns a client of the node that authenticates as user with password.
func (n *Node) As(t testing.TB, user, password string) gpb.GNMIClient {
	t.Helper()
	return n.Dial(t, grpc.WithPerRPCCredentials(auth.Password{Username: user, Password: password}))
}

// AddUser creates or replaces a user of /system/aaa with role (ADMIN,
// OPERATOR or VIEWER) and password, committed straight to the store.
func (n *Node) AddUser(t testing.TB, user, role, password string) {
	t.Helper()
	doc, _ := json.Marshal(map[string]string{"username": user, "role": role, "password": password})
	ops := []txn.Op{{Kind: gpb.UpdateResult_REPLACE, Elems: []*gpb.PathElem{{Name: "system"}, {Name: "aaa"}, {Name: "users"},
		{Name: "user", Key: map[string]string{"username": user}}, {Name: "config"}}, Value: JSONIETF(doc)}}
	if err := n.Engine.Prepare(ops); err != nil {
		t.Fatal(err)
	}
	c := server.LocalCommitter{Store: n.Store, Engine: n.Engine}
	if _, err := c.Commit(context.Background(), ops, txn.Meta{User: "nodetest", Node: "test-node"}); err != nil {
		t.Fatal(err)
	}
}

// Stop stops the node now (it is also stopped when the test ends).
func (n *Node) Stop() { n.stop() }

// Path parses a gNMI path string such as /sites/site[name=hq]/config.
func Path(t testing.TB, s string) *gpb.Path {
	t.Helper()
	p, err := ygot.StringToStructuredPath(s)
	if err != nil {
		t.Fatalf("bad path %q: %v", s, err)
	}
	return p
}

// JSONIETF wraps a JSON_IETF document as a TypedValue.
func JSONIETF(b []byte) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: b}}
}
