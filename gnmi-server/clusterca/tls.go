package clusterca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
)

// ErrNoCA refuses a member connection while this node has no cluster CA.
var ErrNoCA = errors.New("clusterca: this node has no cluster CA yet")

// RaftTLS returns the configuration of a Raft connection, for
// replication.Config.TLS: TLS 1.3, this node's certificate, and the
// other end's required, verified against the cluster CA and naming a
// member. It returns nil while this node belongs to a cluster from before
// the CA that has none yet (plaintext), and ErrNoCA while a joining node
// has none (refused).
func (m *Manager) RaftTLS() (*tls.Config, error) {
	cur := m.cur.Load()
	if cur == nil {
		if m.legacy.Load() {
			return nil, nil
		}
		return nil, ErrNoCA
	}
	return cur.mutual(), nil
}

// mutual is a TLS 1.3 configuration, for either end, that presents this
// node's certificate and requires a member certificate of the cluster CA.
func (cur *material) mutual() *tls.Config {
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{cur.cert},
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        cur.pool,
		RootCAs:          cur.pool,
		VerifyConnection: memberPeer,
		// A configuration per connection could not resume a session.
		SessionTicketsDisabled: true,
	}
}

// memberPeer accepts a verified peer certificate that names a member.
func memberPeer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("clusterca: the peer sent no certificate")
	}
	if cn := cs.PeerCertificates[0].Subject.CommonName; !strings.HasPrefix(cn, auth.MemberUser) {
		return fmt.Errorf("clusterca: the peer's certificate names %q, not a member", cn)
	}
	return nil
}

// ServeMembers makes the gNMI server's TLS configuration base answer
// member connections: a client that asks for auth.MemberServerName gets
// this node's certificate instead of base's, must present a member
// certificate of the cluster CA, and is refused while this node has no CA.
// A client that asks for auth.JoinServerName (a joining node) gets this
// node's certificate and the CA's, and presents none. Other clients get
// base unchanged (its certificate, its client CAs).
func (m *Manager) ServeMembers(base *tls.Config) {
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if hello.ServerName != auth.MemberServerName && hello.ServerName != auth.JoinServerName {
			return nil, nil
		}
		cur := m.cur.Load()
		if cur == nil {
			return nil, ErrNoCA
		}
		if hello.ServerName == auth.JoinServerName {
			chain := cur.cert
			chain.Certificate = append(slices.Clip(chain.Certificate), cur.ca.Raw)
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{chain}, NextProtos: []string{"h2"}}, nil
		}
		c := cur.mutual()
		c.NextProtos = []string{"h2"}
		return c, nil
	}
}

// ParseFingerprint reads a CA fingerprint as --join-ca-sha256 takes it: the
// SHA-256 of the certificate (DER) in hex, colons and a "sha256:" prefix
// allowed, as patronusd logs it and `openssl x509 -fingerprint -sha256`
// prints it.
func ParseFingerprint(s string) ([]byte, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "sha256:"), ":", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%q is not a SHA-256 fingerprint (64 hex digits)", s)
	}
	return b, nil
}

// JoinTLS is the TLS configuration of a joining node that knows the
// fingerprint of the cluster CA: the member must present a member
// certificate signed by the CA with that fingerprint, and present the CA,
// before the joiner sends anything (the admin's password above all).
func JoinTLS(fingerprint []byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: auth.JoinServerName,
		// Verified below against the pinned CA, not the system's roots.
		InsecureSkipVerify: true, //nolint:gosec // VerifyPeerCertificate verifies
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var ca *x509.Certificate
			for _, r := range raw[1:] {
				if sum := sha256.Sum256(r); bytes.Equal(sum[:], fingerprint) {
					c, err := x509.ParseCertificate(r)
					if err != nil {
						return err
					}
					ca = c
				}
			}
			if ca == nil {
				return errors.New("clusterca: the member did not present the cluster CA of the fingerprint given (--join-ca-sha256)")
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return fmt.Errorf("clusterca: the member's certificate is not the cluster CA's: %w", err)
			}
			return memberPeer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}})
		},
	}
}

// TransportCredentials returns the gRPC transport credentials with which
// this node calls other members' gNMI servers: TLS 1.3 with the server
// name auth.MemberServerName, this node's certificate as the client's, and
// the server's node certificate verified against the cluster CA and for
// the host dialed. In a cluster from before the CA, while this node has
// none, the call goes over TLS without verifying the server, as members did
// before the CA, authenticated with the cluster secret; a joining node
// without the CA makes no member calls.
func (m *Manager) TransportCredentials() credentials.TransportCredentials {
	return memberCreds{m: m}
}

type memberCreds struct{ m *Manager }

var _ credentials.TransportCredentials = memberCreds{}

func (c memberCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cur := c.m.cur.Load()
	if cur == nil {
		if !c.m.legacy.Load() {
			return nil, nil, ErrNoCA
		}
		cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} //nolint:gosec // a cluster from before its CA: see above
		return credentials.NewTLS(cfg).ClientHandshake(ctx, authority, raw)
	}
	host, _, err := net.SplitHostPort(authority)
	if err != nil {
		host = authority
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		ServerName:   auth.MemberServerName,
		NextProtos:   []string{"h2"},
		Certificates: []tls.Certificate{cur.cert},
		// The server's certificate is verified below: against the cluster
		// CA, for the host dialed, not for the server name asked for.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("clusterca: the member sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: cur.pool, Intermediates: inter, DNSName: host,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("clusterca: the member's certificate: %w", err)
			}
			return memberPeer(cs)
		},
	}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, nil, err
	}
	if conn.ConnectionState().NegotiatedProtocol != "h2" {
		conn.Close()
		return nil, nil, errors.New("clusterca: the member did not negotiate HTTP/2")
	}
	return conn, credentials.TLSInfo{State: conn.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (memberCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("clusterca: member credentials are for clients only")
}

func (memberCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c memberCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is deprecated in gRPC and does nothing here: the
// server name of a member connection is always auth.MemberServerName.
func (memberCreds) OverrideServerName(string) error { return nil }
