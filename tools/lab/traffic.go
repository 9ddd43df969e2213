package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
	"github.com/patronus-sdwan/patronus/tools/lab/traffic"
)

// The lab's streams: from hq's LAN host to branch-1's.
var (
	voice = traffic.StreamConfig{Rate: 50, Size: 160, DSCP: 46} // G.711, 20 ms
	video = traffic.StreamConfig{Rate: 300, Size: 1200, DSCP: 34}
)

const (
	voicePort  = 5060
	videoPort  = 3478
	bulkPort   = 445
	telnetPort = 23
	bulkRate   = 2 << 20 // bytes per second
)

// labSites returns the topology and the sites traffic goes between.
func labSites() (*topo.Topology, topo.Site, topo.Site, error) {
	tp := topo.New(prefix)
	if !topo.Exists(tp.WAN()) {
		return nil, topo.Site{}, topo.Site{}, fmt.Errorf("the lab is not up: run `go run ./tools/lab up`")
	}
	hq, _ := topo.SiteByName("hq")
	b1, _ := topo.SiteByName("branch-1")
	return tp, hq, b1, nil
}

func trafficCmd(ctx context.Context, args []string) error {
	fs := flags("traffic", "traffic [-seconds N]")
	seconds := fs.Int("seconds", 30, "how long to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tp, hq, b1, err := labSites()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(*seconds)*time.Second)
	defer cancel()

	streams := map[string]*traffic.Stream{}
	for name, sc := range map[string]traffic.StreamConfig{"voice": voice, "video": video} {
		port := uint16(voicePort)
		if name == "video" {
			port = videoPort
		}
		sc.From, sc.To, sc.Dst = tp.LANHost(hq), tp.LANHost(b1), netip.AddrPortFrom(b1.Host(), port)
		s, err := traffic.Start(sc)
		if err != nil {
			return err
		}
		streams[name] = s
	}

	// Bulk: one real TCP connection to port 445, remarked by the bulk
	// policy; telnet: a connection attempt to port 23 every second, which
	// block-telnet drops.
	var bulkRx, telnetOK, telnetFail atomic.Int64
	for port, count := range map[uint16]func(int){bulkPort: func(n int) { bulkRx.Add(int64(n)) }, telnetPort: func(int) {}} {
		l, err := traffic.ListenTCP(tp.LANHost(b1), netip.AddrPortFrom(b1.Host(), port))
		if err != nil {
			return err
		}
		go traffic.Sink(ctx, l, count)
	}
	bulkDone := make(chan error, 1)
	go func() {
		c, err := traffic.DialTCP(ctx, tp.LANHost(hq), netip.AddrPortFrom(b1.Host(), bulkPort), 0)
		if err != nil {
			bulkDone <- err
			return
		}
		defer c.Close()
		_, err = traffic.SendTCP(ctx, c, bulkRate)
		bulkDone <- err
	}()
	go func() {
		for ctx.Err() == nil {
			dctx, dcancel := context.WithTimeout(ctx, 900*time.Millisecond)
			c, err := traffic.DialTCP(dctx, tp.LANHost(hq), netip.AddrPortFrom(b1.Host(), telnetPort), 0)
			dcancel()
			if err == nil {
				telnetOK.Add(1)
				c.Close()
			} else if ctx.Err() == nil {
				telnetFail.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()

	c, err := dial(tp, hq)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("sending for %d s from %s (%v) to %s (%v): voice udp/%d dscp 46, video udp/%d, bulk tcp/%d, telnet tcp/%d\n",
		*seconds, hq.Name, hq.Host(), b1.Name, b1.Host(), voicePort, videoPort, bulkPort, telnetPort)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		printPolicies(ctx, c)
		fmt.Printf("received at %s: voice %d, video %d, bulk %d bytes; telnet connects %d, failed %d\n\n", b1.Name,
			streams["voice"].Received(), streams["video"].Received(), bulkRx.Load(), telnetOK.Load(), telnetFail.Load())
	}
	for _, name := range []string{"voice", "video"} {
		r, err := streams[name].Stop(300 * time.Millisecond)
		if err != nil {
			return err
		}
		fmt.Printf("%-6s %v\n", name, r)
	}
	if err := <-bulkDone; err != nil {
		fmt.Printf("bulk   %v\n", err)
	}
	fmt.Printf("bulk   %d bytes received; telnet: %d connected, %d failed\n", bulkRx.Load(), telnetOK.Load(), telnetFail.Load())
	return nil
}

// printPolicies prints the counters and active path of hq's policies.
func printPolicies(ctx context.Context, c *client) {
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	ps, err := c.policies(gctx)
	if err != nil {
		fmt.Println("  counters:", err)
		return
	}
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	slices.Sort(names)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "%s\tpackets\tbytes\tflows\t\tactive-path\n", time.Now().Format("15:04:05")+" "+c.site.Name)
	for _, n := range names {
		p := ps[n]
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t\t%s\n", n, p.packets, p.bytes, p.flows, p.activePath)
	}
	w.Flush()
}
