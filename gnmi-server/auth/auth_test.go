package auth_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

const (
	adminPW    = "admin-pw"
	operatorPW = "operator-pw"
	viewerPW   = "viewer-pw"
)

// startAuth starts a node with authentication and the users admin,
// operator and viewer, and one site.
func startAuth(t testing.TB, cfg auth.Config) *nodetest.Node {
	t.Helper()
	n := nodetest.Start(t, nodetest.Options{Auth: &cfg})
	n.AddUser(t, "admin", "ADMIN", adminPW)
	n.AddUser(t, "operator", "OPERATOR", operatorPW)
	n.AddUser(t, "viewer", "VIEWER", viewerPW)
	_, err := n.As(t, "admin", adminPW).Set(context.Background(), &gpb.SetRequest{Update: []*gpb.Update{{
		Path: nodetest.Path(t, "/sites/site[name=hq]/config/location"), Val: str("Lisbon"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func str(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// leaks returns the paths under /system/aaa, and any value that looks like
// a password hash, in the notifications. (Audit records list the paths a
// Set changed, users' paths among them: those are /system/audit data.)
func leaks(notifs []*gpb.Notification) []string {
	var out []string
	for _, n := range notifs {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			p := pathkey.String(elems)
			if strings.HasPrefix(p, "/system/aaa") {
				out = append(out, p)
			}
			if v := u.GetVal().String(); strings.Contains(v, "argon2") || strings.Contains(v, `"aaa"`) || strings.Contains(v, `:aaa"`) {
				out = append(out, p+" = "+v)
			}
		}
		for _, d := range n.GetDelete() {
			if p := pathkey.String(append(append([]*gpb.PathElem{}, n.GetPrefix().GetElem()...), d.GetElem()...)); strings.HasPrefix(p, "/system/aaa") {
				out = append(out, "delete "+p)
			}
		}
	}
	return out
}

// hashes returns the values that look like a password hash.
func hashes(notifs []*gpb.Notification) []string {
	var out []string
	for _, n := range notifs {
		for _, u := range n.GetUpdate() {
			if v := u.GetVal().String(); strings.Contains(v, "argon2") {
				out = append(out, pathkey.String(u.GetPath().GetElem()))
			}
		}
	}
	return out
}

type role struct {
	name   string
	client gpb.GNMIClient
	admin  bool
	// write: may Set under /sites; authed: authenticates at all.
	write, authed bool
}

// TestMatrix runs every RPC as every role on allowed and forbidden paths.
func TestMatrix(t *testing.T) {
	n := startAuth(t, auth.Config{FailureDelay: time.Millisecond, MaxFailureDelay: time.Millisecond, MaxFailures: 1 << 20})
	roles := []role{
		{name: "ADMIN", client: n.As(t, "admin", adminPW), admin: true, write: true, authed: true},
		{name: "OPERATOR", client: n.As(t, "operator", operatorPW), write: true, authed: true},
		{name: "VIEWER", client: n.As(t, "viewer", viewerPW), authed: true},
		{name: "no-credentials", client: n.Dial(t)},
		{name: "bad-password", client: n.As(t, "admin", "nope")},
		{name: "unknown-user", client: n.As(t, "mallory", adminPW)},
	}
	code := func(err error) codes.Code { return status.Code(err) }
	pick := func(r role, admin, operator, viewer codes.Code) codes.Code {
		switch {
		case !r.authed:
			return codes.Unauthenticated
		case r.admin:
			return admin
		case r.write:
			return operator
		}
		return viewer
	}
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			c := r.client
			check := func(what string, err error, want codes.Code) {
				t.Helper()
				if got := code(err); got != want {
					t.Errorf("%s: %v, want %v", what, err, want)
				}
				if want == codes.PermissionDenied && err != nil && what != "Set confirm" && !strings.Contains(err.Error(), "desc = /") {
					t.Errorf("%s: PERMISSION_DENIED does not name the path: %v", what, err)
				}
			}
			_, err := c.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{})
			check("Capabilities", err, pick(r, codes.OK, codes.OK, codes.OK))

			// Get.
			get := func(p string, enc gpb.Encoding) (*gpb.GetResponse, error) {
				return c.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, p)}, Encoding: enc})
			}
			_, err = get("/sites", gpb.Encoding_JSON_IETF)
			check("Get /sites", err, pick(r, codes.OK, codes.OK, codes.OK))
			_, err = get("/system/aaa", gpb.Encoding_JSON_IETF)
			check("Get /system/aaa", err, pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
			_, err = get("/system/aaa/users/user[username=admin]/config/password", gpb.Encoding_PROTO)
			check("Get of a password", err, pick(r, codes.NotFound, codes.PermissionDenied, codes.PermissionDenied))
			for _, p := range []string{"/", "/system", "/system/...", "/*/aaa", "/system/*/users/user[username=*]/config/role"} {
				for _, enc := range []gpb.Encoding{gpb.Encoding_PROTO, gpb.Encoding_JSON_IETF} {
					resp, err := get(p, enc)
					want := pick(r, codes.OK, codes.OK, codes.OK)
					if strings.Contains(p, "*") && !r.admin && r.authed {
						want = codes.NotFound // only aaa data matches
					}
					check(fmt.Sprintf("Get %s %s", p, enc), err, want)
					if !r.admin {
						if l := leaks(resp.GetNotification()); len(l) > 0 {
							t.Errorf("Get %s %s as %s leaks %v", p, enc, r.name, l)
						}
					}
					if h := hashes(resp.GetNotification()); len(h) > 0 {
						t.Errorf("Get %s %s returns password hashes at %v", p, enc, h)
					}
				}
			}

			// Set.
			set := func(req *gpb.SetRequest) error {
				_, err := c.Set(ctxT(t, 5*time.Second), req)
				return err
			}
			siteDesc := &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/sites/site[name=hq]/config/description"), Val: str("by " + r.name)}}}
			check("Set /sites", set(siteDesc), pick(r, codes.OK, codes.OK, codes.PermissionDenied))
			newUser := &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/system/aaa/users/user[username=x-"+strings.ToLower(r.name)+"]/config"),
				Val: nodetest.JSONIETF([]byte(`{"username":"x-` + strings.ToLower(r.name) + `","role":"ADMIN","password":"p"}`))}}}
			check("Set a user", set(newUser), pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
			prefixed := &gpb.SetRequest{Prefix: nodetest.Path(t, "/system/aaa"), Delete: []*gpb.Path{nodetest.Path(t, "/users/user[username=viewer]")}}
			if !r.admin {
				check("Set with a /system/aaa prefix", set(prefixed), pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
			}
			check("Set /system/stats-history", set(&gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/system/stats-history/config/interval"),
				Val: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 10}}}}}), pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
			if !r.admin {
				check("replace /", set(&gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF([]byte(`{}`))}}}),
					pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
				check("delete /", set(&gpb.SetRequest{Delete: []*gpb.Path{{}}}), pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied))
			}
			confirm := &gpb.SetRequest{Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Commit{Commit: &gnmi_ext.Commit{
				Id: "c1", Action: &gnmi_ext.Commit_Confirm{Confirm: &gnmi_ext.CommitConfirm{}}}}}}}
			// Authorized, but no commit is waiting.
			check("Set confirm", set(confirm), pick(r, codes.FailedPrecondition, codes.FailedPrecondition, codes.PermissionDenied))

			// Subscribe.
			for _, mode := range []gpb.SubscriptionList_Mode{gpb.SubscriptionList_ONCE, gpb.SubscriptionList_POLL, gpb.SubscriptionList_STREAM} {
				for _, p := range []string{"/", "/system/...", "/system/aaa"} {
					want := pick(r, codes.OK, codes.OK, codes.OK)
					if p == "/system/aaa" {
						want = pick(r, codes.OK, codes.PermissionDenied, codes.PermissionDenied)
					}
					notifs, err := subscribeOnce(t, c, p, mode)
					check(fmt.Sprintf("Subscribe %s %s", mode, p), err, want)
					if !r.admin {
						if l := leaks(notifs); len(l) > 0 {
							t.Errorf("Subscribe %s %s as %s leaks %v", mode, p, r.name, l)
						}
					} else if err == nil && p != "/system/aaa/" && len(notifs) == 0 {
						t.Errorf("Subscribe %s %s as ADMIN: no notifications", mode, p)
					}
					if h := hashes(notifs); len(h) > 0 {
						t.Errorf("Subscribe %s %s returns password hashes at %v", mode, p, h)
					}
				}
			}
		})
	}

	// Streamed changes: a VIEWER subscribed to "/" sees a site change but
	// not a new user, committed together and apart.
	t.Run("stream-changes", func(t *testing.T) {
		admin := n.As(t, "admin", adminPW)
		for _, who := range []struct {
			name   string
			client gpb.GNMIClient
		}{{"VIEWER", n.As(t, "viewer", viewerPW)}, {"OPERATOR", n.As(t, "operator", operatorPW)}} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sc, err := who.client.Subscribe(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := sc.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
				Mode: gpb.SubscriptionList_STREAM, Encoding: gpb.Encoding_PROTO,
				Subscription: []*gpb.Subscription{{Path: &gpb.Path{}, Mode: gpb.SubscriptionMode_ON_CHANGE}, {Path: nodetest.Path(t, "/system/..."), Mode: gpb.SubscriptionMode_ON_CHANGE}},
			}}}); err != nil {
				t.Fatal(err)
			}
			var notifs []*gpb.Notification
			for synced := false; !synced; {
				resp, err := sc.Recv()
				if err != nil {
					t.Fatal(err)
				}
				synced = resp.GetSyncResponse()
				if u := resp.GetUpdate(); u != nil {
					notifs = append(notifs, u)
				}
			}
			marker := "marker-" + who.name
			_, err = admin.Set(ctx, &gpb.SetRequest{
				Delete: []*gpb.Path{nodetest.Path(t, "/system/aaa/users/user[username=x-admin]")},
				Update: []*gpb.Update{
					{Path: nodetest.Path(t, "/system/aaa/users/user[username=s-"+strings.ToLower(who.name)+"]/config"), Val: nodetest.JSONIETF([]byte(`{"username":"s-` + strings.ToLower(who.name) + `","role":"VIEWER","password":"p"}`))},
				}})
			if err != nil && status.Code(err) != codes.NotFound {
				t.Fatal(err)
			}
			if _, err := admin.Set(ctx, &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/sites/site[name=hq]/config/description"), Val: str(marker)}}}); err != nil {
				t.Fatal(err)
			}
			for seen := false; !seen; {
				resp, err := sc.Recv()
				if err != nil {
					t.Fatalf("%s waiting for the marker: %v", who.name, err)
				}
				if u := resp.GetUpdate(); u != nil {
					notifs = append(notifs, u)
					seen = strings.Contains(u.String(), marker)
				}
			}
			cancel()
			if l := leaks(notifs); len(l) > 0 {
				t.Errorf("%s's stream of / leaks %v", who.name, l)
			}
		}
	})
}

// subscribeOnce runs a subscription until its first sync (for POLL, also
// one poll and its sync) and returns the notifications, or the error.
func subscribeOnce(t *testing.T, c gpb.GNMIClient, p string, mode gpb.SubscriptionList_Mode) ([]*gpb.Notification, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc, err := c.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	sub := &gpb.Subscription{Path: nodetest.Path(t, p)}
	if mode == gpb.SubscriptionList_STREAM {
		sub.Mode = gpb.SubscriptionMode_SAMPLE
		sub.SampleInterval = uint64(100 * time.Millisecond)
	}
	if err := sc.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
		Mode: mode, Encoding: gpb.Encoding_PROTO, Subscription: []*gpb.Subscription{sub},
	}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err // io.EOF: the server ended the RPC; Recv tells why
	}
	var notifs []*gpb.Notification
	syncs, want := 0, 1
	if mode == gpb.SubscriptionList_POLL {
		want = 2
	}
	samples := 0
	for {
		resp, err := sc.Recv()
		if errors.Is(err, io.EOF) {
			return notifs, nil
		}
		if err != nil {
			return notifs, err
		}
		if u := resp.GetUpdate(); u != nil {
			notifs = append(notifs, u)
			if syncs > 0 {
				samples++
			}
		}
		if resp.GetSyncResponse() {
			syncs++
			if mode == gpb.SubscriptionList_POLL && syncs == 1 {
				if err := sc.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Poll{Poll: &gpb.Poll{}}}); err != nil {
					return notifs, err
				}
			}
		}
		// STREAM: also take a sample after the sync.
		if syncs >= want && (mode != gpb.SubscriptionList_STREAM || samples > 0) {
			return notifs, nil
		}
	}
}

// TestBruteForce: bad passwords are answered ever more slowly, then refused
// outright, while other users and other peers carry on.
func TestBruteForce(t *testing.T) {
	const (
		delay = 20 * time.Millisecond
		max   = 5
	)
	n := startAuth(t, auth.Config{FailureDelay: delay, MaxFailureDelay: time.Second, MaxFailures: max, FailureWindow: time.Minute, EventRate: 0.001, EventBurst: 3})
	n.AddUser(t, "carol", "VIEWER", "carol-pw")
	viewer := n.As(t, "viewer", viewerPW)
	if _, err := viewer.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var last error
	for i := 0; i < max-1; i++ {
		_, last = n.As(t, "operator", fmt.Sprintf("guess-%d", i)).Capabilities(ctxT(t, 10*time.Second), &gpb.CapabilityRequest{})
		if status.Code(last) != codes.Unauthenticated {
			t.Fatalf("guess %d: %v, want UNAUTHENTICATED", i, last)
		}
	}
	// An unknown user gets the same answer as a wrong password (and
	// counts against the peer).
	_, unknown := n.As(t, "nobody", "x").Capabilities(ctxT(t, 10*time.Second), &gpb.CapabilityRequest{})
	if status.Code(unknown) != codes.Unauthenticated || status.Convert(unknown).Message() != status.Convert(last).Message() {
		t.Errorf("unknown user: %v; wrong password: %v; want the same answer", unknown, last)
	}
	// Each failure waited delay, doubled for each earlier one of the peer:
	// 20+40+80+160+320 ms.
	var minWait time.Duration
	for i := 0; i < max; i++ {
		minWait += delay << i
	}
	if took := time.Since(start); took < minWait {
		t.Errorf("%d failed logins answered in %v, want at least %v", max, took, minWait)
	}
	// Now even the right password is refused without a check, for the
	// user and for any new login from the peer.
	for _, c := range []struct{ user, pw string }{{"operator", operatorPW}, {"carol", "carol-pw"}} {
		_, err := n.As(t, c.user, c.pw).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{})
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("after %d failures, %s's right password: %v, want RESOURCE_EXHAUSTED", max, c.user, err)
		}
	}
	// A user logged in before goes on, and so does a new login from
	// another address.
	if _, err := viewer.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/sites")}}); err != nil {
		t.Errorf("viewer during the brute force: %v", err)
	}
	other := n.Dial(t, grpc.WithPerRPCCredentials(auth.Password{Username: "carol", Password: "carol-pw"}),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			return d.DialContext(ctx, "tcp", addr)
		}))
	if _, err := other.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); err != nil {
		t.Errorf("carol from 127.0.0.2 during the brute force from 127.0.0.1: %v", err)
	}
	// The failures are recorded, within the event budget (3).
	resp, err := viewer.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/system/events/event[sequence=*]/state/type")}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	for _, nt := range resp.GetNotification() {
		for _, u := range nt.GetUpdate() {
			if u.GetVal().GetStringVal() == "AUTH_FAILURE" {
				events++
			}
		}
	}
	if events != 3 {
		t.Errorf("%d AUTH_FAILURE events for %d failures, want 3 (the event burst)", events, max)
	}
}

// TestRateLimit: a flood from one user is refused; another user of the same
// address is not. Streams per user are capped.
func TestRateLimit(t *testing.T) {
	n := startAuth(t, auth.Config{UserRate: 20, UserBurst: 20, MaxStreams: 2})
	flood, calm := n.As(t, "operator", operatorPW), n.As(t, "viewer", viewerPW)
	req := &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/sites")}}
	refused := 0
	for i := 0; i < 200; i++ {
		_, err := flood.Get(ctxT(t, 5*time.Second), req)
		switch status.Code(err) {
		case codes.OK:
		case codes.ResourceExhausted:
			refused++
			if !strings.Contains(err.Error(), "rate limit") {
				t.Errorf("refusal without a message: %v", err)
			}
		default:
			t.Fatal(err)
		}
		if i%20 == 0 {
			if _, err := calm.Get(ctxT(t, 5*time.Second), req); err != nil {
				t.Errorf("the other user during the flood: %v", err)
			}
		}
	}
	if refused < 100 {
		t.Errorf("%d of 200 flooding Gets refused, want most", refused)
	}

	// Streams: the viewer may hold two.
	open := func() error {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		sc, err := calm.Subscribe(ctx)
		if err != nil {
			return err
		}
		if err := sc.Send(&gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: &gpb.SubscriptionList{
			Mode: gpb.SubscriptionList_STREAM, Subscription: []*gpb.Subscription{{Path: nodetest.Path(t, "/sites"), Mode: gpb.SubscriptionMode_ON_CHANGE}},
		}}}); err != nil {
			return err
		}
		for {
			resp, err := sc.Recv()
			if err != nil || resp.GetSyncResponse() {
				return err
			}
		}
	}
	time.Sleep(time.Second) // let the viewer's bucket refill
	for i := 0; i < 2; i++ {
		if err := open(); err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
	}
	if err := open(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("third stream: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// TestUserChanges: a changed password or role takes effect at once,
// although verified credentials are cached.
func TestUserChanges(t *testing.T) {
	n := startAuth(t, auth.Config{FailureDelay: time.Millisecond, MaxFailureDelay: time.Millisecond})
	v := n.As(t, "viewer", viewerPW)
	set := &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/sites/site[name=hq]/config/description"), Val: str("x")}}}
	if _, err := v.Set(ctxT(t, 5*time.Second), set); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("VIEWER Set: %v", err)
	}
	admin := n.As(t, "admin", adminPW)
	role := func(r string) {
		t.Helper()
		if _, err := admin.Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/system/aaa/users/user[username=viewer]/config/role"), Val: str(r)}}}); err != nil {
			t.Fatal(err)
		}
	}
	role("OPERATOR")
	if _, err := v.Set(ctxT(t, 5*time.Second), set); err != nil {
		t.Errorf("Set after the role became OPERATOR: %v", err)
	}
	if _, err := admin.Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: nodetest.Path(t, "/system/aaa/users/user[username=viewer]/config/password"), Val: str("new-pw")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("old password after a change: %v, want UNAUTHENTICATED", err)
	}
	if _, err := n.As(t, "viewer", "new-pw").Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); err != nil {
		t.Errorf("new password: %v", err)
	}
	if _, err := admin.Set(ctxT(t, 5*time.Second), &gpb.SetRequest{Delete: []*gpb.Path{nodetest.Path(t, "/system/aaa/users/user[username=viewer]")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.As(t, "viewer", "new-pw").Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("deleted user: %v, want UNAUTHENTICATED", err)
	}
	// The audit record names the user who made the change.
	resp, err := admin.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{nodetest.Path(t, "/system/audit/record[sequence=*]/state/user")}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, nt := range resp.GetNotification() {
		for _, u := range nt.GetUpdate() {
			users[u.GetVal().GetStringVal()] = true
		}
	}
	if !users["viewer"] || !users["admin"] {
		t.Errorf("audit users %v, want viewer and admin among them", users)
	}
}
