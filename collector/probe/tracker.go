package probe

import (
	"time"
)

// SLA holds the thresholds beyond which an answering path is DEGRADED. A zero
// threshold is not checked.
type SLA struct {
	MaxLatency time.Duration // smoothed round-trip time
	MaxJitter  time.Duration
	MaxLoss    float64 // percent, over the loss window
}

// Stats is a snapshot of a path's measured state.
type Stats struct {
	Path    string
	Health  Health
	Latency time.Duration // smoothed round-trip time; 0 before the first reply
	Jitter  time.Duration // RFC 3550 style, of the round-trip time
	RTT     time.Duration // the last on-time reply's round-trip time
	Loss    float64       // percent, over the last Window resolved probes

	ProbesSent     uint64 // probes sent, or attempted while the socket was unusable
	ProbesReceived uint64 // replies that arrived in time
	ProbesLate     uint64 // replies that arrived after their probe was counted lost
	ProbesLost     uint64 // probes counted lost (timed out), late replies included

	LastChange time.Time // when Health last changed (or the prober was made)
}

const (
	ringSize = 1024 // probes remembered for matching replies; a power of two
	ringMask = ringSize - 1

	initialTimeout = time.Second
	minSlack       = 25 * time.Millisecond
	maxTimeout     = 3 * time.Second
)

type probeState uint8

const (
	pending probeState = iota
	answered
	lost
	lateAnswered
)

// sentProbe is what the tracker remembers of one probe.
type sentProbe struct {
	seq      uint64
	stamp    int64 // the sender timestamp in the packet
	sent     time.Time
	deadline time.Time
	state    probeState
	// slot, resolvedAt and epoch place a resolved probe in the loss
	// window, so that a late reply can take its loss back.
	slot       int
	resolvedAt uint64
	epoch      uint64
}

// trackerConfig is the tracker's configuration, defaults applied.
type trackerConfig struct {
	path    string
	window  int
	timeout time.Duration // 0: adaptive
	th      thresholds
	sla     SLA
}

// event is one probe result, with the stats right after it.
type event struct {
	stats   Stats
	changed bool
}

// tracker is the prober's socket-free core: fed send, reply and clock events
// with their timestamps, it keeps the statistics and the health machine. It
// is not safe for concurrent use.
type tracker struct {
	cfg trackerConfig

	ring   [ringSize]sentProbe
	next   uint64 // sequence number of the next probe
	oldest uint64 // no probe below it is pending

	window    []bool // ring of the last results, true for lost
	windowPos int
	windowLen int
	windowBad int
	resolved  uint64 // results recorded in the window
	epoch     uint64 // bumped when the window is cleared

	latency, jitter, lastRTT time.Duration
	haveRTT                  bool

	// RFC 6298 estimator for the timeout, fed by every reply, late or not.
	estSRTT, estVar time.Duration
	haveEst         bool

	health     machine
	lastChange time.Time

	sent, received, late, lost uint64

	// events collects results until the owner drains them.
	events []event
}

func newTracker(cfg trackerConfig, now time.Time) *tracker {
	return &tracker{
		cfg:        cfg,
		next:       1,
		oldest:     1,
		window:     make([]bool, cfg.window),
		health:     machine{th: cfg.th},
		lastChange: now,
	}
}

// timeout is how long a probe sent now may wait for its reply.
func (t *tracker) timeout() time.Duration {
	if t.cfg.timeout > 0 {
		return t.cfg.timeout
	}
	if !t.haveEst {
		return initialTimeout
	}
	return min(t.estSRTT+max(4*t.estVar, minSlack), maxTimeout)
}

// send registers a probe sent at now and returns its sequence number and
// sender timestamp.
func (t *tracker) send(now time.Time) (seq uint64, stamp int64) {
	if t.next-t.oldest >= ringSize {
		// The oldest slot is about to be reused; its probe has waited far
		// longer than any timeout.
		t.resolve(&t.ring[t.oldest&ringMask], lost, now)
		t.advance()
	}
	seq = t.next
	t.next++
	stamp = now.UnixNano()
	t.ring[seq&ringMask] = sentProbe{
		seq:      seq,
		stamp:    stamp,
		sent:     now,
		deadline: now.Add(t.timeout()),
		state:    pending,
	}
	t.sent++
	return seq, stamp
}

// reply registers a reply to probe seq carrying stamp, received at now. It
// ignores replies that match no probe it remembers.
func (t *tracker) reply(seq uint64, stamp int64, now time.Time) {
	if seq >= t.next || t.next-seq > ringSize {
		return
	}
	p := &t.ring[seq&ringMask]
	if p.seq != seq || p.stamp != stamp {
		return
	}
	rtt := max(now.Sub(p.sent), 0)
	switch p.state {
	case pending:
		t.estimate(rtt)
		t.received++
		if t.haveRTT {
			d := rtt - t.lastRTT
			if d < 0 {
				d = -d
			}
			t.jitter += (d - t.jitter) / 16
			t.latency += (rtt - t.latency) / 8
		} else {
			t.latency = rtt
			t.haveRTT = true
		}
		t.lastRTT = rtt
		t.resolve(p, answered, now)
		t.advance()
	case lost:
		t.estimate(rtt)
		t.late++
		p.state = lateAnswered
		// It was late, not lost: the loss rate takes it back if it is
		// still in the window (it already counted towards DOWN).
		if p.epoch == t.epoch && t.resolved-p.resolvedAt <= uint64(t.windowLen) && t.window[p.slot] {
			t.window[p.slot] = false
			t.windowBad--
		}
	}
}

// estimate feeds the timeout estimator (RFC 6298 §2).
func (t *tracker) estimate(rtt time.Duration) {
	if !t.haveEst {
		t.estSRTT, t.estVar, t.haveEst = rtt, rtt/2, true
		return
	}
	d := t.estSRTT - rtt
	if d < 0 {
		d = -d
	}
	t.estVar += (d - t.estVar) / 4
	t.estSRTT += (rtt - t.estSRTT) / 8
}

// expire declares lost every pending probe whose deadline is not after now.
func (t *tracker) expire(now time.Time) {
	for s := t.oldest; s < t.next; s++ {
		p := &t.ring[s&ringMask]
		if p.state == pending && !now.Before(p.deadline) {
			t.resolve(p, lost, now)
		}
	}
	t.advance()
}

// nextDeadline returns the earliest deadline of a pending probe, and false
// when none is pending.
func (t *tracker) nextDeadline() (time.Time, bool) {
	var d time.Time
	found := false
	for s := t.oldest; s < t.next; s++ {
		p := &t.ring[s&ringMask]
		if p.state == pending && (!found || p.deadline.Before(d)) {
			d, found = p.deadline, true
		}
	}
	return d, found
}

// advance moves oldest past resolved probes.
func (t *tracker) advance() {
	for t.oldest < t.next && t.ring[t.oldest&ringMask].state != pending {
		t.oldest++
	}
}

// resolve records p's fate, learnt at now, in the loss window and the
// health machine.
func (t *tracker) resolve(p *sentProbe, s probeState, now time.Time) {
	p.state = s
	isLost := s == lost
	if !isLost && (t.health.state == Unknown || t.health.state == Down) {
		// The losses of a path that was not answering are what made it
		// DOWN (or are a far end not started yet); they must not hold the
		// path DEGRADED once it answers again: its loss is measured anew.
		t.windowLen, t.windowBad, t.windowPos = 0, 0, 0
		t.epoch++
	}
	p.slot, p.resolvedAt, p.epoch = t.windowPos, t.resolved, t.epoch
	t.resolved++
	if t.windowLen == len(t.window) {
		if t.window[t.windowPos] {
			t.windowBad--
		}
	} else {
		t.windowLen++
	}
	t.window[t.windowPos] = isLost
	if isLost {
		t.windowBad++
		t.lost++
	}
	t.windowPos = (t.windowPos + 1) % len(t.window)

	changed := t.health.step(result{lost: isLost, sla: t.verdict()})
	if changed {
		t.lastChange = now
	}
	t.events = append(t.events, event{stats: t.stats(), changed: changed})
}

func (t *tracker) loss() float64 {
	if t.windowLen == 0 {
		return 0
	}
	return float64(t.windowBad) * 100 / float64(t.windowLen)
}

// verdict judges the current metrics against the SLA.
func (t *tracker) verdict() verdict {
	v := within
	check := func(value, limit float64) {
		switch {
		case limit <= 0:
		case value > limit:
			v = breached
		case value > limit*clearFraction && v == within:
			v = marginal
		}
	}
	sla := t.cfg.sla
	if t.haveRTT {
		check(float64(t.latency), float64(sla.MaxLatency))
		check(float64(t.jitter), float64(sla.MaxJitter))
	}
	check(t.loss(), sla.MaxLoss)
	return v
}

// stats returns a snapshot.
func (t *tracker) stats() Stats {
	return Stats{
		Path:           t.cfg.path,
		Health:         t.health.state,
		Latency:        t.latency,
		Jitter:         t.jitter,
		RTT:            t.lastRTT,
		Loss:           t.loss(),
		ProbesSent:     t.sent,
		ProbesReceived: t.received,
		ProbesLate:     t.late,
		ProbesLost:     t.lost,
		LastChange:     t.lastChange,
	}
}
