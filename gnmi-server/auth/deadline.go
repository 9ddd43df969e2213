package auth

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// DefaultDeadline is the deadline DeadlineInterceptor gives a unary RPC
// that arrives without one: far longer than the largest Set takes, short
// enough that a client that went away does not hold a handler (and what it
// waits for, such as a quorum) for ever.
const DefaultDeadline = 60 * time.Second

// DeadlineInterceptor gives every unary RPC that arrives without a deadline
// one of d from its arrival; a client's own deadline, shorter or longer,
// stands. Chain it first, so that authentication (which may wait for an
// argon2id slot or delay a failed login) runs within the deadline too.
// Streams are not limited: a subscription lives as long as its client.
func DeadlineInterceptor(d time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if _, ok := ctx.Deadline(); ok || d <= 0 {
			return handler(ctx, req)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return handler(ctx, req)
	}
}
