// Package metrics exports what a node measures to Prometheus, on a registry
// of the node's own: its gRPC requests, its subscriptions, its Raft state,
// its Pebble store, its dataplane and its authentication, with Go's runtime
// and process metrics.
//
// Nothing here sits on a hot path with a label lookup. The gRPC
// interceptors count into per-method atomic counters found once per RPC; the
// subscription engine, the authenticator and the store keep atomic counters
// of their own; and a Collector reads those, and the Raft, Pebble and
// dataplane state, only when Prometheus scrapes. docs/METRICS.md lists every
// metric.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Namespace prefixes every metric of a node.
const Namespace = "patronus"

// LatencyBuckets are the upper bounds, in seconds, of the unary RPC latency
// histogram: from a cached Get of one leaf (about 100 µs) to a Set that
// waits for a quorum or a Get of the whole scale set (seconds).
var LatencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// CollectBuckets are the upper bounds, in seconds, of the dataplane's
// collection duration histogram.
var CollectBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// Metrics holds a node's registry and the metrics counted as things happen.
type Metrics struct {
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
	collect prometheus.Histogram

	// rpcs holds an *rpc per full method name. Interceptors run only for
	// the methods registered on the server, so it stays small.
	rpcs sync.Map
}

// rpc is the bookkeeping of one gRPC method.
type rpc struct {
	service, method string
	stream          bool
	// handled counts the finished calls by status code; codes outside
	// gRPC's are counted as Unknown.
	handled [numCodes]atomic.Uint64
	active  atomic.Int64        // open streams
	latency prometheus.Observer // unary methods only
}

const numCodes = int(codes.Unauthenticated) + 1

// New returns the metrics of a node with a registry holding the Go runtime
// and process collectors and the gRPC request metrics. Watch adds what is
// read at scrape time.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "grpc", Name: "request_duration_seconds",
		Help:    "Time from the arrival of a unary RPC to its answer, authentication included.",
		Buckets: LatencyBuckets,
	}, []string{"service", "method"})
	m.collect = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "dataplane", Name: "collect_duration_seconds",
		Help:    "Time one collection of the dataplane's counters, flows and path quality into the tree took.",
		Buckets: CollectBuckets,
	})
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.latency,
		rpcCollector{m},
	)
	return m
}

// Registry returns the node's registry, for a test to gather.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// ObserveCollect records one dataplane collection's duration; it is the
// dataplane agent's OnCollect hook.
func (m *Metrics) ObserveCollect(d time.Duration) { m.collect.Observe(d.Seconds()) }

// Known makes the methods of services known before they are called, so
// that their request counts are exported as zero rather than missing.
func (m *Metrics) Known(services ...grpc.ServiceDesc) {
	for _, sd := range services {
		for _, md := range sd.Methods {
			m.rpc("/"+sd.ServiceName+"/"+md.MethodName, false)
		}
		for _, st := range sd.Streams {
			m.rpc("/"+sd.ServiceName+"/"+st.StreamName, true)
		}
	}
}

// rpc returns the bookkeeping of fullMethod ("/service/method").
func (m *Metrics) rpc(fullMethod string, stream bool) *rpc {
	if r, ok := m.rpcs.Load(fullMethod); ok {
		return r.(*rpc)
	}
	service, method := splitMethod(fullMethod)
	r := &rpc{service: service, method: method, stream: stream}
	if !stream {
		r.latency = m.latency.WithLabelValues(service, method)
	}
	actual, _ := m.rpcs.LoadOrStore(fullMethod, r)
	return actual.(*rpc)
}

func splitMethod(full string) (service, method string) {
	if len(full) > 0 && full[0] == '/' {
		full = full[1:]
	}
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[:i], full[i+1:]
		}
	}
	return "unknown", full
}

// done counts a finished call by the code its client sees: a call that
// ends without an error after its client cancelled it or its deadline
// passed counts as Canceled or DeadlineExceeded.
func (r *rpc) done(ctx context.Context, err error) {
	if err == nil {
		err = ctx.Err()
	}
	c := codes.OK
	if err != nil {
		st, ok := status.FromError(err)
		if !ok {
			// What gRPC itself answers for an error that is not a status.
			st = status.FromContextError(err)
		}
		c = st.Code()
	}
	if int(c) >= numCodes {
		c = codes.Unknown
	}
	r.handled[c].Add(1)
}

// UnaryInterceptor counts every unary RPC by method and status code and
// observes its latency. Chain it first, so that it sees the requests that
// authentication and the rate limits refuse.
func (m *Metrics) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		r := m.rpc(info.FullMethod, false)
		start := time.Now()
		resp, err := handler(ctx, req)
		r.latency.Observe(time.Since(start).Seconds())
		r.done(ctx, err)
		return resp, err
	}
}

// StreamInterceptor counts every streaming RPC by method and status code
// and the streams open. Chain it first, like UnaryInterceptor.
func (m *Metrics) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		r := m.rpc(info.FullMethod, true)
		r.active.Add(1)
		err := handler(srv, ss)
		r.active.Add(-1)
		r.done(ss.Context(), err)
		return err
	}
}

var (
	requestsDesc = prometheus.NewDesc(Namespace+"_grpc_requests_total",
		"gRPC requests finished, by service, method and the status code the client got.",
		[]string{"service", "method", "code"}, nil)
	streamsDesc = prometheus.NewDesc(Namespace+"_grpc_streams_active",
		"Streaming RPCs (Subscribe) open now.", []string{"service", "method"}, nil)
)

// rpcCollector exports the per-method counters.
type rpcCollector struct{ m *Metrics }

func (c rpcCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- streamsDesc
}

func (c rpcCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.rpcs.Range(func(_, v any) bool {
		r := v.(*rpc)
		for code := range r.handled {
			n := r.handled[code].Load()
			if n == 0 && codes.Code(code) != codes.OK {
				continue
			}
			ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(n), r.service, r.method, codes.Code(code).String())
		}
		if r.stream {
			ch <- prometheus.MustNewConstMetric(streamsDesc, prometheus.GaugeValue, float64(r.active.Load()), r.service, r.method)
		}
		return true
	})
}
