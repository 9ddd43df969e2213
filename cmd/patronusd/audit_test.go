package main_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// auditRecord is one /system/audit record.
type auditRecord struct {
	user, peer, operation, result, message string
	paths                                  []string
}

// auditRecords reads a node's audit records by sequence.
func auditRecords(t testing.TB, c gpb.GNMIClient) map[string]*auditRecord {
	t.Helper()
	resp, err := c.Get(ctxT(t, 10*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/audit")}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatalf("Get /system/audit: %v", err)
	}
	out := map[string]*auditRecord{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			if len(elems) != 5 || elems[2].GetName() != "record" {
				continue
			}
			seq := elems[2].GetKey()["sequence"]
			r := out[seq]
			if r == nil {
				r = &auditRecord{}
				out[seq] = r
			}
			v := u.GetVal()
			switch elems[4].GetName() {
			case "user":
				r.user = v.GetStringVal()
			case "peer":
				r.peer = v.GetStringVal()
			case "operation":
				r.operation = v.GetStringVal()
			case "result":
				r.result = v.GetStringVal()
			case "message":
				r.message = v.GetStringVal()
			case "paths":
				for _, e := range v.GetLeaflistVal().GetElement() {
					r.paths = append(r.paths, e.GetStringVal())
				}
			}
		}
	}
	return out
}

// waitAuditEverywhere waits until every node holds a record that match
// accepts, under the same sequence number, and returns it.
func waitAuditEverywhere(t testing.TB, nodes []*cnode, what string, match func(*auditRecord) bool) *auditRecord {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		seqs := map[string]int{}
		var found *auditRecord
		for _, n := range nodes {
			for seq, r := range auditRecords(t, n.client()) {
				if match(r) {
					seqs[seq]++
					found = r
				}
			}
		}
		for _, c := range seqs {
			if c == len(nodes) {
				return found
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit record of %s on every node under one sequence (%v)", what, seqs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var foldedCount = regexp.MustCompile(`and (\d+) more rejected request`)

// TestClusterAuditsRejections: in a 3-node cluster, a Set the leader's state
// machine rejects, a VIEWER's Set refused by a follower and a failed login
// on a follower each leave a REJECTED record on every node; the
// configuration does not change; a flood of refused Sets adds log entries
// only within the audit rate, and the records count the rest.
func TestClusterAuditsRejections(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	follower := followersOf(nodes, leader)[0]
	addUser(t, leader.client(), "vw", "VIEWER", "vw-pw")
	if _, err := follower.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{
		{Path: path(t, "/sites/site[name=hq]/config/location"), Val: strVal("Lisbon")},
		{Path: path(t, "/policies/policy[name=a]"), Val: ietf([]byte(`{"config":{"name":"a","priority":10}}`))}}}); err != nil {
		t.Fatal(err)
	}
	waitAuditEverywhere(t, nodes, "the accepted Set", func(r *auditRecord) bool {
		return r.result == "OK" && strings.Contains(strings.Join(r.paths, " "), "/policies/policy[name=a]")
	})
	before := updates(get(t, leader.client(), &gpb.GetRequest{Path: []*gpb.Path{{}}, Type: gpb.GetRequest_CONFIG, Encoding: gpb.Encoding_PROTO}))

	// A unique priority taken, through a follower: the leader's state
	// machine rejects it in log order.
	_, err := follower.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{
		Path: path(t, "/policies/policy[name=b]"), Val: ietf([]byte(`{"config":{"name":"b","priority":10}}`))}}})
	wantCode(t, err, codes.InvalidArgument, "priority")
	msg := status.Convert(err).Message()
	r := waitAuditEverywhere(t, nodes, "the unique violation", func(r *auditRecord) bool {
		return r.result == "REJECTED" && strings.Contains(r.message, msg)
	})
	if r.user != "admin" || r.operation != "SET" || strings.Join(r.paths, " ") != "/policies/policy[name=b]" {
		t.Errorf("record of the unique violation: %+v", r)
	}

	// A leafref to a missing site.
	_, err = leader.client().Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{
		Path: path(t, "/paths/path[name=x]"), Val: ietf([]byte(`{"config":{"name":"x","source-site":"nowhere","source-endpoint":"e","destination-site":"nowhere","destination-endpoint":"e"}}`))}}})
	wantCode(t, err, codes.InvalidArgument, "does not exist")
	msg = status.Convert(err).Message()
	waitAuditEverywhere(t, nodes, "the leafref violation", func(r *auditRecord) bool {
		return r.result == "REJECTED" && strings.Contains(r.message, msg) && strings.Join(r.paths, " ") == "/paths/path[name=x]"
	})

	// A VIEWER's Set on a follower: refused there, recorded through the leader.
	viewer := as(t, follower.addr, "vw", "vw-pw")
	_, err = viewer.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: path(t, "/sites/site[name=fw]/config/location"), Val: strVal("x")}}})
	wantCode(t, err, codes.PermissionDenied, "vw")
	r = waitAuditEverywhere(t, nodes, "the VIEWER's Set", func(r *auditRecord) bool {
		return r.result == "REJECTED" && r.user == "vw" && strings.Join(r.paths, " ") == "/sites/site[name=fw]/config/location"
	})
	if r.operation != "SET" || r.peer == "" || !strings.HasPrefix(r.message, "PERMISSION_DENIED: ") {
		t.Errorf("record of the VIEWER's Set: %+v", r)
	}

	// A failed login on a follower.
	const guess = "guess-51c0"
	if _, err := as(t, follower.addr, "vw", guess).Capabilities(ctxT(t, 10*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong password: %v", err)
	}
	r = waitAuditEverywhere(t, nodes, "the failed login", func(r *auditRecord) bool {
		return r.operation == "LOGIN" && r.user == "vw"
	})
	if r.result != "REJECTED" || strings.Contains(r.message, guess) {
		t.Errorf("record of the failed login: %+v", r)
	}

	after := updates(get(t, leader.client(), &gpb.GetRequest{Path: []*gpb.Path{{}}, Type: gpb.GetRequest_CONFIG, Encoding: gpb.Encoding_PROTO}))
	if len(after) != len(before) {
		t.Errorf("refused Sets changed the configuration: %d leaves, then %d", len(before), len(after))
	}

	// A flood of refused Sets on a follower.
	st0, err := clusterState(ctxT(t, 10*time.Second), leader.client())
	if err != nil {
		t.Fatal(err)
	}
	const flood = 500
	for i := range flood {
		_, err := viewer.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{
			Path: path(t, "/sites/site[name=flood"+strconv.Itoa(i)+"]/config/location"), Val: strVal("x")}}})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("flood Set %d: %v", i, err)
		}
	}
	var accounted, written int
	deadline := time.Now().Add(20 * time.Second)
	for {
		accounted, written = 0, 0
		for _, r := range auditRecords(t, leader.client()) {
			if r.user != "vw" || r.result != "REJECTED" || !strings.Contains(strings.Join(r.paths, " "), "name=flood") {
				continue
			}
			written++
			accounted++
			if m := foldedCount.FindStringSubmatch(r.message); m != nil {
				k, _ := strconv.Atoi(m[1])
				accounted += k
			}
		}
		if accounted >= flood || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if accounted != flood {
		t.Errorf("the records account for %d of %d refused Sets", accounted, flood)
	}
	st1, err := clusterState(ctxT(t, 10*time.Second), leader.client())
	if err != nil {
		t.Fatal(err)
	}
	if grew := st1.CommitIndex - st0.CommitIndex; grew > 60 {
		t.Errorf("a flood of %d refused Sets grew the log by %d entries (%d records)", flood, grew, written)
	} else {
		t.Logf("a flood of %d refused Sets: %d records, the log grew by %d entries", flood, written, grew)
	}
}
