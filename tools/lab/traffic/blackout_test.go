package traffic

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// arrivals returns arrivals of the given sequence numbers, in that order,
// each received at the time of its position in a stream of rate 100/s.
func arrivals(seqs ...uint64) []Arrival {
	t0 := time.Unix(1000, 0)
	var as []Arrival
	for _, s := range seqs {
		at := t0.Add(time.Duration(s) * 10 * time.Millisecond)
		as = append(as, Arrival{Seq: s, Sent: at, At: at})
	}
	return as
}

func seqRange(lo, hi uint64) []uint64 {
	var s []uint64
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

func TestBlackout(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name     string
		received []Arrival
		sent     uint64
		rate     float64
		want     Result
	}{
		{
			name: "nothing lost", received: arrivals(seqRange(0, 100)...), sent: 100, rate: 100,
			want: Result{Sent: 100, Received: 100, LongestGap: 10 * ms},
		},
		{
			// 50 packets lost in one piece at 100/s: half a second.
			name: "one outage", received: arrivals(append(seqRange(0, 20), seqRange(70, 100)...)...), sent: 100, rate: 100,
			want: Result{Sent: 100, Received: 50, Lost: 50, LossDerived: 500 * ms,
				LongestRun: 50, LongestRunTime: 500 * ms, LongestGap: 510 * ms},
		},
		{
			// Scattered loss: the loss-derived blackout adds them up,
			// the longest outage is one packet.
			name: "scattered", received: arrivals(0, 2, 4, 6, 8, 9), sent: 10, rate: 100,
			want: Result{Sent: 10, Received: 6, Lost: 4, LossDerived: 40 * ms,
				LongestRun: 1, LongestRunTime: 10 * ms, LongestGap: 20 * ms},
		},
		{
			name: "leading and trailing loss", received: arrivals(seqRange(30, 90)...), sent: 100, rate: 100,
			want: Result{Sent: 100, Received: 60, Lost: 40, LossDerived: 400 * ms,
				LongestRun: 30, LongestRunTime: 300 * ms, LongestGap: 10 * ms},
		},
		{
			name: "nothing arrived", sent: 200, rate: 1000,
			want: Result{Sent: 200, Lost: 200, LossDerived: 200 * ms, LongestRun: 200, LongestRunTime: 200 * ms},
		},
		{
			name: "duplicates and reordering", received: arrivals(0, 1, 3, 2, 3, 4), sent: 5, rate: 100,
			want: Result{Sent: 5, Received: 5, Duplicates: 1, Reordered: 1, LongestGap: 10 * ms},
		},
		{
			name: "arrivals beyond sent are ignored", received: arrivals(0, 1, 7), sent: 2, rate: 100,
			want: Result{Sent: 2, Received: 2, LongestGap: 10 * ms},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Blackout(tc.received, tc.sent, tc.rate)); diff != "" {
				t.Errorf("Blackout (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLossPercent(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want float64
	}{{Result{}, 0}, {Result{Sent: 200, Lost: 10}, 5}, {Result{Sent: 3, Lost: 3}, 100}} {
		if got := tc.r.LossPercent(); got != tc.want {
			t.Errorf("%+v.LossPercent() = %v, want %v", tc.r, got, tc.want)
		}
	}
}
