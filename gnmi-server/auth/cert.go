package auth

import (
	"context"
	"crypto/x509"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// CertUser returns the user a client certificate names: its Subject
// CommonName. The CommonName is what gnmic, Telegraf and openssl users set
// when they make a client certificate, and what network operating systems
// map to a local user; it is only ever read from a certificate that chained
// to the configured CA.
func CertUser(c *x509.Certificate) string { return c.Subject.CommonName }

// verifiedChain returns the client certificate chain the TLS handshake of
// ctx's connection verified, leaf first, if there is one, and the server
// name the client asked for. A connection without TLS, or whose client sent
// no certificate, has none; a certificate that did not verify never gets
// this far (the handshake failed).
func verifiedChain(ctx context.Context) (chain []*x509.Certificate, serverName string, ok bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, "", false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil, "", false
	}
	return ti.State.VerifiedChains[0], ti.State.ServerName, true
}

// memberCert authenticates a call over a member connection (server name
// MemberServerName, which the server verifies against the cluster CA
// alone): the chain must end at this node's cluster CA and its leaf name a
// member. The cluster secret is not needed; a metadata username, if sent,
// must be the certificate's.
func (a *Authenticator) memberCert(ctx context.Context, md metadata.MD, chain []*x509.Certificate) (User, error) {
	var ca *x509.Certificate
	if a.cfg.ClusterCA != nil {
		ca = a.cfg.ClusterCA()
	}
	name := CertUser(chain[0])
	if ca == nil || !chain[len(chain)-1].Equal(ca) || !strings.HasPrefix(name, MemberUser) {
		a.event(name, peerIP(ctx), "a member connection without a member certificate of this cluster's CA")
		return User{}, status.Error(codes.Unauthenticated, "authentication failed: not a member certificate of this cluster's CA")
	}
	if u := first(md, UsernameKey); u != "" && u != name {
		a.event(name, peerIP(ctx), "the member certificate names another user than the metadata")
		return User{}, status.Errorf(codes.Unauthenticated, "authentication failed: the member certificate names %s, the metadata user %s", quote(name), quote(u))
	}
	return a.forwarded(md, name)
}

// authenticate returns the caller of the RPC in ctx: the member its member
// certificate names (see memberCert), the user its verified client
// certificate names, or else the user of its metadata credentials
// (Authenticate).
//
// A certificate is proof enough: no password is asked for, and a password
// sent along is not checked. A username sent along must be the
// certificate's, so that a client is never one user by its certificate and
// another by its metadata. A certificate that names no user of
// /system/aaa is UNAUTHENTICATED. Failures are not slowed down or counted
// against the peer: a certificate the CA signed cannot be guessed.
func (a *Authenticator) authenticate(ctx context.Context) (User, error) {
	chain, serverName, ok := verifiedChain(ctx)
	if !ok {
		return a.Authenticate(ctx)
	}
	if serverName == MemberServerName {
		md, _ := metadata.FromIncomingContext(ctx)
		return a.memberCert(ctx, md, chain)
	}
	cert := chain[0]
	name := CertUser(cert)
	if u := incoming(ctx, UsernameKey); u != "" && u != name {
		a.event(name, peerIP(ctx), "the client certificate names another user than the metadata")
		return User{}, status.Errorf(codes.Unauthenticated, "authentication failed: the client certificate names user %s, the metadata user %s", quote(name), quote(u))
	}
	if name == "" {
		a.event(name, peerIP(ctx), "client certificate without a CommonName")
		return User{}, status.Error(codes.Unauthenticated, "authentication failed: the client certificate has no Subject CommonName to name a user")
	}
	_, role, found, err := a.lookup(name)
	if err != nil {
		return User{}, status.Errorf(codes.Unavailable, "reading users: %v", err)
	}
	if !found && !a.anyUser() {
		return User{}, status.Error(codes.Unavailable, "no users are known on this node yet (the cluster is starting); retry")
	}
	if !found || role == NoRole {
		a.event(name, peerIP(ctx), "client certificate for an unknown user")
		return User{}, status.Errorf(codes.Unauthenticated, "authentication failed: the client certificate names user %s, who is not in /system/aaa", quote(name))
	}
	return User{Name: name, Role: role}, nil
}
