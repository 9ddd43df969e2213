package auth

import (
	"context"
	"crypto/x509"

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

// verifiedCert returns the leaf of the client certificate chain the TLS
// handshake of ctx's connection verified, if there is one. A connection
// without TLS, or whose client sent no certificate, has none; a certificate
// that did not verify never gets this far (the handshake failed).
func verifiedCert(ctx context.Context) (*x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil, false
	}
	return ti.State.VerifiedChains[0][0], true
}

// authenticate returns the caller of the RPC in ctx: the user its verified
// client certificate names, or else the user of its metadata credentials
// (Authenticate).
//
// A certificate is proof enough: no password is asked for, and a password
// sent along is not checked. A username sent along must be the
// certificate's, so that a client is never one user by its certificate and
// another by its metadata. A certificate that names no user of
// /system/aaa is UNAUTHENTICATED. Failures are not slowed down or counted
// against the peer: a certificate the CA signed cannot be guessed.
func (a *Authenticator) authenticate(ctx context.Context) (User, error) {
	cert, ok := verifiedCert(ctx)
	if !ok {
		return a.Authenticate(ctx)
	}
	name := CertUser(cert)
	md, _ := metadata.FromIncomingContext(ctx)
	if u := first(md, UsernameKey); u != "" && u != name {
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
