package topo

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/patronus-sdwan/patronus/dataplane/classifier"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: builds the lab out of network namespaces")
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func site(t *testing.T, name string) Site {
	t.Helper()
	s, ok := SiteByName(name)
	if !ok {
		t.Fatalf("no site %s", name)
	}
	return s
}

func endpoint(t *testing.T, siteName, name string) Endpoint {
	t.Helper()
	e, ok := site(t, siteName).Endpoint(name)
	if !ok {
		t.Fatalf("no endpoint %s of %s", name, siteName)
	}
	return e
}

// build builds a lab with a random prefix, removed when the test ends.
func build(t *testing.T) *Topology {
	t.Helper()
	requireRoot(t)
	tp, err := Build(ctxT(t), fmt.Sprintf("pt%03x-", rand.IntN(1<<12)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, ns := range tp.Namespaces() {
			if Exists(ns) {
				t.Errorf("namespace %s left after Close", ns)
			}
		}
	})
	return tp
}

// echo runs a UDP echo server in namespace ns on addr until the test ends.
func echo(t *testing.T, ns string, addr netip.AddrPort) {
	t.Helper()
	var c *net.UDPConn
	if err := InNS(ns, func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
}

// exchange sends n datagrams from a socket in namespace ns bound to laddr
// (and to device dev unless it is empty) to raddr and returns how many
// echoes came back.
func exchange(t *testing.T, ns string, laddr netip.AddrPort, dev string, raddr netip.AddrPort, n int) int {
	t.Helper()
	var c net.PacketConn
	if err := InNS(ns, func() (err error) {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			if dev == "" {
				return nil
			}
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) }); err != nil {
				return err
			}
			return serr
		}}
		c, err = lc.ListenPacket(context.Background(), "udp4", laddr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := net.UDPAddrFromAddrPort(raddr)
	for i := range n {
		if _, err := c.WriteTo([]byte(fmt.Sprint(i)), to); err != nil {
			t.Fatalf("send to %v: %v", raddr, err)
		}
		time.Sleep(time.Millisecond)
	}
	got := 0
	buf := make([]byte, 2048)
	for got < n {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := c.ReadFrom(buf); err != nil {
			break
		}
		got++
	}
	return got
}

// wanDeltas returns a function that reports, for each named wan interface,
// how many packets it received (from its router) and sent (to its router)
// since wanDeltas was called.
func wanDeltas(t *testing.T, tp *Topology, ifaces ...string) func() map[string][2]uint64 {
	t.Helper()
	read := func() map[string]Counters {
		m := map[string]Counters{}
		for _, i := range ifaces {
			c, err := LinkStats(ctxT(t), tp.WAN(), i)
			if err != nil {
				t.Fatal(err)
			}
			m[i] = c
		}
		return m
	}
	before := read()
	return func() map[string][2]uint64 {
		d := map[string][2]uint64{}
		for i, c := range read() {
			d[i] = [2]uint64{c.RxPackets - before[i].RxPackets, c.TxPackets - before[i].TxPackets}
		}
		return d
	}
}

func TestLab(t *testing.T) {
	tp := build(t)
	const n = 20
	hq, b1 := site(t, "hq"), site(t, "branch-1")

	t.Run("LAN to LAN by ordinary routing", func(t *testing.T) {
		dst := netip.AddrPortFrom(b1.Host(), 7000)
		echo(t, tp.LANHost(b1), dst)
		delta := wanDeltas(t, tp, "hq-inet", "hq-mpls", "b1-inet", "b1-mpls")
		if got := exchange(t, tp.LANHost(hq), netip.AddrPortFrom(hq.Host(), 0), "", dst, n); got != n {
			t.Fatalf("%d of %d echoes from %v", got, n, dst)
		}
		d := delta()
		// Both ways over the Internet: hq's main table routes by inet,
		// and so does branch-1's.
		if d["hq-inet"][0] < n || d["b1-inet"][1] < n || d["b1-inet"][0] < n || d["hq-inet"][1] < n {
			t.Errorf("inet links did not carry the exchange: %v", d)
		}
		if d["hq-mpls"][0] >= n || d["b1-mpls"][1] >= n {
			t.Errorf("mpls links carried the exchange: %v", d)
		}
	})

	for _, tc := range []struct {
		name         string
		link         string
		other        string
		wanSrc, wanD string
	}{
		{"probe over inet", "inet", "mpls", "hq-inet", "b1-inet"},
		{"probe over mpls", "mpls", "inet", "hq-mpls", "b1-mpls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := endpoint(t, "hq", tc.link), endpoint(t, "branch-1", tc.link)
			raddr := netip.AddrPortFrom(dst.Addr, 4784)
			echo(t, tp.Router(b1), raddr)
			delta := wanDeltas(t, tp, tc.wanSrc, tc.wanD, "hq-"+tc.other, "b1-"+tc.other)
			if got := exchange(t, tp.Router(hq), netip.AddrPortFrom(src.Addr, 0), src.Name, raddr, n); got != n {
				t.Fatalf("%d of %d echoes from %v", got, n, raddr)
			}
			d := delta()
			// The probe and its reply both take the probed link.
			if d[tc.wanSrc][0] < n || d[tc.wanD][1] < n || d[tc.wanD][0] < n || d[tc.wanSrc][1] < n {
				t.Errorf("%s links did not carry probe and reply: %v", tc.link, d)
			}
			if d["hq-"+tc.other][0] >= n || d["b1-"+tc.other][0] >= n {
				t.Errorf("%s links carried probe traffic: %v", tc.other, d)
			}
		})
	}

	t.Run("clouds are separate", func(t *testing.T) {
		src, dst := endpoint(t, "hq", "mpls"), endpoint(t, "branch-1", "inet")
		raddr := netip.AddrPortFrom(dst.Addr, 4785)
		echo(t, tp.Router(b1), raddr)
		if got := exchange(t, tp.Router(hq), netip.AddrPortFrom(src.Addr, 0), src.Name, raddr, 3); got != 0 {
			t.Errorf("%d echoes from an Internet address through the MPLS cloud", got)
		}
	})

	t.Run("branch-2 over lte", func(t *testing.T) {
		b2 := site(t, "branch-2")
		src, dst := endpoint(t, "hq", "inet"), endpoint(t, "branch-2", "lte")
		raddr := netip.AddrPortFrom(dst.Addr, 4784)
		echo(t, tp.Router(b2), raddr)
		delta := wanDeltas(t, tp, "b2-lte", "b2-inet")
		if got := exchange(t, tp.Router(hq), netip.AddrPortFrom(src.Addr, 0), src.Name, raddr, n); got != n {
			t.Fatalf("%d of %d echoes from %v", got, n, raddr)
		}
		if d := delta(); d["b2-lte"][0] < n || d["b2-lte"][1] < n || d["b2-inet"][0] >= n {
			t.Errorf("lte link did not carry probe and reply: %v", d)
		}
	})

	t.Run("management network", func(t *testing.T) {
		var l net.Listener
		if err := InNS(tp.Router(b1), func() (err error) {
			l, err = net.Listen("tcp4", netip.AddrPortFrom(b1.Mgmt(), 0).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				c.Write([]byte("patronus"))
				c.Close()
			}
		}()
		c, err := Dialer(tp.MgmtNS())(ctxT(t), l.Addr().String())
		if err != nil {
			t.Fatalf("dial %v from the mgmt namespace: %v", l.Addr(), err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 16)
		if m, err := c.Read(buf); err != nil || string(buf[:m]) != "patronus" {
			t.Errorf("read %q, %v", buf[:m], err)
		}
	})
}

// TestSteering shows that the lab can steer: with the Patronus classifier
// marking hq's LAN traffic to UDP 5060 and a fwmark rule sending marked
// packets to a table whose default route is the mpls link, that traffic
// crosses the MPLS cloud while other traffic stays on inet.
func TestSteering(t *testing.T) {
	tp := build(t)
	hq, b1 := site(t, "hq"), site(t, "branch-1")
	mpls := endpoint(t, "hq", "mpls")
	mark := classifier.Mark(1)
	var cmds batch
	cmds.add("route add default via %s dev %s table 300", mpls.Gateway(), mpls.Name)
	cmds.add("rule add fwmark %#x lookup 300 pref 900", mark)
	if err := cmds.run(ctxT(t), tp.Router(hq)); err != nil {
		t.Fatal(err)
	}
	var cls *classifier.Classifier
	if err := InNS(tp.Router(hq), func() error {
		var err error
		if cls, err = classifier.New(); err != nil {
			return err
		}
		ifc, err := net.InterfaceByName(LANIface)
		if err != nil {
			return err
		}
		return cls.Attach(ifc.Index)
	}); err != nil {
		if cls != nil {
			cls.Close()
		}
		t.Fatal(err)
	}
	defer cls.Close()
	udp := uint8(17)
	if err := cls.SetRules([]classifier.Rule{{ID: 1, Priority: 10, Protocol: &udp,
		DstPorts: classifier.PortRange{Lo: 5060, Hi: 5060}, Action: classifier.Steer, Mark: mark, SetDSCP: -1}}); err != nil {
		t.Fatal(err)
	}

	const n = 50
	for _, tc := range []struct {
		port      uint16
		via, away string
	}{{5060, "mpls", "inet"}, {5061, "inet", "mpls"}} {
		t.Run(fmt.Sprint(tc.port), func(t *testing.T) {
			dst := netip.AddrPortFrom(b1.Host(), tc.port)
			echo(t, tp.LANHost(b1), dst)
			delta := wanDeltas(t, tp, "hq-"+tc.via, "hq-"+tc.away, "b1-"+tc.via)
			if got := exchange(t, tp.LANHost(hq), netip.AddrPortFrom(hq.Host(), 0), "", dst, n); got != n {
				t.Fatalf("%d of %d echoes from %v", got, n, dst)
			}
			d := delta()
			if d["hq-"+tc.via][0] < n || d["b1-"+tc.via][1] < n {
				t.Errorf("traffic to port %d did not cross the %s cloud: %v", tc.port, tc.via, d)
			}
			if d["hq-"+tc.away][0] >= n {
				t.Errorf("traffic to port %d left hq by %s: %v", tc.port, tc.away, d)
			}
		})
	}
}

func TestBuildRefusesExisting(t *testing.T) {
	tp := build(t)
	if _, err := Build(ctxT(t), tp.Prefix); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("second Build with prefix %q: %v, want ErrExists", tp.Prefix, err)
	}
	for _, ns := range tp.Namespaces() {
		if !Exists(ns) {
			t.Errorf("failed second Build removed %s", ns)
		}
	}
}

func TestWiring(t *testing.T) {
	var doc struct {
		Site []struct {
			Name   string
			Config struct {
				LANInterface []string `json:"lan-interface"`
			}
			Endpoints struct {
				Endpoint []struct {
					Name   string
					Config struct{ Name, Interface, Gateway string }
				}
			}
		}
	}
	if err := json.Unmarshal(Wiring(), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range doc.Site {
		got[s.Name] = strings.Join(s.Config.LANInterface, ",")
		for _, e := range s.Endpoints.Endpoint {
			got[s.Name+"/"+e.Name] = e.Config.Name + " " + e.Config.Interface + " " + e.Config.Gateway
		}
	}
	want := map[string]string{
		"hq": "lan0", "branch-1": "lan0", "branch-2": "lan0",
		"hq/inet":       "inet inet 100.64.1.1",
		"hq/mpls":       "mpls mpls 100.64.2.1",
		"branch-1/inet": "inet inet 100.64.3.1",
		"branch-1/mpls": "mpls mpls 100.64.4.1",
		"branch-2/inet": "inet inet 100.64.5.1",
		"branch-2/lte":  "lte lte 100.64.6.1",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Wiring() (-want +got):\n%s", diff)
	}
}
