package main_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
)

// as returns a client of addr authenticated as user.
func as(t testing.TB, addr, user, password string) gpb.GNMIClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auth.Password{Username: user, Password: password}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return gpb.NewGNMIClient(conn)
}

func addUser(t testing.TB, c gpb.GNMIClient, name, role, password string) {
	t.Helper()
	_, err := c.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{
		Path: path(t, "/system/aaa/users/user[username="+name+"]/config"),
		Val:  ietf([]byte(`{"username":"` + name + `","role":"` + role + `","password":"` + password + `"}`)),
	}}})
	if err != nil {
		t.Fatalf("adding user %s: %v", name, err)
	}
}

var generatedPassword = regexp.MustCompile(`first admin is user "admin" with password (\S+) `)

// TestFirstAdmin: a new cluster's first admin has the password of the
// environment, or a generated one printed once; the password is stored
// hashed only, and never returned.
func TestFirstAdmin(t *testing.T) {
	t.Parallel()
	t.Run("generated", func(t *testing.T) {
		t.Parallel()
		dir, addr := t.TempDir(), freeAddr(t)
		d := launch(t, "generated", []string{"--insecure", "--listen", addr, "--http", freeAddr(t), "--data-dir", dir}, []string{"PATRONUS_ADMIN_PASSWORD="})
		// Until the password is printed nobody can log in; wait for it.
		var pw string
		for deadline := time.Now().Add(15 * time.Second); pw == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if m := generatedPassword.FindStringSubmatch(d.stderr.String()); m != nil {
				pw = m[1]
			}
		}
		if pw == "" {
			t.Fatalf("no generated password on stderr:\n%s", d.stderr.String())
		}
		d.creds = auth.Password{Username: "admin", Password: pw}
		if err := d.ready(addr, insecure.NewCredentials()); err != nil {
			t.Fatalf("the printed password does not work: %v", err)
		}
		if _, err := as(t, addr, "admin", testAdminPassword).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("another password: %v, want UNAUTHENTICATED", err)
		}
		if n := strings.Count(d.stderr.String(), pw); n != 1 {
			t.Errorf("the password appears %d times on stderr, want once", n)
		}
		noClearPassword(t, dir, pw)
	})
	t.Run("env", func(t *testing.T) {
		t.Parallel()
		const pw = "from-the-env-7c1e"
		dir, addr := t.TempDir(), freeAddr(t)
		d := launch(t, "env", []string{"--insecure", "--listen", addr, "--http", freeAddr(t), "--data-dir", dir}, []string{"PATRONUS_ADMIN_PASSWORD=" + pw})
		d.creds = auth.Password{Username: "admin", Password: pw}
		if err := d.ready(addr, insecure.NewCredentials()); err != nil {
			t.Fatalf("PATRONUS_ADMIN_PASSWORD does not work: %v", err)
		}
		if generatedPassword.MatchString(d.stderr.String()) {
			t.Errorf("a password was generated although PATRONUS_ADMIN_PASSWORD was set")
		}
		// Neither the password nor its hash is ever returned.
		_, err := d.Client.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/aaa/users/user[username=admin]/config/password")}})
		if status.Code(err) != codes.NotFound {
			t.Errorf("Get of the admin's password: %v, want NOT_FOUND", err)
		}
		resp := get(t, d.Client, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/")}, Encoding: gpb.Encoding_JSON_IETF})
		if s := resp.String(); strings.Contains(s, "argon2") || strings.Contains(s, pw) {
			t.Errorf("Get / returns a password or its hash")
		}
		if !strings.Contains(resp.String(), "ADMIN") {
			t.Errorf("Get / as ADMIN lacks the admin's role")
		}
		if _, err := d.stop(os.Interrupt, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		noClearPassword(t, dir, pw)
	})
}

// noClearPassword fails if any file under dir (store, Raft log, snapshots)
// holds password in clear.
func noClearPassword(t *testing.T, dir, password string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), password) {
			t.Errorf("%s holds the admin's password in clear", p)
		}
		return nil
	})
}

// TestForwardedSetAuthorization: a follower forwards a Set to the leader,
// which authorizes and audits it as the client's user.
func TestForwardedSetAuthorization(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	follower := followersOf(nodes, leader)[0]
	// Users made through the follower: a forwarded Set by the admin.
	addUser(t, follower.client(), "op", "OPERATOR", "op-pw")
	addUser(t, follower.client(), "vw", "VIEWER", "vw-pw")
	set := func(c gpb.GNMIClient, p, v string) error {
		_, err := c.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: path(t, p), Val: strVal(v)}}})
		return err
	}
	viewer, operator := as(t, follower.addr, "vw", "vw-pw"), as(t, follower.addr, "op", "op-pw")
	if err := set(viewer, "/sites/site[name=fw]/config/location", "by viewer"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("VIEWER's Set on a follower: %v, want PERMISSION_DENIED", err)
	}
	if err := set(operator, "/system/stats-history/config/interval", "5"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("OPERATOR's Set of /system on a follower: %v, want PERMISSION_DENIED", err)
	}
	if err := set(operator, "/sites/site[name=fw]/config/location", "by operator"); err != nil {
		t.Fatalf("OPERATOR's Set on a follower: %v", err)
	}
	// The leader's audit record names the operator.
	resp := get(t, leader.client(), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/audit/record[sequence=*]/state")}, Encoding: gpb.Encoding_PROTO})
	user, result := map[string]string{}, map[string]string{} // by sequence
	var named []string                                       // sequences of records naming the path
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := u.GetPath().GetElem()
			s := elems[2].GetKey()["sequence"]
			switch elems[len(elems)-1].GetName() {
			case "user":
				user[s] = u.GetVal().GetStringVal()
			case "result":
				result[s] = u.GetVal().GetStringVal()
			case "paths":
				for _, e := range u.GetVal().GetLeaflistVal().GetElement() {
					if strings.HasPrefix(e.GetStringVal(), "/sites/site[name=fw]") {
						named = append(named, s)
					}
				}
			}
		}
	}
	// The viewer's refused attempts are audited too (REJECTED); the
	// accepted Set is the OK one.
	var seq string
	for _, s := range named {
		if result[s] == "OK" {
			seq = s
		}
	}
	if seq == "" || user[seq] != "op" {
		t.Errorf("audit record of the forwarded Set: sequence %q, user %q; want user op", seq, user[seq])
	}
	// A linearizable Get forwarded to the leader is filtered for the viewer.
	r, err := viewer.Get(linearizable(ctxT(t, 10*time.Second)), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system")}, Encoding: gpb.Encoding_JSON_IETF})
	if err != nil {
		t.Fatalf("VIEWER's linearizable Get on a follower: %v", err)
	}
	if s := r.String(); strings.Contains(s, `\"aaa\"`) || !strings.Contains(s, "cluster") {
		t.Errorf("VIEWER's linearizable Get of /system shows /system/aaa or lacks /system/cluster:\n%s", s)
	}
	if _, err := viewer.Get(linearizable(ctxT(t, 10*time.Second)), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/aaa")}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("VIEWER's linearizable Get of /system/aaa: %v, want PERMISSION_DENIED", err)
	}
}
