package server_test

import (
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// TestElementWildcards: "*" stands for any one element and "..." for any
// number, in Get; a wildcard that no schema path can match is refused.
func TestElementWildcards(t *testing.T) {
	n := startScenario1(t)
	for _, tc := range []struct {
		path string
		want []string
		code codes.Code
	}{
		{path: "/sites/site[name=hq]/*/location", want: []string{
			"/sites/site[name=hq]/config/location", "/sites/site[name=hq]/state/location"}},
		{path: "/sites/site[name=hq]/endpoints/endpoint[name=mpls]/*/transport", want: []string{
			"/sites/site[name=hq]/endpoints/endpoint[name=mpls]/config/transport",
			"/sites/site[name=hq]/endpoints/endpoint[name=mpls]/state/transport"}},
		{path: "/policies/policy[name=video]/.../max-loss", want: []string{
			"/policies/policy[name=video]/action/sla/config/max-loss",
			"/policies/policy[name=video]/action/sla/state/max-loss"}},
		{path: "/sites/*/nonexistent", code: codes.InvalidArgument},
		{path: "/.../nonexistent-leaf", code: codes.InvalidArgument},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := n.Client.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{pathT(t, tc.path)}, Encoding: gpb.Encoding_JSON_IETF})
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("Get %s: %v; want %v", tc.path, err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range resp.GetNotification()[0].GetUpdate() {
				got = append(got, pathkey.String(u.GetPath().GetElem()))
			}
			sort.Strings(got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Get %s paths (-want +got):\n%s", tc.path, diff)
			}
		})
	}
}
