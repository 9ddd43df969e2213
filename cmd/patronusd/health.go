package main

import (
	"context"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// grpcHealth is gRPC's standard health service (grpc.health.v1.Health) on
// the gNMI port, for gRPC load balancers and Kubernetes' gRPC probes: the
// node as a whole ("") and gnmi.gNMI are SERVING exactly when /readyz
// answers 200, NOT_SERVING otherwise. It asks no credentials (see
// auth.public). Check and the start of a Watch read the readiness when
// asked; a Watch stream sees a later change within healthEvery.
type grpcHealth struct {
	*health.Server
	ready func() error
	// stop ends the Watch streams, so that a graceful stop need not wait
	// for them.
	stop context.Context
}

// healthEvery is how often the Watch streams' status is brought up to date.
const healthEvery = time.Second

// healthServices are the services grpcHealth reports on.
var healthServices = []string{"", gpb.GNMI_ServiceDesc.ServiceName}

// serveHealth registers the health service on gs and keeps its status up to
// date until stop ends (then every service is NOT_SERVING for good). The
// status is brought up to date at once by the function it returns, for a
// change the caller makes (the node starting to serve).
func serveHealth(gs *grpc.Server, stop context.Context, ready func() error) (refresh func()) {
	h := &grpcHealth{Server: health.NewServer(), ready: ready, stop: stop}
	h.refresh()
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
				h.refresh()
			}
		}
	}()
	return h.refresh
}

// refresh sets every service's status from the node's readiness.
func (h *grpcHealth) refresh() {
	st := healthpb.HealthCheckResponse_SERVING
	if h.ready() != nil {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	for _, s := range healthServices {
		h.SetServingStatus(s, st)
	}
}

// Check answers with the readiness as it is now.
func (h *grpcHealth) Check(ctx context.Context, in *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.stop.Err() == nil {
		h.refresh()
	}
	return h.Server.Check(ctx, in)
}

// Watch streams the status of a service, as it is now and then each
// change, until the client leaves or the node stops.
func (h *grpcHealth) Watch(in *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if h.stop.Err() == nil {
		h.refresh()
	}
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
