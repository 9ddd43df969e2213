// Package impair is the lab's link impairment: a small eBPF program on the
// tcx hook of one interface that drops a configurable fraction of the IP
// packets crossing it, or all of them. It stands in for netem, which the
// lab's kernel does not have; loss is independent per packet
// (bpf_get_prandom_u32), with no correlation and no delay.
//
// ARP frames are never dropped, so neighbour entries stay valid and IP
// traffic sees exactly the configured loss.
//
// A Dropper belongs to the process that attached it unless it is pinned in
// bpffs (Pin), in which case it outlives the process until Unpin: the lab
// command uses that to impair a path in one invocation and recover it in
// another.
package impair

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel impair bpf/impair.c -- -I/usr/include/x86_64-linux-gnu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// All is the loss, in parts per million, that drops every IP packet.
const All uint32 = 1_000_000

// Indexes of the stats map; they must agree with bpf/impair.c.
const (
	statPassed  = 0
	statDropped = 1
)

// Names of the pinned objects inside a Pin directory.
const (
	pinLink  = "link"
	pinLoss  = "loss"
	pinStats = "stats"
)

// Dropper is one attached impairment. Its methods are not safe for
// concurrent use.
type Dropper struct {
	loss, stats *ebpf.Map
	link        link.Link
	// prog is nil for a Dropper opened with LoadPinned.
	prog   *ebpf.Program
	pinDir string
}

// Attach loads the dropper and attaches it to the tcx egress (egress true)
// or ingress hook of the interface with index ifindex. The index is
// resolved in the network namespace of the calling thread, so a caller
// working on another namespace must call Attach from a thread locked into
// it (runtime.LockOSThread, then setns). The new Dropper drops nothing
// until SetLoss.
//
// The program is attached after any other tcx program on the hook is, so
// it sees what they let through.
func Attach(ifindex int, egress bool) (*Dropper, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("impair: remove memlock limit: %w", err)
	}
	var objs impairObjects
	if err := loadImpairObjects(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("impair: load objects: %+v", ve)
		}
		return nil, fmt.Errorf("impair: load objects: %w", err)
	}
	attach := ebpf.AttachTCXIngress
	if egress {
		attach = ebpf.AttachTCXEgress
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   objs.Impair,
		Attach:    attach,
		Anchor:    link.Tail(),
	})
	if err != nil {
		objs.Close()
		return nil, fmt.Errorf("impair: attach to ifindex %d: %w", ifindex, err)
	}
	return &Dropper{loss: objs.Loss, stats: objs.Stats, link: l, prog: objs.Impair}, nil
}

// SetLoss sets the fraction of IP packets dropped, in parts per million:
// 0 drops none, 50_000 drops 5 %, All (or more) drops every one. It takes
// effect for the next packet.
func (d *Dropper) SetLoss(ppm uint32) error {
	if err := d.loss.Put(uint32(0), ppm); err != nil {
		return fmt.Errorf("impair: set loss: %w", err)
	}
	return nil
}

// Loss returns the fraction of IP packets dropped, in parts per million.
func (d *Dropper) Loss() (uint32, error) {
	var ppm uint32
	if err := d.loss.Lookup(uint32(0), &ppm); err != nil {
		return 0, fmt.Errorf("impair: read loss: %w", err)
	}
	return ppm, nil
}

// Stats returns how many IP packets the dropper has let through and
// dropped since it was attached.
func (d *Dropper) Stats() (passed, dropped uint64, err error) {
	sum := func(i uint32) (uint64, error) {
		var per []uint64
		if err := d.stats.Lookup(i, &per); err != nil {
			return 0, fmt.Errorf("impair: read stats: %w", err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	if passed, err = sum(statPassed); err != nil {
		return 0, 0, err
	}
	dropped, err = sum(statDropped)
	return passed, dropped, err
}

// Pin pins the dropper's link and maps in dir, a directory on a bpffs that
// must not exist yet (its parent is created if missing), so that the
// impairment stays attached after Close and after the process exits, until
// Unpin. LoadPinned opens it again.
func (d *Dropper) Pin(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("impair: pin: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("impair: pin: %w", err)
	}
	d.pinDir = dir
	for _, p := range []struct {
		name string
		pin  func(string) error
	}{{pinLoss, d.loss.Pin}, {pinStats, d.stats.Pin}, {pinLink, d.link.Pin}} {
		if err := p.pin(filepath.Join(dir, p.name)); err != nil {
			d.Unpin()
			return fmt.Errorf("impair: pin %s: %w", p.name, err)
		}
	}
	return nil
}

// LoadPinned opens the dropper that Pin pinned in dir. Its Close leaves the
// impairment in place; Unpin then Close removes it.
func LoadPinned(dir string) (*Dropper, error) {
	d := &Dropper{pinDir: dir}
	var err error
	if d.loss, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinLoss), nil); err != nil {
		return nil, fmt.Errorf("impair: open pinned dropper: %w", err)
	}
	if d.stats, err = ebpf.LoadPinnedMap(filepath.Join(dir, pinStats), nil); err != nil {
		d.Close()
		return nil, fmt.Errorf("impair: open pinned dropper: %w", err)
	}
	if d.link, err = link.LoadPinnedLink(filepath.Join(dir, pinLink), nil); err != nil {
		d.Close()
		return nil, fmt.Errorf("impair: open pinned dropper: %w", err)
	}
	return d, nil
}

// Unpin removes the pins and the pin directory, so that Close detaches the
// dropper. Pins that are already gone are not an error.
func (d *Dropper) Unpin() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Unpin())
	}
	for _, m := range []*ebpf.Map{d.loss, d.stats} {
		if m != nil {
			errs = append(errs, m.Unpin())
		}
	}
	if d.pinDir != "" {
		if err := os.RemoveAll(d.pinDir); err != nil {
			errs = append(errs, err)
		}
		d.pinDir = ""
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("impair: unpin: %w", err)
	}
	return nil
}

// Close releases the dropper. Unless it is pinned, that detaches it from
// the interface and frees the program and maps; a pinned dropper stays.
// Close is idempotent.
func (d *Dropper) Close() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Close())
	}
	if d.prog != nil {
		errs = append(errs, d.prog.Close())
	}
	for _, m := range []*ebpf.Map{d.loss, d.stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	d.link, d.prog, d.loss, d.stats = nil, nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("impair: close: %w", err)
	}
	return nil
}
