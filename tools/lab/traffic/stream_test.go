package traffic

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patronus-sdwan/patronus/dataplane/impair"
	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

func lab(t *testing.T) *topo.Topology {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds the lab out of network namespaces")
	}
	tp, err := topo.Build(context.Background(), fmt.Sprintf("pt%03x-", rand.IntN(1<<12)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Error(err)
		}
	})
	return tp
}

// TestStreamBlackout cuts hq's inet link in the wan for a known time in
// the middle of a stream from hq's LAN to branch-1's, and checks that
// Blackout measures that time.
func TestStreamBlackout(t *testing.T) {
	tp := lab(t)
	hq, _ := topo.SiteByName("hq")
	b1, _ := topo.SiteByName("branch-1")
	inet, _ := hq.Endpoint("inet")
	const rate = 1000
	s, err := Start(StreamConfig{From: tp.LANHost(hq), To: tp.LANHost(b1),
		Dst: netip.AddrPortFrom(b1.Host(), 5060), Rate: rate, Size: 160, DSCP: 46})
	if err != nil {
		t.Fatal(err)
	}
	ifindex, err := topo.Ifindex(tp.WAN(), inet.WANIface())
	if err != nil {
		t.Fatal(err)
	}
	var d *impair.Dropper
	if err := topo.InNS(tp.WAN(), func() (err error) { d, err = impair.Attach(ifindex, false); return err }); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	time.Sleep(500 * time.Millisecond)
	if err := d.SetLoss(impair.All); err != nil {
		t.Fatal(err)
	}
	const outage = 400 * time.Millisecond
	time.Sleep(outage)
	if err := d.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	r, err := s.Stop(200 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	_, dropped, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	// Everything lost was lost by the dropper, in one piece, and the
	// measured outage is the one made, give or take scheduling (the
	// sleeps above are not exact).
	if r.Lost != dropped || r.LongestRun != r.Lost {
		t.Errorf("lost %d, longest run %d; the dropper dropped %d", r.Lost, r.LongestRun, dropped)
	}
	if diff := r.LossDerived - outage; diff < -50*time.Millisecond || diff > 50*time.Millisecond {
		t.Errorf("loss-derived blackout %v, want %v ± 50ms", r.LossDerived, outage)
	}
	if r.Sent < rate {
		t.Errorf("sent %d in 1.4 s at %d/s", r.Sent, rate)
	}
}

// TestTCP sends bulk data over a real TCP connection between the LAN
// hosts.
func TestTCP(t *testing.T) {
	tp := lab(t)
	hq, _ := topo.SiteByName("hq")
	b1, _ := topo.SiteByName("branch-1")
	dst := netip.AddrPortFrom(b1.Host(), 445)
	l, err := ListenTCP(tp.LANHost(b1), dst)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	go Sink(ctx, l, func(n int) { got.Add(int64(n)) })
	c, err := DialTCP(ctx, tp.LANHost(hq), dst, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer scancel()
	sent, err := SendTCP(sctx, c, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for got.Load() < int64(sent) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if sent < 1<<20 || got.Load() != int64(sent) {
		t.Errorf("sent %d bytes, received %d", sent, got.Load())
	}
}
