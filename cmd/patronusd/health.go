package main

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// grpcHealth is gRPC's standard health service (grpc.health.v1.Health) on
// the gNMI port, for gRPC load balancers and probes: the node as a whole
// ("") and gnmi.gNMI are SERVING exactly when /readyz answers 200,
// NOT_SERVING otherwise. It asks no credentials (see auth.public), so what
// a caller can make it do is bounded: a Check reads the readiness at most
// every healthFresh (it asks Raft for its configuration), a new Watch reads
// it once, and at most healthMaxWatches Watch streams are open at once, each
// told of a change within healthEvery.
type grpcHealth struct {
	*health.Server
	ready func() error
	// stop ends the Watch streams, so that a graceful stop need not wait
	// for them; from then on every service is NOT_SERVING.
	stop    context.Context
	watches atomic.Int32

	mu     sync.Mutex // serializes readings: a newer one is never overwritten
	status healthpb.HealthCheckResponse_ServingStatus
	at     time.Time // of the last reading; zero: none yet
}

const (
	// healthEvery is how often the Watch streams' status is read again.
	healthEvery = time.Second
	// healthFresh is how old a reading a Check is given.
	healthFresh = 100 * time.Millisecond
	// healthMaxWatches bounds the Watch streams open at once (a gRPC
	// client that checks its connections' health holds one per
	// connection).
	healthMaxWatches = 128
)

// healthServices are the services grpcHealth reports on.
var healthServices = []string{"", gpb.GNMI_ServiceDesc.ServiceName}

// serveHealth registers the health service on gs and keeps its status up to
// date until stop ends. The status is read again at once by the function it
// returns, for a change the caller makes (the node starting to serve).
func serveHealth(gs *grpc.Server, stop context.Context, ready func() error) (refresh func()) {
	h := &grpcHealth{Server: health.NewServer(), ready: ready, stop: stop}
	h.current(0)
	healthpb.RegisterHealthServer(gs, h)
	go func() {
		t := time.NewTicker(healthEvery)
		defer t.Stop()
		for {
			select {
			case <-stop.Done():
				h.Shutdown()
				return
			case <-t.C:
				h.current(0)
			}
		}
	}()
	return func() { h.current(0) }
}

// current returns the node's status, read again unless the last reading
// is younger than maxAge, and tells the Watch streams if it changed.
func (h *grpcHealth) current(maxAge time.Duration) healthpb.HealthCheckResponse_ServingStatus {
	if h.stop.Err() != nil {
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && time.Since(h.at) < maxAge {
		return h.status
	}
	st := healthpb.HealthCheckResponse_SERVING
	if h.ready() != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	if h.at.IsZero() || st != h.status {
		for _, s := range healthServices {
			h.SetServingStatus(s, st)
		}
	}
	h.status, h.at = st, time.Now()
	return st
}

// Check answers with the readiness as it is now (within healthFresh).
func (h *grpcHealth) Check(_ context.Context, in *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !slices.Contains(healthServices, in.GetService()) {
		return nil, status.Errorf(codes.NotFound, "unknown service %q: this node reports on \"\" and %q", in.GetService(), gpb.GNMI_ServiceDesc.ServiceName)
	}
	return &healthpb.HealthCheckResponse{Status: h.current(healthFresh)}, nil
}

// Watch streams the status of a service, as it is now and then each
// change, until the client leaves or the node stops.
func (h *grpcHealth) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if n := h.watches.Add(1); n > healthMaxWatches {
		h.watches.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "%d health watches are open, the most this node keeps; use Check", healthMaxWatches)
	}
	defer h.watches.Add(-1)
	// Read now: a reading from before, even a fresh one, may be of a node
	// that has just become ready (a member that has just joined); the
	// stream would then start with the old status and keep it until the
	// next reading. The streams open at once are bounded.
	h.current(0)
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(h.stop, cancel)
	defer stop()
	return h.Server.Watch(in, watchStream{Health_WatchServer: stream, ctx: ctx})
}

// watchStream is a Watch stream with the context that ends it.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
