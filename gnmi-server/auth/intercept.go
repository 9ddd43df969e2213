package auth

import (
	"context"
	"fmt"
	"strings"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// public reports whether method is served without credentials: gRPC's
// standard health service, which says only whether the node serves (what
// /readyz says), for load balancers and Kubernetes' gRPC probes. Its calls
// are still rate-limited by the caller's address.
func public(method string) bool { return strings.HasPrefix(method, "/grpc.health.v1.Health/") }

// UnaryInterceptor authenticates and rate-limits every unary RPC and puts
// the caller in the handler's context (FromContext).
func (a *Authenticator) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			if err := a.admitPeer(peerIP(ctx), time.Now()); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}
		u, err := a.authenticate(ctx)
		if err != nil {
			a.countFailure(err)
			return nil, err
		}
		if err := a.admit(u, peerIP(ctx)); err != nil {
			return nil, err
		}
		return handler(NewContext(ctx, u), req)
	}
}

// StreamInterceptor authenticates and rate-limits every streaming RPC (each
// Subscribe, and each request on it after the first, such as a Poll), and
// caps the concurrent streams of a user.
func (a *Authenticator) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		if public(info.FullMethod) {
			if err := a.admitPeer(peerIP(ctx), time.Now()); err != nil {
				return err
			}
			return handler(srv, ss)
		}
		u, err := a.authenticate(ctx)
		if err != nil {
			a.countFailure(err)
			return err
		}
		ip := peerIP(ctx)
		if err := a.admit(u, ip); err != nil {
			return err
		}
		if u.Member == "" {
			a.mu.Lock()
			if a.streams[u.Name] >= a.cfg.MaxStreams {
				a.mu.Unlock()
				a.stats.limitedStreams.Add(1)
				return status.Errorf(codes.ResourceExhausted, "user %s has %d streams open, the most allowed; close one first", quote(u.Name), a.cfg.MaxStreams)
			}
			a.streams[u.Name]++
			a.mu.Unlock()
			defer func() {
				a.mu.Lock()
				if a.streams[u.Name]--; a.streams[u.Name] <= 0 {
					delete(a.streams, u.Name)
				}
				a.mu.Unlock()
			}()
		}
		return handler(srv, &stream{ServerStream: ss, ctx: NewContext(ctx, u), a: a, u: u, ip: ip})
	}
}

type stream struct {
	grpc.ServerStream
	ctx  context.Context
	a    *Authenticator
	u    User
	ip   string
	recv int
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if s.recv++; s.recv > 1 {
		// The first request was paid for when the stream opened.
		return s.a.admit(s.u, s.ip)
	}
	return nil
}

// admit takes a token from the user's and from the peer's bucket. Members
// are not limited: they forward requests already admitted where the client
// called. A request the user's bucket refuses takes nothing from the
// peer's, so one user's flood does not drain what other users of the same
// address share.
func (a *Authenticator) admit(u User, ip string) error {
	if u.Member != "" {
		return nil
	}
	now := time.Now()
	a.mu.Lock()
	ub := a.bucket(a.users, u.Name, a.cfg.UserRate, a.cfg.UserBurst, now)
	if !ub.lim.AllowN(now, 1) {
		a.mu.Unlock()
		a.stats.limitedUser.Add(1)
		return status.Errorf(codes.ResourceExhausted, "rate limit: user %s is over %s requests per second; slow down", quote(u.Name), perSecond(a.cfg.UserRate))
	}
	a.mu.Unlock()
	return a.admitPeer(ip, now)
}

// admitPeer takes a token from the peer's bucket.
func (a *Authenticator) admitPeer(ip string, now time.Time) error {
	a.mu.Lock()
	pb := a.bucket(a.peers, ip, a.cfg.PeerRate, a.cfg.PeerBurst, now)
	if !pb.lim.AllowN(now, 1) {
		a.mu.Unlock()
		a.stats.limitedPeer.Add(1)
		return status.Errorf(codes.ResourceExhausted, "rate limit: peer %s is over %s requests per second; slow down", ip, perSecond(a.cfg.PeerRate))
	}
	a.mu.Unlock()
	return nil
}

func perSecond(r rate.Limit) string { return fmt.Sprintf("%g", float64(r)) }

// bucket returns the token bucket of key in m; a.mu is held. When m grows
// past maxTracked, buckets idle long enough to have refilled are dropped.
func (a *Authenticator) bucket(m map[string]*bucket, key string, r rate.Limit, burst int, now time.Time) *bucket {
	b := m[key]
	if b == nil {
		if len(m) >= maxTracked {
			for k, old := range m {
				if now.Sub(old.last) > time.Minute {
					delete(m, k)
				}
			}
		}
		b = &bucket{lim: rate.NewLimiter(r, burst)}
		m[key] = b
	}
	b.last = now
	return b
}
