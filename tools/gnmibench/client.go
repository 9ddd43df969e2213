package main

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// dial returns a plaintext client connection to addr; it connects lazily.
func dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

// connect dials addr and waits until the connection is ready, so that what
// is timed afterwards leaves out the TCP and HTTP/2 handshakes.
func connect(ctx context.Context, addr string) (*grpc.ClientConn, error) {
	conn, err := dial(addr)
	if err != nil {
		return nil, err
	}
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			conn.Close()
			return nil, fmt.Errorf("connecting to %s: %w", addr, ctx.Err())
		}
	}
	return conn, nil
}

// streamRequest is a STREAM subscription to paths in mode (PROTO
// encoding), with sample interval every for SAMPLE, and without the initial
// sync if updatesOnly.
func streamRequest(mode gpb.SubscriptionMode, every time.Duration, updatesOnly bool, paths ...*gpb.Path) *gpb.SubscribeRequest {
	list := &gpb.SubscriptionList{Prefix: &gpb.Path{Target: target}, Mode: gpb.SubscriptionList_STREAM,
		Encoding: gpb.Encoding_PROTO, UpdatesOnly: updatesOnly}
	for _, p := range paths {
		x := &gpb.Subscription{Path: p, Mode: mode}
		if mode == gpb.SubscriptionMode_SAMPLE {
			x.SampleInterval = uint64(every)
		}
		list.Subscription = append(list.Subscription, x)
	}
	return &gpb.SubscribeRequest{Request: &gpb.SubscribeRequest_Subscribe{Subscribe: list}}
}

// subscriber is one client with its own connection and one STREAM
// subscription. Unless it decodes (-decode), it reads the responses off the
// wire without building their messages (see countedResponse): both servers
// are measured with the same client, and on a machine whose cores the
// servers share with their clients, building every update's message is most
// of the work a fan-out row would otherwise measure. Every update with a path
// and a value counts as one leaf update.
type subscriber struct {
	conn   *grpc.ClientConn
	decode bool // decode every response in full, as gRPC's proto codec does
	cancel context.CancelFunc
	synced chan struct{} // closed at the first sync_response
	done   chan struct{} // closed when the stream has ended

	// Written before synced is closed.
	syncLeaves int       // leaf updates before sync_response
	syncAt     time.Time // when sync_response arrived

	updates atomic.Int64 // leaf updates after sync_response
	measure atomic.Bool  // whether to record latencies

	mu  sync.Mutex
	lat histogram // receipt time minus notification timestamp, per leaf update; guarded by mu

	err error // why the stream ended; read after done
}

// newSubscriber connects to addr; start subscribes.
func newSubscriber(ctx context.Context, addr string, decode bool) (*subscriber, error) {
	conn, err := connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	return &subscriber{conn: conn, decode: decode, synced: make(chan struct{}), done: make(chan struct{})}, nil
}

// start sends req on a new Subscribe stream and reads the responses until
// the stream ends or stop is called.
func (s *subscriber) start(req *gpb.SubscribeRequest) {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx, req)
}

// subscribeStream is gNMI's Subscribe method.
var subscribeStream = &grpc.StreamDesc{StreamName: "Subscribe", ServerStreams: true, ClientStreams: true}

func (s *subscriber) run(ctx context.Context, req *gpb.SubscribeRequest) {
	defer close(s.done)
	var opts []grpc.CallOption
	if !s.decode {
		opts = append(opts, grpc.ForceCodecV2(wireCodec{}))
	}
	stream, err := s.conn.NewStream(ctx, subscribeStream, gpb.GNMI_Subscribe_FullMethodName, opts...)
	if err == nil {
		err = stream.SendMsg(req)
	}
	if err != nil {
		s.err = err
		return
	}
	recv := func(resp *countedResponse) error { return stream.RecvMsg(resp) }
	if s.decode {
		recv = func(resp *countedResponse) error {
			var m gpb.SubscribeResponse
			if err := stream.RecvMsg(&m); err != nil {
				return err
			}
			*resp = countedResponse{sync: m.GetSyncResponse()}
			if n := m.GetUpdate(); n != nil {
				resp.notification, resp.timestamp, resp.leaves = true, n.GetTimestamp(), leafUpdates(n)
			}
			return nil
		}
	}
	synced := false
	before := 0
	for {
		var resp countedResponse
		if err := recv(&resp); err != nil {
			s.err = err
			return
		}
		now := time.Now()
		switch {
		case resp.sync:
			if !synced {
				synced = true
				s.syncLeaves, s.syncAt = before, now
				close(s.synced)
			}
		case resp.notification:
			if !synced {
				before += resp.leaves
				continue
			}
			s.updates.Add(int64(resp.leaves))
			if s.measure.Load() {
				s.mu.Lock()
				s.lat.add(now.UnixNano()-resp.timestamp, resp.leaves)
				s.mu.Unlock()
			}
		}
	}
}

// leafUpdates counts the updates of n that carry a path and a value.
func leafUpdates(n *gpb.Notification) int {
	k := 0
	for _, u := range n.GetUpdate() {
		if len(u.GetPath().GetElem()) > 0 && u.GetVal().GetValue() != nil {
			k++
		}
	}
	return k
}

// ended reports whether the stream has ended by itself, and why.
func (s *subscriber) ended() (bool, error) {
	select {
	case <-s.done:
		return true, s.err
	default:
		return false, nil
	}
}

// waitSynced waits for sync_response; it fails if the stream ends first.
func (s *subscriber) waitSynced(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	case <-s.done:
		// A stream cut off right after its sync_response has both closed,
		// and select picks either.
		select {
		case <-s.synced:
			return nil
		default:
		}
		return fmt.Errorf("the stream ended before sync_response: %w", s.err)
	case <-ctx.Done():
		return fmt.Errorf("no sync_response: %w", ctx.Err())
	}
}

// latencies returns a copy of the recorded latencies.
func (s *subscriber) latencies() histogram {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lat
}

// stop ends the stream and closes the connection.
func (s *subscriber) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	s.conn.Close()
}

// schedLatencies is the Go runtime's histogram of how long goroutines have
// waited runnable before they ran, since the process started.
func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return nil
	}
	return s[0].Value.Float64Histogram()
}

// schedQuantile returns the q-quantile of the scheduling latencies between
// two readings of schedLatencies: a p99 of milliseconds says the process was
// short of CPU, and every handoff between goroutines waited that long.
func schedQuantile(before, after *metrics.Float64Histogram, q float64) time.Duration {
	if before == nil || after == nil || len(before.Counts) != len(after.Counts) {
		return 0
	}
	var total uint64
	for i := range after.Counts {
		total += after.Counts[i] - before.Counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i := range after.Counts {
		seen += after.Counts[i] - before.Counts[i]
		if seen >= rank {
			// The bucket's upper bound, or its lower one for the last
			// bucket, which is unbounded.
			upper := after.Buckets[i+1]
			if math.IsInf(upper, 1) {
				upper = after.Buckets[i]
			}
			return time.Duration(upper * float64(time.Second))
		}
	}
	return 0
}

// histogram counts durations (ns) in logarithmic buckets, 16 per power of
// two, so a quantile is off by at most 1/16 of its value.
type histogram struct {
	counts [1024]uint64
	n      uint64
}

func bucketOf(ns int64) int {
	if ns < 16 {
		return int(max(ns, 0))
	}
	shift := bits.Len64(uint64(ns)) - 5
	return shift*16 + int(uint64(ns)>>shift)
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	if i < 32 {
		return time.Duration(i)
	}
	shift := i/16 - 1
	m := uint64(i - shift*16)
	return time.Duration(m<<shift + 1<<shift/2)
}

// add records n observations of ns.
func (h *histogram) add(ns int64, n int) {
	h.counts[bucketOf(ns)] += uint64(n)
	h.n += uint64(n)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the q-quantile (0 < q < 1), 0 without observations.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return bucketValue(len(h.counts) - 1)
}
