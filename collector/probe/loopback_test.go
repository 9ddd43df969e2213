package probe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// startResponder runs a Responder on addr until the test ends.
func startResponder(t *testing.T, addr netip.AddrPort) *Responder {
	t.Helper()
	r, err := Listen(t.Context(), addr, ResponderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// change is a health change seen by OnChange, and when it was seen.
type change struct {
	stats Stats
	at    time.Time
}

// watched is a running Prober whose health changes are recorded.
type watched struct {
	*Prober
	changes chan change
	mu      sync.Mutex
	seen    []Health
}

// startProber runs a Prober for cfg until the test ends. run, if not nil,
// runs the Prober instead of a plain goroutine (to place it in a network
// namespace).
func startProber(t *testing.T, cfg Config, run func(func())) *watched {
	t.Helper()
	w := &watched{changes: make(chan change, 64)}
	cfg.OnChange = func(s Stats) {
		w.mu.Lock()
		w.seen = append(w.seen, s.Health)
		w.mu.Unlock()
		w.changes <- change{stats: s, at: time.Now()}
	}
	w.Prober = New(cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	body := func() { done <- w.Run(ctx) }
	if run == nil {
		go body()
	} else {
		run(body)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

// await waits up to d for a change to want and returns it.
func (w *watched) await(t *testing.T, want Health, d time.Duration) change {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case c := <-w.changes:
			if c.stats.Health == want {
				return c
			}
		case <-timeout:
			t.Fatalf("path %s: not %v within %v; stats %+v", w.cfg.Path, want, d, w.Stats())
		}
	}
}

// history returns every health the prober has changed to.
func (w *watched) history() []Health {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Health(nil), w.seen...)
}

func TestLoopbackUpDownUp(t *testing.T) {
	const interval = 20 * time.Millisecond
	resp := startResponder(t, loopback)
	addr := resp.Addr()
	p := startProber(t, Config{Path: "lo", Remote: addr, Interval: interval, DownAfter: 3, UpAfter: 5}, nil)

	up := p.await(t, Up, 10*interval)
	if l := up.stats.Latency; l <= 0 || l > 10*time.Millisecond {
		t.Errorf("loopback latency %v, want in (0, 10ms]", l)
	}
	time.Sleep(20 * interval)
	s := p.Stats()
	if s.Loss != 0 || s.Health != Up || s.ProbesReceived < 15 {
		t.Errorf("after 20 intervals on loopback: %+v, want UP, no loss", s)
	}
	if got := resp.Answered(); got < s.ProbesReceived {
		t.Errorf("responder answered %d, prober received %d", got, s.ProbesReceived)
	}

	resp.Close()
	closed := time.Now()
	down := p.await(t, Down, time.Second)
	took := down.at.Sub(closed)
	t.Logf("DOWN %v after the responder closed (interval %v, DownAfter 3)", took, interval)
	if budget := 3*interval + 100*time.Millisecond; took > budget {
		t.Errorf("DOWN %v after the responder closed, want ≤ %v", took, budget)
	}

	time.Sleep(5 * interval)
	startResponder(t, addr)
	restarted := time.Now()
	up = p.await(t, Up, 2*time.Second)
	// Results count in the order they become known: a probe sent just
	// before the restart times out after the first reply to the next one,
	// and restarts the count, so UP may take one reply more.
	if got := up.stats.ProbesReceived - down.stats.ProbesReceived; got < 5 || got > 6 {
		t.Errorf("UP again after %d replies, want UpAfter = 5 (or 6)", got)
	}
	if took := up.at.Sub(restarted); took < 4*interval {
		t.Errorf("UP again %v after the restart, want ≥ 4 intervals (hysteresis)", took)
	}
}

func TestProberRunErrors(t *testing.T) {
	if err := New(Config{}).Run(t.Context()); err == nil {
		t.Error("Run without a remote succeeded")
	}
	p := New(Config{Remote: netip.MustParseAddrPort("127.0.0.1:9"), Interval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(time.Second)
	for !p.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := p.Run(ctx); err == nil {
		t.Error("a second concurrent Run succeeded")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestProberUnusableDevice binds to a device that does not exist: the socket
// cannot be opened, so the probes count as lost and the path goes DOWN.
func TestProberUnusableDevice(t *testing.T) {
	resp := startResponder(t, loopback)
	p := startProber(t, Config{Path: "nodev", Remote: resp.Addr(), Device: "ptrn-nodev0", Interval: 10 * time.Millisecond}, nil)
	p.await(t, Down, 2*time.Second)
	if s := p.Stats(); s.ProbesReceived != 0 || s.ProbesSent < 3 {
		t.Errorf("stats %+v", s)
	}
}

func TestSetIntervalAndSLA(t *testing.T) {
	resp := startResponder(t, loopback)
	p := startProber(t, Config{Path: "set", Remote: resp.Addr(), Interval: time.Hour}, nil)
	p.await(t, Up, time.Second)
	p.SetInterval(10 * time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	if s := p.Stats(); s.ProbesSent < 10 {
		t.Errorf("%d probes sent 300 ms after SetInterval(10ms), want ≥ 10", s.ProbesSent)
	}
	p.SetSLA(SLA{MaxLatency: time.Nanosecond})
	p.await(t, Degraded, time.Second)
	p.SetSLA(SLA{})
	p.await(t, Up, time.Second)
}

func TestResponderDropsJunk(t *testing.T) {
	resp := startResponder(t, loopback)
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(resp.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var reply [PacketLen]byte
	packet{reply: true, seq: 1}.encode(reply[:])
	var req [PacketLen]byte
	packet{seq: 9, sent: 99}.encode(req[:])
	for _, b := range [][]byte{nil, []byte("hello"), reply[:], req[:PacketLen-1], req[:]} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	var buf [64]byte
	n, err := c.Read(buf[:])
	if err != nil {
		t.Fatal(err)
	}
	got, err := decode(buf[:n])
	if err != nil || !got.reply || got.seq != 9 || got.sent != 99 || n != PacketLen {
		t.Errorf("reply %+v (%d bytes), %v", got, n, err)
	}
	if a, d := resp.Answered(), resp.Dropped(); a != 1 || d != 4 {
		t.Errorf("answered %d, dropped %d; want 1 and 4", a, d)
	}
}

func TestResponderRateLimit(t *testing.T) {
	r, err := Listen(t.Context(), loopback, ResponderOptions{MaxRate: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(r.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var req [PacketLen]byte
	for i := range 50 {
		packet{seq: uint64(i)}.encode(req[:])
		c.Write(req[:])
	}
	deadline := time.Now().Add(2 * time.Second)
	for r.Answered()+r.Dropped() < 50 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	// A burst of 5, plus whatever refilled while the 50 were read.
	if a := r.Answered(); a < 5 || a > 10 {
		t.Errorf("answered %d of a burst of 50 at 5/s", a)
	}
}

func TestResponderStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	r, err := Listen(ctx, loopback, ResponderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-r.done:
	case <-time.After(time.Second):
		t.Fatal("responder still running after its context ended")
	}
	r.Close()
	r.Close()
}

// relay forwards datagrams between one client and a target on loopback,
// dropping every dropEvery-th datagram from the client and delaying the
// others by delay.
type relay struct {
	front, back *net.UDPConn
	client      atomic.Pointer[netip.AddrPort]
	wg          sync.WaitGroup
}

func startRelay(t *testing.T, target netip.AddrPort, dropEvery uint64, delay time.Duration) netip.AddrPort {
	t.Helper()
	front, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{front: front, back: back}
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		var n uint64
		buf := make([]byte, 2048)
		for {
			m, from, err := front.ReadFromUDPAddrPort(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			r.client.Store(&from)
			n++
			if dropEvery > 0 && n%dropEvery == 0 {
				continue
			}
			b := append([]byte(nil), buf[:m]...)
			if delay == 0 {
				back.Write(b)
				continue
			}
			time.AfterFunc(delay, func() { back.Write(b) })
		}
	}()
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		for {
			m, err := back.Read(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if c := r.client.Load(); c != nil {
				front.WriteToUDPAddrPort(buf[:m], *c)
			}
		}
	}()
	t.Cleanup(func() {
		front.Close()
		back.Close()
		r.wg.Wait()
	})
	return front.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestLoss puts a relay dropping a deterministic share of the probes between
// prober and responder. Over a full window of 100 probes, dropping every Nth
// datagram loses exactly 100/N of them; the tolerance allows one probe fewer
// (the window's edge against the drop pattern) and three more (a reply late
// beyond its timeout on a loaded machine).
func TestLoss(t *testing.T) {
	tests := []struct {
		name      string
		dropEvery uint64
		maxLoss   float64
		wantLoss  float64
		want      Health
	}{
		{name: "5% against 1%", dropEvery: 20, maxLoss: 1, wantLoss: 5, want: Degraded},
		{name: "5% against 10%", dropEvery: 20, maxLoss: 10, wantLoss: 5, want: Up},
		{name: "20% against 10%", dropEvery: 5, maxLoss: 10, wantLoss: 20, want: Degraded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const window = 100
			resp := startResponder(t, loopback)
			front := startRelay(t, resp.Addr(), tt.dropEvery, 0)
			p := startProber(t, Config{
				Path:     "lossy",
				Remote:   front,
				Interval: 10 * time.Millisecond,
				Window:   window,
				SLA:      SLA{MaxLoss: tt.maxLoss},
			}, nil)
			deadline := time.Now().Add(10 * time.Second)
			for p.Stats().ProbesSent < window+20 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			s := p.Stats()
			t.Logf("loss %.3f%% over %d probes, health %v", s.Loss, window, s.Health)
			if s.Loss < tt.wantLoss-1 || s.Loss > tt.wantLoss+3 {
				t.Errorf("loss %.3f%%, want %.0f%% (-1/+3)", s.Loss, tt.wantLoss)
			}
			if s.Health != tt.want {
				t.Errorf("health %v with %.3f%% loss against max-loss %.0f%%, want %v", s.Health, s.Loss, tt.maxLoss, tt.want)
			}
			if tt.want == Up {
				for _, h := range p.history() {
					if h != Up {
						t.Errorf("health changes %v, want UP throughout", p.history())
						break
					}
				}
			}
		})
	}
}

func TestDelay(t *testing.T) {
	const delay = 30 * time.Millisecond
	resp := startResponder(t, loopback)
	front := startRelay(t, resp.Addr(), 0, delay)
	p := startProber(t, Config{
		Path:     "slow",
		Remote:   front,
		Interval: 20 * time.Millisecond,
		SLA:      SLA{MaxLatency: 10 * time.Millisecond},
	}, nil)
	p.await(t, Degraded, time.Second)
	time.Sleep(500 * time.Millisecond)
	s := p.Stats()
	t.Logf("latency %v jitter %v through a %v relay", s.Latency, s.Jitter, delay)
	if s.Latency < delay || s.Latency > delay+15*time.Millisecond {
		t.Errorf("latency %v, want ≈%v", s.Latency, delay)
	}
	if s.Health != Degraded || s.Loss != 0 {
		t.Errorf("stats %+v, want DEGRADED without loss", s)
	}
}
