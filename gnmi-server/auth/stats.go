package auth

import (
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Stats counts the requests the Authenticator refused since it was made.
type Stats struct {
	// Failures counts the requests refused with UNAUTHENTICATED: no
	// credentials, a wrong password or cluster secret, an unknown user, a
	// client certificate that names no user.
	Failures uint64
	// LimitedUser, LimitedPeer and LimitedStreams count the requests
	// refused with RESOURCE_EXHAUSTED by the user's token bucket, the
	// client address's, and the cap on a user's open streams; LockedOut
	// those refused because the user or the address failed to log in too
	// often.
	LimitedUser, LimitedPeer, LimitedStreams, LockedOut uint64
}

type authCounters struct {
	failures, limitedUser, limitedPeer, limitedStreams, lockedOut atomic.Uint64
}

// Stats reads the counters.
func (a *Authenticator) Stats() Stats {
	c := &a.stats
	return Stats{Failures: c.failures.Load(), LimitedUser: c.limitedUser.Load(), LimitedPeer: c.limitedPeer.Load(),
		LimitedStreams: c.limitedStreams.Load(), LockedOut: c.lockedOut.Load()}
}

// countFailure counts an authentication error that refused a request.
func (a *Authenticator) countFailure(err error) {
	if status.Code(err) == codes.Unauthenticated {
		a.stats.failures.Add(1)
	}
}
