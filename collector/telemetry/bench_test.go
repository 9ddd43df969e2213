package telemetry_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/collector/telemetry"
	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/node/nodetest"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

// BenchmarkCollect measures one collection (what the agent does every
// second) of the scale set: 1,000 policies and 10,000 flows, with a share
// of the flows and every policy counting new packets since the last one.
// cpu-ns/op, the process's CPU time per collection (the writer, the store
// and the change feed together), divided by 1e9 is the share of one core
// that collecting once a second costs. With a reader, something reads every
// commit's decoded changes from the feed, as any ON_CHANGE subscriber makes
// the feed do; the subscribers' own work (rendering, sending) is not in it.
func BenchmarkCollect(b *testing.B) {
	for _, bc := range []struct {
		active int
		reader bool
	}{{10, false}, {100, false}, {10, true}, {100, true}} {
		name := fmt.Sprintf("%d%%-of-flows-active", bc.active)
		if bc.reader {
			name += "/with-a-reader"
		}
		active := bc.active
		b.Run(name, func(b *testing.B) {
			n := nodetest.Start(b, nodetest.Options{})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			doc, err := scale.Generate(1).JSON()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := n.Client.Set(ctx, &gpb.SetRequest{Replace: []*gpb.Update{{Path: &gpb.Path{}, Val: nodetest.JSONIETF(doc)}}}); err != nil {
				b.Fatal(err)
			}
			w := telemetry.NewWriter(n.Store)
			snap := &telemetry.Snapshot{Policies: map[string]telemetry.Policy{}}
			for i := range 1000 {
				snap.Policies[fmt.Sprintf("policy-%04d", i)] = telemetry.Policy{}
			}
			now := time.Now()
			for i := range 10000 {
				snap.Flows = append(snap.Flows, telemetry.Flow{Protocol: 17,
					Src: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), uint16(1024+i)),
					Dst: netip.AddrPortFrom(netip.MustParseAddr("10.2.0.2"), 5060), Policy: fmt.Sprintf("policy-%04d", i%1000),
					FirstSeen: now, LastSeen: now})
			}
			if err := w.Write(ctx, snap); err != nil {
				b.Fatal(err)
			}
			var decoded atomic.Uint64
			read := make(chan struct{}, 1)
			if bc.reader {
				// A reader of everything, the flow table included.
				_, done := n.Publisher.Want([][]*gpb.PathElem{nil})
				defer done()
				go func() {
					c := n.Feed.From(n.Feed.Last())
					var buf []feed.Commit
					for {
						var err error
						if buf, err = c.Next(ctx, nil, buf[:0]); err != nil {
							return
						}
						decoded.Store(buf[len(buf)-1].Seq)
						select {
						case read <- struct{}{}:
						default:
						}
					}
				}()
			}
			b.ResetTimer()
			cpu0 := cpuTime(b)
			for i := range b.N {
				for name, p := range snap.Policies {
					p.PacketsMatched += 10
					p.BytesMatched += 1000
					snap.Policies[name] = p
				}
				for j := range snap.Flows {
					if (j+i)%100 < active {
						snap.Flows[j].Packets++
						snap.Flows[j].Bytes += 100
						snap.Flows[j].LastSeen = snap.Flows[j].LastSeen.Add(time.Second)
					}
				}
				if err := w.Write(ctx, snap); err != nil {
					b.Fatal(err)
				}
				if bc.reader {
					// Wait for the reader to have decoded this commit.
					for last := n.Feed.Last(); decoded.Load() < last; {
						<-read
					}
				}
			}
			b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
