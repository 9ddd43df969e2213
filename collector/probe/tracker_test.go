package probe

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var epoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testTracker(window int, sla SLA) *tracker {
	return newTracker(trackerConfig{
		path:   "p",
		window: window,
		th:     thresholds{downAfter: 3, upAfter: 5, breachAfter: 3, clearAfter: 5},
		sla:    sla,
	}, epoch)
}

// sim drives a tracker the way Run does, on a fake clock with 1 ms
// resolution: every interval it expires overdue probes and sends one; each
// probe's reply, if rtt returns ok, arrives rtt later.
type sim struct {
	t        *tracker
	interval time.Duration
	now      time.Time
	// rtt decides the fate of probe seq: its round-trip time, or false if
	// it is lost.
	rtt     func(seq uint64) (time.Duration, bool)
	pending map[time.Time][][2]uint64 // arrival → (seq, stamp)
	changes []Health
	atDown  []time.Time
}

func newSim(t *tracker, interval time.Duration, rtt func(uint64) (time.Duration, bool)) *sim {
	return &sim{t: t, interval: interval, now: epoch, rtt: rtt, pending: map[time.Time][][2]uint64{}}
}

// run advances the clock by d.
func (s *sim) run(d time.Duration) {
	end := s.now.Add(d)
	for ; s.now.Before(end); s.now = s.now.Add(time.Millisecond) {
		for _, r := range s.pending[s.now] {
			s.t.reply(r[0], int64(r[1]), s.now)
		}
		delete(s.pending, s.now)
		s.t.expire(s.now)
		if s.now.Sub(epoch)%s.interval == 0 {
			seq, stamp := s.t.send(s.now)
			if rtt, ok := s.rtt(seq); ok {
				at := s.now.Add(rtt)
				s.pending[at] = append(s.pending[at], [2]uint64{seq, uint64(stamp)})
			}
		}
		for _, e := range s.t.events {
			if e.changed {
				s.changes = append(s.changes, e.stats.Health)
				if e.stats.Health == Down {
					s.atDown = append(s.atDown, s.now)
				}
			}
		}
		s.t.events = s.t.events[:0]
	}
}

func constant(rtt time.Duration) func(uint64) (time.Duration, bool) {
	return func(uint64) (time.Duration, bool) { return rtt, true }
}

func TestTrackerSteadyPath(t *testing.T) {
	s := newSim(testTracker(50, SLA{}), 200*time.Millisecond, constant(10*time.Millisecond))
	s.run(10 * time.Second)
	got := s.t.stats()
	want := Stats{
		Path:           "p",
		Health:         Up,
		Latency:        10 * time.Millisecond,
		RTT:            10 * time.Millisecond,
		ProbesSent:     50,
		ProbesReceived: 50,
		LastChange:     epoch.Add(10 * time.Millisecond),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Health{Up}, s.changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// TestTrackerLatencyJitter checks the EWMA and RFC 3550 arithmetic against a
// float64 reference over an irregular RTT sequence.
func TestTrackerLatencyJitter(t *testing.T) {
	rtts := []time.Duration{10, 18, 12, 30, 11, 11, 25, 9, 14, 40, 10, 12}
	for i := range rtts {
		rtts[i] *= time.Millisecond
	}
	tr := testTracker(50, SLA{})
	now := epoch
	var wantL, wantJ float64
	for i, rtt := range rtts {
		seq, stamp := tr.send(now)
		tr.reply(seq, stamp, now.Add(rtt))
		now = now.Add(100 * time.Millisecond)
		r := float64(rtt)
		if i == 0 {
			wantL = r
			continue
		}
		wantL += (r - wantL) / 8
		wantJ += (math.Abs(r-float64(rtts[i-1])) - wantJ) / 16
	}
	got := tr.stats()
	// Integer division truncates at most 1 ns per step.
	if d := math.Abs(float64(got.Latency) - wantL); d > float64(len(rtts)) {
		t.Errorf("latency = %v, want %v", got.Latency, time.Duration(wantL))
	}
	if d := math.Abs(float64(got.Jitter) - wantJ); d > float64(len(rtts)) {
		t.Errorf("jitter = %v, want %v", got.Jitter, time.Duration(wantJ))
	}
	if got.Latency <= 10*time.Millisecond || got.Jitter <= 0 {
		t.Errorf("latency %v, jitter %v: want both to have moved", got.Latency, got.Jitter)
	}
}

func TestTrackerLossWindow(t *testing.T) {
	tests := []struct {
		name      string
		window    int
		dropEvery uint64
		duration  time.Duration
		want      float64
	}{
		{name: "no loss", window: 50, dropEvery: 0, duration: 20 * time.Second, want: 0},
		{name: "5% over a full window", window: 100, dropEvery: 20, duration: 30 * time.Second, want: 5},
		{name: "20% over a full window", window: 50, dropEvery: 5, duration: 30 * time.Second, want: 20},
		{name: "partial window", window: 100, dropEvery: 4, duration: 7900 * time.Millisecond, want: 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtt := func(seq uint64) (time.Duration, bool) {
				if tt.dropEvery > 0 && seq%tt.dropEvery == 0 {
					return 0, false
				}
				return 5 * time.Millisecond, true
			}
			s := newSim(testTracker(tt.window, SLA{}), 100*time.Millisecond, rtt)
			// Stop just after a send, so the last probes are resolved
			// except the one in flight.
			s.run(tt.duration + time.Millisecond)
			s.run(50 * time.Millisecond)
			if got := s.t.stats().Loss; math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("loss = %.3f%%, want %.3f%%", got, tt.want)
			}
		})
	}
}

func TestTrackerTimeout(t *testing.T) {
	tr := testTracker(50, SLA{})
	if got := tr.timeout(); got != initialTimeout {
		t.Errorf("timeout before any reply = %v, want %v", got, initialTimeout)
	}
	seq, stamp := tr.send(epoch)
	tr.reply(seq, stamp, epoch.Add(10*time.Millisecond))
	// SRTT 10 ms, RTTVAR 5 ms: 10 + max(20, 25).
	if got, want := tr.timeout(), 35*time.Millisecond; got != want {
		t.Errorf("timeout after a 10 ms reply = %v, want %v", got, want)
	}
	seq, stamp = tr.send(epoch.Add(time.Second))
	tr.reply(seq, stamp, epoch.Add(time.Second+90*time.Millisecond))
	// RTTVAR 5 + (80-5)/4 = 23.75 ms, SRTT 10 + 80/8 = 20 ms: 20 + 95.
	if got, want := tr.timeout(), 115*time.Millisecond; got != want {
		t.Errorf("timeout after a 90 ms reply = %v, want %v", got, want)
	}

	fixed := newTracker(trackerConfig{window: 10, timeout: 7 * time.Millisecond, th: thresholds{3, 5, 3, 5}}, epoch)
	if got := fixed.timeout(); got != 7*time.Millisecond {
		t.Errorf("fixed timeout = %v, want 7ms", got)
	}
}

// TestTrackerDetectionTime kills a steady path at many phases relative to the
// probe schedule and checks the failover budget: DOWN within
// DownAfter × interval + 50 ms of the failure.
func TestTrackerDetectionTime(t *testing.T) {
	const interval = 200 * time.Millisecond
	var worst time.Duration
	for _, rtt := range []time.Duration{time.Millisecond, 20 * time.Millisecond, 80 * time.Millisecond} {
		for phase := time.Duration(0); phase < interval; phase += 10 * time.Millisecond {
			dieAt := epoch.Add(5*time.Second + phase)
			var s *sim
			s = newSim(testTracker(50, SLA{}), interval, func(uint64) (time.Duration, bool) {
				// A probe is answered if its reply is back before the
				// failure.
				return rtt, s.now.Add(rtt).Before(dieAt)
			})
			s.run(8 * time.Second)
			if len(s.atDown) != 1 {
				t.Fatalf("rtt %v phase %v: DOWN %d times, want once", rtt, phase, len(s.atDown))
			}
			took := s.atDown[0].Sub(dieAt)
			worst = max(worst, took)
			if budget := 3*interval + 50*time.Millisecond; took > budget {
				t.Errorf("rtt %v phase %v: DOWN %v after the failure, budget %v", rtt, phase, took, budget)
			}
		}
	}
	t.Logf("worst detection time at a %v interval: %v", interval, worst)
}

func TestTrackerLateReply(t *testing.T) {
	tr := testTracker(10, SLA{})
	now := epoch
	for range 5 {
		seq, stamp := tr.send(now)
		tr.reply(seq, stamp, now.Add(10*time.Millisecond))
		now = now.Add(100 * time.Millisecond)
	}
	seq, stamp := tr.send(now)
	tr.expire(now.Add(tr.timeout()))
	before := tr.stats()
	if before.Loss == 0 || before.ProbesLost != 1 {
		t.Fatalf("probe not lost after its timeout: %+v", before)
	}
	tr.reply(seq, stamp, now.Add(500*time.Millisecond))
	tr.reply(seq, stamp, now.Add(501*time.Millisecond)) // duplicate
	after := tr.stats()
	// A late reply is counted as late and takes the probe's loss back (it
	// was delayed, not lost), but feeds neither latency nor received, and
	// the probe stays counted in ProbesLost.
	want := before
	want.ProbesLate = 1
	want.Loss = 0
	if diff := cmp.Diff(want, after); diff != "" {
		t.Errorf("stats after a late reply (-want +got):\n%s", diff)
	}
}

func TestTrackerIgnoresBogusReplies(t *testing.T) {
	tr := testTracker(10, SLA{})
	seq, stamp := tr.send(epoch)
	at := epoch.Add(time.Millisecond)
	tr.reply(seq, stamp+1, at)    // wrong timestamp
	tr.reply(seq+1, stamp, at)    // never sent
	tr.reply(0, stamp, at)        // never sent
	tr.reply(seq+ringSize, 0, at) // far future
	if got := tr.stats(); got.ProbesReceived != 0 || got.Health != Unknown {
		t.Fatalf("bogus replies counted: %+v", got)
	}
	tr.reply(seq, stamp, at)
	tr.reply(seq, stamp, at) // duplicate
	if got := tr.stats(); got.ProbesReceived != 1 || got.Health != Up {
		t.Errorf("after one genuine reply and its duplicate: %+v", got)
	}
}

// TestTrackerRelearnsRTT jumps a 1 ms path to 150 ms, beyond its timeout:
// late replies teach the timeout estimator, so the path loses a probe or two
// but never goes DOWN.
func TestTrackerRelearnsRTT(t *testing.T) {
	var s *sim
	jump := epoch.Add(5 * time.Second)
	s = newSim(testTracker(50, SLA{}), 200*time.Millisecond, func(uint64) (time.Duration, bool) {
		if s.now.Before(jump) {
			return time.Millisecond, true
		}
		return 150 * time.Millisecond, true
	})
	s.run(20 * time.Second)
	got := s.t.stats()
	if got.Health != Up || got.ProbesLate == 0 || got.ProbesLate > 2 {
		t.Errorf("after an RTT jump: %+v, want UP with 1 or 2 late replies", got)
	}
	if d := got.Latency - 150*time.Millisecond; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("latency = %v, want ≈150ms", got.Latency)
	}
	if diff := cmp.Diff([]Health{Up}, s.changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

func TestTrackerSLA(t *testing.T) {
	tests := []struct {
		name string
		sla  SLA
		rtt  func(uint64) (time.Duration, bool)
		want Health
	}{
		{name: "latency within", sla: SLA{MaxLatency: 20 * time.Millisecond}, rtt: constant(10 * time.Millisecond), want: Up},
		{name: "latency breached", sla: SLA{MaxLatency: 5 * time.Millisecond}, rtt: constant(10 * time.Millisecond), want: Degraded},
		{
			name: "jitter breached",
			sla:  SLA{MaxJitter: 2 * time.Millisecond},
			rtt: func(seq uint64) (time.Duration, bool) {
				return time.Duration(5+10*(seq%2)) * time.Millisecond, true
			},
			want: Degraded,
		},
		{
			name: "loss breached",
			sla:  SLA{MaxLoss: 1},
			rtt: func(seq uint64) (time.Duration, bool) {
				return time.Millisecond, seq%20 != 0
			},
			want: Degraded,
		},
		{
			name: "loss within",
			sla:  SLA{MaxLoss: 10},
			rtt: func(seq uint64) (time.Duration, bool) {
				return time.Millisecond, seq%20 != 0
			},
			want: Up,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(testTracker(50, tt.sla), 100*time.Millisecond, tt.rtt)
			s.run(20 * time.Second)
			if got := s.t.stats().Health; got != tt.want {
				t.Errorf("health = %v, want %v (changes %v)", got, tt.want, s.changes)
			}
		})
	}
}

// TestTrackerRingOverflow never answers and never times out within the ring:
// the oldest probes are declared lost as their slots are reused.
func TestTrackerRingOverflow(t *testing.T) {
	tr := newTracker(trackerConfig{window: 50, timeout: time.Hour, th: thresholds{3, 5, 3, 5}}, epoch)
	now := epoch
	for range 3 * ringSize {
		tr.send(now)
		now = now.Add(time.Millisecond)
	}
	got := tr.stats()
	if got.Health != Down || got.Loss != 100 || got.ProbesSent != 3*ringSize {
		t.Errorf("after %d unanswered probes: %+v", 3*ringSize, got)
	}
	if n := tr.next - tr.oldest; n > ringSize {
		t.Errorf("%d probes pending, more than the ring holds", n)
	}
}

// BenchmarkTrackerProbe measures the per-probe processing cost: sending,
// matching the reply and updating every statistic and the health.
func BenchmarkTrackerProbe(b *testing.B) {
	tr := testTracker(50, SLA{MaxLatency: time.Second, MaxJitter: time.Second, MaxLoss: 50})
	now := epoch
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		seq, stamp := tr.send(now)
		if i%20 != 0 {
			tr.reply(seq, stamp, now.Add(time.Duration(1000+i%7*100)*time.Microsecond))
		}
		now = now.Add(200 * time.Millisecond)
		tr.expire(now)
		tr.events = tr.events[:0]
	}
}

// TestTrackerLateStartIsNotLoss: probes lost before the far end first
// answers (it was not started yet), or while the path was DOWN, do not hold
// the path DEGRADED once it answers.
func TestTrackerLateStartIsNotLoss(t *testing.T) {
	var answering bool
	rtt := func(uint64) (time.Duration, bool) { return 5 * time.Millisecond, answering }
	s := newSim(testTracker(50, SLA{MaxLoss: 1}), 100*time.Millisecond, rtt)
	s.run(2 * time.Second) // 20 probes into the void
	answering = true
	s.run(3 * time.Second)
	if st := s.t.stats(); st.Health != Up || st.Loss != 0 {
		t.Errorf("after a late start: %v at %.3f%% loss, want UP at 0%%", st.Health, st.Loss)
	}
	answering = false
	s.run(time.Second) // DOWN
	answering = true
	s.run(2 * time.Second)
	if st := s.t.stats(); st.Health != Up || st.Loss != 0 {
		t.Errorf("after an outage: %v at %.3f%% loss, want UP at 0%% (changes %v)", st.Health, st.Loss, s.changes)
	}
}
