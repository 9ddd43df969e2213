package clusterca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func put(t *testing.T, st *store.Store, key string, value []byte) {
	t.Helper()
	if err := st.Update(context.Background(), func(tx store.Tx) error {
		tx.Set([]byte(key), value)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func newManager(dir, name string, addrs ...string) *Manager {
	return New(Config{Dir: dir, NodeName: name, Addrs: addrs, Logger: slog.New(slog.DiscardHandler)})
}

func TestEncodeDecode(t *testing.T) {
	ca, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.NotAfter.Before(time.Now().AddDate(9, 11, 0)) {
		t.Errorf("CA: IsCA %v, expires %v; want a CA for 10 years", ca.Cert.IsCA, ca.Cert.NotAfter)
	}
	got, err := Decode(ca.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Errorf("Decode(Encode(ca)) differs from ca")
	}
	other, _ := Generate()
	mixed := append(pemCert(ca.Cert), bytes.SplitAfter(other.Encode(), []byte("-----END CERTIFICATE-----\n"))[1]...)
	for name, b := range map[string][]byte{"empty": nil, "certificate only": pemCert(ca.Cert), "another CA's key": mixed} {
		if _, err := Decode(b); err == nil {
			t.Errorf("Decode of %s: no error", name)
		}
	}
}

// TestOpen: a new cluster's node makes a CA and its certificate before Raft
// starts; a node of a cluster from before the CA lets Raft go plaintext; a
// joining node refuses Raft until Install. Files are 0600, and a node
// certificate is kept until the CA, the node's addresses or its expiry
// call for a new one.
func TestOpen(t *testing.T) {
	t.Run("new cluster", func(t *testing.T) {
		dir := t.TempDir()
		m := newManager(dir, "n1", "127.0.0.1:9340", "localhost:9339")
		if err := m.Open(openStore(t), false, false); err != nil {
			t.Fatal(err)
		}
		if !m.Ready() || m.pending == nil {
			t.Fatalf("Ready %v, pending CA %v: want both", m.Ready(), m.pending != nil)
		}
		for _, f := range []string{NodeCertFile, NodeKeyFile, CACertFile} {
			fi, err := os.Stat(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
			}
		}
		leaf := m.cur.Load().cert.Leaf
		if leaf.Subject.CommonName != auth.MemberUser+"n1" {
			t.Errorf("CommonName %q, want %q", leaf.Subject.CommonName, auth.MemberUser+"n1")
		}
		for _, h := range []string{"127.0.0.1", "localhost"} {
			if err := leaf.VerifyHostname(h); err != nil {
				t.Errorf("node certificate: %v", err)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.cur.Load().pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("node certificate as a client's: %v", err)
		}
		if cfg, err := m.RaftTLS(); err != nil || cfg == nil || cfg.MinVersion != tls.VersionTLS13 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
			t.Errorf("RaftTLS: %+v, %v; want mutual TLS 1.3", cfg, err)
		}
	})
	t.Run("cluster from before the CA", func(t *testing.T) {
		m := newManager(t.TempDir(), "n1", "127.0.0.1:9340")
		if err := m.Open(openStore(t), false, true); err != nil {
			t.Fatal(err)
		}
		if cfg, err := m.RaftTLS(); cfg != nil || err != nil {
			t.Errorf("RaftTLS: %v, %v; want plaintext (nil, nil)", cfg, err)
		}
	})
	t.Run("restart with a store that lost the CA", func(t *testing.T) {
		dir := t.TempDir()
		first := newManager(dir, "n1", "127.0.0.1:9340")
		if err := first.Open(openStore(t), false, false); err != nil {
			t.Fatal(err)
		}
		// Raft state: the files are this node's own, and used.
		m := newManager(dir, "n1", "127.0.0.1:9340")
		if err := m.Open(openStore(t), true, true); err != nil {
			t.Fatal(err)
		}
		if !m.Cert().Equal(first.Cert()) || m.legacy.Load() {
			t.Errorf("the restart does not use the CA in its files (legacy %v)", m.legacy.Load())
		}
		// No Raft state: a new member; the files may be another cluster's.
		joiner := newManager(dir, "n1", "127.0.0.1:9340")
		if err := joiner.Open(openStore(t), true, false); err != nil {
			t.Fatal(err)
		}
		if joiner.Ready() {
			t.Errorf("a joining node without Raft state took the CA in its files")
		}
	})
	t.Run("joining", func(t *testing.T) {
		m := newManager(t.TempDir(), "n2", "127.0.0.1:9340")
		if err := m.Open(openStore(t), true, false); err != nil {
			t.Fatal(err)
		}
		if _, err := m.RaftTLS(); !errors.Is(err, ErrNoCA) {
			t.Errorf("RaftTLS before Install: %v, want ErrNoCA", err)
		}
		ca, _ := Generate()
		if err := m.Install(ca.Encode()); err != nil {
			t.Fatal(err)
		}
		if !m.Cert().Equal(ca.Cert) {
			t.Errorf("after Install the node has another CA")
		}
	})
	t.Run("reissue", func(t *testing.T) {
		dir, st := t.TempDir(), openStore(t)
		ca, _ := Generate()
		put(t, st, StoreKey, ca.Encode())
		serial := func(m *Manager) string { return m.cur.Load().cert.Leaf.SerialNumber.String() }
		open := func(addrs ...string) *Manager {
			t.Helper()
			m := newManager(dir, "n1", addrs...)
			if err := m.Open(st, true, false); err != nil {
				t.Fatal(err)
			}
			return m
		}
		first := serial(open("127.0.0.1:9340", "127.0.0.1:9339"))
		if again := serial(open("127.0.0.1:9340", "127.0.0.1:9339")); again != first {
			t.Errorf("the same CA and addresses issued a new certificate")
		}
		moved := open("127.0.0.2:9340", "127.0.0.1:9339")
		if serial(moved) == first {
			t.Errorf("a new Raft address kept the old certificate")
		}
		if err := moved.cur.Load().cert.Leaf.VerifyHostname("127.0.0.2"); err != nil {
			t.Errorf("after the move: %v", err)
		}
		other, _ := Generate()
		put(t, st, StoreKey, other.Encode())
		if m := open("127.0.0.2:9340", "127.0.0.1:9339"); !m.Cert().Equal(other.Cert) || m.cur.Load().cert.Leaf.CheckSignatureFrom(other.Cert) != nil {
			t.Errorf("another CA in the store kept the old certificate")
		}
	})
}

// handshake runs a TLS handshake over a pipe and one byte each way, as a
// TLS 1.3 server verifies the client's certificate after the client's
// handshake returned.
func handshake(server, client *tls.Config) (serverErr, clientErr error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(a, server)
		err := s.Handshake()
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		if err != nil {
			s.Close()
		}
		done <- err
	}()
	c := tls.Client(b, client)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err := c.Handshake()
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	return <-done, err
}

// TestRaftTLS: members of one CA talk; a member of another CA, a client
// without a certificate, or a certificate of the CA that names no member,
// are refused.
func TestRaftTLS(t *testing.T) {
	st := openStore(t)
	ca, _ := Generate()
	put(t, st, StoreKey, ca.Encode())
	member := func(st *store.Store, name string) *tls.Config {
		t.Helper()
		m := newManager(t.TempDir(), name, "127.0.0.1:9340")
		if err := m.Open(st, true, false); err != nil {
			t.Fatal(err)
		}
		cfg, err := m.RaftTLS()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	client := func(cfg *tls.Config) *tls.Config {
		cfg = cfg.Clone()
		cfg.ServerName = "127.0.0.1"
		return cfg
	}
	n1, n2 := member(st, "n1"), member(st, "n2")
	if serr, cerr := handshake(n1, client(n2)); serr != nil || cerr != nil {
		t.Fatalf("two members: server %v, client %v", serr, cerr)
	}

	otherStore := openStore(t)
	other, _ := Generate()
	put(t, otherStore, StoreKey, other.Encode())
	stranger := member(otherStore, "n1")

	noCert := client(n2)
	noCert.Certificates = nil

	notMember := client(n2)
	leaf, err := ca.Issue("x", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := *leaf.Leaf
	tmpl.Subject.CommonName, tmpl.RawSubject = "admin", nil
	forged, err := x509.CreateCertificate(nil, &tmpl, ca.Cert, leaf.Leaf.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	notMember.Certificates = []tls.Certificate{{Certificate: [][]byte{forged}, PrivateKey: leaf.PrivateKey}}

	for name, c := range map[string]*tls.Config{"another CA": client(stranger), "no certificate": noCert, "not a member's": notMember} {
		serr, cerr := handshake(n1, c)
		if serr == nil || cerr == nil {
			t.Errorf("%s: server %v, client %v; want both to fail", name, serr, cerr)
		}
	}
	// A member does not take a server of another CA either.
	if _, cerr := handshake(stranger, client(n2)); cerr == nil || !strings.Contains(cerr.Error(), "certificate") {
		t.Errorf("a server of another CA: client %v, want a certificate error", cerr)
	}
}
