package audit_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// record is one /system/audit record.
type record struct {
	seq                                    uint64
	user, peer, operation, result, message string
	paths                                  []string
}

// records reads every audit record, by sequence.
func records(t testing.TB, c gpb.GNMIClient) map[uint64]*record {
	t.Helper()
	resp, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/system/audit")}, Encoding: gpb.Encoding_PROTO})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	if err != nil {
		t.Fatalf("Get /system/audit: %v", err)
	}
	out := map[uint64]*record{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			addRecordLeaf(out, append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...), u.GetVal())
		}
	}
	return out
}

func addRecordLeaf(out map[uint64]*record, elems []*gpb.PathElem, v *gpb.TypedValue) {
	if len(elems) != 5 || elems[2].GetName() != "record" {
		return
	}
	seq, _ := strconv.ParseUint(elems[2].GetKey()["sequence"], 10, 64)
	r := out[seq]
	if r == nil {
		r = &record{seq: seq}
		out[seq] = r
	}
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
		r.paths = nil
		for _, e := range v.GetLeaflistVal().GetElement() {
			r.paths = append(r.paths, e.GetStringVal())
		}
	}
}

// waitRecord waits for a record that match accepts.
func waitRecord(t testing.TB, c gpb.GNMIClient, what string, match func(*record) bool) *record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range records(t, c) {
			if match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit record of %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func str(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

func update(t testing.TB, p string, v *gpb.TypedValue) *gpb.SetRequest {
	return &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, p), Val: v}}}
}

// config reads the whole configuration as path → value.
func config(t testing.TB, c gpb.GNMIClient) map[string]string {
	t.Helper()
	resp, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{{}}, Encoding: gpb.Encoding_PROTO, Type: gpb.GetRequest_CONFIG})
	if err != nil {
		t.Fatalf("Get / CONFIG: %v", err)
	}
	out := map[string]string{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			out[pathkey.String(append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...))] = u.GetVal().String()
		}
	}
	return out
}

const (
	adminPW  = "admin-pw"
	viewerPW = "viewer-pw"
)

func start(t *testing.T) *nodetest.Node {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{Auth: &auth.Config{FailureDelay: time.Millisecond, MaxFailureDelay: time.Millisecond, MaxFailures: 1 << 20}})
	n.AddUser(t, "admin", "ADMIN", adminPW)
	n.AddUser(t, "viewer", "VIEWER", viewerPW)
	admin := n.As(t, "admin", adminPW)
	if _, err := admin.Set(ctxT(t), update(t, "/policies/policy[name=a]", nodetest.JSONIETF([]byte(`{"config":{"name":"a","priority":10}}`)))); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRejectedSetsAreAudited: every refused Set leaves a REJECTED record with
// the user, the peer, the paths it named (no values) and the client's
// error, and nothing else; an accepted Set keeps its OK record.
func TestRejectedSetsAreAudited(t *testing.T) {
	n := start(t)
	admin, viewer := n.As(t, "admin", adminPW), n.As(t, "viewer", viewerPW)
	const secret = "never-in-the-audit-7f3a"
	for _, tc := range []struct {
		name      string
		client    gpb.GNMIClient
		req       *gpb.SetRequest
		code      codes.Code
		user, op  string
		wantPaths []string
	}{
		{name: "leafref", client: admin, code: codes.InvalidArgument, user: "admin", op: "SET",
			req:       update(t, "/paths/path[name=x]", nodetest.JSONIETF([]byte(`{"config":{"name":"x","source-site":"nowhere","source-endpoint":"e","destination-site":"nowhere","destination-endpoint":"e"}}`))),
			wantPaths: []string{"/paths/path[name=x]"}},
		{name: "unique priority", client: admin, code: codes.InvalidArgument, user: "admin", op: "SET",
			req:       update(t, "/policies/policy[name=b]", nodetest.JSONIETF([]byte(`{"config":{"name":"b","priority":10}}`))),
			wantPaths: []string{"/policies/policy[name=b]"}},
		{name: "viewer", client: viewer, code: codes.PermissionDenied, user: "viewer", op: "SET",
			req: &gpb.SetRequest{Prefix: nodetest.Path(t, "/sites"), Delete: []*gpb.Path{nodetest.Path(t, "/site[name=hq]")},
				Update: []*gpb.Update{{Path: nodetest.Path(t, "/site[name=hq]/config/location"), Val: str("x")}}},
			wantPaths: []string{"/sites/site[name=hq]", "/sites/site[name=hq]/config/location"}},
		{name: "schema type, with a password", client: admin, code: codes.InvalidArgument, user: "admin", op: "SET",
			req:       update(t, "/system/aaa/users/user[username=u]/config", nodetest.JSONIETF([]byte(`{"username":"u","role":"NOBODY","password":"`+secret+`"}`))),
			wantPaths: []string{"/system/aaa/users/user[username=u]/config"}},
		{name: "confirm without a commit", client: admin, code: codes.FailedPrecondition, user: "admin", op: "COMMIT_CONFIRM",
			req: &gpb.SetRequest{Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Commit{Commit: &gnmi_ext.Commit{Id: "c1",
				Action: &gnmi_ext.Commit_Confirm{Confirm: &gnmi_ext.CommitConfirm{}}}}}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := config(t, admin)
			_, err := tc.client.Set(ctxT(t), tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("Set: %v, want %s", err, tc.code)
			}
			msg := status.Convert(err).Message()
			r := waitRecord(t, admin, tc.name, func(r *record) bool { return r.result == "REJECTED" && strings.Contains(r.message, msg) })
			if r.user != tc.user || r.operation != tc.op || r.peer == "" || strings.Join(r.paths, " ") != strings.Join(tc.wantPaths, " ") {
				t.Errorf("record %+v; want user %s, operation %s, a peer, paths %v", r, tc.user, tc.op, tc.wantPaths)
			}
			if after := config(t, admin); len(after) != len(before) {
				t.Errorf("the configuration changed: %d leaves, then %d", len(before), len(after))
			}
		})
	}
	for _, r := range records(t, admin) {
		if strings.Contains(r.message, secret) || strings.Contains(strings.Join(r.paths, " "), secret) {
			t.Errorf("record %d holds the password: %+v", r.seq, r)
		}
	}
	if _, err := admin.Set(ctxT(t), update(t, "/policies/policy[name=a]/config/priority", &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 11}})); err != nil {
		t.Fatal(err)
	}
	waitRecord(t, admin, "the accepted Set", func(r *record) bool {
		return r.result == "OK" && r.user == "admin" && strings.Join(r.paths, " ") == "/policies/policy[name=a]/config/priority"
	})
}

// TestFailedLoginsAreAudited: a wrong password and an unknown user leave
// LOGIN REJECTED records naming the user as presented, never the password.
func TestFailedLoginsAreAudited(t *testing.T) {
	n := start(t)
	admin := n.As(t, "admin", adminPW)
	const guess = "guess-9d2e"
	for _, user := range []string{"viewer", "mallory"} {
		if _, err := n.As(t, user, guess).Capabilities(ctxT(t), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s with a wrong password: %v", user, err)
		}
		r := waitRecord(t, admin, "the failed login of "+user, func(r *record) bool {
			return r.operation == "LOGIN" && r.user == user
		})
		if r.result != "REJECTED" || r.peer == "" || !strings.HasPrefix(r.message, "UNAUTHENTICATED: ") || strings.Contains(r.message, guess) {
			t.Errorf("login record %+v", r)
		}
	}
}

var folded = regexp.MustCompile(`and (\d+) more rejected request`)

// TestRejectionFlood: a flood of refused Sets is recorded within the audit
// rate, and the records count those left out, so that every refusal is
// accounted for.
func TestRejectionFlood(t *testing.T) {
	n := start(t)
	admin, viewer := n.As(t, "admin", adminPW), n.As(t, "viewer", viewerPW)
	base := len(records(t, admin))
	const flood = 500
	for i := range flood {
		if _, err := viewer.Set(ctxT(t), update(t, "/sites/site[name=s"+strconv.Itoa(i)+"]/config/location", str("x"))); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Set %d: %v", i, err)
		}
	}
	var written, accounted int
	deadline := time.Now().Add(15 * time.Second)
	for {
		written, accounted = 0, 0
		for _, r := range records(t, admin) {
			if r.user != "viewer" || r.result != "REJECTED" {
				continue
			}
			written++
			accounted++
			if m := folded.FindStringSubmatch(r.message); m != nil {
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
		t.Errorf("records account for %d refused Sets, want %d", accounted, flood)
	}
	if written > 40 {
		t.Errorf("%d records for a flood of %d (the audit burst is 20)", written, flood)
	}
	if total := len(records(t, admin)) - base; total != written {
		t.Errorf("%d records added, %d of them the viewer's", total, written)
	}
}

// TestRejectionsStream: a subscription to /system/audit receives the
// REJECTED record of a refused Set.
func TestRejectionsStream(t *testing.T) {
	n := start(t)
	admin, viewer := n.As(t, "admin", adminPW), n.As(t, "viewer", viewerPW)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sc, err := admin.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sc.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO, Prefix: nodetest.Path(t, "/system/audit"),
		Subscription: []*gpb.Subscription{{Path: &gpb.Path{}, Mode: gpb.SubscriptionMode_ON_CHANGE}}}}}); err != nil {
		t.Fatal(err)
	}
	recs := map[uint64]*record{}
	synced := false
	for {
		resp, err := sc.Recv()
		if err != nil {
			t.Fatalf("stream ended (%v) without the REJECTED record", err)
		}
		if resp.GetSyncResponse() && !synced {
			synced = true
			if _, err := viewer.Set(ctxT(t), update(t, "/sites/site[name=hq]/config/location", str("streamed"))); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("VIEWER Set: %v", err)
			}
			continue
		}
		nt := resp.GetUpdate()
		for _, u := range nt.GetUpdate() {
			addRecordLeaf(recs, append(append([]*gpb.PathElem{}, nt.GetPrefix().GetElem()...), u.GetPath().GetElem()...), u.GetVal())
		}
		for _, r := range recs {
			if synced && r.result == "REJECTED" && r.user == "viewer" && strings.Join(r.paths, " ") == "/sites/site[name=hq]/config/location" {
				return
			}
		}
	}
}
