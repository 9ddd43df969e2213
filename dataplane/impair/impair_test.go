package impair

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	addrA = "10.98.0.1"
	addrB = "10.98.0.2"
	port  = 9999
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and loads eBPF programs")
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// inNS runs fn on a fresh thread in namespace ns. The thread is never
// returned to the scheduler: it ends with the goroutine.
func inNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// testNet is a veth pair va (in a, 10.98.0.1) – vb (in b, 10.98.0.2).
type testNet struct {
	a, b string
	ifA  int // index of va in a
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireRoot(t)
	id := rand.Uint32()
	n := &testNet{a: fmt.Sprintf("pt-imp-%08x-a", id), b: fmt.Sprintf("pt-imp-%08x-b", id)}
	for _, ns := range []string{n.a, n.b} {
		ip(t, "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("delete namespace %s: %v\n%s", ns, err, out)
			}
		})
	}
	ip(t, "-n", n.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", n.b)
	ip(t, "-n", n.a, "addr", "add", addrA+"/24", "dev", "va")
	ip(t, "-n", n.b, "addr", "add", addrB+"/24", "dev", "vb")
	ip(t, "-n", n.a, "link", "set", "va", "up")
	ip(t, "-n", n.b, "link", "set", "vb", "up")
	if err := inNS(n.a, func() error {
		i, err := net.InterfaceByName("va")
		if err == nil {
			n.ifA = i.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// attach attaches a Dropper to the egress of va.
func (n *testNet) attach(t *testing.T) *Dropper {
	t.Helper()
	var d *Dropper
	if err := inNS(n.a, func() (err error) { d, err = Attach(n.ifA, true); return err }); err != nil {
		t.Fatal(err)
	}
	return d
}

// send sends count datagrams from a to b and returns how many arrived.
// Sending is paced so that the receiver's socket never overflows: every
// datagram that is not dropped by the Dropper arrives.
func (n *testNet) send(t *testing.T, count int) int {
	t.Helper()
	var rx, tx *net.UDPConn
	if err := inNS(n.b, func() (err error) {
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(addrB), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	// A receiver the scheduler holds up on a busy machine must not lose
	// datagrams to a full socket buffer: the test counts the dropper's
	// losses. Root may exceed net.core.rmem_max.
	rc, err := rx.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var setErr error
	if err := rc.Control(func(fd uintptr) {
		setErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 32<<20)
	}); err != nil || setErr != nil {
		t.Fatalf("receive buffer: %v, %v", err, setErr)
	}
	if err := inNS(n.a, func() (err error) {
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.ParseIP(addrB), Port: port})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()

	got := make(chan int)
	go func() {
		seen := make(map[uint32]bool)
		buf := make([]byte, 64)
		for {
			rx.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			m, err := rx.Read(buf)
			if err != nil {
				got <- len(seen)
				return
			}
			if m == 4 {
				seen[binary.BigEndian.Uint32(buf)] = true
			}
		}
	}()
	var b [4]byte
	for i := range count {
		binary.BigEndian.PutUint32(b[:], uint32(i))
		if _, err := tx.Write(b[:]); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		if i%100 == 99 {
			time.Sleep(time.Millisecond)
		}
	}
	return <-got
}

func TestLoss(t *testing.T) {
	n := newTestNet(t)
	// Resolve the neighbour before anything is counted.
	if got := n.send(t, 10); got != 10 {
		t.Fatalf("warm-up: %d of 10 datagrams arrived", got)
	}
	const count = 10_000
	for _, tc := range []struct {
		name string
		ppm  uint32
		// The number dropped is binomial(count, ppm/1e6); the bounds are
		// its mean ± 5 standard deviations, which a correct dropper
		// leaves with probability below 1e-6. For p=0.05 that is
		// 500 ± 109.
		p float64
	}{
		{"none", 0, 0},
		{"5%", 50_000, 0.05},
		{"all", All, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := n.attach(t)
			defer d.Close()
			if err := d.SetLoss(tc.ppm); err != nil {
				t.Fatal(err)
			}
			if got, err := d.Loss(); err != nil || got != tc.ppm {
				t.Fatalf("Loss() = %d, %v; want %d", got, err, tc.ppm)
			}
			received := n.send(t, count)
			mean := count * tc.p
			sigma := math.Sqrt(count * tc.p * (1 - tc.p))
			lo, hi := mean-5*sigma, mean+5*sigma
			lost := float64(count - received)
			if lost < lo || lost > hi {
				t.Errorf("%d of %d datagrams lost; want %.0f..%.0f", count-received, count, lo, hi)
			}
			passed, dropped, err := d.Stats()
			if err != nil {
				t.Fatal(err)
			}
			// Nothing but the dropper may lose a datagram; it may also
			// have dropped a few packets the kernel sent on its own (IPv6
			// neighbour discovery, MLD).
			if lost := uint64(count - received); dropped < lost || dropped > lost+10 || passed+dropped < count {
				t.Errorf("Stats() = %d passed, %d dropped; %d of %d arrived", passed, dropped, received, count)
			}
		})
	}
}

func TestCloseDetaches(t *testing.T) {
	n := newTestNet(t)
	d := n.attach(t)
	if err := d.SetLoss(All); err != nil {
		t.Fatal(err)
	}
	if got := n.send(t, 100); got != 0 {
		t.Fatalf("with loss All, %d of 100 datagrams arrived", got)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if got := n.send(t, 100); got != 100 {
		t.Fatalf("after Close, %d of 100 datagrams arrived", got)
	}
}

func TestPin(t *testing.T) {
	n := newTestNet(t)
	// A bpffs of the test's own, so that nothing outside it is touched.
	fs := t.TempDir()
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", fs, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(fs, 0); err != nil {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	dir := filepath.Join(fs, "lab", "path")

	d := n.attach(t)
	if err := d.SetLoss(All); err != nil {
		t.Fatal(err)
	}
	if err := d.Pin(dir); err != nil {
		t.Fatal(err)
	}
	if err := d.Pin(dir); err == nil {
		t.Error("second Pin into the same directory succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := n.send(t, 100); got != 0 {
		t.Fatalf("pinned and closed: %d of 100 datagrams arrived, want 0", got)
	}

	p, err := LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, dropped, err := p.Stats(); err != nil || dropped < 100 {
		t.Errorf("pinned Stats: %d dropped, %v; want ≥ 100", dropped, err)
	}
	if err := p.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	if got := n.send(t, 100); got != 100 {
		t.Fatalf("pinned with loss 0: %d of 100 datagrams arrived", got)
	}
	if err := p.SetLoss(All); err != nil {
		t.Fatal(err)
	}
	if err := p.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory after Unpin: %v", err)
	}
	if got := n.send(t, 100); got != 100 {
		t.Fatalf("after Unpin and Close, %d of 100 datagrams arrived", got)
	}
	if _, err := LoadPinned(dir); err == nil {
		t.Error("LoadPinned after Unpin succeeded")
	}
}
