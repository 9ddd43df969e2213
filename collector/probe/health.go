package probe

// Health is a path's health-status.
type Health uint8

// The values of Health, in the order of the spec's enumeration.
const (
	Unknown  Health = iota // no result yet
	Up                     // answering, within the SLA
	Degraded               // answering, SLA breached
	Down                   // DownAfter consecutive probes lost
)

// String returns the health-status as the data tree spells it.
func (h Health) String() string {
	switch h {
	case Unknown:
		return "UNKNOWN"
	case Up:
		return "UP"
	case Degraded:
		return "DEGRADED"
	case Down:
		return "DOWN"
	}
	return "INVALID"
}

// verdict is the SLA's judgement of the metrics after one result.
type verdict uint8

const (
	within   verdict = iota // every metric at or below clearFraction of its maximum
	marginal                // no metric above its maximum, one above clearFraction of it
	breached                // a metric above its maximum
)

// clearFraction is how far below its maximum a metric must fall before a
// DEGRADED path may count towards UP again.
const clearFraction = 0.9

// result is one probe's outcome as the health machine sees it.
type result struct {
	lost bool
	sla  verdict
}

// thresholds are the run lengths that move the health machine.
type thresholds struct {
	downAfter   int // consecutive losses: → DOWN
	upAfter     int // consecutive replies: DOWN → UP/DEGRADED
	breachAfter int // consecutive breached results: UP → DEGRADED
	clearAfter  int // consecutive within results: DEGRADED → UP
}

// machine is the health state machine described in the package doc. It is
// pure: it sees only the results it is fed.
type machine struct {
	th    thresholds
	state Health

	lostRun, goodRun    int
	breachRun, clearRun int
}

// step feeds one result and reports whether the state changed.
func (m *machine) step(r result) bool {
	if r.lost {
		m.lostRun++
		m.goodRun = 0
	} else {
		m.goodRun++
		m.lostRun = 0
	}
	switch r.sla {
	case breached:
		m.breachRun++
		m.clearRun = 0
	case within:
		m.clearRun++
		m.breachRun = 0
	default:
		m.breachRun, m.clearRun = 0, 0
	}

	answering := Up
	if r.sla == breached {
		answering = Degraded
	}
	prev := m.state
	switch {
	case m.lostRun >= m.th.downAfter:
		m.state = Down
	case m.state == Unknown:
		if !r.lost {
			m.state = answering
		}
	case m.state == Down:
		if m.goodRun >= m.th.upAfter {
			m.state = answering
		}
	case m.state == Up:
		if m.breachRun >= m.th.breachAfter {
			m.state = Degraded
		}
	case m.state == Degraded:
		if m.clearRun >= m.th.clearAfter {
			m.state = Up
		}
	}
	return m.state != prev
}
