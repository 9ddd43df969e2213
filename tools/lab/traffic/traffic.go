// Package traffic generates the lab's test traffic and measures what
// arrives: a constant-rate UDP stream with sequence numbers, a receiver
// that records each arrival, and the blackout a failover cost the stream
// (Blackout). Bulk TCP helpers stand in for file transfers.
//
// The helpers that take a namespace create their sockets in it (see
// topo.InNS); a socket stays in its namespace for life, so the goroutines
// that use it may run anywhere.
package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

// HeaderLen is the length of the header of every datagram Send sends: a
// big-endian uint64 sequence number, then the send time as a big-endian
// int64 of nanoseconds since the Unix epoch.
const HeaderLen = 16

// Arrival is one datagram the Receiver got.
type Arrival struct {
	Seq uint64
	// Sent is the sender's clock at sending (both ends of the lab share
	// the host's clock); At is the receiver's at reading.
	Sent, At time.Time
}

// Send sends size-byte datagrams (at least HeaderLen) on the connected
// socket conn at rate datagrams per second, with sequence numbers 0, 1, …,
// until ctx ends, and returns how many it sent. The datagrams carry DSCP
// dscp (IP_TOS). Failed writes (an unreachable network during a failover,
// say) count as sent and lost: the stream keeps its schedule.
func Send(ctx context.Context, conn *net.UDPConn, rate float64, size int, dscp uint8) (uint64, error) {
	if size < HeaderLen || rate <= 0 {
		return 0, fmt.Errorf("traffic: size %d below %d or rate %v not positive", size, HeaderLen, rate)
	}
	if err := SetDSCP(conn, dscp); err != nil {
		return 0, err
	}
	buf := make([]byte, size)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := uint64(0); ; seq++ {
		if wait := time.Until(start.Add(time.Duration(seq) * interval)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return seq, nil
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return seq, nil
		}
		binary.BigEndian.PutUint64(buf[0:8], seq)
		binary.BigEndian.PutUint64(buf[8:16], uint64(time.Now().UnixNano()))
		conn.Write(buf) // errors are losses
	}
}

// SetDSCP sets the DSCP of what conn sends (IPv4: IP_TOS, keeping ECN 0).
func SetDSCP(conn syscall.Conn, dscp uint8) error {
	if dscp > 63 {
		return fmt.Errorf("traffic: DSCP %d above 63", dscp)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("traffic: set DSCP: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(dscp)<<2)
	}); err != nil {
		return fmt.Errorf("traffic: set DSCP: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("traffic: set DSCP %d: %w", dscp, serr)
	}
	return nil
}

// Receiver records the datagrams of a Send stream. Its methods are safe
// for concurrent use.
type Receiver struct {
	mu       sync.Mutex // guards arrivals
	arrivals []Arrival
}

// Run reads datagrams from conn until ctx ends or conn is closed, and
// records the sequence number and times of each one that carries a
// header. It returns nil when ctx ended.
func (r *Receiver) Run(ctx context.Context, conn *net.UDPConn) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("traffic: receive: %w", err)
		}
		if n < HeaderLen {
			continue
		}
		a := Arrival{
			Seq:  binary.BigEndian.Uint64(buf[0:8]),
			Sent: time.Unix(0, int64(binary.BigEndian.Uint64(buf[8:16]))),
			At:   time.Now(),
		}
		r.mu.Lock()
		r.arrivals = append(r.arrivals, a)
		r.mu.Unlock()
	}
}

// Arrivals returns a copy of what has arrived so far, in arrival order.
func (r *Receiver) Arrivals() []Arrival {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Arrival(nil), r.arrivals...)
}

// Count returns how many datagrams have arrived so far.
func (r *Receiver) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.arrivals)
}

// ListenUDP opens a UDP socket in namespace ns bound to addr.
func ListenUDP(ns string, addr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := topo.InNS(ns, func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("traffic: listen on %v in %s: %w", addr, ns, err)
	}
	return c, nil
}

// DialUDP opens a UDP socket in namespace ns connected to raddr.
func DialUDP(ns string, raddr netip.AddrPort) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := topo.InNS(ns, func() (err error) {
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(raddr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("traffic: dial %v in %s: %w", raddr, ns, err)
	}
	return c, nil
}

// ListenTCP opens a TCP listener in namespace ns on addr.
func ListenTCP(ns string, addr netip.AddrPort) (*net.TCPListener, error) {
	var l *net.TCPListener
	err := topo.InNS(ns, func() (err error) {
		l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("traffic: listen on %v in %s: %w", addr, ns, err)
	}
	return l, nil
}

// DialTCP connects from namespace ns to raddr with a TCP connection whose
// packets, the handshake's included, carry DSCP dscp.
func DialTCP(ctx context.Context, ns string, raddr netip.AddrPort, dscp uint8) (*net.TCPConn, error) {
	var c net.Conn
	err := topo.InNS(ns, func() (err error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TOS, int(dscp)<<2)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err = d.DialContext(ctx, "tcp", raddr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("traffic: connect to %v from %s: %w", raddr, ns, err)
	}
	return c.(*net.TCPConn), nil
}

// SendTCP writes to conn at about rate bytes per second, in 16 KiB
// writes, until ctx ends or a write fails, and returns the bytes written.
// It returns a nil error when ctx ended.
func SendTCP(ctx context.Context, conn net.Conn, rate float64) (uint64, error) {
	const chunk = 16 << 10
	buf := make([]byte, chunk)
	stop := context.AfterFunc(ctx, func() { conn.SetWriteDeadline(time.Now()) })
	defer stop()
	start := time.Now()
	var sent uint64
	for {
		if wait := time.Until(start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))); wait > 0 {
			select {
			case <-ctx.Done():
				return sent, nil
			case <-time.After(wait):
			}
		}
		n, err := conn.Write(buf)
		sent += uint64(n)
		if err != nil {
			if ctx.Err() != nil {
				return sent, nil
			}
			return sent, fmt.Errorf("traffic: TCP send: %w", err)
		}
	}
}

// Sink accepts connections on l until ctx ends, reads and discards what
// they carry, calling add with the byte count of each read (from several
// goroutines at once).
func Sink(ctx context.Context, l net.Listener, add func(int)) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			cstop := context.AfterFunc(ctx, func() { c.Close() })
			defer cstop()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				add(n)
				if err != nil {
					return
				}
			}
		}()
	}
}

// Stream is a running Send stream from one namespace to a Receiver in
// another.
type Stream struct {
	rate   float64
	recv   Receiver
	rx, tx *net.UDPConn
	cancel context.CancelFunc
	done   chan struct{}
	// sent and sendErr are written by the sending goroutine before done
	// is closed.
	sent    uint64
	sendErr error
	rxErr   chan error
}

// StreamConfig describes a Stream.
type StreamConfig struct {
	// From and To are the namespaces of the sender and the receiver.
	From, To string
	// Dst is the receiver's address and port, in To.
	Dst  netip.AddrPort
	Rate float64 // datagrams per second
	Size int     // bytes of UDP payload, at least HeaderLen
	DSCP uint8
}

// Start starts a stream: a receiver on c.Dst in c.To and a sender in
// c.From. Stop ends it.
func Start(c StreamConfig) (*Stream, error) {
	rx, err := ListenUDP(c.To, c.Dst)
	if err != nil {
		return nil, err
	}
	if err := rx.SetReadBuffer(4 << 20); err != nil {
		rx.Close()
		return nil, fmt.Errorf("traffic: %w", err)
	}
	tx, err := DialUDP(c.From, c.Dst)
	if err != nil {
		rx.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stream{rate: c.Rate, rx: rx, tx: tx, cancel: cancel, done: make(chan struct{}), rxErr: make(chan error, 1)}
	go func() { s.rxErr <- s.recv.Run(context.Background(), rx) }()
	go func() {
		defer close(s.done)
		s.sent, s.sendErr = Send(ctx, tx, c.Rate, c.Size, c.DSCP)
	}()
	return s, nil
}

// Received returns how many datagrams have arrived so far.
func (s *Stream) Received() int { return s.recv.Count() }

// Stop stops sending, gives datagrams in flight drain to arrive, closes
// the sockets and returns the stream's Result.
func (s *Stream) Stop(drain time.Duration) (Result, error) {
	s.cancel()
	<-s.done
	time.Sleep(drain)
	s.tx.Close()
	s.rx.Close()
	rerr := <-s.rxErr
	if errors.Is(rerr, net.ErrClosed) {
		rerr = nil
	}
	return Blackout(s.recv.Arrivals(), s.sent, s.rate), errors.Join(s.sendErr, rerr)
}
