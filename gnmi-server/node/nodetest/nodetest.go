// Package nodetest starts a real node for tests and benchmarks: a Pebble
// store in a temporary directory and the gNMI server on a loopback port,
// reached through a real gRPC client.
package nodetest

import (
	"net"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/patronus-sdwan/patronus/gnmi-server/node"
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
	FeedChanges       int
}

// Start starts a node and stops it when the test ends.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	n, err := node.Open(node.Config{DataDir: o.Dir, NodeName: "test-node", MinSampleInterval: o.MinSampleInterval, FeedSlots: o.FeedSlots, FeedChanges: o.FeedChanges})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
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
