package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/patronus-sdwan/patronus/dataplane/impair"
	"github.com/patronus-sdwan/patronus/tools/lab/topo"
	"github.com/patronus-sdwan/patronus/tools/lab/traffic"
)

// A path is impaired where its source endpoint's link enters the WAN:
// on the tcx ingress of the link's wan-side veth ("hq-mpls" for
// hq-mpls--branch-1-mpls), i.e. everything the source endpoint sends
// towards the far side, probes and steered traffic alike, is dropped. The
// direction back to the source is left alone, as a one-way failure of the
// access link. That is also where a real SD-WAN edge would feel a failing
// uplink first, and it impairs no other site's links.

// pathEnds parses a scenario path name, <site>-<endpoint>--<site>-<endpoint>.
func pathEnds(name string) (src, dst topo.Endpoint, err error) {
	a, b, ok := strings.Cut(name, "--")
	if !ok {
		return src, dst, fmt.Errorf("path %q: want <site>-<endpoint>--<site>-<endpoint>", name)
	}
	parse := func(s string) (topo.Endpoint, error) {
		i := strings.LastIndexByte(s, '-')
		if i < 0 {
			return topo.Endpoint{}, fmt.Errorf("path %q: %q is not <site>-<endpoint>", name, s)
		}
		site, ok := topo.SiteByName(s[:i])
		if !ok {
			return topo.Endpoint{}, fmt.Errorf("path %q: no site %q in the lab", name, s[:i])
		}
		e, ok := site.Endpoint(s[i+1:])
		if !ok {
			return topo.Endpoint{}, fmt.Errorf("path %q: site %s has no endpoint %q", name, site.Name, s[i+1:])
		}
		return e, nil
	}
	if src, err = parse(a); err != nil {
		return src, dst, err
	}
	dst, err = parse(b)
	return src, dst, err
}

func pinDir(path string) string { return filepath.Join(pinRoot, path) }

func fail(ctx context.Context, args []string) error {
	fs := flags("fail", "fail -path NAME [-loss PERCENT] [-seconds N]")
	path := fs.String("path", "", "the path to impair, e.g. hq-mpls--branch-1-mpls")
	loss := fs.Float64("loss", 100, "percentage of the packets to drop (0..100)")
	seconds := fs.Int("seconds", 10, "how long to measure the voice stream after the impairment")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *loss < 0 || *loss > 100 {
		return fmt.Errorf("-loss %v: not within 0..100", *loss)
	}
	src, dst, err := pathEnds(*path)
	if err != nil {
		return err
	}
	ppm := uint32(math.Round(*loss * 1e4))
	tp := topo.New(prefix)
	if !topo.Exists(tp.WAN()) {
		return errors.New("the lab is not up: run `go run ./tools/lab up`")
	}
	return measureVoice(ctx, tp, src, dst, *path, time.Duration(*seconds)*time.Second, func() error {
		if d, err := impair.LoadPinned(pinDir(*path)); err == nil {
			defer d.Close()
			fmt.Printf("changing the loss of %s to %v %%\n", *path, *loss)
			return d.SetLoss(ppm)
		}
		ifindex, err := topo.Ifindex(tp.WAN(), src.WANIface())
		if err != nil {
			return err
		}
		var d *impair.Dropper
		if err := topo.InNS(tp.WAN(), func() (err error) { d, err = impair.Attach(ifindex, false); return err }); err != nil {
			return err
		}
		defer d.Close()
		if err := d.SetLoss(ppm); err != nil {
			return err
		}
		fmt.Printf("dropping %v %% of what %s sends into the WAN (ingress of %s in %s)\n", *loss, *path, src.WANIface(), tp.WAN())
		return d.Pin(pinDir(*path))
	})
}

func recoverCmd(ctx context.Context, args []string) error {
	fs := flags("recover", "recover [-path NAME] [-seconds N]")
	path := fs.String("path", "", "the path to recover (default: every impaired path)")
	seconds := fs.Int("seconds", 10, "how long to measure the voice stream after the recovery")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tp := topo.New(prefix)
	paths := []string{*path}
	if *path == "" {
		ents, err := os.ReadDir(pinRoot)
		if err != nil {
			return fmt.Errorf("no impairments: %w", err)
		}
		paths = paths[:0]
		for _, e := range ents {
			if e.IsDir() { // bpffs has files of its own (maps.debug …)
				paths = append(paths, e.Name())
			}
		}
		if len(paths) == 0 {
			fmt.Println("no path is impaired")
			return nil
		}
	}
	remove := func() error {
		var errs []error
		for _, p := range paths {
			d, err := impair.LoadPinned(pinDir(p))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			errs = append(errs, d.Unpin(), d.Close())
			fmt.Printf("removed the impairment of %s\n", p)
		}
		return errors.Join(errs...)
	}
	src, dst, err := pathEnds(paths[0])
	if err != nil {
		return remove()
	}
	return measureVoice(ctx, tp, src, dst, paths[0], time.Duration(*seconds)*time.Second, remove)
}

// measureVoice runs a voice stream between the LAN hosts of the sites of
// src and dst, calls change after two seconds, keeps the stream going for
// d more, and prints its blackout and the voice policy's active path on
// the source site before and after.
func measureVoice(ctx context.Context, tp *topo.Topology, src, dst topo.Endpoint, path string, d time.Duration, change func() error) error {
	from, _ := topo.SiteByName(src.Site)
	to, _ := topo.SiteByName(dst.Site)
	sc := voice
	sc.From, sc.To, sc.Dst = tp.LANHost(from), tp.LANHost(to), netip.AddrPortFrom(to.Host(), voicePort)
	s, err := traffic.Start(sc)
	if err != nil {
		return err
	}
	c, err := dial(tp, from)
	if err != nil {
		s.Stop(0)
		return err
	}
	defer c.Close()
	show := func(when string) {
		gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		ps, err := c.policies(gctx)
		if err != nil {
			fmt.Printf("%s: %v\n", when, err)
			return
		}
		health, _ := c.pathHealth(gctx)
		for _, name := range []string{"voice-sip", "voice-rtp"} {
			if p := ps[name]; p != nil {
				fmt.Printf("%s: %s on %s: active-path %q; %s is %s\n", when, name, from.Name, p.activePath, path, health[path])
			}
		}
	}
	fmt.Printf("voice stream %s → %s (udp/%d, dscp 46, %v/s)\n", from.Name, to.Name, voicePort, sc.Rate)
	wait := func(t time.Duration) {
		select {
		case <-ctx.Done():
		case <-time.After(t):
		}
	}
	wait(2 * time.Second)
	show("before")
	if err := change(); err != nil {
		s.Stop(0)
		return err
	}
	wait(d)
	show("after")
	r, err := s.Stop(300 * time.Millisecond)
	if err != nil {
		return err
	}
	fmt.Printf("voice: %v\n", r)
	return nil
}
