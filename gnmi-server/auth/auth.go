// Package auth authenticates, authorizes and rate-limits gNMI requests.
//
// Users and their roles live in the replicated store under
// /system/aaa/users/user[username]/config; a client names itself with the
// gRPC metadata keys "username" and "password", as the gNMI specification's
// authentication note and clients such as gnmic (-u/-p) and gnmi_cli
// (-username/-password) have it, or with a client certificate that the TLS
// handshake verified, whose Subject CommonName names the user (see
// CertUser). Members of a cluster authenticate to each
// other with certificates of the cluster's own CA (see MemberServerName), or
// with the cluster's own secret (see MemberUser), and a member that
// forwards a request on a user's behalf names that user, who is then
// authorized as if it had called the leader itself.
//
// The package turns its decisions into gRPC status codes: UNAUTHENTICATED
// for missing or wrong credentials, PERMISSION_DENIED for a role that may not
// do what was asked, RESOURCE_EXHAUSTED for a caller over its limits.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Metadata keys of the credentials, as gNMI clients send them.
const (
	UsernameKey = "username"
	PasswordKey = "password"
)

// MemberUser is the prefix of the user name a cluster member authenticates
// with ("patronus-node:<node-name>", the cluster secret as the password).
// A ':' is not allowed in a username of /system/aaa, so no user can take it.
const MemberUser = "patronus-node:"

// MemberServerName is the TLS server name (SNI) with which a member calls
// another member's gNMI server. Such a connection is mutual TLS with the
// cluster's own CA: the server presents its node certificate and requires
// the caller's, and the caller is then the member its certificate names
// (MemberUser+node name), without the cluster secret. It is not a host
// name: no DNS name can end without a dot-separated label like it and also
// be a node's address.
const MemberServerName = "patronus-member"

// JoinServerName is the TLS server name with which a joining node that
// knows the cluster CA's fingerprint (--join-ca-sha256) calls the member it
// joins through: the member presents its node certificate and the CA's, so
// that the joiner verifies them before it sends the admin's password.
const JoinServerName = "patronus-join"

// ForwardedUserKey is the metadata key that names the user a member forwards
// a request for; it is believed only on a call authenticated as a member.
// It is the same key as server.ForwardedUserHeader.
const ForwardedUserKey = "patronus-forwarded-user"

// Role is what a user may do.
type Role int

// Roles, from least to most privileged.
const (
	NoRole Role = iota
	Viewer
	Operator
	Admin
)

func (r Role) String() string {
	switch r {
	case Viewer:
		return "VIEWER"
	case Operator:
		return "OPERATOR"
	case Admin:
		return "ADMIN"
	}
	return "NONE"
}

// ParseRole reads a role as /system/aaa stores it.
func ParseRole(s string) Role {
	switch s {
	case "VIEWER":
		return Viewer
	case "OPERATOR":
		return Operator
	case "ADMIN":
		return Admin
	}
	return NoRole
}

// User is an authenticated caller.
type User struct {
	Name string
	Role Role
	// Member, if set, is the cluster member that authenticated the call
	// (with its member certificate or the cluster secret); Name is then
	// the user it forwards for, or the member's own MemberUser name.
	Member string
}

type ctxKey struct{}

// NewContext returns ctx carrying u.
func NewContext(ctx context.Context, u User) context.Context {
	return context.WithValue(ctx, ctxKey{}, u)
}

// FromContext returns the authenticated user of a request.
func FromContext(ctx context.Context) (User, bool) {
	u, ok := ctx.Value(ctxKey{}).(User)
	return u, ok
}

// Config configures an Authenticator. Zero limits take the defaults below,
// which leave room for tens of busy clients per user.
type Config struct {
	// NodeName names this node in AUTH_FAILURE events.
	NodeName string
	// Store holds the users and the cluster secret; events are appended to
	// it.
	Store  *store.Store
	Engine *txn.Engine
	Logger *slog.Logger
	// Changes must hear of every commit to Store (see Changes.Observe);
	// nil means New makes one, and the caller feeds it through Observe.
	Changes *Changes

	// UserRate and UserBurst are each user's token bucket (requests per
	// second over every RPC, each Subscribe and each Poll); PeerRate and
	// PeerBurst each client address's.
	UserRate  rate.Limit
	UserBurst int
	PeerRate  rate.Limit
	PeerBurst int
	// MaxStreams caps the concurrent Subscribe streams of one user.
	MaxStreams int

	// A failed login is answered after FailureDelay, doubled for every
	// earlier failure of the same user or peer within FailureWindow, at
	// most MaxFailureDelay; after MaxFailures the user or peer is refused
	// without a check until FailureWindow has passed since its last
	// failure.
	FailureDelay, MaxFailureDelay, FailureWindow time.Duration
	MaxFailures                                  int
	// EventRate and EventBurst bound the AUTH_FAILURE events written, so a
	// flood of bad logins cannot fill the disk; the rest are counted.
	EventRate  rate.Limit
	EventBurst int
	// CacheSize bounds the verified credentials remembered.
	CacheSize int
	// Audit, if set, hears of every failed login (those that become
	// AUTH_FAILURE events, and those refused while the user or peer is
	// locked out), for its LOGIN REJECTED audit record; it must not block.
	// It is never given the password.
	Audit func(rej txn.Rejection)

	// AdminPassword is the first admin's password when this node
	// bootstraps a new cluster; empty means one is generated and handed
	// to PrintPassword once it is committed.
	AdminPassword string
	PrintPassword func(password string)

	// ClusterCA, if set, returns the cluster's own CA certificate, or nil
	// while this node has none: a call over a member connection (see
	// MemberServerName) whose client certificate chains to it is the
	// member the certificate names.
	ClusterCA func() *x509.Certificate
}

// Defaults.
const (
	DefaultUserRate        = 20000
	DefaultUserBurst       = 20000
	DefaultPeerRate        = 50000
	DefaultPeerBurst       = 50000
	DefaultMaxStreams      = 1024
	DefaultFailureDelay    = 100 * time.Millisecond
	DefaultMaxFailureDelay = 3 * time.Second
	DefaultFailureWindow   = 5 * time.Minute
	DefaultMaxFailures     = 10
	DefaultEventRate       = 1
	DefaultEventBurst      = 20
	DefaultCacheSize       = 4096
	// maxTracked bounds the per-peer and per-user bookkeeping; idle
	// entries are swept when it is exceeded.
	maxTracked = 16384
	// maxVerifying bounds the concurrent argon2id checks (19 MiB each).
	maxVerifying = 4
)

// Authenticator authenticates and authorizes the requests of one node.
type Authenticator struct {
	cfg Config
	log *slog.Logger

	// gen changes whenever a commit touches /system/aaa or the cluster
	// secret; a cache entry made under the current gen needs no store read.
	gen *Changes

	verifying chan struct{} // semaphore of argon2id checks

	stats authCounters // see Stats

	mu sync.Mutex
	// Guarded by mu:
	cache      map[string]*cached // username + 0 + sha256(password)
	users      map[string]*bucket // token buckets by user name
	peers      map[string]*bucket // token buckets by client IP
	failures   map[string]*failure
	streams    map[string]int // open Subscribe streams by user
	events     *rate.Limiter
	suppressed int // AUTH_FAILURE events not written since the last one
}

type cached struct {
	hash string // the stored hash the password was verified against
	role Role
	gen  uint64
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

type failure struct {
	count int
	last  time.Time
}

// New returns an authenticator over cfg.Store.
func New(cfg Config) *Authenticator {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defRate := func(v *rate.Limit, d rate.Limit) {
		if *v == 0 {
			*v = d
		}
	}
	defRate(&cfg.UserRate, DefaultUserRate)
	def(&cfg.UserBurst, DefaultUserBurst)
	defRate(&cfg.PeerRate, DefaultPeerRate)
	def(&cfg.PeerBurst, DefaultPeerBurst)
	def(&cfg.MaxStreams, DefaultMaxStreams)
	defDur(&cfg.FailureDelay, DefaultFailureDelay)
	defDur(&cfg.MaxFailureDelay, DefaultMaxFailureDelay)
	defDur(&cfg.FailureWindow, DefaultFailureWindow)
	def(&cfg.MaxFailures, DefaultMaxFailures)
	defRate(&cfg.EventRate, DefaultEventRate)
	def(&cfg.EventBurst, DefaultEventBurst)
	def(&cfg.CacheSize, DefaultCacheSize)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Changes == nil {
		cfg.Changes = &Changes{}
	}
	return &Authenticator{
		cfg: cfg, log: cfg.Logger, gen: cfg.Changes,
		verifying: make(chan struct{}, maxVerifying),
		cache:     map[string]*cached{},
		users:     map[string]*bucket{},
		peers:     map[string]*bucket{},
		failures:  map[string]*failure{},
		streams:   map[string]int{},
		events:    rate.NewLimiter(cfg.EventRate, cfg.EventBurst),
	}
}

var aaaPrefix = pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "aaa"}})

// Changes counts the store commits that touched users or the cluster
// secret. It exists before the store (whose OnCommit hook feeds it) and the
// Authenticator that reads it.
type Changes struct{ n atomic.Uint64 }

// Observe notes a store commit; it must see every commit (chain it into
// the store's OnCommit). A commit that touches users or the cluster secret
// makes cached verifications check the store again.
func (c *Changes) Observe(commit store.Commit) {
	for _, ch := range commit.Changes {
		if hasPrefix(ch.Key, aaaPrefix) || string(ch.Key) == txn.ClusterSecretKey {
			c.n.Add(1)
			return
		}
	}
}

// Load returns the number of such commits seen.
func (c *Changes) Load() uint64 { return c.n.Load() }

// Observe is cfg.Changes.Observe.
func (a *Authenticator) Observe(c store.Commit) { a.gen.Observe(c) }

func hasPrefix(b, p []byte) bool { return len(b) >= len(p) && string(b[:len(p)]) == string(p) }

func userPath(name string, leaf string) []byte {
	return pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "aaa"}, {Name: "users"},
		{Name: "user", Key: map[string]string{"username": name}}, {Name: "config"}, {Name: leaf}})
}

// lookup reads a user's stored hash and role; ok is false for no such user.
func (a *Authenticator) lookup(name string) (hash string, role Role, ok bool, err error) {
	get := func(leaf string) (string, bool, error) {
		b, ok, err := a.cfg.Store.Get(userPath(name, leaf))
		if err != nil || !ok {
			return "", ok, err
		}
		tv, err := txn.DecodeValue(b)
		if err != nil {
			return "", false, err
		}
		return tv.GetStringVal(), true, nil
	}
	r, ok, err := get("role")
	if err != nil || !ok {
		return "", NoRole, false, err
	}
	hash, _, err = get("password")
	return hash, ParseRole(r), true, err
}

// anyUser reports whether /system/aaa holds any user at all.
func (a *Authenticator) anyUser() bool {
	found := false
	_ = a.cfg.Store.Scan(aaaPrefix, func(_, _ []byte) error {
		found = true
		return errStop
	})
	return found
}

var errStop = errors.New("stop")

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// incoming returns the first value of key in ctx's metadata, without
// copying all of it as metadata.FromIncomingContext does.
func incoming(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// peerIP is the client's address without its port: a client that opens new
// connections stays the same peer.
func peerIP(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	s := p.Addr.String()
	if host, _, err := net.SplitHostPort(s); err == nil {
		return host
	}
	return s
}

// errBadLogin is the one answer to a wrong password and an unknown user, so
// that the answer does not tell which users exist.
var errBadLogin = status.Error(codes.Unauthenticated, "authentication failed: unknown user or wrong password")

// Authenticate checks the credentials in ctx's metadata and returns the
// caller.
func (a *Authenticator) Authenticate(ctx context.Context) (User, error) {
	name, password := incoming(ctx, UsernameKey), incoming(ctx, PasswordKey)
	if name == "" {
		return User{}, status.Error(codes.Unauthenticated, "no credentials: send the username and password in the request metadata")
	}
	ip := peerIP(ctx)
	if strings.HasPrefix(name, MemberUser) {
		md, _ := metadata.FromIncomingContext(ctx)
		return a.member(md, name, password, ip)
	}
	key := cacheKey(name, password)
	gen := a.gen.Load()
	a.mu.Lock()
	c := a.cache[key]
	a.mu.Unlock()
	if c != nil && c.gen == gen {
		return User{Name: name, Role: c.role}, nil
	}
	hash, role, ok, err := a.lookup(name)
	if err != nil {
		return User{}, status.Errorf(codes.Unavailable, "reading users: %v", err)
	}
	if c != nil && ok && c.hash == hash && role != NoRole {
		// Verified before against this very hash: only the role may differ.
		a.mu.Lock()
		a.cache[key] = &cached{hash: hash, role: role, gen: gen}
		a.mu.Unlock()
		return User{Name: name, Role: role}, nil
	}
	if err := a.refused(name, ip); err != nil {
		a.audit(name, ip, err)
		return User{}, err
	}
	if !ok && !a.anyUser() {
		// The new cluster's first leader has not created the first admin
		// yet, or this node has not received the users: nobody can log in,
		// and that is no attempt to count.
		return User{}, status.Error(codes.Unavailable, "no users are known on this node yet (the cluster is starting); retry")
	}
	if !ok {
		hash = "" // verify against a dummy hash: answer as slowly as for a user
	}
	if err := a.verify(ctx, hash, password); err != nil || !ok || role == NoRole {
		if err != nil && !errors.Is(err, errMismatch) {
			return User{}, err
		}
		return User{}, a.failed(ctx, name, ip, "unknown user or wrong password")
	}
	a.succeeded(name)
	a.mu.Lock()
	if len(a.cache) >= a.cfg.CacheSize {
		for k := range a.cache {
			delete(a.cache, k)
			break
		}
	}
	a.cache[key] = &cached{hash: hash, role: role, gen: gen}
	a.mu.Unlock()
	return User{Name: name, Role: role}, nil
}

func cacheKey(name, password string) string {
	sum := sha256.Sum256([]byte(password))
	return name + "\x00" + string(sum[:])
}

// member authenticates a cluster member by the cluster secret and, when it
// forwards a request, resolves the user it forwards for.
//
// The secret is 256 random bits, beyond guessing, so a wrong one is recorded
// but neither slowed down nor counted against the peer, whose other users
// (or the member itself) must not be locked out by it.
func (a *Authenticator) member(md metadata.MD, name, password, ip string) (User, error) {
	secret, ok, err := a.cfg.Store.Get([]byte(txn.ClusterSecretKey))
	if err != nil {
		return User{}, status.Errorf(codes.Unavailable, "reading the cluster secret: %v", err)
	}
	if !ok {
		return User{}, status.Error(codes.Unavailable, "this node does not know the cluster secret yet; retry")
	}
	if subtle.ConstantTimeCompare(secret, []byte(password)) != 1 {
		a.event(name, ip, "wrong cluster secret")
		return User{}, status.Error(codes.Unauthenticated, "authentication failed: wrong cluster secret")
	}
	return a.forwarded(md, name)
}

// forwarded returns the caller of a call that member (a MemberUser name)
// authenticated: the user it forwards the call for, or the member itself.
func (a *Authenticator) forwarded(md metadata.MD, name string) (User, error) {
	fwd := first(md, ForwardedUserKey)
	if fwd == "" || strings.HasPrefix(fwd, MemberUser) {
		return User{Name: name, Role: Admin, Member: name}, nil
	}
	_, role, found, err := a.lookup(fwd)
	if err != nil {
		return User{}, status.Errorf(codes.Unavailable, "reading users: %v", err)
	}
	if !found {
		if strings.ContainsRune(fwd, ':') || fwd == InternalUser {
			// Not a user of /system/aaa: a node's own work.
			return User{Name: fwd, Role: Admin, Member: name}, nil
		}
		return User{}, status.Errorf(codes.PermissionDenied, "forwarded for user %q, who is not known here", fwd)
	}
	return User{Name: fwd, Role: role, Member: name}, nil
}

// InternalUser names the node itself in audit records of the changes it
// makes on its own (recording a member, rolling back a confirmed commit).
const InternalUser = "patronusd"

// refused answers RESOURCE_EXHAUSTED while the user or the peer has failed
// too often.
func (a *Authenticator) refused(name, ip string) error {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range []string{"u:" + name, "p:" + ip} {
		f := a.failures[k]
		if f == nil || now.Sub(f.last) >= a.cfg.FailureWindow {
			continue
		}
		if f.count >= a.cfg.MaxFailures {
			a.stats.lockedOut.Add(1)
			who := "user " + quote(name)
			if k[0] == 'p' {
				who = "peer " + ip
			}
			return status.Errorf(codes.ResourceExhausted, "too many failed logins for %s; try again after %s", who, f.last.Add(a.cfg.FailureWindow).UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// failed counts a failed login for the user and the peer, records it, waits
// the back-off and returns the error for the client.
func (a *Authenticator) failed(ctx context.Context, name, ip, why string) error {
	now := time.Now()
	a.mu.Lock()
	count := 0
	for _, k := range []string{"u:" + name, "p:" + ip} {
		f := a.failures[k]
		if f == nil || now.Sub(f.last) >= a.cfg.FailureWindow {
			if f == nil && len(a.failures) >= maxTracked {
				a.sweepFailures(now)
			}
			f = &failure{}
			a.failures[k] = f
		}
		f.count++
		f.last = now
		count = max(count, f.count)
	}
	a.mu.Unlock()
	a.event(name, ip, why)
	delay := a.cfg.FailureDelay << min(count-1, 30)
	if delay > a.cfg.MaxFailureDelay || delay <= 0 {
		delay = a.cfg.MaxFailureDelay
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return errBadLogin
}

// sweepFailures drops expired failure counts; a.mu is held.
func (a *Authenticator) sweepFailures(now time.Time) {
	for k, f := range a.failures {
		if now.Sub(f.last) >= a.cfg.FailureWindow {
			delete(a.failures, k)
		}
	}
}

// succeeded forgets the failures of a user who logged in: the password was
// known. The peer's count stays; it lapses with the window.
func (a *Authenticator) succeeded(name string) {
	a.mu.Lock()
	delete(a.failures, "u:"+name)
	a.mu.Unlock()
}

func quote(name string) string {
	if len(name) > 64 {
		name = name[:64] + "…"
	}
	return fmt.Sprintf("%q", name)
}

// event appends an AUTH_FAILURE event to this node's /system/events, within
// the event rate; failures beyond it are counted in the next event.
func (a *Authenticator) event(name, ip, why string) {
	a.audit(name, ip, status.Error(codes.Unauthenticated, why))
	a.mu.Lock()
	if !a.events.Allow() {
		a.suppressed++
		a.mu.Unlock()
		return
	}
	n := a.suppressed
	a.suppressed = 0
	a.mu.Unlock()
	msg := fmt.Sprintf("authentication failed for user %s from %s: %s", quote(name), ip, why)
	if n > 0 {
		msg += fmt.Sprintf(" (%d more failure(s) since the last AUTH_FAILURE event)", n)
	}
	a.log.Warn("authentication failed", "user", quote(name), "peer", ip, "reason", why)
	if a.cfg.Engine == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := a.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return a.cfg.Engine.AppendEvent(tx, txn.Event{Severity: "WARNING", Type: "AUTH_FAILURE", Message: msg, Node: a.cfg.NodeName})
	})
	if err != nil {
		a.log.Warn("recording an AUTH_FAILURE event", "err", err)
	}
}

// audit hands a failed login to Config.Audit: the user as presented, the
// peer and why.
func (a *Authenticator) audit(name, ip string, err error) {
	if a.cfg.Audit == nil {
		return
	}
	st := status.Convert(err)
	a.cfg.Audit(txn.Rejection{User: name, Peer: ip, Node: a.cfg.NodeName, Operation: "LOGIN",
		Message: txn.CodeName(st.Code()) + ": " + st.Message(), Time: time.Now().UnixNano()})
}

// NewPassword returns a random password of 24 URL-safe characters.
func NewPassword() string {
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
