package server_test

import (
	"encoding/json"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// serverFault reports whether a status code can only mean a server bug:
// the node under test is healthy and idle, so Unavailable would be an
// internal error in disguise, and DeadlineExceeded a request that hung.
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Internal, codes.Unknown, codes.Unavailable, codes.DataLoss, codes.DeadlineExceeded:
		return true
	}
	return false
}

// restoreRequests bring a node back to scenario 1: delete everything
// configured, then load scenario 1 and the stats-history defaults the node
// writes at boot. They are two Sets so that the reload does not depend on
// how a delete and an update of the same entries in one request interact.
func restoreRequests(t testing.TB) []*gpb.SetRequest {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(scenario1(t), &doc); err != nil {
		t.Fatal(err)
	}
	doc["patronus-system:system"] = json.RawMessage(`{"stats-history":{"config":{"interval":10,"retention":604800}}}`)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return []*gpb.SetRequest{
		{Delete: []*gpb.Path{{}}},
		{Update: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(b)}}},
	}
}

// setSeed is one FuzzSetValue input.
type setSeed struct {
	value string
	path  string
	op    uint8 // see setOp
}

// setOp turns the fuzzer's operation byte into a SetRequest.
func setOp(op uint8, p *gpb.Path, value []byte) *gpb.SetRequest {
	u := []*gpb.Update{{Path: p, Val: jsonIETF(string(value))}}
	switch op % 3 {
	case 1:
		return &gpb.SetRequest{Replace: u}
	case 2:
		return &gpb.SetRequest{Delete: []*gpb.Path{p}}
	}
	return &gpb.SetRequest{Update: u}
}

const (
	opUpdate uint8 = iota
	opReplace
	opDelete
)

// setSeeds are the scenario files, a few good and bad requests, and every
// JSON value and delete of the bad cases.
func setSeeds(t testing.TB) []setSeed {
	seeds := []setSeed{
		{string(scenario1(t)), "/", opUpdate},
		{string(repoFile(t, "testdata/scenario1/sites.json")), "/sites", opReplace},
		{string(repoFile(t, "testdata/scenario1/paths.json")), "/paths", opReplace},
		{string(repoFile(t, "testdata/scenario1/policies.json")), "/policies", opUpdate},
		{`"Berlin"`, "/sites/site[name=hq]/config/location", opUpdate},
		{`{"name":"hq","config":{"name":"hq","description":"x"}}`, "/sites/site[name=hq]", opReplace},
		{`{"name":"hq","location":"Munich"}`, "/sites/site[name=hq]/config", opReplace},
		{`{"config":{"name":"lte","address":"2001:db8::1","transport":"LTE","bandwidth":"1"}}`, "/sites/site[name=hq]/endpoints/endpoint[name=lte]", opUpdate},
		{`["hq-inet--branch-1-inet"]`, "/policies/policy[name=voice-sip]/action/config/paths", opReplace},
		{`{"config":{"name":"p","priority":"7"}}`, "/policies/policy[name=p]", opUpdate},
		{`{"config":{"username":"ops","role":"OPERATOR","password":"pw"}}`, "/system/aaa/users/user[username=ops]", opUpdate},
		{`{"config":{"node-name":"n2","address":"a:1","raft-address":"a:2","suffrage":"VOTER","site":"hq"}}`, "/system/cluster/members/member[node-name=n2]", opUpdate},
		{`{"interval":1}`, "/system/stats-history/config", opReplace},
		{`{}`, "/", opUpdate},
		{`{}`, "/sites/site[name=hq]/state", opUpdate},
		{`null`, "/sites", opUpdate},
		{``, "/sites/site[name=branch-1]", opDelete},
		{``, "/sites/site[name=*]/config/description", opDelete},
		{``, "/sites/site[name=hq]/config/name", opDelete},
		{``, "/policies", opDelete},
		{`"x"`, "/sites/site[name=hq]/...", opUpdate},
		{`"x"`, "/sites/site[name=a\\]b]/config/location", opUpdate},
	}
	for _, tc := range setBadCases(t) {
		add := func(op uint8, us []*gpb.Update) {
			for _, u := range us {
				v := u.GetVal().GetJsonIetfVal()
				if v == nil {
					v = u.GetVal().GetJsonVal()
				}
				if v == nil || len(u.GetPath().GetElement()) > 0 { //nolint:staticcheck // skipping the deprecated form
					continue
				}
				elems := append(append([]*gpb.PathElem{}, tc.req.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
				seeds = append(seeds, setSeed{string(v), pathkey.String(elems), op})
			}
		}
		add(opUpdate, tc.req.GetUpdate())
		add(opReplace, tc.req.GetReplace())
		for _, d := range tc.req.GetDelete() {
			seeds = append(seeds, setSeed{"", pathkey.String(d.GetElem()), opDelete})
		}
	}
	return seeds
}

// FuzzSetValue sends a fuzzed JSON_IETF value to a fuzzed path as an update,
// a replace or a delete (op modulo 3) against one node holding scenario 1.
// The server must never fail with a code that means a server bug, and a
// failed Set must leave the tree as it was. After a Set that changed
// the configuration, the node is brought back to scenario 1. A failed Set
// may add its REJECTED audit record and events, nothing else.
func FuzzSetValue(f *testing.F) {
	for _, s := range setSeeds(f) {
		f.Add([]byte(s.value), s.path, s.op)
	}
	n := startScenario1(f)
	// Every successful Set adds an audit record and events; keep few, so
	// that reading the whole tree after each input stays cheap.
	n.Engine.AuditRing, n.Engine.EventRing = 16, 16
	c := n.Client
	wantConfig := configOf(f, c)
	wantSum := checksum(wantConfig)
	restore := restoreRequests(f)
	tree := treeLeaves(f, c)

	f.Fuzz(func(t *testing.T, value []byte, path string, op uint8) {
		p, err := ygot.StringToStructuredPath(path)
		if err != nil {
			return
		}
		req := setOp(op, p, value)
		_, err = c.Set(ctxT(t), req)
		if serverFault(status.Code(err)) {
			t.Fatalf("Set %s: %v", req, err)
		}
		if err != nil {
			now := treeLeaves(t, c)
			if d := changedBeyondRejections(tree, now); d != "" {
				t.Fatalf("Set %s failed (%v) but changed the tree:\n%s", req, err, d)
			}
			tree = now
			return
		}
		if checksum(configOf(t, c)) != wantSum {
			for _, r := range restore {
				if _, err := c.Set(ctxT(t), r); err != nil {
					t.Fatalf("restoring scenario 1 after Set %s: %v", req, err)
				}
			}
			if got := configOf(t, c); checksum(got) != wantSum {
				t.Fatalf("after Set %s, deleting / and reloading scenario 1 left another configuration:\n%s", req, treeDiff(wantConfig, got))
			}
		}
		tree = treeLeaves(t, c)
	})
}

// FuzzSubscribePath subscribes ONCE (PROTO and JSON_IETF) and Gets
// (JSON_IETF) a fuzzed path against one node holding scenario 1: whatever
// the path, the answer is data or a client error, never a server fault.
func FuzzSubscribePath(f *testing.F) {
	for _, s := range []string{
		"/", "/sites", "/sites/site", "/sites/site[name=hq]", "/sites/site[name=*]/config/name",
		"/sites/site/name", "/sites/site[name=hq]/name", "/sites/site[name=hq]/endpoints/endpoint[name=inet]/name",
		"/paths/.../latency", "/...", "/.../state", "/paths/path[name=*]/state/counters",
		"/policies/policy[name=voice-sip]/action/config/paths", "/policies/policy/state",
		"/flows/flow[protocol=6]", "/flows/flow[protocol=6][source-address=192.0.2.1][source-port=1][destination-address=192.0.2.2][destination-port=2]/state",
		"/system", "/system/events/event", "/system/audit/record[sequence=1]", "/system/aaa/users/user/config/password",
		"/system/state/current-datetime", "/patronus-sites:sites/site", "/sites/*/config", "/sites/site[name=a b]",
		"/sites/site[id=hq]", "/sites[name=x]", "/nope", "/sites//site", "/sites/site[name=a\\]b]", "/sites/site[name=x=y]",
	} {
		f.Add(s)
	}
	n := startScenario1(f)
	c := n.Client
	f.Fuzz(func(t *testing.T, path string) {
		p, err := ygot.StringToStructuredPath(path)
		if err != nil {
			return
		}
		for _, enc := range []gpb.Encoding{gpb.Encoding_PROTO, gpb.Encoding_JSON_IETF} {
			req := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
				Mode: gpb.SubscriptionList_ONCE, Encoding: enc, Subscription: []*gpb.Subscription{{Path: p}},
			}}}
			if err := subscribeErr(t, c, req); serverFault(status.Code(err)) {
				t.Fatalf("Subscribe ONCE %s (%s): %v", path, enc, err)
			}
		}
		_, err = c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{p}, Encoding: gpb.Encoding_JSON_IETF})
		if serverFault(status.Code(err)) {
			t.Fatalf("Get %s: %v", path, err)
		}
	})
}
