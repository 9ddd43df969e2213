package probe

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ip runs iproute2's ip with args and fails the test if it fails.
func ip(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetns creates a network namespace with a random name and deletes it
// when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := "ptrnprobe-" + hex.EncodeToString(b[:])
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
	})
	return name
}

// inNetns runs f on a goroutine whose OS thread has entered namespace ns.
// Sockets f opens belong to ns for their whole life. The thread stays
// locked, so Go discards it when the goroutine ends rather than reuse it.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	entered := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := os.Open("/run/netns/" + ns)
		if err == nil {
			err = unix.Setns(int(fd.Fd()), unix.CLONE_NEWNET)
			fd.Close()
		}
		entered <- err
		if err == nil {
			f()
		}
	}()
	if err := <-entered; err != nil {
		t.Fatalf("entering netns %s: %v", ns, err)
	}
}

// TestNetnsBindToDevice builds two WAN links, veth pairs between a "site"
// namespace and a "remote" namespace, with the remote responder reachable
// over both (routes of metric 10 over wan1 and 20 over wan2). One prober is
// bound to each link. Setting wan1 down must take down the prober bound to
// it, although the responder is still reachable over wan2, and leave the
// other UP: each probe uses the link it is bound to, not the best route.
func TestNetnsBindToDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating network namespaces and veths needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: iproute2's ip is not installed")
	}
	const interval = 20 * time.Millisecond
	site, remote := newNetns(t), newNetns(t)
	ip(t, "-n", remote, "link", "set", "lo", "up")
	ip(t, "-n", remote, "addr", "add", "169.254.40.1/32", "dev", "lo")
	for i, link := range []string{"wan1", "wan2"} {
		n := i + 1
		peer := fmt.Sprintf("peer%d", n)
		ip(t, "-n", site, "link", "add", link, "type", "veth", "peer", "name", peer, "netns", remote)
		ip(t, "-n", site, "addr", "add", fmt.Sprintf("169.254.4%d.2/30", n), "dev", link)
		ip(t, "-n", remote, "addr", "add", fmt.Sprintf("169.254.4%d.1/30", n), "dev", peer)
		ip(t, "-n", site, "link", "set", link, "up")
		ip(t, "-n", remote, "link", "set", peer, "up")
	}
	route := func(link string) {
		n := link[len(link)-1:]
		ip(t, "-n", site, "route", "replace", "169.254.40.1/32", "via", "169.254.4"+n+".1", "dev", link, "metric", n+"0")
	}
	route("wan1")
	route("wan2")

	target := netip.MustParseAddrPort("169.254.40.1:4784")
	var resp *Responder
	var listenErr error
	done := make(chan struct{})
	inNetns(t, remote, func() {
		resp, listenErr = Listen(t.Context(), target, ResponderOptions{})
		close(done)
	})
	<-done
	if listenErr != nil {
		t.Fatal(listenErr)
	}
	t.Cleanup(func() { resp.Close() })

	inSite := func(f func()) { inNetns(t, site, f) }
	cfg := Config{Remote: target, Interval: interval, DownAfter: 3, UpAfter: 5}
	cfg.Path, cfg.Device = "via-wan1", "wan1"
	p1 := startProber(t, cfg, inSite)
	cfg.Path, cfg.Device = "via-wan2", "wan2"
	p2 := startProber(t, cfg, inSite)
	p1.await(t, Up, time.Second)
	p2.await(t, Up, time.Second)

	ip(t, "-n", site, "link", "set", "wan1", "down")
	cut := time.Now()
	down := p1.await(t, Down, time.Second)
	t.Logf("wan1 DOWN %v after the link went down", down.at.Sub(cut))
	if budget := 3*interval + 100*time.Millisecond; down.at.Sub(cut) > budget {
		t.Errorf("wan1 DOWN %v after the link went down, want ≤ %v", down.at.Sub(cut), budget)
	}
	time.Sleep(10 * interval)
	if s := p2.Stats(); s.Health != Up || len(p2.history()) != 1 {
		t.Errorf("wan2 while wan1 is down: %+v, changes %v; want UP throughout", s, p2.history())
	}

	ip(t, "-n", site, "link", "set", "wan2", "down")
	p2.await(t, Down, time.Second)

	ip(t, "-n", site, "link", "set", "wan1", "up")
	route("wan1") // the kernel dropped it with the link
	p1.await(t, Up, 3*time.Second)
	if s := p2.Stats(); s.Health != Down {
		t.Errorf("wan2, still down, is %v", s.Health)
	}
}
