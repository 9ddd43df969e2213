package main_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/clusterca"
)

// tlsFiles are what a member keeps of the cluster CA in <data-dir>/tls.
var tlsFiles = []string{clusterca.NodeCertFile, clusterca.NodeKeyFile, clusterca.CACertFile}

// readCert parses the first certificate of a PEM file.
func readCert(t testing.TB, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkMemberFiles checks that every node holds the same cluster CA and a
// certificate of it for itself, in files of mode 0600, and returns the CA.
func checkMemberFiles(t testing.TB, nodes []*cnode) *x509.Certificate {
	t.Helper()
	var ca *x509.Certificate
	for _, n := range nodes {
		dir := filepath.Join(n.dir, "tls")
		for _, f := range tlsFiles {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatalf("%s: %v", n.name, err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %s has mode %v, want 0600", n.name, f, fi.Mode().Perm())
			}
		}
		c := readCert(t, filepath.Join(dir, clusterca.CACertFile))
		if ca == nil {
			ca = c
		} else if !c.Equal(ca) {
			t.Errorf("%s holds another cluster CA than %s", n.name, nodes[0].name)
		}
		leaf := readCert(t, filepath.Join(dir, clusterca.NodeCertFile))
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: node certificate: %v", n.name, err)
		}
		if want := auth.MemberUser + n.name; leaf.Subject.CommonName != want {
			t.Errorf("%s: node certificate names %q, want %q", n.name, leaf.Subject.CommonName, want)
		}
	}
	return ca
}

// refusedTLS connects to a Raft address with cfg and returns the error
// that refused the connection: the handshake's, or (TLS 1.3, where the
// server checks the client's certificate after the client's handshake
// returned) the alert on the first read. A connection still open after 3
// s was not refused.
func refusedTLS(t testing.TB, addr string, cfg *tls.Config) error {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("%s accepted a TLS connection with %v", addr, cfg.Certificates)
		return nil
	}
	return err
}

// refusedPlaintext sends a Raft AppendEntries header and junk in
// plaintext, and checks that the connection is closed with no answer (a
// TLS alert at most).
func refusedPlaintext(t testing.TB, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// rpcAppendEntries, then the start of a msgpack map.
	if _, err := conn.Write([]byte{0, 0x8a, 0xa4, 'T', 'e', 'r', 'm', 0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		return // closed already
	}
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	var ne net.Error
	switch {
	case err == nil && buf[0] != 0x15:
		t.Errorf("%s answered plaintext Raft: % x", addr, buf[:n])
	case errors.As(err, &ne) && ne.Timeout():
		t.Errorf("%s kept a plaintext Raft connection open", addr)
	}
}

// checkRaftRefusesStrangers checks that a member's Raft address refuses
// plaintext, TLS without a client certificate and a certificate of another
// CA, and takes a member's certificate.
func checkRaftRefusesStrangers(t *testing.T, n, peer *cnode, ca *x509.Certificate) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	pki := t.TempDir()
	other := newCA(t, pki, "other-ca")
	now := time.Now()
	evilCert, evilKey := other.issue(t, pki, "evil", auth.MemberUser+"evil", false, now.Add(-time.Hour), now.Add(time.Hour))
	evil, err := tls.LoadX509KeyPair(evilCert, evilKey)
	if err != nil {
		t.Fatal(err)
	}
	base := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}

	refusedPlaintext(t, n.raft)
	if err := refusedTLS(t, n.raft, base); err != nil && !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("TLS without a client certificate: refused with %v, want \"certificate required\"", err)
	}
	forced := base.Clone()
	// Go's client would not send a certificate the server's CA did not
	// sign; others do.
	forced.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &evil, nil }
	if err := refusedTLS(t, n.raft, forced); err != nil && !strings.Contains(err.Error(), "certificate") {
		t.Errorf("TLS with another CA's certificate: refused with %v, want a certificate error", err)
	}
	// The control: another member's own certificate is taken.
	own, err := tls.LoadX509KeyPair(filepath.Join(peer.dir, "tls", clusterca.NodeCertFile), filepath.Join(peer.dir, "tls", clusterca.NodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	good := base.Clone()
	good.Certificates = []tls.Certificate{own}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", n.raft, good)
	if err != nil {
		t.Fatalf("a member's certificate: %v", err)
	}
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("a member's certificate: the connection ended: %v", err)
	}
	conn.Close()
}

// TestClusterMTLS: a cluster served over TLS makes its own CA; every member
// holds it and a certificate of it, Raft takes only member certificates,
// followers forward Sets over mutual TLS, no Get or Subscribe shows the
// CA, only an ADMIN can fetch it, and a killed member comes back over TLS.
func TestClusterMTLS(t *testing.T) {
	t.Parallel()
	nodes := startClusterTLS(t, true, 3, 0)
	leader := waitCluster(t, nodes, 3, 5*time.Second)
	ca := checkMemberFiles(t, nodes)

	// Sets through every node: followers forward theirs to the leader
	// over member connections.
	want := writeDescs(t, nodes, "mtls", 12)
	for _, n := range nodes {
		waitDescs(t, n, want, 10*time.Second)
	}

	// Raft refuses strangers, and nothing they sent reached the log.
	// (/system/cluster/state is refreshed every 500 ms.)
	time.Sleep(time.Second)
	before, err := clusterState(ctxT(t, 5*time.Second), leader.client())
	if err != nil {
		t.Fatal(err)
	}
	follower := followersOf(nodes, leader)[0]
	checkRaftRefusesStrangers(t, leader, follower, ca)
	checkRaftRefusesStrangers(t, follower, leader, ca)
	time.Sleep(time.Second)
	after, err := clusterState(ctxT(t, 5*time.Second), leader.client())
	if err != nil {
		t.Fatal(err)
	}
	if after.Leader != before.Leader || after.Term != before.Term || after.CommitIndex != before.CommitIndex {
		t.Errorf("after the refused Raft connections the leader's state moved from %+v to %+v", before, after)
	}

	// Neither a Get nor a Subscribe of / shows the CA's certificate or key,
	// even to an admin.
	der := ca.Raw[len(ca.Raw)/2 : len(ca.Raw)/2+32]
	shows := func(s string) bool {
		return strings.Contains(s, "PRIVATE KEY") || strings.Contains(s, "BEGIN") || strings.Contains(s, string(der)) ||
			strings.Contains(s, base64.StdEncoding.EncodeToString(ca.Raw)[64:128]) || strings.Contains(s, "patronus-node")
	}
	for _, enc := range []gpb.Encoding{gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO} {
		if resp := get(t, leader.client(), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/")}, Encoding: enc}); shows(resp.String()) {
			t.Errorf("Get / (%v) as admin shows the cluster CA", enc)
		}
	}
	s := subscribe(t, follower.client(), &gpb.SubscriptionList{Mode: gpb.SubscriptionList_ONCE, Encoding: gpb.Encoding_PROTO,
		Subscription: []*gpb.Subscription{{Path: path(t, "/")}}})
	ups, _ := s.untilSync(t, 10*time.Second)
	if len(ups) == 0 {
		t.Fatal("Subscribe ONCE / returned nothing")
	}
	for _, u := range ups {
		if shows(u.path + " " + u.val.String()) {
			t.Errorf("Subscribe / as admin shows the cluster CA at %s", u.path)
		}
	}

	// Only an ADMIN (or a member) may fetch the CA.
	addUser(t, leader.client(), "vw", "VIEWER", "vw-pw")
	fetch := func(creds credentials.PerRPCCredentials) ([]byte, error) {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))} //nolint:gosec // a test's own daemon
		if creds != nil {
			opts = append(opts, grpc.WithPerRPCCredentials(creds))
		}
		cc, err := grpc.NewClient(leader.addr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		return clusterca.Fetch(ctxT(t, 10*time.Second), cc)
	}
	if _, err := fetch(auth.Password{Username: "vw", Password: "vw-pw"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a VIEWER fetching the CA: %v, want PERMISSION_DENIED", err)
	}
	if _, err := fetch(nil); status.Code(err) != codes.Unauthenticated {
		t.Errorf("fetching the CA without credentials: %v, want UNAUTHENTICATED", err)
	}
	if b, err := fetch(adminCreds); err != nil || !bytes.Contains(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})) {
		t.Errorf("the admin fetching the CA: %v", err)
	}

	// A member killed and restarted comes back over Raft's TLS: it gets
	// what was set while it was down, with the certificate it had.
	crt, err := os.ReadFile(filepath.Join(follower.dir, "tls", clusterca.NodeCertFile))
	if err != nil {
		t.Fatal(err)
	}
	follower.d.kill()
	if err := setLeaf(ctxT(t, 10*time.Second), leader.client(), siteDescPath(t, "while-down"), strVal("set while n was down")); err != nil {
		t.Fatal(err)
	}
	follower.launch()
	if err := follower.ready(); err != nil {
		t.Fatal(err)
	}
	waitDescs(t, follower, map[string]string{"while-down": "set while n was down"}, 15*time.Second)
	if err := setLeaf(ctxT(t, 10*time.Second), follower.client(), siteDescPath(t, "after-restart"), strVal("set on the restarted member")); err != nil {
		t.Fatalf("Set on the restarted member: %v", err)
	}
	for _, n := range nodes {
		waitDescs(t, n, map[string]string{"after-restart": "set on the restarted member"}, 10*time.Second)
	}
	if again, err := os.ReadFile(filepath.Join(follower.dir, "tls", clusterca.NodeCertFile)); err != nil || !bytes.Equal(again, crt) {
		t.Errorf("the restarted member's certificate changed (%v)", err)
	}
}

// TestClusterCAUpgrade: a cluster made without the CA (here with
// --insecure) and started again with TLS gets one: its leader makes it, the
// members take it up, Raft becomes mutual TLS, and a killed member comes
// back.
func TestClusterCAUpgrade(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, 0)
	want := writeDescs(t, nodes, "before", 6)
	for _, n := range nodes {
		waitDescs(t, n, want, 10*time.Second)
		if _, err := os.Stat(filepath.Join(n.dir, "tls", clusterca.CACertFile)); err == nil {
			t.Fatalf("%s has a cluster CA with --insecure", n.name)
		}
	}
	for _, n := range nodes {
		if _, err := n.d.stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.tls = true
		n.launch()
	}
	for _, n := range nodes {
		if err := n.ready(); err != nil {
			t.Fatal(err)
		}
	}
	leader := waitCluster(t, nodes, 3, 20*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range nodes {
		for {
			if _, err := os.Stat(filepath.Join(n.dir, "tls", clusterca.CACertFile)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has no cluster CA 15 s after the restart with TLS", n.name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ca := checkMemberFiles(t, nodes)
	want = writeDescs(t, nodes, "after", 6)
	for _, n := range nodes {
		waitDescs(t, n, want, 10*time.Second)
	}
	follower := followersOf(nodes, leader)[0]
	// The plaintext of before is over.
	refusedPlaintext(t, follower.raft)
	refusedPlaintext(t, leader.raft)

	follower.d.kill()
	if err := setLeaf(ctxT(t, 10*time.Second), leader.client(), siteDescPath(t, "while-down"), strVal("set while n was down")); err != nil {
		t.Fatal(err)
	}
	follower.launch()
	if err := follower.ready(); err != nil {
		t.Fatal(err)
	}
	waitDescs(t, follower, map[string]string{"while-down": "set while n was down"}, 15*time.Second)
	if got := checkMemberFiles(t, nodes); !got.Equal(ca) {
		t.Errorf("the cluster CA changed when a member restarted")
	}
}

// TestJoinWithCAFingerprint: a node given the cluster CA's fingerprint
// joins through a member that presents that CA, and refuses, before
// sending the admin's password, a member that does not.
func TestJoinWithCAFingerprint(t *testing.T) {
	t.Parallel()
	first := newNode(t, "n1", "")
	first.tls = true
	if err := first.startFresh(); err != nil {
		t.Fatal(err)
	}
	waitCluster(t, []*cnode{first}, 1, 10*time.Second)
	ca := readCert(t, filepath.Join(first.dir, "tls", "cluster-ca.crt"))
	sum := sha256.Sum256(ca.Raw)
	good := hex.EncodeToString(sum[:])
	if !strings.Contains(first.d.stderr.String(), good) {
		t.Errorf("the CA's fingerprint %s is not in n1's log, where operators read it", good)
	}

	wrong := newNode(t, "n2", first.addr, "--join-ca-sha256", strings.Repeat("ab", 32))
	wrong.tls = true
	wrong.launch() // it never serves: it learns no users before it joins
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(wrong.d.stderr.String(), "did not present the cluster CA") {
		if time.Now().After(deadline) {
			t.Fatalf("n2 with a wrong fingerprint did not refuse n1; its log:\n%s", wrong.d.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	ms, err := members(ctxT(t, 5*time.Second), first.client())
	if err != nil || len(ms) != 1 {
		t.Errorf("members after a join with a wrong fingerprint: %v, %v; want n1 alone", ms, err)
	}
	if strings.Contains(first.d.stderr.String(), "authentication failed") {
		t.Errorf("n1 saw a login from the refusing joiner:\n%s", first.d.stderr.String())
	}
	wrong.d.kill()

	right := newNode(t, "n3", first.addr, "--join-ca-sha256", "sha256:"+strings.ToUpper(good))
	right.tls = true
	if err := right.startFresh(); err != nil {
		t.Fatal(err)
	}
	waitCluster(t, []*cnode{first, right}, 2, 15*time.Second)
}
