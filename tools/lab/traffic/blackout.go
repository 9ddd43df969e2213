package traffic

import (
	"fmt"
	"slices"
	"time"
)

// Result is what a stream lost.
type Result struct {
	// Sent is how many datagrams were sent; Received how many distinct
	// sequence numbers below Sent arrived; Lost the difference.
	Sent, Received, Lost uint64
	// Duplicates counts arrivals of a sequence number already seen;
	// Reordered counts arrivals of a sequence number lower than one
	// already seen.
	Duplicates, Reordered uint64
	// LossDerived is the loss-derived blackout of RFC 6412 (its
	// Loss-Derived Convergence Time): Lost divided by the offered rate,
	// i.e. how long the stream would have been interrupted had every loss
	// been in one piece.
	LossDerived time.Duration
	// LongestRun is the longest run of consecutive lost sequence numbers
	// (leading and trailing runs included), and LongestRunTime that run
	// divided by the rate: the longest single outage the stream saw.
	LongestRun     uint64
	LongestRunTime time.Duration
	// LongestGap is the longest time between two consecutive arrivals,
	// of the stream (sequence numbers below Sent), as the receiver
	// measured it; it includes the stream's normal interval. Zero with
	// fewer than two arrivals.
	LongestGap time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("sent %d, received %d, lost %d (%.2f %%): blackout %v (loss-derived), longest outage %d packets = %v, longest gap %v",
		r.Sent, r.Received, r.Lost, r.LossPercent(), r.LossDerived.Round(time.Millisecond),
		r.LongestRun, r.LongestRunTime.Round(time.Millisecond), r.LongestGap.Round(time.Millisecond))
}

// LossPercent is Lost as a percentage of Sent (0 when nothing was sent).
func (r Result) LossPercent() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Lost) / float64(r.Sent)
}

// Blackout measures the arrivals of a stream of sent datagrams, sequence
// numbers 0..sent-1, offered at rate datagrams per second. Arrivals with
// a sequence number of sent or above are ignored; received may be in any
// order (it is what Receiver.Arrivals returns).
func Blackout(received []Arrival, sent uint64, rate float64) Result {
	r := Result{Sent: sent}
	seen := make(map[uint64]bool, len(received))
	var maxSeq uint64
	var any bool
	for _, a := range received {
		if a.Seq >= sent {
			continue
		}
		if seen[a.Seq] {
			r.Duplicates++
			continue
		}
		if any && a.Seq < maxSeq {
			r.Reordered++
		}
		seen[a.Seq] = true
		maxSeq, any = max(maxSeq, a.Seq), true
	}
	r.Received = uint64(len(seen))
	r.Lost = sent - r.Received

	seqs := make([]uint64, 0, len(seen))
	for s := range seen {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	next := uint64(0) // the sequence number expected after the last one seen
	for _, s := range seqs {
		r.LongestRun = max(r.LongestRun, s-next)
		next = s + 1
	}
	r.LongestRun = max(r.LongestRun, sent-next)

	at := make([]time.Time, 0, len(received))
	for _, a := range received {
		if a.Seq < sent {
			at = append(at, a.At)
		}
	}
	slices.SortFunc(at, time.Time.Compare)
	for i := 1; i < len(at); i++ {
		r.LongestGap = max(r.LongestGap, at[i].Sub(at[i-1]))
	}

	if rate > 0 {
		r.LossDerived = time.Duration(float64(r.Lost) / rate * float64(time.Second))
		r.LongestRunTime = time.Duration(float64(r.LongestRun) / rate * float64(time.Second))
	}
	return r
}
