package schema_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/goyang/pkg/yang"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
)

// Schema paths of the leaves the tests use, one per type kind the models
// use.
const (
	siteName     = "/sites/site/config/name"                            // string, length 1..64, pattern
	siteDescr    = "/sites/site/config/description"                     // plain string
	lanIf        = "/sites/site/config/lan-interface"                   // leaf-list of string
	epAddress    = "/sites/site/endpoints/endpoint/config/address"      // union ipv4-address | ipv6-address
	epPort       = "/sites/site/endpoints/endpoint/config/port"         // uint16, default 4784
	epTransport  = "/sites/site/endpoints/endpoint/config/transport"    // enumeration
	epBandwidth  = "/sites/site/endpoints/endpoint/config/bandwidth"    // uint64
	pathEnabled  = "/paths/path/config/enabled"                         // boolean, default true
	pathProbe    = "/paths/path/config/probe-interval"                  // uint32 10..3600000
	pathCost     = "/paths/path/config/cost"                            // uint32
	pathSrcSite  = "/paths/path/config/source-site"                     // leafref to a name
	pathLoss     = "/paths/path/state/loss"                             // percentage (ro)
	polProtocol  = "/policies/policy/match/config/protocol"             // uint8
	polDSCP      = "/policies/policy/match/config/dscp"                 // uint8 0..63
	polSrcPrefix = "/policies/policy/match/config/source-prefix"        // union ipv4-prefix | ipv6-prefix
	polDstPort   = "/policies/policy/match/config/destination-port"     // port-range
	polAction    = "/policies/policy/action/config/type"                // enumeration, default PASS
	polPaths     = "/policies/policy/action/config/paths"               // leaf-list of leafref
	polMaxLoss   = "/policies/policy/action/sla/config/max-loss"        // percentage: decimal64, 3 digits, 0..100
	polMaxLat    = "/policies/policy/action/sla/config/max-latency"     // uint64
	bootTime     = "/system/state/boot-time"                            // timestamp (uint64)
	statsIntv    = "/system/stats-history/config/interval"              // uint32 with default
	memberSuffr  = "/system/cluster/members/member/config/suffrage"     // enumeration
	userRole     = "/system/aaa/users/user/config/role"                 // enumeration
	eventSubject = "/system/events/event/state/subject"                 // string (ro)
	flowSrcAddr  = "/flows/flow/state/source-address"                   // ip-address (ro)
	flowSrcPort  = "/flows/flow/state/source-port"                      // uint16 (ro)
	auditPaths   = "/system/audit/record/state/paths"                   // leaf-list of string (ro)
	memberSite   = "/system/cluster/members/member/config/site"         // leafref
	epGateway    = "/sites/site/endpoints/endpoint/config/gateway"      // ip-address, optional
	polSetDSCP   = "/policies/policy/action/config/set-dscp"            // dscp
	polSrcPort   = "/policies/policy/match/config/source-port"          // port-range
	polDstPrefix = "/policies/policy/match/config/destination-prefix"   // ip-prefix
	polPriority  = "/policies/policy/config/priority"                   // uint32, unique
	polEnabled   = "/policies/policy/config/enabled"                    // boolean
	epInterface  = "/sites/site/endpoints/endpoint/config/interface"    // string
	pathLatency  = "/paths/path/state/latency"                          // uint64 (ro)
	pathHealth   = "/paths/path/state/health-status"                    // enumeration (ro)
	polMaxJitter = "/policies/policy/action/sla/config/max-jitter"      // uint64
	pathLastChg  = "/paths/path/state/last-change"                      // timestamp (ro)
	userName     = "/system/aaa/users/user/config/username"             // name
	userPassword = "/system/aaa/users/user/config/password"             // write-only string
	retention    = "/system/stats-history/config/retention"             // uint32
	clusterTerm  = "/system/cluster/state/term"                         // uint64 (ro)
	siteLocation = "/sites/site/config/location"                        // plain string
	memberAddr   = "/system/cluster/members/member/config/address"      // string
	pathDstEp    = "/paths/path/config/destination-endpoint"            // leafref with predicate
	polActive    = "/policies/policy/state/active-path"                 // string (ro)
	epOper       = "/sites/site/endpoints/endpoint/state/oper-status"   // enumeration (ro)
	eventSev     = "/system/events/event/state/severity"                // enumeration (ro)
	polDescr     = "/policies/policy/config/description"                // plain string
	pathJitter   = "/paths/path/state/jitter"                           // uint64 (ro)
	flowProto    = "/flows/flow/state/protocol"                         // uint8 (ro)
	polCounter   = "/policies/policy/state/counters/packets-matched"    // uint64 counter (ro)
	pathCounter  = "/paths/path/state/counters/probes-sent"             // uint64 counter (ro)
	auditResult  = "/system/audit/record/state/result"                  // enumeration (ro)
	sysVersion   = "/system/state/version"                              // string (ro)
	clusterRole  = "/system/cluster/state/role"                         // enumeration (ro)
	memberReach  = "/system/cluster/members/member/state/reachable"     // boolean (ro)
	polSLAState  = "/policies/policy/action/sla/state/max-loss"         // percentage (ro mirror)
	polPathsSt   = "/policies/policy/action/state/paths"                // leaf-list (ro mirror)
	flowPackets  = "/flows/flow/state/packets"                          // uint64 (ro)
	sysNodeName  = "/system/state/node-name"                            // name (ro)
	sysSite      = "/system/state/site"                                 // name (ro)
	memberRaft   = "/system/cluster/members/member/config/raft-address" // string
)

var testSchema *schema.Schema

func loadSchema(t testing.TB) *schema.Schema {
	t.Helper()
	if testSchema == nil {
		s, err := schema.Load()
		if err != nil {
			t.Fatal(err)
		}
		testSchema = s
	}
	return testSchema
}

// node looks a schema path up; keys are not needed by Lookup.
func node(t testing.TB, p string) *schema.Node {
	t.Helper()
	var elems []*gpb.PathElem
	for _, name := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		elems = append(elems, &gpb.PathElem{Name: name})
	}
	n := loadSchema(t).Lookup(elems)
	if n == nil {
		t.Fatalf("no schema node %s", p)
	}
	if n.Kind != schema.Leaf && n.Kind != schema.LeafList {
		t.Fatalf("%s is not a leaf or leaf-list", p)
	}
	return n
}

func str(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}
func u64(u uint64) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}}
}
func i64(i int64) *gpb.TypedValue { return &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: i}} }
func dbl(f float64) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_DoubleVal{DoubleVal: f}}
}
func boolean(b bool) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: b}}
}
func leaflist(els ...*gpb.TypedValue) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: &gpb.ScalarArray{Element: els}}}
}

// jsonCase is one JSON value for one leaf: either the canonical value it
// must become or a substring of the error it must produce.
type jsonCase struct {
	path    string
	in      string // JSON text
	want    *gpb.TypedValue
	wantErr string
}

func jsonCases() []jsonCase {
	long := strings.Repeat("x", 64)
	return []jsonCase{
		// string with length 1..64 and pattern [A-Za-z0-9._-]+
		{path: siteName, in: `"hq"`, want: str("hq")},
		{path: siteName, in: `"a.b_c-1"`, want: str("a.b_c-1")},
		{path: siteName, in: `"` + long + `"`, want: str(long)},
		{path: siteName, in: `"` + long + `x"`, wantErr: "length 65"},
		{path: siteName, in: `""`, wantErr: "length 0"},
		{path: siteName, in: `"new site"`, wantErr: "pattern"},
		{path: siteName, in: `"café"`, wantErr: "pattern"},
		{path: siteName, in: `7`, wantErr: "want a string"},
		{path: siteName, in: `null`, wantErr: "want a string"},
		{path: userName, in: `"admin"`, want: str("admin")},
		// leafrefs validate as their target's type
		{path: pathSrcSite, in: `"branch-1"`, want: str("branch-1")},
		{path: pathSrcSite, in: `"branch 1"`, wantErr: "pattern"},
		{path: pathDstEp, in: `"inet"`, want: str("inet")},
		{path: memberSite, in: `"hq"`, want: str("hq")},
		// plain strings
		{path: siteDescr, in: `"Ünïcødé ✓ text, any length"`, want: str("Ünïcødé ✓ text, any length")},
		{path: siteDescr, in: `""`, want: str("")},
		{path: siteDescr, in: `true`, wantErr: "want a string, got a boolean"},
		{path: siteLocation, in: `12`, wantErr: "want a string, got a number"},
		{path: siteLocation, in: `{"a":1}`, wantErr: "want a string, got an object"},
		{path: memberAddr, in: `"10.0.0.1:9339"`, want: str("10.0.0.1:9339")},
		{path: memberRaft, in: `"[2001:db8::1]:9340"`, want: str("[2001:db8::1]:9340")},
		{path: epInterface, in: `"eth0.100"`, want: str("eth0.100")},
		// enumerations: bare names, exact case
		{path: epTransport, in: `"INTERNET"`, want: str("INTERNET")},
		{path: epTransport, in: `"MPLS"`, want: str("MPLS")},
		{path: epTransport, in: `"LTE"`, want: str("LTE")},
		{path: epTransport, in: `"SATELLITE"`, want: str("SATELLITE")},
		{path: epTransport, in: `"OTHER"`, want: str("OTHER")},
		{path: epTransport, in: `"internet"`, wantErr: `"internet" is not one of`},
		{path: epTransport, in: `"CABLE"`, wantErr: "is not one of"},
		{path: epTransport, in: `0`, wantErr: "want an enumeration name, got a number"},
		{path: polAction, in: `"STEER"`, want: str("STEER")},
		{path: polAction, in: `"DROP"`, want: str("DROP")},
		{path: polAction, in: `"PASS"`, want: str("PASS")},
		{path: memberSuffr, in: `"NONVOTER"`, want: str("NONVOTER")},
		{path: userRole, in: `"OPERATOR"`, want: str("OPERATOR")},
		{path: userRole, in: `"ROOT"`, wantErr: "is not one of"},
		// booleans
		{path: pathEnabled, in: `true`, want: boolean(true)},
		{path: pathEnabled, in: `false`, want: boolean(false)},
		{path: polEnabled, in: `"false"`, want: boolean(false)}, // the textual form keys and defaults use
		{path: pathEnabled, in: `1`, wantErr: "want a boolean"},
		{path: pathEnabled, in: `"yes"`, wantErr: "want a boolean"},
		{path: pathEnabled, in: `null`, wantErr: "want a boolean"},
		// uint8
		{path: polProtocol, in: `0`, want: u64(0)},
		{path: polProtocol, in: `17`, want: u64(17)},
		{path: polProtocol, in: `255`, want: u64(255)},
		{path: polProtocol, in: `"6"`, want: u64(6)},
		{path: polProtocol, in: `256`, wantErr: "out of range for uint8"},
		{path: polProtocol, in: `-1`, wantErr: "not an unsigned integer"},
		{path: polProtocol, in: `1.5`, wantErr: "not an unsigned integer"},
		{path: polProtocol, in: `1e1`, wantErr: "not an unsigned integer"},
		{path: polProtocol, in: `"tcp"`, wantErr: "not an unsigned integer"},
		{path: polProtocol, in: `true`, wantErr: "want an unsigned integer"},
		// uint8 with range 0..63
		{path: polDSCP, in: `46`, want: u64(46)},
		{path: polDSCP, in: `63`, want: u64(63)},
		{path: polDSCP, in: `64`, wantErr: "outside the allowed range"},
		{path: polSetDSCP, in: `10`, want: u64(10)},
		{path: polSetDSCP, in: `255`, wantErr: "outside the allowed range"},
		// uint16
		{path: epPort, in: `4784`, want: u64(4784)},
		{path: epPort, in: `65535`, want: u64(65535)},
		{path: epPort, in: `65536`, wantErr: "out of range for uint16"},
		{path: epPort, in: `70000`, wantErr: "out of range for uint16"},
		// uint32 with range 10..3600000
		{path: pathProbe, in: `0`, wantErr: "outside the allowed range"},
		{path: pathProbe, in: `9`, wantErr: "outside the allowed range"},
		{path: pathProbe, in: `10`, want: u64(10)},
		{path: pathProbe, in: `3600000`, want: u64(3600000)},
		{path: pathProbe, in: `3600001`, wantErr: "outside the allowed range"},
		// uint32
		{path: pathCost, in: `4294967295`, want: u64(4294967295)},
		{path: pathCost, in: `4294967296`, wantErr: "out of range for uint32"},
		{path: polPriority, in: `10`, want: u64(10)},
		{path: statsIntv, in: `10`, want: u64(10)},
		{path: retention, in: `604800`, want: u64(604800)},
		// uint64: RFC 7951 sends it as a string; a JSON number is accepted too
		{path: epBandwidth, in: `"1000000"`, want: u64(1000000)},
		{path: epBandwidth, in: `1000000`, want: u64(1000000)},
		{path: epBandwidth, in: `"18446744073709551615"`, want: u64(18446744073709551615)},
		{path: epBandwidth, in: `18446744073709551615`, want: u64(18446744073709551615)},
		{path: epBandwidth, in: `"18446744073709551616"`, wantErr: "not an unsigned integer in range"},
		{path: epBandwidth, in: `"-1"`, wantErr: "not an unsigned integer"},
		{path: epBandwidth, in: `"1.0"`, wantErr: "not an unsigned integer"},
		{path: epBandwidth, in: `"fast"`, wantErr: "not an unsigned integer"},
		{path: epBandwidth, in: `""`, wantErr: "not an unsigned integer"},
		{path: polMaxLat, in: `"150000"`, want: u64(150000)},
		{path: polMaxJitter, in: `30000`, want: u64(30000)},
		{path: bootTime, in: `"1700000000000000000"`, want: u64(1700000000000000000)},
		{path: pathLastChg, in: `"0"`, want: u64(0)},
		// decimal64, 3 fraction digits, 0..100 (percentage)
		{path: polMaxLoss, in: `"1.5"`, want: dbl(1.5)},
		{path: polMaxLoss, in: `1.5`, want: dbl(1.5)},
		{path: polMaxLoss, in: `"1"`, want: dbl(1)},
		{path: polMaxLoss, in: `"0"`, want: dbl(0)},
		{path: polMaxLoss, in: `"0.001"`, want: dbl(0.001)},
		{path: polMaxLoss, in: `"100"`, want: dbl(100)},
		{path: polMaxLoss, in: `"100.000"`, want: dbl(100)},
		{path: polMaxLoss, in: `"100.001"`, wantErr: "outside the allowed range"},
		{path: polMaxLoss, in: `"101"`, wantErr: "outside the allowed range"},
		{path: polMaxLoss, in: `101`, wantErr: "outside the allowed range"},
		{path: polMaxLoss, in: `"-0.5"`, wantErr: "outside the allowed range"},
		{path: polMaxLoss, in: `"1.2345"`, wantErr: "fraction digits"},
		{path: polMaxLoss, in: `"lots"`, wantErr: "fraction digits"},
		{path: polMaxLoss, in: `""`, wantErr: "fraction digits"},
		{path: polMaxLoss, in: `true`, wantErr: "want a decimal number"},
		{path: pathLoss, in: `"12.345"`, want: dbl(12.345)},
		// union ip-address (ipv4-address | ipv6-address)
		{path: epAddress, in: `"203.0.113.1"`, want: str("203.0.113.1")},
		{path: epAddress, in: `"0.0.0.0"`, want: str("0.0.0.0")},
		{path: epAddress, in: `"2001:db8::1"`, want: str("2001:db8::1")},
		{path: epAddress, in: `"2001:DB8::A"`, want: str("2001:DB8::A")},
		{path: epAddress, in: `"::"`, want: str("::")},
		{path: epAddress, in: `"300.1.1.1"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"203.0.113"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"01.2.3.4"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"2001:db8::g"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"2001:db8:::1"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"fe80::1%eth0"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `":"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `"host.example"`, wantErr: "matches no member of union"},
		{path: epAddress, in: `""`, wantErr: "matches no member of union"},
		{path: epAddress, in: `3405803777`, wantErr: "matches no member of union"},
		{path: epGateway, in: `"198.51.100.254"`, want: str("198.51.100.254")},
		{path: flowSrcAddr, in: `"2001:db8::2"`, want: str("2001:db8::2")},
		// union ip-prefix, with the host bits check
		{path: polSrcPrefix, in: `"198.51.100.0/24"`, want: str("198.51.100.0/24")},
		{path: polSrcPrefix, in: `"0.0.0.0/0"`, want: str("0.0.0.0/0")},
		{path: polSrcPrefix, in: `"198.51.100.7/32"`, want: str("198.51.100.7/32")},
		{path: polSrcPrefix, in: `"2001:db8::/32"`, want: str("2001:db8::/32")},
		{path: polSrcPrefix, in: `"198.51.100.1/24"`, wantErr: "host bits"},
		{path: polDstPrefix, in: `"2001:db8::1/32"`, wantErr: "host bits"},
		{path: polSrcPrefix, in: `"198.51.100.0/33"`, wantErr: "matches no member of union"},
		{path: polSrcPrefix, in: `"198.51.100.0"`, wantErr: "matches no member of union"},
		{path: polSrcPrefix, in: `"2001:db8::/129"`, wantErr: "matches no member of union"},
		// port-range
		{path: polDstPort, in: `"80"`, want: str("80")},
		{path: polDstPort, in: `"5060..5061"`, want: str("5060..5061")},
		{path: polDstPort, in: `"0..65535"`, want: str("0..65535")},
		{path: polDstPort, in: `"7..7"`, want: str("7..7")},
		{path: polSrcPort, in: `"10..5"`, wantErr: "is empty"},
		{path: polDstPort, in: `"70000"`, wantErr: "is not a port"},
		{path: polDstPort, in: `"1..70000"`, wantErr: "is not a port"},
		{path: polDstPort, in: `"80-90"`, wantErr: "pattern"},
		{path: polDstPort, in: `"..80"`, wantErr: "pattern"},
		{path: polDstPort, in: `80`, wantErr: "want a string"},
		// leaf-lists
		{path: lanIf, in: `["eth0","eth1"]`, want: leaflist(str("eth0"), str("eth1"))},
		{path: lanIf, in: `["eth0"]`, want: leaflist(str("eth0"))},
		{path: lanIf, in: `[]`, want: leaflist()},
		{path: lanIf, in: `"eth0"`, wantErr: "a leaf-list takes a JSON array, not a string"},
		{path: lanIf, in: `[1]`, wantErr: "want a string"},
		{path: polPaths, in: `["hq-mpls--branch-1-mpls","hq-inet--branch-1-inet"]`, want: leaflist(str("hq-mpls--branch-1-mpls"), str("hq-inet--branch-1-inet"))},
		{path: polPaths, in: `["bad path"]`, wantErr: "pattern"},
		{path: auditPaths, in: `["/sites/site[name=hq]"]`, want: leaflist(str("/sites/site[name=hq]"))},
		// read-only leaves parse the same way (the engine refuses to write them)
		{path: pathLatency, in: `"1500"`, want: u64(1500)},
		{path: pathHealth, in: `"DEGRADED"`, want: str("DEGRADED")},
		{path: epOper, in: `"UP"`, want: str("UP")},
		{path: eventSev, in: `"CRITICAL"`, want: str("CRITICAL")},
		{path: auditResult, in: `"REJECTED"`, want: str("REJECTED")},
		{path: clusterRole, in: `"NONVOTER"`, want: str("NONVOTER")},
		{path: memberReach, in: `true`, want: boolean(true)},
		{path: flowSrcPort, in: `443`, want: u64(443)},
		{path: flowProto, in: `6`, want: u64(6)},
		{path: flowPackets, in: `"12"`, want: u64(12)},
		{path: polCounter, in: `"12"`, want: u64(12)},
		{path: pathCounter, in: `7`, want: u64(7)},
		{path: clusterTerm, in: `"3"`, want: u64(3)},
		{path: polSLAState, in: `"2"`, want: dbl(2)},
		{path: polPathsSt, in: `["p"]`, want: leaflist(str("p"))},
		{path: sysNodeName, in: `"node-1"`, want: str("node-1")},
		{path: sysSite, in: `"hq"`, want: str("hq")},
		{path: sysVersion, in: `"0.1.0-dev"`, want: str("0.1.0-dev")},
		{path: eventSubject, in: `"/paths/path[name=x]"`, want: str("/paths/path[name=x]")},
		{path: polActive, in: `"hq-inet--branch-1-inet"`, want: str("hq-inet--branch-1-inet")},
		{path: pathJitter, in: `"0"`, want: u64(0)},
		{path: polDescr, in: `"x"`, want: str("x")},
		{path: userPassword, in: `"s3cret pass"`, want: str("s3cret pass")},
	}
}

func TestFromJSON(t *testing.T) {
	for _, tc := range jsonCases() {
		t.Run(tc.path+"="+tc.in, func(t *testing.T) {
			n := node(t, tc.path)
			v, err := schema.DecodeJSON([]byte(tc.in))
			if err != nil {
				t.Fatalf("DecodeJSON(%s): %v", tc.in, err)
			}
			got, err := schema.FromJSON(n, v)
			checkValue(t, got, err, tc.want, tc.wantErr)
			if err != nil {
				return
			}
			// The stored value survives the trip through both JSON
			// renderings unchanged.
			for _, ietf := range []bool{true, false} {
				b, err := schema.MarshalJSON(schema.ToJSON(n, got, ietf))
				if err != nil {
					t.Fatalf("MarshalJSON: %v", err)
				}
				back, err := schema.FromJSONBytes(n, b)
				if err != nil {
					t.Fatalf("FromJSONBytes(%s) (ietf %v) of its own rendering: %v", b, ietf, err)
				}
				if diff := cmp.Diff(got, back, protocmp.Transform()); diff != "" {
					t.Errorf("round trip through %s (ietf %v) changed the value (-first +second):\n%s", b, ietf, diff)
				}
			}
		})
	}
}

func checkValue(t *testing.T, got *gpb.TypedValue, err error, want *gpb.TypedValue, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil {
			t.Fatalf("got %v, want an error containing %q", got, wantErr)
		}
		if !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %q does not contain %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("value mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		in      string
		wantErr string
	}{
		{in: `{"a":1}`},
		{in: `"x"`},
		{in: `18446744073709551615`},
		{in: `{"a":`, wantErr: "invalid JSON"},
		{in: ``, wantErr: "invalid JSON"},
		{in: `1 2`, wantErr: "trailing data"},
		{in: `{"a":1}{"b":2}`, wantErr: "trailing data"},
	} {
		_, err := schema.DecodeJSON([]byte(tc.in))
		if tc.wantErr == "" && err != nil {
			t.Errorf("DecodeJSON(%q): %v", tc.in, err)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("DecodeJSON(%q) = %v, want an error containing %q", tc.in, err, tc.wantErr)
		}
	}
}

func TestFromTyped(t *testing.T) {
	jsonIETF := func(s string) *gpb.TypedValue {
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(s)}}
	}
	jsonVal := func(s string) *gpb.TypedValue {
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonVal{JsonVal: []byte(s)}}
	}
	for _, tc := range []struct {
		name    string
		path    string
		in      *gpb.TypedValue
		want    *gpb.TypedValue
		wantErr string
	}{
		{name: "uint64 from uint_val", path: epBandwidth, in: u64(1000), want: u64(1000)},
		{name: "uint64 from string_val", path: epBandwidth, in: str("1000"), want: u64(1000)},
		{name: "uint64 from int_val", path: epBandwidth, in: i64(5), want: u64(5)},
		{name: "uint64 from negative int_val", path: epBandwidth, in: i64(-5), wantErr: "not an unsigned integer"},
		{name: "uint64 from json_ietf string", path: epBandwidth, in: jsonIETF(`"1000"`), want: u64(1000)},
		{name: "uint64 from json_ietf number", path: epBandwidth, in: jsonIETF(`1000`), want: u64(1000)},
		{name: "uint64 from json number", path: epBandwidth, in: jsonVal(`1000`), want: u64(1000)},
		{name: "uint64 from bool", path: epBandwidth, in: boolean(true), wantErr: "want an unsigned integer"},
		{name: "uint64 from double", path: epBandwidth, in: dbl(1.5), wantErr: "not an unsigned integer"},
		{name: "uint16 out of range", path: epPort, in: u64(70000), wantErr: "out of range for uint16"},
		{name: "uint8 range", path: polDSCP, in: u64(64), wantErr: "outside the allowed range"},
		{name: "uint32 range", path: pathProbe, in: u64(0), wantErr: "outside the allowed range"},
		{name: "string from string_val", path: siteLocation, in: str("Lisbon"), want: str("Lisbon")},
		{name: "string from ascii_val", path: siteLocation, in: &gpb.TypedValue{Value: &gpb.TypedValue_AsciiVal{AsciiVal: "Lisbon"}}, want: str("Lisbon")},
		{name: "string from uint_val", path: siteLocation, in: u64(5), wantErr: "want a string, got a number"},
		{name: "string from bool_val", path: siteLocation, in: boolean(true), wantErr: "want a string, got a boolean"},
		{name: "string not UTF-8", path: siteDescr, in: str("a\xffb"), wantErr: "UTF-8"},
		{name: "name with space", path: siteName, in: str("new site"), wantErr: "pattern"},
		{name: "enum from string_val", path: epTransport, in: str("LTE"), want: str("LTE")},
		{name: "enum from uint_val", path: epTransport, in: u64(2), wantErr: "want an enumeration name"},
		{name: "bool from bool_val", path: pathEnabled, in: boolean(false), want: boolean(false)},
		{name: "bool from string_val", path: pathEnabled, in: str("true"), want: boolean(true)},
		{name: "bool from uint_val", path: pathEnabled, in: u64(1), wantErr: "want a boolean"},
		{name: "decimal from double_val", path: polMaxLoss, in: dbl(1.5), want: dbl(1.5)},
		{name: "decimal from float_val", path: polMaxLoss, in: &gpb.TypedValue{Value: &gpb.TypedValue_FloatVal{FloatVal: 1.5}}, want: dbl(1.5)},
		{name: "decimal from decimal_val", path: polMaxLoss, in: &gpb.TypedValue{Value: &gpb.TypedValue_DecimalVal{DecimalVal: &gpb.Decimal64{Digits: 15, Precision: 1}}}, want: dbl(1.5)}, //nolint:staticcheck // clients still send it
		{name: "decimal from uint_val", path: polMaxLoss, in: u64(2), want: dbl(2)},
		{name: "decimal from string_val", path: polMaxLoss, in: str("1.5"), want: dbl(1.5)},
		{name: "decimal from json_ietf", path: polMaxLoss, in: jsonIETF(`"1.5"`), want: dbl(1.5)},
		{name: "decimal out of range", path: polMaxLoss, in: dbl(100.5), wantErr: "outside the allowed range"},
		{name: "decimal too precise", path: polMaxLoss, in: dbl(1.2345), wantErr: "fraction digits"},
		{name: "union v4", path: epAddress, in: str("192.0.2.1"), want: str("192.0.2.1")},
		{name: "union v6", path: epAddress, in: str("2001:db8::1"), want: str("2001:db8::1")},
		{name: "union neither", path: epAddress, in: str("300.1.1.1"), wantErr: "matches no member of union"},
		{name: "union from uint_val", path: epAddress, in: u64(1), wantErr: "matches no member of union"},
		{name: "prefix host bits", path: polSrcPrefix, in: str("198.51.100.1/24"), wantErr: "host bits"},
		{name: "leaf-list from leaflist_val", path: lanIf, in: leaflist(str("eth0"), str("eth1")), want: leaflist(str("eth0"), str("eth1"))},
		{name: "leaf-list from json", path: lanIf, in: jsonIETF(`["eth0"]`), want: leaflist(str("eth0"))},
		{name: "leaf-list element invalid", path: polPaths, in: leaflist(str("ok"), str("not ok")), wantErr: "pattern"},
		{name: "leaf-list from string_val", path: lanIf, in: str("eth0"), wantErr: "a leaf-list takes a leaflist_val"},
		{name: "leaflist_val for a leaf", path: siteLocation, in: leaflist(str("x")), wantErr: "unsupported value type"},
		{name: "bytes_val", path: siteLocation, in: &gpb.TypedValue{Value: &gpb.TypedValue_BytesVal{BytesVal: []byte("x")}}, wantErr: "unsupported value type"},
		{name: "empty TypedValue", path: siteLocation, in: &gpb.TypedValue{}, wantErr: "empty value"},
		{name: "invalid json", path: siteLocation, in: jsonIETF(`"x`), wantErr: "invalid JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := schema.FromTyped(node(t, tc.path), tc.in)
			checkValue(t, got, err, tc.want, tc.wantErr)
		})
	}
}

func TestToJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		path string // "" for no schema node
		in   *gpb.TypedValue
		ietf string // rendering with ietf set
		json string // rendering without
	}{
		{name: "uint64", path: epBandwidth, in: u64(1000000), ietf: `"1000000"`, json: `1000000`},
		{name: "uint64 max", path: epBandwidth, in: u64(18446744073709551615), ietf: `"18446744073709551615"`, json: `18446744073709551615`},
		{name: "uint64 small", path: polMaxLat, in: u64(5), ietf: `"5"`, json: `5`},
		{name: "timestamp", path: bootTime, in: u64(1700000000000000000), ietf: `"1700000000000000000"`, json: `1700000000000000000`},
		{name: "uint32", path: pathProbe, in: u64(200), ietf: `200`, json: `200`},
		{name: "uint16", path: epPort, in: u64(4784), ietf: `4784`, json: `4784`},
		{name: "uint8", path: polDSCP, in: u64(46), ietf: `46`, json: `46`},
		{name: "percentage", path: polMaxLoss, in: dbl(1.5), ietf: `"1.500"`, json: `1.500`},
		{name: "percentage whole", path: polMaxLoss, in: dbl(1), ietf: `"1.000"`, json: `1.000`},
		{name: "percentage max", path: pathLoss, in: dbl(100), ietf: `"100.000"`, json: `100.000`},
		{name: "percentage small", path: pathLoss, in: dbl(0.001), ietf: `"0.001"`, json: `0.001`},
		{name: "bool", path: pathEnabled, in: boolean(true), ietf: `true`, json: `true`},
		{name: "enum", path: epTransport, in: str("INTERNET"), ietf: `"INTERNET"`, json: `"INTERNET"`},
		{name: "string", path: siteDescr, in: str(`a "quoted" ✓`), ietf: `"a \"quoted\" ✓"`, json: `"a \"quoted\" ✓"`},
		{name: "ip-address", path: epAddress, in: str("2001:db8::1"), ietf: `"2001:db8::1"`, json: `"2001:db8::1"`},
		{name: "leaf-list", path: lanIf, in: leaflist(str("eth0"), str("eth1")), ietf: `["eth0","eth1"]`, json: `["eth0","eth1"]`},
		{name: "leaf-list empty", path: lanIf, in: leaflist(), ietf: `[]`, json: `[]`},
		{name: "no node, big uint", in: u64(5000000000), ietf: `"5000000000"`, json: `5000000000`},
		{name: "no node, small uint", in: u64(5), ietf: `5`, json: `5`},
		{name: "no node, double", in: dbl(2.5), ietf: `"2.500"`, json: `2.500`},
		{name: "no node, big int", in: i64(-5000000000), ietf: `"-5000000000"`, json: `-5000000000`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n *schema.Node
			if tc.path != "" {
				n = node(t, tc.path)
			}
			for _, r := range []struct {
				ietf bool
				want string
			}{{true, tc.ietf}, {false, tc.json}} {
				b, err := schema.MarshalJSON(schema.ToJSON(n, tc.in, r.ietf))
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != r.want {
					t.Errorf("ToJSON(ietf %v) = %s, want %s", r.ietf, b, r.want)
				}
			}
		})
	}
}

// TestSignedIntegers covers int8..int64, which the Patronus models do not use
// today, on synthetic leaves.
func TestSignedIntegers(t *testing.T) {
	leaf := func(k yang.TypeKind, rng string) *schema.Node {
		yt := &yang.YangType{Kind: k, Name: yang.TypeKindToName[k]}
		if rng != "" {
			r, err := yang.ParseRangesInt(rng)
			if err != nil {
				t.Fatal(err)
			}
			yt.Range = r
		}
		return &schema.Node{Name: "x", Kind: schema.Leaf, Config: true, Type: yt}
	}
	for _, tc := range []struct {
		kind    yang.TypeKind
		rng     string
		in      string
		want    *gpb.TypedValue
		ietf    string
		wantErr string
	}{
		{kind: yang.Yint8, in: `127`, want: i64(127), ietf: `127`},
		{kind: yang.Yint8, in: `-128`, want: i64(-128), ietf: `-128`},
		{kind: yang.Yint8, in: `"-5"`, want: i64(-5), ietf: `-5`},
		{kind: yang.Yint8, in: `128`, wantErr: "out of range for int8"},
		{kind: yang.Yint8, in: `-129`, wantErr: "out of range for int8"},
		{kind: yang.Yint8, in: `1.5`, wantErr: "not an integer"},
		{kind: yang.Yint8, in: `true`, wantErr: "want an integer"},
		{kind: yang.Yint16, in: `32767`, want: i64(32767), ietf: `32767`},
		{kind: yang.Yint16, in: `-32769`, wantErr: "out of range for int16"},
		{kind: yang.Yint32, in: `-2147483648`, want: i64(-2147483648), ietf: `-2147483648`},
		{kind: yang.Yint32, in: `2147483648`, wantErr: "out of range for int32"},
		{kind: yang.Yint32, rng: "-10..10", in: `-10`, want: i64(-10), ietf: `-10`},
		{kind: yang.Yint32, rng: "-10..10", in: `11`, wantErr: "outside the allowed range"},
		{kind: yang.Yint64, in: `"9223372036854775807"`, want: i64(9223372036854775807), ietf: `"9223372036854775807"`},
		{kind: yang.Yint64, in: `-1`, want: i64(-1), ietf: `"-1"`},
		{kind: yang.Yint64, in: `"9223372036854775808"`, wantErr: "not an integer in range"},
	} {
		t.Run(yang.TypeKindToName[tc.kind]+tc.rng+"="+tc.in, func(t *testing.T) {
			n := leaf(tc.kind, tc.rng)
			got, err := schema.FromJSONBytes(n, []byte(tc.in))
			checkValue(t, got, err, tc.want, tc.wantErr)
			if err != nil {
				return
			}
			b, err := schema.MarshalJSON(schema.ToJSON(n, got, true))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.ietf {
				t.Errorf("ToJSON(ietf) = %s, want %s", b, tc.ietf)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	for _, tc := range []struct {
		path string
		want *gpb.TypedValue
	}{
		{epPort, u64(4784)},
		{pathEnabled, boolean(true)},
		{pathProbe, u64(200)},
		{pathCost, u64(0)},
		{polEnabled, boolean(true)},
		{polAction, str("PASS")},
		{statsIntv, u64(10)},
		{retention, u64(604800)},
		{siteLocation, nil},
		{epBandwidth, nil},
	} {
		n := node(t, tc.path)
		if diff := cmp.Diff(tc.want, n.Default, protocmp.Transform()); diff != "" {
			t.Errorf("%s default (-want +got):\n%s", tc.path, diff)
		}
	}
}

func TestParseString(t *testing.T) {
	for _, tc := range []struct {
		path    string
		in      string
		want    *gpb.TypedValue
		wantErr string
	}{
		{path: siteName, in: "hq", want: str("hq")},
		{path: siteName, in: "a b", wantErr: "pattern"},
		{path: epBandwidth, in: "1000", want: u64(1000)},
		{path: pathEnabled, in: "false", want: boolean(false)},
		{path: polMaxLoss, in: "1.5", want: dbl(1.5)},
		{path: epAddress, in: "2001:db8::1", want: str("2001:db8::1")},
		{path: epAddress, in: "300.1.1.1", wantErr: "union"},
	} {
		got, err := schema.ParseString(node(t, tc.path), tc.in)
		t.Run(tc.path+"="+tc.in, func(t *testing.T) { checkValue(t, got, err, tc.want, tc.wantErr) })
	}
}
