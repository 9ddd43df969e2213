package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// loadScale loads the scale set (scenario 2) into n.
func loadScale(b *testing.B, n *nodetest.Node) {
	b.Helper()
	doc, err := scale.Generate(1).JSON()
	if err != nil {
		b.Fatal(err)
	}
	_, err = n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(doc)}}})
	if err != nil {
		b.Fatal(err)
	}
}

func startNode(b *testing.B, withScale bool) *nodetest.Node {
	n := nodetest.Start(b, nodetest.Options{})
	if withScale {
		loadScale(b, n)
	} else {
		// One site so the benchmarked leaf has an entry to live in.
		_, err := n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{
			Path: nodetest.Path(b, "/sites/site[name=site-000]/config/location"),
			Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: "x"}},
		}}})
		if err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// BenchmarkGetLeaf: Get of one leaf with the scale set loaded, 16 clients.
func BenchmarkGetLeaf(b *testing.B) {
	n := startNode(b, true)
	req := &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(b, "/sites/site[name=site-042]/endpoints/endpoint[name=e1]/config/address")}, Encoding: gpb.Encoding_JSON_IETF}
	nodetest.RunClients(b, 16, func(int) error {
		_, err := n.Client.Get(context.Background(), req)
		return err
	})
}

// BenchmarkGetPolicies: Get of all of /policies in JSON_IETF with the scale set.
func BenchmarkGetPolicies(b *testing.B) {
	n := startNode(b, true)
	req := &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(b, "/policies")}, Encoding: gpb.Encoding_JSON_IETF}
	nodetest.RunClients(b, 1, func(int) error {
		_, err := n.Client.Get(context.Background(), req)
		return err
	})
}

func leafSet(b *testing.B, i int) *gpb.SetRequest {
	return &gpb.SetRequest{Update: []*gpb.Update{{
		Path: nodetest.Path(b, "/sites/site[name=site-000]/config/description"),
		Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprintf("d%d", i)}},
	}}}
}

// BenchmarkSetLeaf: one-leaf Sets from one client, on an empty tree and with
// the scale set loaded; the ratio shows what validation costs at scale.
func BenchmarkSetLeaf(b *testing.B) {
	for _, withScale := range []bool{false, true} {
		name := "empty"
		if withScale {
			name = "scale"
		}
		b.Run(name, func(b *testing.B) {
			n := startNode(b, withScale)
			nodetest.RunClients(b, 1, func(i int) error {
				_, err := n.Client.Set(context.Background(), leafSet(b, i))
				return err
			})
		})
	}
}

// BenchmarkSetPolicyPriority: one-leaf Sets of a policy's priority (the
// unique-checked leaf) with the scale set loaded.
func BenchmarkSetPolicyPriority(b *testing.B) {
	n := startNode(b, true)
	p := nodetest.Path(b, "/policies/policy[name=policy-0001]/config/priority")
	nodetest.RunClients(b, 1, func(i int) error {
		_, err := n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{Path: p, Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: uint64(5000 + i%2)}}}}})
		return err
	})
}

// BenchmarkSetConcurrent: one-leaf Sets from 64 concurrent clients (group
// commit: many Sets per fsync).
func BenchmarkSetConcurrent(b *testing.B) {
	n := startNode(b, true)
	nodetest.RunClients(b, 64, func(i int) error {
		req := &gpb.SetRequest{Update: []*gpb.Update{{
			Path: nodetest.Path(b, fmt.Sprintf("/sites/site[name=%s]/config/description", scale.SiteName(i%100))),
			Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprintf("d%d", i)}},
		}}}
		_, err := n.Client.Set(context.Background(), req)
		return err
	})
}

// BenchmarkSet100Updates: SetRequests of 100 one-leaf updates each; compare
// its updates/s with BenchmarkSetLeaf's ops/s.
func BenchmarkSet100Updates(b *testing.B) {
	n := startNode(b, true)
	var paths []*gpb.Path
	for s := 0; s < 100; s++ {
		paths = append(paths, nodetest.Path(b, fmt.Sprintf("/sites/site[name=%s]/config/description", scale.SiteName(s))))
	}
	nodetest.RunClients(b, 1, func(i int) error {
		req := &gpb.SetRequest{}
		for _, p := range paths {
			req.Update = append(req.Update, &gpb.Update{Path: p, Val: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprintf("d%d", i)}}})
		}
		_, err := n.Client.Set(context.Background(), req)
		return err
	})
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "updates/s")
}

// BenchmarkSiteDeleteCascade: deleting a site that 200 paths use, on a
// node with the scale set (the site and paths are created again, untimed,
// before each delete).
func BenchmarkSiteDeleteCascade(b *testing.B) {
	n := startNode(b, true)
	site := `{"name":%q,"config":{"name":%q},"endpoints":{"endpoint":[{"name":"e","config":{"name":"e","address":%q}}]}}`
	sites := fmt.Sprintf(`{"site":[`+site+","+site+"]}", "big", "big", "192.0.2.1", "other", "other", "192.0.2.2")
	var paths []string
	for i := range 200 {
		p := fmt.Sprintf("big-e--other-e-%d", i)
		paths = append(paths, fmt.Sprintf(`{"name":%q,"config":{"name":%q,"source-site":"big","source-endpoint":"e","destination-site":"other","destination-endpoint":"e"}}`, p, p))
	}
	create := &gpb.SetRequest{Update: []*gpb.Update{
		{Path: nodetest.Path(b, "/sites"), Val: nodetest.JSONIETF([]byte(sites))},
		{Path: nodetest.Path(b, "/paths"), Val: nodetest.JSONIETF([]byte(`{"path":[` + strings.Join(paths, ",") + "]}"))},
	}}
	del := &gpb.SetRequest{Delete: []*gpb.Path{nodetest.Path(b, "/sites/site[name=big]")}}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		if _, err := n.Client.Set(ctx, create); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		resp, err := n.Client.Set(ctx, del)
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.GetResponse()) != 1 {
			b.Fatalf("delete answered %v", resp)
		}
	}
}
