package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// clockLeaf is refreshed by the node's clock, so it is left out of the tree
// checksum.
const clockLeaf = "/system/state/current-datetime"

func repoFile(t testing.TB, rel string) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "../..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func scenario1(t testing.TB) []byte { return repoFile(t, "testdata/scenario1/config.json") }

func jsonIETF(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(s)}}
}

func strVal(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startScenario1 starts a node holding scenario 1.
func startScenario1(t testing.TB) *nodetest.Node {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{})
	_, err := n.Client.Set(ctxT(t), &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(scenario1(t))}}})
	if err != nil {
		t.Fatalf("loading scenario 1: %v", err)
	}
	return n
}

// treeLeaves reads every leaf of the tree (Get of / as PROTO, type ALL) as
// path -> value text, without the clock leaf.
func treeLeaves(t testing.TB, c gpb.GNMIClient) map[string]string {
	t.Helper()
	resp, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{{}}, Encoding: gpb.Encoding_PROTO, Type: gpb.GetRequest_ALL})
	if err != nil {
		t.Fatalf("Get /: %v", err)
	}
	out := map[string]string{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			p := pathkey.String(append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...))
			if p == clockLeaf {
				continue
			}
			out[p] = valueString(u.GetVal())
		}
	}
	return out
}

// valueString renders a value as type:value, deterministically.
func valueString(tv *gpb.TypedValue) string {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return "string_val:" + strconv.Quote(v.StringVal)
	case *gpb.TypedValue_UintVal:
		return "uint_val:" + strconv.FormatUint(v.UintVal, 10)
	case *gpb.TypedValue_IntVal:
		return "int_val:" + strconv.FormatInt(v.IntVal, 10)
	case *gpb.TypedValue_BoolVal:
		return "bool_val:" + strconv.FormatBool(v.BoolVal)
	case *gpb.TypedValue_DoubleVal:
		return "double_val:" + strconv.FormatFloat(v.DoubleVal, 'g', -1, 64)
	case *gpb.TypedValue_LeaflistVal:
		els := make([]string, 0, len(v.LeaflistVal.GetElement()))
		for _, el := range v.LeaflistVal.GetElement() {
			els = append(els, valueString(el))
		}
		return "leaflist_val:[" + strings.Join(els, ",") + "]"
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(tv)
	if err != nil {
		return "unmarshalable:" + err.Error()
	}
	return "proto:" + hex.EncodeToString(b)
}

// checksum hashes the sorted path=value strings of a tree.
func checksum(leaves map[string]string) string {
	lines := make([]string, 0, len(leaves))
	for p, v := range leaves {
		lines = append(lines, p+"="+v)
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pathT parses a gNMI path string.
func pathT(t testing.TB, s string) *gpb.Path { return nodetest.Path(t, s) }

type setCase struct {
	name string
	req  *gpb.SetRequest
	code codes.Code
	// mention lists substrings the status message must hold: the offending
	// path, and sometimes the offending value.
	mention []string
}

func setBadCases(t testing.TB) []setCase {
	p := func(s string) *gpb.Path { return pathT(t, s) }
	update := func(path string, v *gpb.TypedValue) *gpb.SetRequest {
		return &gpb.SetRequest{Update: []*gpb.Update{{Path: p(path), Val: v}}}
	}
	replace := func(path string, v *gpb.TypedValue) *gpb.SetRequest {
		return &gpb.SetRequest{Replace: []*gpb.Update{{Path: p(path), Val: v}}}
	}
	del := func(paths ...string) *gpb.SetRequest {
		req := &gpb.SetRequest{}
		for _, s := range paths {
			req.Delete = append(req.Delete, p(s))
		}
		return req
	}
	const (
		hq       = "/sites/site[name=hq]"
		hqInet   = "/sites/site[name=hq]/endpoints/endpoint[name=inet]"
		path1    = "/paths/path[name=hq-inet--branch-1-inet]"
		sip      = "/policies/policy[name=voice-sip]"
		rtp      = "/policies/policy[name=voice-rtp]"
		video    = "/policies/policy[name=video]"
		location = hq + "/config/location"
	)
	newPolicy := func(name string, prio int) string {
		return `{"config":{"name":"` + name + `","priority":` + strconv.Itoa(prio) + `},"action":{"config":{"type":"DROP"}}}`
	}
	return []setCase{
		// Malformed paths.
		{name: "empty element name",
			req: &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{Elem: []*gpb.PathElem{
				{Name: "sites"}, {Name: "site", Key: map[string]string{"name": "hq"}}, {Name: ""}, {Name: "location"}}}, Val: strVal("x")}}},
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=hq]//location", "empty element name"}},
		{name: "empty element name in prefix",
			req: &gpb.SetRequest{Prefix: &gpb.Path{Elem: []*gpb.PathElem{{Name: "sites"}, {Name: ""}}},
				Update: []*gpb.Update{{Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "location"}}}, Val: strVal("x")}}},
			code: codes.InvalidArgument, mention: []string{"/sites//location"}},
		{name: "deprecated element field",
			req:  &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{Element: []string{"sites", "site[name=hq]", "config", "location"}}, Val: strVal("x")}}}, //nolint:staticcheck // testing its rejection
			code: codes.InvalidArgument, mention: []string{"sites site[name=hq] config location", "element"}},
		{name: "unknown origin openconfig",
			req:  &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{Origin: "openconfig", Elem: p(location).GetElem()}, Val: strVal("x")}}},
			code: codes.InvalidArgument, mention: []string{location, "openconfig"}},
		{name: "unknown origin in prefix",
			req:  &gpb.SetRequest{Prefix: &gpb.Path{Origin: "openconfig"}, Update: []*gpb.Update{{Path: p(location), Val: strVal("x")}}},
			code: codes.InvalidArgument, mention: []string{"openconfig"}},
		{name: "origin in prefix and path",
			req:  &gpb.SetRequest{Prefix: &gpb.Path{Origin: "patronus"}, Update: []*gpb.Update{{Path: &gpb.Path{Origin: "patronus", Elem: p(location).GetElem()}, Val: strVal("x")}}},
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "multi-level wildcard in update",
			req:  update("/sites/.../location", strVal("x")),
			code: codes.InvalidArgument, mention: []string{"/sites/.../location"}},
		{name: "element wildcard in update",
			req:  update("/sites/*/config/location", strVal("x")),
			code: codes.InvalidArgument, mention: []string{"/sites/*/config/location"}},
		{name: "key wildcard in update",
			req:  update("/sites/site[name=*]/config/location", strVal("x")),
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=*]/config/location"}},
		{name: "key wildcard in replace",
			req:  replace("/sites/site[name=*]/config/location", strVal("x")),
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=*]/config/location"}},

		// Paths that are not in the schema: NOT_FOUND for update and replace.
		{name: "unknown element",
			req:  update(hq+"/config/colour", jsonIETF(`"red"`)),
			code: codes.NotFound, mention: []string{hq + "/config/colour"}},
		{name: "unknown element, scalar value",
			req:  update(hq+"/config/colour", strVal("red")),
			code: codes.NotFound, mention: []string{hq + "/config/colour"}},
		{name: "unknown top-level element",
			req:  update("/interfaces/interface[name=eth0]/config/mtu", jsonIETF(`1500`)),
			code: codes.NotFound, mention: []string{"/interfaces/interface[name=eth0]/config/mtu"}},
		{name: "unknown module prefix",
			req:  update("/openconfig-interfaces:interfaces", jsonIETF(`{}`)),
			code: codes.NotFound, mention: []string{"openconfig-interfaces:interfaces"}},
		{name: "replace of an unknown element",
			req:  replace(hq+"/config/colour", jsonIETF(`"red"`)),
			code: codes.NotFound, mention: []string{hq + "/config/colour"}},

		// Keys.
		{name: "list without keys",
			req:  update("/sites/site/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site/config/location"}},
		{name: "list without keys, JSON entry",
			req:  update("/sites/site", jsonIETF(`{"name":"hq","config":{"name":"hq"}}`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site"}},
		{name: "key on a non-list",
			req:  update("/sites[name=x]/site[name=hq]/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{"/sites[name=x]/site[name=hq]/config/location"}},
		{name: "key on a leaf",
			req:  update(hq+"/config/location[name=x]", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config/location[name=x]"}},
		{name: "wrong key name",
			req:  update("/sites/site[id=hq]/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site[id=hq]/config/location", `"id"`}},
		{name: "extra key",
			req:  update("/sites/site[name=hq][id=1]/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site[id=1][name=hq]/config/location"}},
		{name: "key value with a space",
			req:  update("/sites/site[name=new site]/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=new site]/config/location"}},
		{name: "key value too long",
			req:  update("/sites/site[name="+strings.Repeat("s", 65)+"]/config/location", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{strings.Repeat("s", 65)}},

		// Wrong value types.
		{name: "string into uint64",
			req:  update(hqInet+"/config/bandwidth", jsonIETF(`"fast"`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/bandwidth", "fast"}},
		{name: "string_val into uint64",
			req:  update(hqInet+"/config/bandwidth", strVal("fast")),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/bandwidth"}},
		{name: "number into enum",
			req:  update(hqInet+"/config/transport", jsonIETF(`1`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/transport"}},
		{name: "unknown enum name",
			req:  update(hqInet+"/config/transport", jsonIETF(`"internet"`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/transport", "internet"}},
		{name: "bool into string",
			req:  update(location, jsonIETF(`true`)),
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "bool_val into string",
			req:  update(location, &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: true}}),
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "number into bool",
			req:  update(path1+"/config/enabled", jsonIETF(`1`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/config/enabled"}},
		{name: "object into leaf",
			req:  update(location, jsonIETF(`{"x":1}`)),
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "scalar into container",
			req:  update(hq+"/config", jsonIETF(`"x"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config"}},
		{name: "scalar TypedValue into container",
			req:  update(hq+"/config", strVal("x")),
			code: codes.InvalidArgument, mention: []string{hq + "/config"}},
		{name: "scalar into leaf-list",
			req:  update(hq+"/config/lan-interface", jsonIETF(`"eth0"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config/lan-interface"}},
		{name: "object into list",
			req:  update("/sites", jsonIETF(`{"site":{"name":"x"}}`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site"}},
		{name: "invalid JSON",
			req:  update(hq, jsonIETF(`{"config":`)),
			code: codes.InvalidArgument, mention: []string{hq}},
		{name: "invalid plain JSON",
			req:  update(hq+"/config", &gpb.TypedValue{Value: &gpb.TypedValue_JsonVal{JsonVal: []byte(`{"location":1}`)}}),
			code: codes.InvalidArgument, mention: []string{location}},

		// Out of range.
		{name: "dscp 64",
			req:  update(rtp+"/match/config/dscp", jsonIETF(`64`)),
			code: codes.InvalidArgument, mention: []string{rtp + "/match/config/dscp", "64"}},
		{name: "set-dscp 64 as uint_val",
			req:  update(rtp+"/action/config/set-dscp", &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 64}}),
			code: codes.InvalidArgument, mention: []string{rtp + "/action/config/set-dscp"}},
		{name: "port 70000",
			req:  update(hqInet+"/config/port", jsonIETF(`70000`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/port", "70000"}},
		{name: "port 70000 as uint_val",
			req:  update(hqInet+"/config/port", &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 70000}}),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/port"}},
		{name: "protocol 256",
			req:  update(sip+"/match/config/protocol", jsonIETF(`256`)),
			code: codes.InvalidArgument, mention: []string{sip + "/match/config/protocol"}},
		{name: "negative number into uint",
			req:  update(path1+"/config/cost", jsonIETF(`-1`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/config/cost"}},
		{name: "probe-interval 0",
			req:  update(path1+"/config/probe-interval", jsonIETF(`0`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/config/probe-interval"}},
		{name: "max-loss 101",
			req:  update(video+"/action/sla/config/max-loss", jsonIETF(`"101"`)),
			code: codes.InvalidArgument, mention: []string{video + "/action/sla/config/max-loss", "101"}},
		{name: "max-loss with 4 fraction digits",
			req:  update(video+"/action/sla/config/max-loss", jsonIETF(`"1.2345"`)),
			code: codes.InvalidArgument, mention: []string{video + "/action/sla/config/max-loss"}},
		{name: "uint64 over 2^64",
			req:  update(hqInet+"/config/bandwidth", jsonIETF(`"18446744073709551616"`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/bandwidth"}},

		// Patterns and semantic checks.
		{name: "name with a space in a JSON list entry",
			req:  update("/sites", jsonIETF(`{"site":[{"name":"new site","config":{"name":"new site"}}]}`)),
			code: codes.InvalidArgument, mention: []string{"new site"}},
		{name: "empty name",
			req:  update("/sites", jsonIETF(`{"site":[{"name":"","config":{"name":""}}]}`)),
			code: codes.InvalidArgument, mention: []string{"/sites/site"}},
		{name: "address 300.1.1.1",
			req:  update(hqInet+"/config/address", jsonIETF(`"300.1.1.1"`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/address", "300.1.1.1"}},
		{name: "IPv6 address with a zone",
			req:  update(hqInet+"/config/gateway", jsonIETF(`"fe80::1%eth0"`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/gateway"}},
		{name: "prefix with host bits",
			req:  update(video+"/match/config/destination-prefix", jsonIETF(`"198.51.100.1/24"`)),
			code: codes.InvalidArgument, mention: []string{video + "/match/config/destination-prefix", "198.51.100.1/24"}},
		{name: "IPv6 prefix with host bits",
			req:  update(video+"/match/config/source-prefix", jsonIETF(`"2001:db8::1/32"`)),
			code: codes.InvalidArgument, mention: []string{video + "/match/config/source-prefix"}},
		{name: "prefix length 33",
			req:  update(video+"/match/config/source-prefix", jsonIETF(`"198.51.100.0/33"`)),
			code: codes.InvalidArgument, mention: []string{video + "/match/config/source-prefix"}},
		{name: "port-range 10..5",
			req:  update(video+"/match/config/source-port", jsonIETF(`"10..5"`)),
			code: codes.InvalidArgument, mention: []string{video + "/match/config/source-port", "10..5"}},
		{name: "port-range 70000",
			req:  update(video+"/match/config/destination-port", jsonIETF(`"70000"`)),
			code: codes.InvalidArgument, mention: []string{video + "/match/config/destination-port"}},

		// JSON_IETF objects that do not fit the schema.
		{name: "JSON with an unknown member",
			req:  update(hq, jsonIETF(`{"config":{"location":"Berlin","colour":"red"}}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config/colour"}},
		{name: "JSON with an unknown module",
			req:  update("/", jsonIETF(`{"openconfig-interfaces:interfaces":{}}`)),
			code: codes.InvalidArgument, mention: []string{"openconfig-interfaces:interfaces"}},
		{name: "JSON with a wrong module qualifier",
			req:  update("/", jsonIETF(`{"patronus-paths:sites":{}}`)),
			code: codes.InvalidArgument, mention: []string{"patronus-paths:sites"}},
		{name: "JSON key mismatching the path",
			req:  update(hq, jsonIETF(`{"name":"other","config":{"name":"other"}}`)),
			code: codes.InvalidArgument, mention: []string{hq, "other"}},
		{name: "JSON config key mismatching the path",
			req:  update(hq, jsonIETF(`{"config":{"name":"other"}}`)),
			code: codes.InvalidArgument, mention: []string{hq, "other"}},
		{name: "JSON entry key mismatching its config",
			req:  update("/sites", jsonIETF(`{"site":[{"name":"hq","config":{"name":"other"}}]}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config/name", "other"}},
		{name: "JSON with read-only state",
			req:  update(hq, jsonIETF(`{"config":{"location":"Berlin"},"state":{"location":"Berlin"}}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/state"}},
		{name: "JSON with measured state",
			req:  update(path1, jsonIETF(`{"state":{"latency":"5"}}`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/state"}},
		{name: "JSON into a read-only container",
			req:  update(hq+"/state", jsonIETF(`{"location":"Berlin"}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/state"}},
		{name: "empty JSON object into a read-only container",
			req:  update(hq+"/state", jsonIETF(`{}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/state"}},
		{name: "JSON into a read-only list",
			req:  update("/flows", jsonIETF(`{"flow":[]}`)),
			code: codes.InvalidArgument, mention: []string{"/flows"}},

		// Leafrefs.
		{name: "path with an endpoint missing at its source site",
			req: update("/paths/path[name=hq-lte--branch-2-inet]", jsonIETF(`{"config":{"name":"hq-lte--branch-2-inet",
				"source-site":"hq","source-endpoint":"lte","destination-site":"branch-2","destination-endpoint":"inet"}}`)),
			code: codes.InvalidArgument, mention: []string{"/paths/path[name=hq-lte--branch-2-inet]/config/source-endpoint", "lte"}},
		{name: "path to a missing site",
			req: update("/paths/path[name=hq-inet--nowhere-inet]", jsonIETF(`{"config":{"name":"hq-inet--nowhere-inet",
				"source-site":"hq","source-endpoint":"inet","destination-site":"nowhere","destination-endpoint":"inet"}}`)),
			code: codes.InvalidArgument, mention: []string{"/paths/path[name=hq-inet--nowhere-inet]/config/destination-", "nowhere"}},
		{name: "existing path pointed at a missing endpoint",
			req:  update(path1+"/config/destination-endpoint", jsonIETF(`"lte"`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/config/destination-endpoint", "lte"}},
		{name: "policy naming a missing path",
			req:  update(video+"/action/config/paths", jsonIETF(`["hq-inet--branch-1-inet","no-such-path"]`)),
			code: codes.InvalidArgument, mention: []string{video + "/action/config/paths", "no-such-path"}},
		{name: "policy naming a missing path, leaflist_val",
			req: update(video+"/action/config/paths", &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: &gpb.ScalarArray{
				Element: []*gpb.TypedValue{strVal("no-such-path")}}}}),
			code: codes.InvalidArgument, mention: []string{video + "/action/config/paths", "no-such-path"}},
		{name: "member serving a missing site",
			req: update("/system/cluster/members/member[node-name=n2]", jsonIETF(`{"config":{"node-name":"n2",
				"address":"192.0.2.2:9339","raft-address":"192.0.2.2:9340","suffrage":"VOTER","site":"nowhere"}}`)),
			code: codes.InvalidArgument, mention: []string{"/system/cluster/members/member[node-name=n2]/config/site", "nowhere"}},

		// Unique priorities.
		{name: "new policy with voice-sip's priority",
			req:  update("/policies/policy[name=new-pol]", jsonIETF(newPolicy("new-pol", 10))),
			code: codes.InvalidArgument, mention: []string{"priority", "new-pol", "10"}},
		{name: "existing policy moved onto another's priority",
			req:  update(video+"/config/priority", jsonIETF(`11`)),
			code: codes.InvalidArgument, mention: []string{"priority", "voice-rtp", "video"}},
		{name: "two new policies with the same priority in one request",
			req: &gpb.SetRequest{Update: []*gpb.Update{
				{Path: p("/policies/policy[name=p-a]"), Val: jsonIETF(newPolicy("p-a", 500))},
				{Path: p("/policies/policy[name=p-b]"), Val: jsonIETF(newPolicy("p-b", 500))},
			}},
			code: codes.InvalidArgument, mention: []string{"priority", "p-a", "p-b", "500"}},
		{name: "two new policies with the same priority in one JSON value",
			req: update("/policies", jsonIETF(`{"policy":[`+
				`{"name":"p-a","config":{"name":"p-a","priority":501}},`+
				`{"name":"p-b","config":{"name":"p-b","priority":501}}]}`)),
			code: codes.InvalidArgument, mention: []string{"priority", "p-a", "p-b", "501"}},

		// Values that are missing or in an encoding the server does not take.
		{name: "replace with no value",
			req:  &gpb.SetRequest{Replace: []*gpb.Update{{Path: p(location)}}},
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "replace with an empty TypedValue",
			req:  replace(location, &gpb.TypedValue{}),
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "update with no value",
			req:  &gpb.SetRequest{Update: []*gpb.Update{{Path: p(location)}}},
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "union_replace with no value",
			req:  &gpb.SetRequest{UnionReplace: []*gpb.Update{{Path: p(location)}}},
			code: codes.InvalidArgument, mention: []string{location}},
		{name: "bytes_val",
			req:  update(location, &gpb.TypedValue{Value: &gpb.TypedValue_BytesVal{BytesVal: []byte("Berlin")}}),
			code: codes.Unimplemented, mention: []string{location}},
		{name: "proto_bytes",
			req:  update(hq, &gpb.TypedValue{Value: &gpb.TypedValue_ProtoBytes{ProtoBytes: []byte{0x0a, 0x00}}}),
			code: codes.Unimplemented, mention: []string{hq}},
		{name: "proto_bytes replace",
			req:  replace(hq, &gpb.TypedValue{Value: &gpb.TypedValue_ProtoBytes{ProtoBytes: []byte{0x0a, 0x00}}}),
			code: codes.Unimplemented, mention: []string{hq}},
		{name: "any_val",
			req:  update(location, &gpb.TypedValue{Value: &gpb.TypedValue_AnyVal{AnyVal: &anypb.Any{TypeUrl: "type.googleapis.com/x"}}}),
			code: codes.Unimplemented, mention: []string{location}},

		// Request-level errors.
		{name: "Depth extension",
			req: &gpb.SetRequest{Update: []*gpb.Update{{Path: p(location), Val: strVal("Berlin")}},
				Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Depth{Depth: &gnmi_ext.Depth{Level: 1}}}}},
			code: codes.InvalidArgument, mention: []string{"Depth"}},
		{name: "History extension",
			req: &gpb.SetRequest{Update: []*gpb.Update{{Path: p(location), Val: strVal("Berlin")}},
				Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{}}}}},
			code: codes.InvalidArgument, mention: []string{"History"}},
		{name: "no operations",
			req:  &gpb.SetRequest{},
			code: codes.InvalidArgument, mention: []string{"no delete, replace or update"}},
		{name: "only a prefix",
			req:  &gpb.SetRequest{Prefix: p(hq)},
			code: codes.InvalidArgument, mention: []string{"no delete, replace or update"}},

		// Mandatory leaves.
		{name: "new endpoint without address",
			req:  update(hq+"/endpoints/endpoint[name=lte]", jsonIETF(`{"config":{"name":"lte","transport":"LTE"}}`)),
			code: codes.InvalidArgument, mention: []string{hq + "/endpoints/endpoint[name=lte]/config/address", "mandatory"}},
		{name: "new endpoint from its key alone",
			req:  update(hq+"/endpoints/endpoint[name=lte]/config/transport", jsonIETF(`"LTE"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/endpoints/endpoint[name=lte]/config/address"}},
		{name: "replace of an endpoint's config without address",
			req:  replace(hqInet+"/config", jsonIETF(`{"name":"inet","transport":"INTERNET"}`)),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/address"}},
		{name: "delete of a mandatory leaf",
			req:  del(hqInet + "/config/address"),
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/address"}},
		{name: "new policy without priority",
			req:  update("/policies/policy[name=new-pol]", jsonIETF(`{"config":{"name":"new-pol"}}`)),
			code: codes.InvalidArgument, mention: []string{"/policies/policy[name=new-pol]/config/priority"}},

		// Read-only leaves.
		{name: "write a read-only leaf",
			req:  update(path1+"/state/latency", jsonIETF(`"5"`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/state/latency"}},
		{name: "write a read-only leaf, scalar",
			req:  update(path1+"/state/latency", &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 5}}),
			code: codes.InvalidArgument, mention: []string{path1 + "/state/latency"}},
		{name: "replace a read-only leaf",
			req:  replace(path1+"/state/latency", jsonIETF(`"5"`)),
			code: codes.InvalidArgument, mention: []string{path1 + "/state/latency"}},
		{name: "write a config mirror",
			req:  update(hq+"/state/location", jsonIETF(`"Berlin"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/state/location"}},
		{name: "write system state",
			req:  update("/system/state/node-name", jsonIETF(`"other"`)),
			code: codes.InvalidArgument, mention: []string{"/system/state/node-name"}},
		{name: "delete read-only state",
			req:  del(path1 + "/state"),
			code: codes.InvalidArgument, mention: []string{path1 + "/state"}},
		{name: "delete the event log",
			req:  del("/system/events"),
			code: codes.InvalidArgument, mention: []string{"/system/events"}},

		// List keys.
		{name: "key leaf set to another value",
			req:  update(hq+"/config/name", jsonIETF(`"other"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/config/name", "other"}},
		{name: "key leaf set to another value, scalar",
			req:  update(hq+"/config/name", strVal("other")),
			code: codes.InvalidArgument, mention: []string{hq + "/config/name", "other"}},
		{name: "list key leaf written directly",
			req:  update(hq+"/name", jsonIETF(`"other"`)),
			code: codes.InvalidArgument, mention: []string{hq + "/name"}},
		{name: "delete of a key leaf",
			req:  del(hq + "/config/name"),
			code: codes.InvalidArgument, mention: []string{hq + "/config/name"}},
		{name: "delete of a list key leaf",
			req:  del(hq + "/name"),
			code: codes.InvalidArgument, mention: []string{hq + "/name"}},

		// One bad operation undoes the good ones before it.
		{name: "good delete then bad update",
			req: &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site[name=branch-2]")},
				Update: []*gpb.Update{{Path: p(location), Val: jsonIETF(`"Berlin"`)}, {Path: p(hqInet + "/config/port"), Val: jsonIETF(`70000`)}}},
			code: codes.InvalidArgument, mention: []string{hqInet + "/config/port"}},
		{name: "good replace then bad update",
			req: &gpb.SetRequest{Replace: []*gpb.Update{{Path: p("/policies"), Val: jsonIETF(`{}`)}},
				Update: []*gpb.Update{{Path: p(video + "/config/priority"), Val: jsonIETF(`"x"`)}}},
			code: codes.InvalidArgument, mention: []string{video + "/config/priority"}},
	}
}

// checkStatus checks err's code and that its message holds every substring.
func checkStatus(t *testing.T, err error, code codes.Code, mention []string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("code = %s, want %s (message %q)", st.Code(), code, st.Message())
	}
	for _, m := range mention {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q does not mention %q", st.Message(), m)
		}
	}
}

// unchanged checks that the tree is as before but for the audit records
// and events of refused requests; it returns the tree as it now is, so that
// one failure does not spill into later cases.
func unchanged(t *testing.T, c gpb.GNMIClient, before map[string]string) map[string]string {
	t.Helper()
	after := treeLeaves(t, c)
	if d := changedBeyondRejections(before, after); d != "" {
		t.Errorf("the tree changed:\n%s", d)
	}
	return after
}

// changedBeyondRejections says how after differs from before, leaving out
// what a refused request adds (REJECTED audit records, events, and the
// records and events those push out of their rings), or "" if nothing else
// differs. Refusals before the log are recorded in the background, so their
// records may come late: any record after holds that before did not must be
// REJECTED.
func changedBeyondRejections(before, after map[string]string) string {
	records := func(p string) bool {
		return strings.HasPrefix(p, "/system/audit/") || strings.HasPrefix(p, "/system/events/")
	}
	strip := func(m map[string]string) map[string]string {
		out := make(map[string]string, len(m))
		for p, v := range m {
			if !records(p) {
				out[p] = v
			}
		}
		return out
	}
	var bad []string
	for p, v := range after {
		if _, old := before[p]; !old && strings.HasPrefix(p, "/system/audit/") && strings.HasSuffix(p, "/state/result") && v != `string_val:"REJECTED"` {
			bad = append(bad, "+ "+p+" = "+v)
		}
	}
	if b, a := strip(before), strip(after); checksum(b) != checksum(a) {
		bad = append(bad, treeDiff(b, a))
	}
	return strings.Join(bad, "\n")
}

// treeDiff summarizes how two trees differ, at most 20 lines.
func treeDiff(before, after map[string]string) string {
	var lines []string
	for p, v := range before {
		if w, ok := after[p]; !ok {
			lines = append(lines, "- "+p+" = "+v)
		} else if w != v {
			lines = append(lines, "~ "+p+" = "+v+" -> "+w)
		}
	}
	for p, w := range after {
		if _, ok := before[p]; !ok {
			lines = append(lines, "+ "+p+" = "+w)
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i][2:] < lines[j][2:] })
	if len(lines) > 20 {
		lines = append(lines[:20], fmt.Sprintf("... and %d more", len(lines)-20))
	}
	return strings.Join(lines, "\n")
}

func TestSetBadInputs(t *testing.T) {
	n := startScenario1(t)
	tree := treeLeaves(t, n.Client)
	for _, tc := range setBadCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.Client.Set(ctxT(t), tc.req)
			if err == nil {
				t.Errorf("Set succeeded, want %s", tc.code)
			} else {
				checkStatus(t, err, tc.code, tc.mention)
			}
			tree = unchanged(t, n.Client, tree)
		})
	}
}

func TestGetBadInputs(t *testing.T) {
	n := startScenario1(t)
	tree := treeLeaves(t, n.Client)
	get := func(enc gpb.Encoding, paths ...*gpb.Path) *gpb.GetRequest {
		return &gpb.GetRequest{Path: paths, Encoding: enc}
	}
	p := func(s string) *gpb.Path { return pathT(t, s) }
	for _, tc := range []struct {
		name    string
		req     *gpb.GetRequest
		code    codes.Code
		mention []string
	}{
		{name: "unknown path", req: get(gpb.Encoding_JSON_IETF, p("/sites/site[name=hq]/config/colour")),
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=hq]/config/colour"}},
		{name: "unknown top-level path", req: get(gpb.Encoding_PROTO, p("/interfaces")),
			code: codes.InvalidArgument, mention: []string{"/interfaces"}},
		{name: "one unknown path among good ones", req: get(gpb.Encoding_JSON, p("/sites"), p("/nope")),
			code: codes.InvalidArgument, mention: []string{"/nope"}},
		{name: "key on a non-list", req: get(gpb.Encoding_JSON, p("/sites[name=hq]")),
			code: codes.InvalidArgument, mention: []string{"/sites[name=hq]"}},
		{name: "wrong key name", req: get(gpb.Encoding_JSON, p("/sites/site[id=hq]")),
			code: codes.InvalidArgument, mention: []string{"/sites/site[id=hq]"}},
		{name: "invalid key value", req: get(gpb.Encoding_JSON, p("/sites/site[name=new site]")),
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=new site]"}},
		{name: "empty element name", req: get(gpb.Encoding_JSON, &gpb.Path{Elem: []*gpb.PathElem{{Name: "sites"}, {Name: ""}}}),
			code: codes.InvalidArgument, mention: []string{"/sites/"}},
		{name: "deprecated element field", req: get(gpb.Encoding_JSON, &gpb.Path{Element: []string{"sites"}}), //nolint:staticcheck // testing its rejection
			code: codes.InvalidArgument, mention: []string{"element"}},
		{name: "unknown origin", req: get(gpb.Encoding_JSON, &gpb.Path{Origin: "openconfig", Elem: p("/sites").GetElem()}),
			code: codes.InvalidArgument, mention: []string{"/sites", "openconfig"}},
		{name: "no path", req: get(gpb.Encoding_JSON),
			code: codes.InvalidArgument},
		{name: "ASCII encoding", req: get(gpb.Encoding_ASCII, p("/sites")),
			code: codes.Unimplemented, mention: []string{"ASCII"}},
		{name: "BYTES encoding", req: get(gpb.Encoding_BYTES, p("/sites")),
			code: codes.Unimplemented, mention: []string{"BYTES"}},
		{name: "unknown encoding", req: get(gpb.Encoding(42), p("/sites")),
			code: codes.Unimplemented},
		{name: "unknown data type", req: &gpb.GetRequest{Path: []*gpb.Path{p("/sites")}, Type: gpb.GetRequest_DataType(9)},
			code: codes.InvalidArgument},
		{name: "History extension", req: &gpb.GetRequest{Path: []*gpb.Path{p("/sites")},
			Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{}}}}},
			code: codes.InvalidArgument, mention: []string{"History"}},
		{name: "valid path without data", req: get(gpb.Encoding_JSON_IETF, p("/sites/site[name=nowhere]")),
			code: codes.NotFound, mention: []string{"/sites/site[name=nowhere]"}},
		{name: "valid leaf without data", req: get(gpb.Encoding_PROTO, p("/sites/site[name=hq]/config/description")),
			code: codes.NotFound, mention: []string{"/sites/site[name=hq]/config/description"}},
		{name: "write-only leaf", req: get(gpb.Encoding_JSON_IETF, p("/system/aaa/users/user/config/password")),
			code: codes.NotFound, mention: []string{"/system/aaa/users/user/config/password"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := n.Client.Get(ctxT(t), tc.req)
			if err == nil {
				t.Errorf("Get succeeded, want %s", tc.code)
			} else {
				checkStatus(t, err, tc.code, tc.mention)
			}
			tree = unchanged(t, n.Client, tree)
		})
	}
}

// subscribeErr sends reqs on a new Subscribe stream and returns the error the
// stream ends with, or nil if it ends cleanly.
func subscribeErr(t testing.TB, c gpb.GNMIClient, reqs ...*gpb.SubscribeRequest) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	for _, r := range reqs {
		if err := sc.Send(r); err != nil {
			break // the server has already answered; Recv has the status
		}
	}
	for {
		_, err := sc.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestSubscribeBadInputs(t *testing.T) {
	n := startScenario1(t)
	tree := treeLeaves(t, n.Client)
	list := func(mode gpb.SubscriptionList_Mode, enc gpb.Encoding, paths ...*gpb.Path) *gpb.SubscribeRequest {
		l := &gpb.SubscriptionList{Mode: mode, Encoding: enc}
		for _, p := range paths {
			l.Subscription = append(l.Subscription, &gpb.Subscription{Path: p})
		}
		return &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: l}}
	}
	poll := &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}
	p := func(s string) *gpb.Path { return pathT(t, s) }
	for _, tc := range []struct {
		name    string
		reqs    []*gpb.SubscribeRequest
		code    codes.Code
		mention []string
	}{
		{name: "first message is a Poll", reqs: []*gpb.SubscribeRequest{poll},
			code: codes.InvalidArgument, mention: []string{"SubscriptionList"}},
		{name: "first message is empty", reqs: []*gpb.SubscribeRequest{{}},
			code: codes.InvalidArgument, mention: []string{"SubscriptionList"}},
		{name: "empty subscription list", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_ONCE, gpb.Encoding_PROTO)},
			code: codes.InvalidArgument, mention: []string{"no subscription"}},
		{name: "empty subscription list, STREAM", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_STREAM, gpb.Encoding_PROTO)},
			code: codes.InvalidArgument, mention: []string{"no subscription"}},
		{name: "unknown path", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_ONCE, gpb.Encoding_PROTO, p("/sites/site[name=hq]/config/colour"))},
			code: codes.InvalidArgument, mention: []string{"/sites/site[name=hq]/config/colour"}},
		{name: "unknown path, STREAM", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_STREAM, gpb.Encoding_JSON_IETF, p("/sites"), p("/nope"))},
			code: codes.InvalidArgument, mention: []string{"/nope"}},
		{name: "unknown path, POLL", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_POLL, gpb.Encoding_JSON, p("/paths/path[id=x]"))},
			code: codes.InvalidArgument, mention: []string{"/paths/path[id=x]"}},
		{name: "empty element name", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_ONCE, gpb.Encoding_PROTO, &gpb.Path{Elem: []*gpb.PathElem{{Name: "sites"}, {Name: ""}}})},
			code: codes.InvalidArgument, mention: []string{"/sites/"}},
		{name: "unknown origin", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_ONCE, gpb.Encoding_PROTO, &gpb.Path{Origin: "openconfig", Elem: p("/sites").GetElem()})},
			code: codes.InvalidArgument, mention: []string{"openconfig"}},
		{name: "ASCII encoding", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_ONCE, gpb.Encoding_ASCII, p("/sites"))},
			code: codes.Unimplemented, mention: []string{"ASCII"}},
		{name: "BYTES encoding, STREAM", reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_STREAM, gpb.Encoding_BYTES, p("/sites"))},
			code: codes.Unimplemented, mention: []string{"BYTES"}},
		{name: "a second SubscriptionList on a POLL stream",
			reqs: []*gpb.SubscribeRequest{list(gpb.SubscriptionList_POLL, gpb.Encoding_PROTO, p("/sites")), list(gpb.SubscriptionList_POLL, gpb.Encoding_PROTO, p("/sites"))},
			code: codes.InvalidArgument},
		{name: "sample interval below the minimum",
			reqs: []*gpb.SubscribeRequest{{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{Mode: gpb.SubscriptionList_STREAM,
				Subscription: []*gpb.Subscription{{Path: p("/paths"), Mode: gpb.SubscriptionMode_SAMPLE, SampleInterval: 1}}}}}},
			code: codes.InvalidArgument, mention: []string{"/paths"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := subscribeErr(t, n.Client, tc.reqs...)
			if err == nil {
				t.Errorf("Subscribe ended cleanly, want %s", tc.code)
			} else {
				checkStatus(t, err, tc.code, tc.mention)
			}
			tree = unchanged(t, n.Client, tree)
		})
	}
}

// getJSON reads one path as JSON_IETF; ok is false on NOT_FOUND.
func getJSON(t *testing.T, c gpb.GNMIClient, path string) (string, bool) {
	t.Helper()
	resp, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{pathT(t, path)}, Encoding: gpb.Encoding_JSON_IETF})
	if status.Code(err) == codes.NotFound {
		return "", false
	}
	if err != nil {
		t.Fatalf("Get %s: %v", path, err)
	}
	var parts []string
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			parts = append(parts, string(u.GetVal().GetJsonIetfVal()))
		}
	}
	return strings.Join(parts, ","), true
}

// configOf reads the config leaves of the tree.
func configOf(t testing.TB, c gpb.GNMIClient) map[string]string {
	t.Helper()
	resp, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{{}}, Encoding: gpb.Encoding_PROTO, Type: gpb.GetRequest_CONFIG})
	if status.Code(err) == codes.NotFound {
		return map[string]string{} // a Set replaced the root with nothing
	}
	if err != nil {
		t.Fatalf("Get / CONFIG: %v", err)
	}
	out := map[string]string{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			out[pathkey.String(u.GetPath().GetElem())] = valueString(u.GetVal())
		}
	}
	return out
}

// TestSetPositiveControls: requests near the bad ones that must succeed.
func TestSetPositiveControls(t *testing.T) {
	n := startScenario1(t)
	c := n.Client
	set := func(t *testing.T, req *gpb.SetRequest) {
		t.Helper()
		if _, err := c.Set(ctxT(t), req); err != nil {
			t.Fatalf("Set: %v", err)
		}
	}
	p := func(s string) *gpb.Path { return pathT(t, s) }
	const (
		sip = "/policies/policy[name=voice-sip]"
		rtp = "/policies/policy[name=voice-rtp]"
	)

	t.Run("swap two priorities in one request", func(t *testing.T) {
		set(t, &gpb.SetRequest{Update: []*gpb.Update{
			{Path: p(sip + "/config/priority"), Val: jsonIETF(`11`)},
			{Path: p(rtp + "/config/priority"), Val: jsonIETF(`10`)},
		}})
		for path, want := range map[string]string{
			sip + "/config/priority": "11", sip + "/state/priority": "11",
			rtp + "/config/priority": "10", rtp + "/state/priority": "10",
		} {
			if got, _ := getJSON(t, c, path); got != want {
				t.Errorf("%s = %s, want %s", path, got, want)
			}
		}
		// The unique index follows the swap: each priority is taken by its new
		// holder only.
		_, err := c.Set(ctxT(t), &gpb.SetRequest{Update: []*gpb.Update{{Path: p("/policies/policy[name=x]"), Val: jsonIETF(`{"config":{"name":"x","priority":10}}`)}}})
		checkStatus(t, err, codes.InvalidArgument, []string{"priority", "voice-rtp"})
		set(t, &gpb.SetRequest{Update: []*gpb.Update{{Path: p("/policies/policy[name=x]"), Val: jsonIETF(`{"config":{"name":"x","priority":12}}`)}}})
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/policies/policy[name=x]")}})
	})

	t.Run("swap three priorities in a cycle", func(t *testing.T) {
		set(t, &gpb.SetRequest{Update: []*gpb.Update{
			{Path: p(sip + "/config/priority"), Val: jsonIETF(`20`)},
			{Path: p(rtp + "/config/priority"), Val: jsonIETF(`11`)},
			{Path: p("/policies/policy[name=video]/config/priority"), Val: jsonIETF(`10`)},
		}})
	})

	t.Run("take a deleted policy's priority in the same request", func(t *testing.T) {
		set(t, &gpb.SetRequest{
			Delete: []*gpb.Path{p("/policies/policy[name=block-telnet]")},
			Update: []*gpb.Update{{Path: p("/policies/policy[name=telnet2]"), Val: jsonIETF(`{"config":{"name":"telnet2","priority":30}}`)}},
		})
	})

	t.Run("delete a site that does not exist", func(t *testing.T) {
		before := configOf(t, c)
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site[name=nowhere]")}})
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site[name=hq]/endpoints/endpoint[name=nothing]")}})
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site[name=hq]/config/description")}})
		if diff := cmp.Diff(before, configOf(t, c)); diff != "" {
			t.Errorf("deleting nothing changed the configuration (-before +after):\n%s", diff)
		}
	})

	t.Run("delete with a key wildcard", func(t *testing.T) {
		set(t, &gpb.SetRequest{Update: []*gpb.Update{
			{Path: p("/sites/site[name=hq]/config/description"), Val: jsonIETF(`"head office"`)},
			{Path: p("/sites/site[name=branch-1]/config/description"), Val: jsonIETF(`"Lisbon branch"`)},
		}})
		if _, ok := getJSON(t, c, "/sites/site[name=*]/config/description"); !ok {
			t.Fatal("descriptions not written")
		}
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site[name=*]/config/description")}})
		for _, path := range []string{"/sites/site[name=*]/config/description", "/sites/site[name=*]/state/description"} {
			if got, ok := getJSON(t, c, path); ok {
				t.Errorf("%s still holds %s", path, got)
			}
		}
		if got, _ := getJSON(t, c, "/sites/site[name=hq]/config/location"); got != `"Frankfurt"` {
			t.Errorf("hq location = %s, want \"Frankfurt\" (the wildcard delete reached too far)", got)
		}
	})

	t.Run("delete with a list without keys", func(t *testing.T) {
		set(t, &gpb.SetRequest{Update: []*gpb.Update{
			{Path: p("/sites/site[name=hq]/config/description"), Val: jsonIETF(`"head office"`)},
		}})
		set(t, &gpb.SetRequest{Delete: []*gpb.Path{p("/sites/site/config/description")}})
		if got, ok := getJSON(t, c, "/sites/site[name=hq]/config/description"); ok {
			t.Errorf("description still holds %s", got)
		}
	})

	t.Run("uint64 as JSON number and as string", func(t *testing.T) {
		const bw = "/sites/site[name=hq]/endpoints/endpoint[name=inet]/config/bandwidth"
		set(t, &gpb.SetRequest{Update: []*gpb.Update{{Path: p(bw), Val: jsonIETF(`2000000`)}}})
		if got, _ := getJSON(t, c, bw); got != `"2000000"` {
			t.Errorf("bandwidth = %s, want \"2000000\"", got)
		}
		set(t, &gpb.SetRequest{Update: []*gpb.Update{{Path: p(bw), Val: jsonIETF(`"1000000"`)}}})
	})

	t.Run("percentage", func(t *testing.T) {
		const loss = "/policies/policy[name=video]/action/sla/config/max-loss"
		set(t, &gpb.SetRequest{Update: []*gpb.Update{{Path: p(loss), Val: jsonIETF(`"1.5"`)}}})
		if got, _ := getJSON(t, c, loss); got != `"1.500"` {
			t.Errorf("max-loss = %s, want \"1.500\"", got)
		}
	})
}

// setRequestFile reads a gnmic --request-file holding replaces.
func setRequestFile(t testing.TB, rel string) *gpb.SetRequest {
	t.Helper()
	var rf struct {
		Replaces []struct {
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		} `json:"replaces"`
	}
	if err := json.Unmarshal(repoFile(t, rel), &rf); err != nil {
		t.Fatal(err)
	}
	req := &gpb.SetRequest{}
	for _, r := range rf.Replaces {
		req.Replace = append(req.Replace, &gpb.Update{Path: pathT(t, r.Path), Val: jsonIETF(string(r.Value))})
	}
	return req
}

// TestReplaceKeepsWhatItRewrites: a replace whose value holds what is
// already there changes nothing, and a replace below a list entry does not
// delete the entry or what refers to it. Each case runs on its own node.
func TestReplaceKeepsWhatItRewrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  func(t *testing.T) *gpb.SetRequest
		// changed lists the config leaves the request may change, with
		// their new values.
		changed map[string]string
	}{
		{name: "replace a key leaf with its own value",
			req: func(t *testing.T) *gpb.SetRequest {
				return &gpb.SetRequest{Replace: []*gpb.Update{{Path: pathT(t, "/sites/site[name=hq]/config/name"), Val: jsonIETF(`"hq"`)}}}
			}},
		{name: "replace an entry's config container",
			req: func(t *testing.T) *gpb.SetRequest {
				return &gpb.SetRequest{Replace: []*gpb.Update{{Path: pathT(t, "/sites/site[name=hq]/config"), Val: jsonIETF(`{"name":"hq","location":"Munich"}`)}}}
			},
			changed: map[string]string{"/sites/site[name=hq]/config/location": `string_val:"Munich"`}},
		{name: "replace an endpoint's config container",
			req: func(t *testing.T) *gpb.SetRequest {
				return &gpb.SetRequest{Replace: []*gpb.Update{{Path: pathT(t, "/sites/site[name=hq]/endpoints/endpoint[name=inet]/config"),
					Val: jsonIETF(`{"name":"inet","address":"203.0.113.1","transport":"INTERNET","bandwidth":"1000000"}`)}}}
			}},
		{name: "replace a site with its own content",
			req: func(t *testing.T) *gpb.SetRequest {
				var doc struct {
					Sites struct {
						Site []json.RawMessage `json:"site"`
					} `json:"patronus-sites:sites"`
				}
				if err := json.Unmarshal(scenario1(t), &doc); err != nil {
					t.Fatal(err)
				}
				return &gpb.SetRequest{Replace: []*gpb.Update{{Path: pathT(t, "/sites/site[name=hq]"), Val: jsonIETF(string(doc.Sites.Site[0]))}}}
			}},
		{name: "re-apply testdata/scenario1/set-request.json",
			req: func(t *testing.T) *gpb.SetRequest { return setRequestFile(t, "testdata/scenario1/set-request.json") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startScenario1(t)
			want := configOf(t, n.Client)
			for p, v := range tc.changed {
				want[p] = v
			}
			if _, err := n.Client.Set(ctxT(t), tc.req(t)); err != nil {
				t.Fatalf("Set: %v", err)
			}
			got := configOf(t, n.Client)
			if checksum(got) != checksum(want) {
				t.Errorf("the configuration is not what the request asked for:\n%s", treeDiff(want, got))
			}
		})
	}
}

// TestDeleteConfigContainerOfEntry: deleting the config container of a list
// entry removes its key leaf. The server may refuse that, or delete the
// container's other leaves; it must not delete the entry's children and
// everything that refers to them while reporting a delete of one container.
func TestDeleteConfigContainerOfEntry(t *testing.T) {
	n := startScenario1(t)
	before := treeLeaves(t, n.Client)
	_, err := n.Client.Set(ctxT(t), &gpb.SetRequest{Delete: []*gpb.Path{pathT(t, "/sites/site[name=hq]/config")}})
	if err != nil {
		checkStatus(t, err, codes.InvalidArgument, []string{"/sites/site[name=hq]/config"})
		unchanged(t, n.Client, before)
		return
	}
	for _, p := range []string{
		"/sites/site[name=hq]/endpoints/endpoint[name=inet]/config/address",
		"/paths/path[name=hq-inet--branch-1-inet]/config/name",
		"/policies/policy[name=voice-sip]/action/config/paths",
	} {
		if _, ok := getJSON(t, n.Client, p); !ok {
			t.Errorf("deleting /sites/site[name=hq]/config deleted %s", p)
		}
	}
}

// TestConcurrentConflictingSets: Sets that are each valid alone but conflict
// together (new policies taking one priority) never both apply.
func TestConcurrentConflictingSets(t *testing.T) {
	n := startScenario1(t)
	const clients = 8
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func() {
			name := "c" + strconv.Itoa(i)
			_, err := n.Client.Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{
				Path: pathT(t, "/policies/policy[name="+name+"]"),
				Val:  jsonIETF(`{"config":{"name":"` + name + `","priority":777}}`),
			}}})
			errs <- err
		}()
	}
	ok := 0
	for i := 0; i < clients; i++ {
		if err := <-errs; err == nil {
			ok++
		} else if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "priority") {
			t.Errorf("a conflicting Set failed with %v, want InvalidArgument naming the priority", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d conflicting Sets succeeded, want exactly 1", ok, clients)
	}
	holders := 0
	for p, v := range configOf(t, n.Client) {
		if strings.HasSuffix(p, "/config/priority") && v == "uint_val:777" {
			holders++
		}
	}
	if holders != 1 {
		t.Errorf("%d policies hold priority 777, want 1", holders)
	}
}
