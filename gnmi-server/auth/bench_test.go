package auth_test

import (
	"context"
	"fmt"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/metadata"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

// BenchmarkAuthCost compares a Get of one leaf (16 clients) and one-leaf
// Sets (1 client) on a node without authentication and on one with it (an
// OPERATOR whose credentials are cached by a first call before the clock
// starts; limits high enough never to refuse). Each sub-benchmark runs its
// own node alone, so that neither measures the other's background work.
// The goal: authentication and authorization add at most 10 % to Get p99
// and to Set throughput.
func BenchmarkAuthCost(b *testing.B) {
	start := func(b *testing.B, withAuth bool) gpb.GNMIClient {
		if withAuth {
			n := startAuth(b, auth.Config{UserRate: 1e9, UserBurst: 1e9, PeerRate: 1e9, PeerBurst: 1e9})
			return n.As(b, "operator", operatorPW)
		}
		n := nodetest.Start(b, nodetest.Options{})
		if _, err := n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(b, "/sites/site[name=hq]/config/location"), Val: str("Lisbon")}}}); err != nil {
			b.Fatal(err)
		}
		return n.Client
	}
	get := &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(b, "/sites/site[name=hq]/config/location")}, Encoding: gpb.Encoding_JSON_IETF}
	desc := nodetest.Path(b, "/sites/site[name=hq]/config/description")
	for _, op := range []string{"get", "set"} {
		for _, withAuth := range []bool{false, true} {
			name := op + "/noauth"
			if withAuth {
				name = op + "/auth"
			}
			b.Run(name, func(b *testing.B) {
				c := start(b, withAuth)
				if _, err := c.Get(context.Background(), get); err != nil { // logs in
					b.Fatal(err)
				}
				if op == "get" {
					nodetest.RunClients(b, 16, func(int) error {
						_, err := c.Get(context.Background(), get)
						return err
					})
					return
				}
				nodetest.RunClients(b, 1, func(i int) error {
					_, err := c.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{Path: desc, Val: str(fmt.Sprintf("d%d", i))}}})
					return err
				})
			})
		}
	}
}

// BenchmarkAuthenticateCached is what authentication adds to an RPC whose
// credentials were verified before: the metadata, the cache and the
// caller's token buckets, without gRPC around it.
func BenchmarkAuthenticateCached(b *testing.B) {
	n := startAuth(b, auth.Config{UserRate: 1e9, UserBurst: 1e9, PeerRate: 1e9, PeerBurst: 1e9})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("username", "operator", "password", operatorPW))
	call := n.Auth.UnaryInterceptor()
	req := &gpb.GetRequest{}
	handler := func(ctx context.Context, _ any) (any, error) {
		return nil, n.Auth.Authorize(ctx, "Get", req.GetPath())
	}
	if _, err := call(ctx, req, nil, handler); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := call(ctx, req, nil, handler); err != nil {
			b.Fatal(err)
		}
	}
}
