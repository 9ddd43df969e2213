package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
)

// TestConflictingSetsSerialize: Sets that are each valid alone but conflict
// together (new policies claiming the same unique priority) are serialized,
// so exactly one of them applies.
func TestConflictingSetsSerialize(t *testing.T) {
	n := nodetest.Start(t, nodetest.Options{})
	const clients = 32
	var wg sync.WaitGroup
	codesSeen := make([]codes.Code, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			doc := fmt.Sprintf(`{"config":{"name":"p%d","priority":7},"action":{"config":{"type":"PASS"}}}`, i)
			_, err := n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{
				Path: nodetest.Path(t, fmt.Sprintf("/policies/policy[name=p%d]", i)),
				Val:  nodetest.JSONIETF([]byte(doc)),
			}}})
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	ok := 0
	for i, c := range codesSeen {
		switch c {
		case codes.OK:
			ok++
		case codes.InvalidArgument:
		default:
			t.Errorf("client %d got %v; want OK or INVALID_ARGUMENT", i, c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d conflicting Sets applied; want exactly 1", ok)
	}
	resp, err := n.Client.Get(context.Background(), &gpb.GetRequest{
		Path:     []*gpb.Path{nodetest.Path(t, "/policies/policy[name=*]/config/priority")},
		Encoding: gpb.Encoding_PROTO,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetNotification()[0].GetUpdate()); got != 1 {
		t.Errorf("%d policies hold priority 7; want 1", got)
	}
}
