package plan

import "time"

// Health is a path's measured state, as the probes report it.
type Health struct {
	Status  string // UNKNOWN, UP, DEGRADED or DOWN
	Latency time.Duration
	Jitter  time.Duration
	Loss    float64 // percent
}

// Within reports whether h meets sla.
func (h Health) Within(sla SLA) bool {
	return (sla.MaxLatency == 0 || h.Latency <= sla.MaxLatency) &&
		(sla.MaxJitter == 0 || h.Jitter <= sla.MaxJitter) &&
		(sla.MaxLoss == 0 || h.Loss <= sla.MaxLoss)
}

// Choose returns the path pol steers onto: the first of its paths that is
// enabled, UP and within its SLA; if none is, the first enabled one that is
// not DOWN; if there is none, "" (ordinary routing). A path with no health
// yet counts as UNKNOWN: usable, but not UP.
//
// The probes judge UP and DEGRADED with hysteresis against the tightest SLA
// of the policies using a path (TightestSLA), so an UP path meets every
// policy's SLA and the choice does not flap at a threshold; a DEGRADED path
// is measured against pol's own SLA when that is looser than the tightest
// (for the policy with the tightest SLA, DEGRADED means breached).
func (p *Plan) Choose(pol Policy, health map[string]Health) string {
	if pol.Action != Steer {
		return ""
	}
	fallback := ""
	for _, name := range pol.Paths {
		pa := p.Paths[name]
		if pa == nil || !pa.Enabled {
			continue
		}
		h, ok := health[name]
		if !ok {
			h.Status = "UNKNOWN"
		}
		if h.Status == "UP" || (h.Status == "DEGRADED" && pol.SLA != p.tightest[name] && h.Within(pol.SLA)) {
			return name
		}
		if h.Status != "DOWN" && fallback == "" {
			fallback = name
		}
	}
	return fallback
}

// Degraded reports whether a path that is UP breaches the SLA of an enabled
// policy that may steer onto it: tree.md's DEGRADED.
func (p *Plan) Degraded(path string, h Health) bool {
	if h.Status != "UP" {
		return false
	}
	for _, pol := range p.Policies {
		if !pol.Enabled || pol.Action != Steer {
			continue
		}
		for _, name := range pol.Paths {
			if name == path && !h.Within(pol.SLA) {
				return true
			}
		}
	}
	return false
}

// TightestSLA is the strictest bound of each kind over the enabled policies
// that may steer onto path; the probes report DEGRADED against it.
func (p *Plan) TightestSLA(path string) SLA { return p.tightest[path] }

func (p *Plan) tightestSLA(path string) SLA {
	var out SLA
	tighter := func(cur, v time.Duration) time.Duration {
		if v == 0 || (cur != 0 && cur <= v) {
			return cur
		}
		return v
	}
	for _, pol := range p.Policies {
		if !pol.Enabled || pol.Action != Steer {
			continue
		}
		for _, name := range pol.Paths {
			if name != path {
				continue
			}
			out.MaxLatency = tighter(out.MaxLatency, pol.SLA.MaxLatency)
			out.MaxJitter = tighter(out.MaxJitter, pol.SLA.MaxJitter)
			if pol.SLA.MaxLoss != 0 && (out.MaxLoss == 0 || pol.SLA.MaxLoss < out.MaxLoss) {
				out.MaxLoss = pol.SLA.MaxLoss
			}
		}
	}
	return out
}
