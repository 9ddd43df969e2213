package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// certOf makes a certificate for cn signed by parent (self-signed CA if
// parent is nil).
func certOf(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// TestMemberCertificate: on a member connection, a verified chain that ends
// at this node's cluster CA and names a member is that member, without the
// cluster secret; anything else is UNAUTHENTICATED.
func TestMemberCertificate(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(context.Background(), func(tx store.Tx) error {
		tx.Set(userPath("admin", "role"), txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: "ADMIN"}}))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ca, caKey := certOf(t, "cluster CA", nil, nil)
	other, otherKey := certOf(t, "another CA", nil, nil)
	n2, _ := certOf(t, MemberUser+"n2", ca, caKey)
	admin, _ := certOf(t, "admin", ca, caKey)
	stranger, _ := certOf(t, MemberUser+"n2", other, otherKey)
	var clusterCA *x509.Certificate
	a := New(Config{Store: st, Logger: slog.New(slog.DiscardHandler), ClusterCA: func() *x509.Certificate { return clusterCA }})

	ctxOf := func(serverName string, chain []*x509.Certificate, md ...string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{ServerName: serverName, VerifiedChains: [][]*x509.Certificate{chain}}}})
		return metadata.NewIncomingContext(ctx, metadata.Pairs(md...))
	}
	for _, tc := range []struct {
		name      string
		clusterCA *x509.Certificate
		ctx       context.Context
		want      codes.Code
	}{
		{"member", ca, ctxOf(MemberServerName, []*x509.Certificate{n2, ca}), codes.OK},
		{"member with its name and a wrong secret", ca, ctxOf(MemberServerName, []*x509.Certificate{n2, ca}, UsernameKey, MemberUser+"n2", PasswordKey, "wrong"), codes.OK},
		{"member naming another user", ca, ctxOf(MemberServerName, []*x509.Certificate{n2, ca}, UsernameKey, "admin"), codes.Unauthenticated},
		{"not a member's name", ca, ctxOf(MemberServerName, []*x509.Certificate{admin, ca}), codes.Unauthenticated},
		{"another CA", ca, ctxOf(MemberServerName, []*x509.Certificate{stranger, other}), codes.Unauthenticated},
		{"no CA on this node", nil, ctxOf(MemberServerName, []*x509.Certificate{n2, ca}), codes.Unauthenticated},
		// Over a user connection a member's name is no user (':' is not
		// allowed in /system/aaa).
		{"member certificate on a user connection", ca, ctxOf("", []*x509.Certificate{n2, ca}), codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clusterCA = tc.clusterCA
			u, err := a.authenticate(tc.ctx)
			if got := status.Code(err); got != tc.want {
				t.Fatalf("authenticate: %v, want %v", err, tc.want)
			}
			if tc.want == codes.OK && (u.Name != MemberUser+"n2" || u.Member != MemberUser+"n2" || u.Role != Admin) {
				t.Errorf("authenticate: %+v, want member n2 as ADMIN", u)
			}
		})
	}
}
