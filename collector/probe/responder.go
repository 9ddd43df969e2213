package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxRate is the default ResponderOptions.MaxRate.
const DefaultMaxRate = 10000

// ResponderOptions configures a Responder.
type ResponderOptions struct {
	// Device, if set, binds the socket to this netdev (SO_BINDTODEVICE).
	Device string
	// MaxRate is the most requests answered per second, with a burst of as
	// many; the rest are dropped. Zero selects DefaultMaxRate; a negative
	// value removes the limit.
	MaxRate int
}

// A Responder answers probes on one address and port.
type Responder struct {
	conn     *net.UDPConn
	answered atomic.Uint64
	dropped  atomic.Uint64
	done     chan struct{}
	stop     context.CancelFunc
	close    sync.Once
}

// Listen binds UDP on addr and answers probes there until ctx is done or
// Close is called. Bind to the endpoint's own address, not a wildcard: the
// reply must come from the address the probe was sent to, and a wildcard
// socket lets the kernel pick the reply's source.
func Listen(ctx context.Context, addr netip.AddrPort, opts ResponderOptions) (*Responder, error) {
	network := "udp4"
	if addr.Addr().Unmap().Is6() {
		network = "udp6"
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	lc := net.ListenConfig{Control: controlDevice(opts.Device)}
	pc, err := lc.ListenPacket(ctx, network, addr.String())
	if err != nil {
		return nil, fmt.Errorf("probe: responder on %v: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Responder{
		conn: pc.(*net.UDPConn),
		done: make(chan struct{}),
		stop: cancel,
	}
	rate := opts.MaxRate
	if rate == 0 {
		rate = DefaultMaxRate
	}
	go r.serve(rate)
	go func() {
		<-ctx.Done()
		r.conn.Close()
	}()
	return r, nil
}

// Addr returns the address the responder is bound to.
func (r *Responder) Addr() netip.AddrPort {
	return r.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Answered returns how many requests have been answered.
func (r *Responder) Answered() uint64 { return r.answered.Load() }

// Dropped returns how many datagrams were dropped: not probe requests, or
// over the rate limit.
func (r *Responder) Dropped() uint64 { return r.dropped.Load() }

// Close stops the responder and waits until it has stopped. It always
// returns nil.
func (r *Responder) Close() error {
	r.close.Do(func() {
		r.stop()
		<-r.done
	})
	return nil
}

func (r *Responder) serve(rate int) {
	defer close(r.done)
	limit := bucket{rate: float64(rate), tokens: float64(rate)}
	var buf [1500]byte
	for {
		n, from, err := r.conn.ReadFromUDPAddrPort(buf[:])
		now := time.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !r.answer(buf[:n], now, &limit) {
			r.dropped.Add(1)
			continue
		}
		if _, err := r.conn.WriteToUDPAddrPort(buf[:PacketLen], from); err == nil {
			r.answered.Add(1)
		}
	}
}

// answer turns the request in b, received at now, into its reply in
// b[:PacketLen], and reports whether it should be sent.
func (r *Responder) answer(b []byte, now time.Time, limit *bucket) bool {
	pkt, err := decode(b)
	if err != nil || pkt.reply || !limit.allow(now) {
		return false
	}
	pkt.reply = true
	pkt.received = now.UnixNano()
	pkt.encode(b)
	return true
}

// bucket is a token bucket holding at most rate tokens, refilled at rate
// tokens a second. A negative rate allows everything.
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func (b *bucket) allow(now time.Time) bool {
	if b.rate < 0 {
		return true
	}
	if !b.last.IsZero() {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
