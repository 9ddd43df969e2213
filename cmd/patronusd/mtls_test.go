package main_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/tools/lab/topo"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func writePEM(t testing.TB, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".crt")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue makes a certificate for cn signed by ca, valid from notBefore to
// notAfter, for a server (127.0.0.1) or a client, and writes it and its key
// into dir as <name>.crt and <name>.key.
func (ca *testCA) issue(t testing.TB, dir, name, cn string, server bool, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

// tlsClient returns a client of addr that verifies the server against
// rootCA, presents the client certificate in certFile/keyFile if certFile
// is not empty, and sends creds if not nil.
//
// The certificate is presented even if it does not chain to a CA the
// server names as acceptable, as a client other than Go's (or one with a
// GetClientCertificate) does; Go's crypto/tls with Certificates would then
// send none.
func tlsClient(t testing.TB, addr, rootCA, certFile, keyFile string, creds credentials.PerRPCCredentials) gpb.GNMIClient {
	t.Helper()
	return tlsClientConfig(t, addr, rootCA, certFile, keyFile, creds, true)
}

func tlsClientConfig(t testing.TB, addr, rootCA, certFile, keyFile string, creds credentials.PerRPCCredentials, force bool) gpb.GNMIClient {
	t.Helper()
	pemBytes, err := os.ReadFile(rootCA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	tc := &tls.Config{RootCAs: pool}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
		if force {
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(tc))}
	if creds != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(creds))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return gpb.NewGNMIClient(conn)
}

// TestClientCertificates: with --tls-ca, a client certificate that chains
// to the CA authenticates the user its CommonName names, whose role
// applies; an expired certificate or one of another CA fails the
// handshake, one naming an unknown user is UNAUTHENTICATED, and nothing
// changes. Passwords keep working, over TLS, for clients without one.
func TestClientCertificates(t *testing.T) {
	t.Parallel()
	pki := t.TempDir()
	ca, other := newCA(t, pki, "patronus-test-ca"), newCA(t, pki, "other-ca")
	now := time.Now()
	srvCert, srvKey := ca.issue(t, pki, "server", "patronusd", true, now.Add(-time.Hour), now.Add(time.Hour))
	opCert, opKey := ca.issue(t, pki, "op", "op", false, now.Add(-time.Hour), now.Add(time.Hour))
	expCert, expKey := ca.issue(t, pki, "expired", "op", false, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	otherCert, otherKey := other.issue(t, pki, "other", "op", false, now.Add(-time.Hour), now.Add(time.Hour))
	ghostCert, ghostKey := ca.issue(t, pki, "ghost", "ghost", false, now.Add(-time.Hour), now.Add(time.Hour))

	addr := freeAddr(t)
	d := launch(t, "mtls", []string{"--listen", addr, "--http", freeAddr(t), "--data-dir", t.TempDir(),
		"--tls-cert", srvCert, "--tls-key", srvKey, "--tls-ca", ca.file}, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	// The admin logs in with a password over TLS, without a certificate.
	if err := d.ready(addr, credentials.NewTLS(&tls.Config{RootCAs: pool})); err != nil {
		t.Fatal(err)
	}
	addUser(t, d.Client, "op", "OPERATOR", "op-password")

	set := func(c gpb.GNMIClient, p, v string) error {
		_, err := c.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: path(t, p), Val: strVal(v)}}})
		return err
	}
	op := tlsClient(t, addr, ca.file, opCert, opKey, nil)
	if err := set(op, "/sites/site[name=by-cert]/config/location", "Porto"); err != nil {
		t.Fatalf("OPERATOR by certificate, Set under /sites: %v", err)
	}
	if err := set(op, "/system/stats-history/config/interval", "5"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("OPERATOR by certificate, Set under /system: %v, want PERMISSION_DENIED", err)
	}
	if _, err := op.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/system/aaa")}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("OPERATOR by certificate, Get of /system/aaa: %v, want PERMISSION_DENIED", err)
	}

	for _, tc := range []struct {
		name, cert, key string
		creds           credentials.PerRPCCredentials
		want            codes.Code
	}{
		{"expired", expCert, expKey, nil, codes.Unavailable},
		{"other-ca", otherCert, otherKey, nil, codes.Unavailable},
		{"other-ca-with-password", otherCert, otherKey, auth.Password{Username: "op", Password: "op-password"}, codes.Unavailable},
		{"unknown-user", ghostCert, ghostKey, nil, codes.Unauthenticated},
		{"unknown-user-with-admin-password", ghostCert, ghostKey, adminCreds, codes.Unauthenticated},
		{"cert-and-another-user", opCert, opKey, adminCreds, codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsClient(t, addr, ca.file, tc.cert, tc.key, tc.creds)
			if _, err := c.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != tc.want {
				t.Errorf("Capabilities: %v, want %v", err, tc.want)
			}
			if err := set(c, "/sites/site[name="+tc.name+"]/config/location", "x"); status.Code(err) != tc.want {
				t.Errorf("Set: %v, want %v", err, tc.want)
			}
		})
	}
	// Go's own client does not present a certificate the server's CA did
	// not sign: it is then a client without one, and needs a password.
	goDefault := tlsClientConfig(t, addr, ca.file, otherCert, otherKey, nil, false)
	if _, err := goDefault.Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Go client with another CA's certificate and no password: %v, want UNAUTHENTICATED", err)
	}
	// A user without a password logs in by certificate only.
	_, err := d.Client.Set(ctxT(t, 10*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{
		Path: path(t, "/system/aaa/users/user[username=cert-only]/config"),
		Val:  ietf([]byte(`{"username":"cert-only","role":"VIEWER"}`)),
	}}})
	if err != nil {
		t.Fatalf("adding a user without a password: %v", err)
	}
	coCert, coKey := ca.issue(t, pki, "cert-only", "cert-only", false, now.Add(-time.Hour), now.Add(time.Hour))
	if _, err := tlsClient(t, addr, ca.file, coCert, coKey, nil).Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites")}}); err != nil {
		t.Errorf("VIEWER without a password, by certificate: %v", err)
	}
	if _, err := tlsClient(t, addr, ca.file, "", "", auth.Password{Username: "cert-only"}).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a user without a password, by an empty password: %v, want UNAUTHENTICATED", err)
	}
	// A password alone still works over TLS.
	if _, err := tlsClient(t, addr, ca.file, "", "", auth.Password{Username: "op", Password: "op-password"}).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); err != nil {
		t.Errorf("op with a password over TLS: %v", err)
	}
	// Plaintext against the TLS port is refused.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := gpb.NewGNMIClient(conn).Capabilities(ctxT(t, 5*time.Second), &gpb.CapabilityRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: %v, want UNAVAILABLE", err)
	}
	// Nothing the refused clients sent changed the tree.
	resp := get(t, d.Client, &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites/site[name=*]/config/name")}, Encoding: gpb.Encoding_PROTO})
	var sites []string
	for _, v := range updates(resp) {
		sites = append(sites, v.GetStringVal())
	}
	if len(sites) != 1 || sites[0] != "by-cert" {
		t.Errorf("sites after the refused Sets: %q, want only by-cert", sites)
	}

	t.Run("gnmi_cli", func(t *testing.T) {
		if gnmiCLIErr != nil {
			t.Fatal(gnmiCLIErr)
		}
		cli := func(env []string, args ...string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			all := append([]string{"-a", addr, "-ca_crt", ca.file, "-timeout", "5s", "-log_dir", t.TempDir()}, args...)
			cmd := exec.CommandContext(ctx, gnmiCLIBin, all...)
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		// A client certificate and no password.
		out, err := cli(nil, "-client_crt", opCert, "-client_key", opKey, "-get", "-proto",
			`path:{elem:{name:"sites"} elem:{name:"site" key:{key:"name" value:"by-cert"}} elem:{name:"config"} elem:{name:"location"}} encoding:JSON_IETF`)
		if err != nil || !strings.Contains(out, "Porto") {
			t.Errorf("gnmi_cli -client_crt -get: %v\n%s", err, out)
		}
		// A password over TLS (-ca_crt verifies the server).
		out, err = cli([]string{"GNMI_USER=admin", "GNMI_PASS=" + testAdminPassword}, "-with_user_pass", "-capabilities")
		if err != nil || !strings.Contains(out, "gNMI_version") {
			t.Errorf("gnmi_cli -with_user_pass over TLS: %v\n%s", err, out)
		}
		// An expired certificate.
		out, err = cli(nil, "-client_crt", expCert, "-client_key", expKey, "-capabilities")
		if err == nil || strings.Contains(out, "gNMI_version") {
			t.Errorf("gnmi_cli with an expired certificate succeeded:\n%s", out)
		}
	})
}

// exitsWith launches patronusd with args, expects it to exit non-zero
// with one line on stderr containing every want.
func exitsWith(t *testing.T, name string, args []string, want ...string) {
	t.Helper()
	d := launch(t, name, args, nil)
	code, ok := d.wait(10 * time.Second)
	if !ok || code == 0 {
		t.Fatalf("%v: exited %v with code %d, want non-zero", args, ok, code)
	}
	out := strings.TrimSpace(d.stderr.String())
	if strings.Contains(out, "\n") {
		t.Errorf("%v: stderr is more than one line:\n%s", args, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%v: stderr does not mention %q:\n%s", args, w, out)
		}
	}
}

// TestSecurityFlags: --insecure is refused on an address that is not
// loopback unless --insecure-non-loopback-dangerous is given; --tls-ca and
// --max-msg-size are checked.
func TestSecurityFlags(t *testing.T) {
	t.Parallel()
	base := func(listen string, extra ...string) []string {
		return append([]string{"--listen", listen, "--http", freeAddr(t), "--data-dir", t.TempDir()}, extra...)
	}
	port := func() string { _, p, _ := net.SplitHostPort(freeAddr(t)); return p }
	// Refused before anything listens: these never bind a host interface.
	for _, listen := range []string{"0.0.0.0:" + port(), "[::]:" + port(), ":" + port()} {
		exitsWith(t, "insecure-"+listen, base(listen, "--insecure"), "--insecure-non-loopback-dangerous", listen)
	}
	exitsWith(t, "dangerous-alone", base(freeAddr(t), "--insecure-non-loopback-dangerous"), "--insecure-non-loopback-dangerous goes with --insecure")
	exitsWith(t, "tls-ca-insecure", base(freeAddr(t), "--insecure", "--tls-ca", "ca.pem"), "--tls-ca")
	exitsWith(t, "tls-ca-missing", base(freeAddr(t), "--tls-ca", filepath.Join(t.TempDir(), "none.pem")), "--tls-ca")
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	exitsWith(t, "tls-ca-not-pem", base(freeAddr(t), "--tls-ca", notPEM), "--tls-ca", "no PEM certificate")
	exitsWith(t, "max-msg-size-bad", base(freeAddr(t), "--insecure", "--max-msg-size", "lots"), "max-msg-size")
	exitsWith(t, "max-msg-size-small", base(freeAddr(t), "--insecure", "--max-msg-size", "1KiB"), "max-msg-size", "at least 64KiB")

	t.Run("netns", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root: the non-loopback address is made in a network namespace of its own, never on the host's interfaces")
		}
		ns := fmt.Sprintf("pt-insec-%d", os.Getpid())
		const ip = "10.254.7.1"
		for _, args := range [][]string{{"netns", "add", ns}, {"-n", ns, "link", "set", "lo", "up"}, {"-n", ns, "addr", "add", ip + "/32", "dev", "lo"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v\n%s", args, err, out)
			}
			if args[0] == "netns" {
				t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
			}
		}
		dir := t.TempDir()
		args := []string{"netns", "exec", ns, patronusdBin, "--insecure", "--listen", ip + ":9339", "--http", ip + ":9341",
			"--raft-listen", "127.0.0.1:9340", "--data-dir", dir, "--admin-password-file", adminPasswordFile}
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--insecure-non-loopback-dangerous") {
			t.Errorf("--insecure on %s: %v, want a refusal naming the dangerous flag:\n%s", ip, err, out)
		}
		cmd := exec.Command("ip", append(args, "--insecure-non-loopback-dangerous")...)
		stderr := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("patronusd in %s:\n%s", ns, stderr.String())
			}
		})
		dial := topo.Dialer(ns)
		conn, err := grpc.NewClient(ip+":9339", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(adminCreds), grpc.WithContextDialer(dial))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var last error
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, last = gpb.NewGNMIClient(conn).Capabilities(ctxT(t, time.Second), &gpb.CapabilityRequest{}); last == nil {
				break
			}
		}
		if last != nil {
			t.Fatalf("--insecure --insecure-non-loopback-dangerous on %s: %v", ip, last)
		}
		// On an --http address that is not loopback, metrics are served
		// and profiles are not.
		hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) }}}
		for p, want := range map[string]int{"/metrics": http.StatusOK, "/healthz": http.StatusOK, "/debug/pprof/": http.StatusNotFound} {
			resp, err := hc.Get("http://" + ip + ":9341" + p)
			if err != nil {
				t.Errorf("GET %s: %v", p, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s on a non-loopback --http: %d, want %d", p, resp.StatusCode, want)
			}
		}
	})
}

// TestMessageSize: a SetRequest over --max-msg-size is RESOURCE_EXHAUSTED
// and changes nothing; the default takes the scale set in one Set.
func TestMessageSize(t *testing.T) {
	t.Parallel()
	t.Run("over", func(t *testing.T) {
		t.Parallel()
		d := start(t, "", "--max-msg-size", "256KiB")
		big := &gpb.SetRequest{}
		for i := 0; i < 3000; i++ {
			big.Update = append(big.Update, &gpb.Update{
				Path: path(t, fmt.Sprintf("/sites/site[name=s%04d]/config/description", i)),
				Val:  strVal(strings.Repeat("d", 80)),
			})
		}
		_, err := d.Client.Set(ctxT(t, 10*time.Second), big)
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("a SetRequest over --max-msg-size: %v, want RESOURCE_EXHAUSTED", err)
		}
		if _, err := d.Client.Get(ctxT(t, 5*time.Second), &gpb.GetRequest{Path: []*gpb.Path{path(t, "/sites")}}); status.Code(err) != codes.NotFound {
			t.Errorf("Get /sites after the refused Set: %v, want NOT_FOUND (nothing changed)", err)
		}
		big.Update = big.Update[:100]
		if _, err := d.Client.Set(ctxT(t, 10*time.Second), big); err != nil {
			t.Errorf("a SetRequest under --max-msg-size: %v", err)
		}
	})
	t.Run("scale-set", func(t *testing.T) {
		t.Parallel()
		d := start(t, "")
		doc, err := scale.Generate(1).JSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Client.Set(ctxT(t, 60*time.Second), &gpb.SetRequest{Update: []*gpb.Update{{Path: &gpb.Path{}, Val: ietf(doc)}}}); err != nil {
			t.Fatalf("the scale set in one Set under the default --max-msg-size: %v", err)
		}
	})
}
