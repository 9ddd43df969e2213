package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultPort        = 4784
	DefaultInterval    = 200 * time.Millisecond
	DefaultWindow      = 50
	DefaultDownAfter   = 3
	DefaultUpAfter     = 5
	DefaultBreachAfter = 3
	DefaultClearAfter  = 5

	minInterval = time.Millisecond
)

// Config configures a Prober. Zero fields take the defaults above.
type Config struct {
	Path   string         // the path's name, copied into Stats
	Local  netip.Addr     // source address; invalid: chosen by routing
	Device string         // if set, probes leave on this netdev (SO_BINDTODEVICE)
	Remote netip.AddrPort // the destination endpoint's responder

	Interval time.Duration // between probes
	Window   int           // probes in the loss window
	// Timeout, if set, is how long a probe waits for its reply before it is
	// lost. Zero selects the adaptive timeout described in the package doc,
	// which is what keeps failure detection fast; set it only for paths
	// whose RTT varies wildly.
	Timeout time.Duration

	DownAfter   int // consecutive lost probes → DOWN
	UpAfter     int // consecutive replies to leave DOWN
	BreachAfter int // consecutive results breaching the SLA: UP → DEGRADED
	ClearAfter  int // consecutive results well within the SLA: DEGRADED → UP

	SLA

	// OnChange, if set, is called with the new stats on every health-status
	// change; OnSample, if set, after every probe result. Both are called
	// from Run's goroutine, in order, and must not block for long: probing
	// waits for them.
	OnChange func(Stats)
	OnSample func(Stats)
}

// A Prober probes one path. Its methods are safe for concurrent use.
type Prober struct {
	cfg     Config // defaults applied; fixed after New
	running atomic.Bool
	reset   chan struct{} // the interval changed

	// mu guards the tracker (with its SLA) and the interval, which SetSLA
	// and SetInterval change while Run reads them.
	mu       sync.Mutex
	tracker  *tracker
	interval time.Duration
}

// New returns a Prober for cfg. It sends nothing until Run.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	cfg.Interval = max(cfg.Interval, minInterval)
	setDefault(&cfg.Window, DefaultWindow)
	setDefault(&cfg.DownAfter, DefaultDownAfter)
	setDefault(&cfg.UpAfter, DefaultUpAfter)
	setDefault(&cfg.BreachAfter, DefaultBreachAfter)
	setDefault(&cfg.ClearAfter, DefaultClearAfter)
	cfg.Remote = netip.AddrPortFrom(cfg.Remote.Addr().Unmap(), cfg.Remote.Port())
	cfg.Local = cfg.Local.Unmap()
	return &Prober{
		cfg:      cfg,
		reset:    make(chan struct{}, 1),
		interval: cfg.Interval,
		tracker: newTracker(trackerConfig{
			path:    cfg.Path,
			window:  cfg.Window,
			timeout: cfg.Timeout,
			th: thresholds{
				downAfter:   cfg.DownAfter,
				upAfter:     cfg.UpAfter,
				breachAfter: cfg.BreachAfter,
				clearAfter:  cfg.ClearAfter,
			},
			sla: cfg.SLA,
		}, time.Now()),
	}
}

func setDefault(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}

// Stats returns a snapshot of the path's measured state.
func (p *Prober) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tracker.stats()
}

// SetSLA replaces the SLA thresholds; the next probe result is judged by them.
func (p *Prober) SetSLA(sla SLA) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tracker.cfg.sla = sla
}

// SetInterval changes the probe interval; a running prober sends its next
// probe one new interval from now. Values below 1 ms are raised to it, and
// zero or less selects the default.
func (p *Prober) SetInterval(d time.Duration) {
	if d <= 0 {
		d = DefaultInterval
	}
	p.mu.Lock()
	p.interval = max(d, minInterval)
	p.mu.Unlock()
	select {
	case p.reset <- struct{}{}:
	default:
	}
}

// reply is a received reply, timestamped as soon as it was read.
type reply struct {
	seq   uint64
	stamp int64
	at    time.Time
}

// redialEvery is how often a DOWN prober replaces its socket, in case what
// broke is the socket itself: the device it was bound to was recreated, or
// the source address it was connected with changed.
const redialEvery = time.Second

// Run probes until ctx is done, then returns nil. It sends the first probe at
// once and one every interval after that. A socket that cannot be opened or
// written to does not end Run: the probes are counted as sent and, being
// unanswered, lost, so the path goes DOWN, and Run keeps trying to open a
// socket. Run returns an error only for an invalid Remote or when the Prober
// is already running.
func (p *Prober) Run(ctx context.Context) error {
	if !p.cfg.Remote.IsValid() || p.cfg.Remote.Port() == 0 {
		return fmt.Errorf("probe: path %q: invalid remote %v", p.cfg.Path, p.cfg.Remote)
	}
	if !p.running.CompareAndSwap(false, true) {
		return fmt.Errorf("probe: path %q: already running", p.cfg.Path)
	}
	defer p.running.Store(false)

	var (
		readers  sync.WaitGroup
		stop     = make(chan struct{})
		replies  = make(chan reply, 64)
		conn     *net.UDPConn
		lastDial time.Time
		buf      [PacketLen]byte
		events   []event
	)
	defer readers.Wait()
	defer close(stop)
	closeConn := func() {
		if conn != nil {
			conn.Close()
			conn = nil
		}
	}
	defer closeConn()

	// process runs f on the tracker, then hands the results it produced to
	// the callbacks, outside the lock.
	process := func(f func(t *tracker)) {
		p.mu.Lock()
		f(p.tracker)
		events = append(events[:0], p.tracker.events...)
		p.tracker.events = p.tracker.events[:0]
		p.mu.Unlock()
		for _, e := range events {
			if p.cfg.OnSample != nil {
				p.cfg.OnSample(e.stats)
			}
			if e.changed && p.cfg.OnChange != nil {
				p.cfg.OnChange(e.stats)
			}
		}
	}
	// drain takes in the replies already read, so that none is declared lost
	// while it waits in the channel.
	drain := func() {
		for {
			select {
			case r := <-replies:
				process(func(t *tracker) { t.reply(r.seq, r.stamp, r.at) })
			default:
				return
			}
		}
	}
	sendProbe := func() {
		now := time.Now()
		if conn != nil && p.Stats().Health == Down && now.Sub(lastDial) >= redialEvery {
			closeConn()
		}
		if conn == nil && now.Sub(lastDial) >= min(p.currentInterval(), redialEvery) {
			lastDial = now
			c, err := p.dial(ctx)
			if err == nil {
				conn = c
				readers.Add(1)
				go p.read(c, replies, stop, &readers)
			}
		}
		now = time.Now()
		var seq uint64
		var stamp int64
		process(func(t *tracker) {
			t.expire(now)
			seq, stamp = t.send(now)
		})
		if conn == nil {
			return
		}
		packet{seq: seq, sent: stamp}.encode(buf[:])
		_, err := conn.Write(buf[:])
		if errors.Is(err, syscall.ECONNREFUSED) {
			// The error belonged to an earlier probe (an ICMP port
			// unreachable); it is cleared now, so send this one.
			_, err = conn.Write(buf[:])
		}
		if errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO) {
			closeConn()
		}
	}

	ticker := time.NewTicker(p.currentInterval())
	defer ticker.Stop()
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()

	sendProbe()
	for {
		p.mu.Lock()
		d, ok := p.tracker.nextDeadline()
		p.mu.Unlock()
		if ok {
			deadline.Reset(time.Until(d))
		} else {
			deadline.Stop()
		}

		select {
		case <-ctx.Done():
			return nil
		case r := <-replies:
			process(func(t *tracker) { t.reply(r.seq, r.stamp, r.at) })
		case <-deadline.C:
			drain()
			now := time.Now()
			process(func(t *tracker) { t.expire(now) })
		case <-ticker.C:
			drain()
			sendProbe()
		case <-p.reset:
			ticker.Reset(p.currentInterval())
		}
	}
}

func (p *Prober) currentInterval() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.interval
}

// dial opens the probe socket: connected to Remote, so that the kernel drops
// datagrams from anyone else, and bound to Local and Device when set.
func (p *Prober) dial(ctx context.Context) (*net.UDPConn, error) {
	network := "udp4"
	if p.cfg.Remote.Addr().Is6() {
		network = "udp6"
	}
	d := net.Dialer{Control: controlDevice(p.cfg.Device)}
	if p.cfg.Local.IsValid() {
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.cfg.Local, 0))
	}
	c, err := d.DialContext(ctx, network, p.cfg.Remote.String())
	if err != nil {
		return nil, fmt.Errorf("probe: path %q: %w", p.cfg.Path, err)
	}
	return c.(*net.UDPConn), nil
}

// read hands the replies arriving on c to replies until c is closed or stop
// is closed.
func (p *Prober) read(c *net.UDPConn, replies chan<- reply, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	var buf [PacketLen + 64]byte
	for {
		n, err := c.Read(buf[:])
		at := time.Now()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP errors reported on the connected socket, or a short
			// read: the timeouts account for the loss.
			continue
		}
		pkt, err := decode(buf[:n])
		if err != nil || !pkt.reply {
			continue
		}
		select {
		case replies <- reply{seq: pkt.seq, stamp: pkt.sent, at: at}:
		case <-stop:
			return
		}
	}
}
