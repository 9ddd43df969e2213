package classifier

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Addresses of the sender (A) and receiver (B) namespaces.
var (
	addrA4 = netip.MustParseAddr("10.99.0.1")
	addrB4 = netip.MustParseAddr("10.99.0.2")
	addrA6 = netip.MustParseAddr("fd00:99::1")
	addrB6 = netip.MustParseAddr("fd00:99::2")
)

const (
	markBlackhole = 1 // path index that B routes to a blackhole
	markDeliver   = 2 // path index without a routing rule: delivered
	routeTable    = 100
)

// inNS runs fn on a thread in namespace ns.
func inNS(t *testing.T, ns netns.NsHandle, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get netns: %v", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("enter netns: %v", err)
	}
	defer func() {
		// A thread that cannot go back stays locked and dies with the
		// goroutine rather than serve others in the wrong namespace.
		if err := netns.Set(orig); err != nil {
			t.Errorf("leave netns: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// newNS creates a named namespace with a random suffix, deleted at cleanup.
func newNS(t *testing.T, prefix string) netns.NsHandle {
	t.Helper()
	name := fmt.Sprintf("%s-%08x", prefix, rand.Uint32())
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name) // enters it
	if err2 := netns.Set(orig); err2 != nil {
		t.Fatalf("leave new netns: %v", err2) // the thread stays locked
	}
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	return ns
}

// testNet is a veth pair between two fresh namespaces: A sends, B has the
// classifier on its veth's ingress and routes packets marked with
// Mark(markBlackhole) to a blackhole.
type testNet struct {
	a, b   netns.NsHandle
	ifB    int
	handle *netlink.Handle // in B
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	n := &testNet{a: newNS(t, "patronus-cls-a"), b: newNS(t, "patronus-cls-b")}
	ha, err := netlink.NewHandleAt(n.a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ha.Close)
	hb, err := netlink.NewHandleAt(n.b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hb.Close)
	n.handle = hb

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(int(n.b))}
	if err := ha.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, side := range []struct {
		h      *netlink.Handle
		name   string
		v4, v6 netip.Addr
	}{{ha, "va", addrA4, addrA6}, {hb, "vb", addrB4, addrB6}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range []netip.Prefix{netip.PrefixFrom(side.v4, 24), netip.PrefixFrom(side.v6, 64)} {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
			if err := side.h.AddrAdd(l, addr); err != nil {
				t.Fatalf("add %v to %s: %v", a, side.name, err)
			}
		}
		lo, err := side.h.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		for _, up := range []netlink.Link{lo, l} {
			if err := side.h.LinkSetUp(up); err != nil {
				t.Fatal(err)
			}
		}
		if side.name == "vb" {
			n.ifB = l.Attrs().Index
		}
	}

	// In B, move the local table behind a rule that sends packets
	// marked for path markBlackhole to a table that blackholes
	// everything: a packet is delivered only if it was not steered there.
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		local := netlink.NewRule()
		local.Family, local.Priority, local.Table = fam, 0, unix.RT_TABLE_LOCAL
		if err := hb.RuleDel(local); err != nil {
			t.Fatalf("move local rule: %v", err)
		}
		local.Priority = 1000
		if err := hb.RuleAdd(local); err != nil {
			t.Fatalf("move local rule: %v", err)
		}
		mark := netlink.NewRule()
		mark.Family, mark.Priority, mark.Table, mark.Mark = fam, 500, routeTable, Mark(markBlackhole)
		if err := hb.RuleAdd(mark); err != nil {
			t.Fatalf("add fwmark rule: %v", err)
		}
		dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		if fam == unix.AF_INET6 {
			dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := hb.RouteAdd(&netlink.Route{Dst: dst, Table: routeTable, Type: unix.RTN_BLACKHOLE, Family: fam}); err != nil {
			t.Fatalf("add blackhole route: %v", err)
		}
	}
	return n
}

// receiver is a UDP socket in B that reports each datagram's TOS/TCLASS.
type receiver struct {
	conn *net.UDPConn
	v6   bool
}

func (n *testNet) listenUDP(t *testing.T, addr netip.Addr, port uint16) *receiver {
	t.Helper()
	var r receiver
	inNS(t, n.b, func() {
		conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		r = receiver{conn: conn, v6: addr.Is6()}
	})
	setsockopt(t, r.conn, func(fd int) error {
		if r.v6 {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, 1)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTOS, 1)
	})
	return &r
}

func setsockopt(t *testing.T, c syscall.Conn, fn func(fd int) error) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = fn(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("setsockopt: %v", serr)
	}
}

// receive returns the TOS of each datagram that arrives within wait of
// the previous one.
func (r *receiver) receive(t *testing.T, wait time.Duration) []uint8 {
	t.Helper()
	var tos []uint8
	buf, oob := make([]byte, 2048), make([]byte, 128)
	for {
		if err := r.conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		_, oobn, _, _, err := r.conn.ReadMsgUDP(buf, oob)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return tos
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		got := -1
		for _, m := range msgs {
			switch {
			case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS && len(m.Data) >= 1:
				got = int(m.Data[0])
			case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_TCLASS && len(m.Data) >= 4:
				got = int(binary.NativeEndian.Uint32(m.Data))
			}
		}
		if got < 0 {
			t.Fatalf("datagram without TOS control message")
		}
		tos = append(tos, uint8(got))
	}
}

// sender is a UDP socket in A with a fixed TOS/TCLASS.
func (n *testNet) dialUDP(t *testing.T, dst netip.Addr, port uint16, tos int) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	inNS(t, n.a, func() {
		var err error
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, port)))
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
	})
	setsockopt(t, conn, func(fd int) error {
		if dst.Is6() {
			return unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, tos)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_TOS, tos)
	})
	return conn
}

func send(t *testing.T, c *net.UDPConn, n, size int) {
	t.Helper()
	for range n {
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

const (
	payload     = 100
	frameUDP4   = 14 + 20 + 8 + payload
	frameUDP6   = 14 + 40 + 8 + payload
	burst       = 5
	senderTOS   = 8<<2 | 1 // DSCP 8, ECT(1)
	waitArrival = time.Second
	waitAbsent  = 300 * time.Millisecond
)

func TestClassifierNetns(t *testing.T) {
	n := newTestNet(t)
	c := newTestClassifier(t, false)
	inNS(t, n.b, func() {
		if err := c.Attach(n.ifB); err != nil {
			t.Fatal(err)
		}
		if err := c.Attach(n.ifB); err != nil {
			t.Fatalf("second Attach: %v", err)
		}
	})

	udp, tcp := u8(protoUDP), u8(protoTCP)
	port := func(p uint16) PortRange { return PortRange{p, p} }
	rules := []Rule{
		{ID: 1, Priority: 10, Protocol: udp, DstPorts: port(7001), Action: Drop, SetDSCP: -1},
		{ID: 2, Priority: 20, Protocol: udp, DstPorts: port(7002), Action: Pass, SetDSCP: 46},
		{ID: 3, Priority: 30, Protocol: udp, DstPorts: port(7003), Action: Steer, Mark: Mark(markBlackhole), SetDSCP: -1},
		{ID: 4, Priority: 40, Protocol: udp, DstPorts: port(7004), Action: Steer, Mark: Mark(markDeliver), SetDSCP: 10},
		{ID: 5, Priority: 50, Protocol: tcp, DstPorts: port(7005), Action: Steer, Mark: Mark(markDeliver), SetDSCP: -1},
		{ID: 6, Priority: 60, Dst: netip.MustParsePrefix("fd00:99::/64"), Protocol: udp, DstPorts: PortRange{7000, 7010}, Action: Pass, SetDSCP: 46},
		// Would match all IPv4 above; priority puts it last. (A rule
		// matching all IPv6 would drop neighbour discovery.)
		{ID: 7, Priority: 5000, Dst: netip.MustParsePrefix("10.0.0.0/8"), Action: Drop, SetDSCP: -1},
	}
	if err := c.SetRules(rules); err != nil {
		t.Fatal(err)
	}

	recv := map[uint16]*receiver{}
	snd := map[uint16]*net.UDPConn{}
	for p := uint16(7001); p <= 7004; p++ {
		recv[p] = n.listenUDP(t, addrB4, p)
		snd[p] = n.dialUDP(t, addrB4, p, senderTOS)
	}
	recv6 := n.listenUDP(t, addrB6, 7006)
	snd6 := n.dialUDP(t, addrB6, 7006, senderTOS)

	for p := uint16(7001); p <= 7004; p++ {
		send(t, snd[p], burst, payload)
	}
	send(t, snd6, burst, payload)

	rep := func(tos uint8, k int) []uint8 {
		var s []uint8
		for range k {
			s = append(s, tos)
		}
		return s
	}
	wantTOS := map[uint16][]uint8{
		7001: nil,                 // dropped
		7002: rep(46<<2|1, burst), // passed, DSCP rewritten, ECN kept
		7003: nil,                 // steered to the blackholed path
		7004: rep(10<<2|1, burst), // steered to a delivered path
	}
	for p := uint16(7001); p <= 7004; p++ {
		wait := waitArrival
		if wantTOS[p] == nil {
			wait = waitAbsent
		}
		if diff := cmp.Diff(wantTOS[p], recv[p].receive(t, wait)); diff != "" {
			t.Errorf("port %d: TOS of received datagrams (-want +got):\n%s", p, diff)
		}
	}
	if diff := cmp.Diff(rep(46<<2|1, burst), recv6.receive(t, waitArrival)); diff != "" {
		t.Errorf("IPv6: traffic class of received datagrams (-want +got):\n%s", diff)
	}

	counters := func() map[uint32]Counter {
		t.Helper()
		got, err := c.RuleCounters()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	want := map[uint32]Counter{
		1: {burst, burst * frameUDP4},
		2: {burst, burst * frameUDP4},
		3: {burst, burst * frameUDP4},
		4: {burst, burst * frameUDP4},
		5: {},
		6: {burst, burst * frameUDP6},
		7: {},
	}
	if diff := cmp.Diff(want, counters()); diff != "" {
		t.Fatalf("rule counters (-want +got):\n%s", diff)
	}
	pc, err := c.PathCounters()
	if err != nil {
		t.Fatal(err)
	}
	wantPC := map[uint16]Counter{markBlackhole: {burst, burst * frameUDP4}, markDeliver: {burst, burst * frameUDP4}}
	if diff := cmp.Diff(wantPC, pc); diff != "" {
		t.Errorf("path counters (-want +got):\n%s", diff)
	}

	flowOf := func(dport uint16) Flow {
		t.Helper()
		var found []Flow
		if err := c.Flows(func(f Flow) bool {
			if f.Dst.Port() == dport {
				found = append(found, f)
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if len(found) != 1 {
			t.Fatalf("%d flows to port %d, want 1: %+v", len(found), dport, found)
		}
		return found[0]
	}
	f3 := flowOf(7003)
	src3 := netip.MustParseAddrPort(snd[7003].LocalAddr().String())
	wantFlow := Flow{Protocol: protoUDP, Src: src3, Dst: netip.AddrPortFrom(addrB4, 7003), RuleID: 3, Action: Steer,
		Mark: Mark(markBlackhole), Packets: burst, Bytes: burst * frameUDP4}
	if diff := cmp.Diff(wantFlow, f3, flowOpts...); diff != "" {
		t.Errorf("flow to 7003 (-want +got):\n%s", diff)
	}
	if d := time.Since(f3.FirstSeen); d < -50*time.Millisecond || d > 10*time.Second {
		t.Errorf("flow first seen %v ago", d)
	}
	if f := flowOf(7001); f.RuleID != 1 || f.Action != Drop || f.Packets != burst {
		t.Errorf("drop flow: %+v", f)
	}

	t.Run("SetMark re-steers an existing flow", func(t *testing.T) {
		if err := c.SetMark(3, Mark(markDeliver)); err != nil {
			t.Fatal(err)
		}
		send(t, snd[7003], burst, payload)
		if got := len(recv[7003].receive(t, waitArrival)); got != burst {
			t.Errorf("after failover %d of %d datagrams arrived", got, burst)
		}
		if f := flowOf(7003); f.Mark != Mark(markDeliver) || f.Packets != 2*burst {
			t.Errorf("flow after failover: mark %#x packets %d", f.Mark, f.Packets)
		}
	})

	t.Run("eligible path pins its flows", func(t *testing.T) {
		if err := c.SetEligible(markDeliver, true); err != nil {
			t.Fatal(err)
		}
		if err := c.SetMark(3, Mark(markBlackhole)); err != nil {
			t.Fatal(err)
		}
		send(t, snd[7003], burst, payload)
		if got := len(recv[7003].receive(t, waitArrival)); got != burst {
			t.Errorf("pinned flow: %d of %d datagrams arrived", got, burst)
		}
		if err := c.SetEligible(markDeliver, false); err != nil {
			t.Fatal(err)
		}
		send(t, snd[7003], burst, payload)
		if got := len(recv[7003].receive(t, waitAbsent)); got != 0 {
			t.Errorf("after the path stopped being eligible %d datagrams still arrived", got)
		}
		if f := flowOf(7003); f.Mark != Mark(markBlackhole) {
			t.Errorf("flow mark %#x, want the blackholed path", f.Mark)
		}
	})

	t.Run("TCP", func(t *testing.T) {
		var ln net.Listener
		inNS(t, n.b, func() {
			var err error
			if ln, err = net.Listen("tcp", "10.99.0.2:7005"); err != nil {
				t.Fatal(err)
			}
		})
		defer ln.Close()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			buf := make([]byte, 1000)
			if _, err := io.ReadFull(conn, buf); err == nil {
				conn.Write([]byte("ok"))
			}
			io.Copy(io.Discard, conn)
		}()
		var conn *net.TCPConn
		inNS(t, n.a, func() {
			d, err := net.Dial("tcp", "10.99.0.2:7005")
			if err != nil {
				t.Fatal(err)
			}
			conn = d.(*net.TCPConn)
		})
		defer conn.Close()
		if _, err := conn.Write(bytes.Repeat([]byte{'x'}, 1000)); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, 2)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(conn, reply); err != nil {
			t.Fatalf("reply: %v", err)
		}
		time.Sleep(300 * time.Millisecond) // let any delayed ACK go out
		var segsOut uint32
		setsockopt(t, conn, func(fd int) error {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				segsOut = info.Segs_out
			}
			return err
		})
		got := counters()[5]
		if got.Packets != uint64(segsOut) {
			t.Errorf("TCP rule counted %d packets; the sender sent %d segments", got.Packets, segsOut)
		}
		if min := uint64(segsOut)*(14+20+20) + 1000; got.Bytes < min || got.Bytes > min+uint64(segsOut)*40 {
			t.Errorf("TCP rule counted %d bytes for %d segments carrying 1000 bytes", got.Bytes, segsOut)
		}
		if f := flowOf(7005); f.Mark != Mark(markDeliver) || f.Protocol != protoTCP || f.Packets != uint64(segsOut) {
			t.Errorf("TCP flow: %+v", f)
		}
	})

	t.Run("SetRules replaces decisions and counters", func(t *testing.T) {
		// Port 7001 now passes; rule 1 is gone and rule 8 is new.
		next := append([]Rule{{ID: 8, Priority: 10, Protocol: udp, DstPorts: port(7001), Action: Pass, SetDSCP: -1}}, rules[1:]...)
		if err := c.SetRules(next); err != nil {
			t.Fatal(err)
		}
		send(t, snd[7001], burst, payload)
		if diff := cmp.Diff(rep(senderTOS, burst), recv[7001].receive(t, waitArrival)); diff != "" {
			t.Errorf("port 7001 after SetRules (-want +got):\n%s", diff)
		}
		got := counters()
		if _, ok := got[1]; ok {
			t.Errorf("counters still report removed rule 1")
		}
		if want := (Counter{burst, burst * frameUDP4}); got[8] != want {
			t.Errorf("rule 8 counter = %+v, want %+v", got[8], want)
		}
		if want := (Counter{burst, burst * frameUDP4}); got[2] != want {
			t.Errorf("rule 2 counter = %+v, want it kept at %+v", got[2], want)
		}
		if f := flowOf(7001); f.RuleID != 8 || f.Action != Pass || f.Packets != 2*burst {
			t.Errorf("flow to 7001 after SetRules: %+v", f)
		}
	})

	t.Run("ExpireFlows", func(t *testing.T) {
		count := func() int {
			k := 0
			if err := c.Flows(func(Flow) bool { k++; return true }); err != nil {
				t.Fatal(err)
			}
			return k
		}
		before := count()
		if before < 6 {
			t.Fatalf("%d flows before expiry, want at least 6", before)
		}
		if got, err := c.ExpireFlows(time.Hour); err != nil || got != 0 {
			t.Fatalf("ExpireFlows(1h) = %d, %v; want 0", got, err)
		}
		// Every flow has been idle for the second the previous receive
		// waited; one fresh packet keeps its flow.
		send(t, snd[7002], 1, payload)
		got, err := c.ExpireFlows(500 * time.Millisecond)
		if err != nil || got != before-1 {
			t.Fatalf("ExpireFlows(500ms) = %d, %v; want %d", got, err, before-1)
		}
		if len(recv[7002].receive(t, waitAbsent)) != 1 {
			t.Fatal("datagram to 7002 lost")
		}
		if f := flowOf(7002); f.Packets != burst+1 {
			t.Errorf("surviving flow: %+v", f)
		}
	})

	t.Run("Close detaches", func(t *testing.T) {
		progs := func() int {
			var k int
			inNS(t, n.b, func() {
				res, err := link.QueryPrograms(link.QueryOptions{Target: n.ifB, Attach: ebpf.AttachTCXIngress})
				if err != nil {
					t.Fatal(err)
				}
				k = len(res.Programs)
			})
			return k
		}
		if got := progs(); got != 1 {
			t.Fatalf("%d programs on vb ingress before Close, want 1", got)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if got := progs(); got != 0 {
			t.Errorf("%d programs on vb ingress after Close, want 0", got)
		}
		// Nothing classifies any more: port 7003 traffic is delivered.
		send(t, snd[7003], burst, payload)
		if got := len(recv[7003].receive(t, waitArrival)); got != burst {
			t.Errorf("after Close %d of %d datagrams arrived", got, burst)
		}
	})
}

func TestDetach(t *testing.T) {
	n := newTestNet(t)
	c := newTestClassifier(t, false)
	inNS(t, n.b, func() {
		if err := c.Attach(n.ifB); err != nil {
			t.Fatal(err)
		}
		if err := c.Detach(n.ifB); err != nil {
			t.Fatal(err)
		}
		if err := c.Detach(n.ifB); err != nil {
			t.Fatalf("second Detach: %v", err)
		}
		res, err := link.QueryPrograms(link.QueryOptions{Target: n.ifB, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Programs) != 0 {
			t.Errorf("%d programs on vb ingress after Detach", len(res.Programs))
		}
	})
}
