// Command lab runs the Patronus lab (scenario 3 of the spec): the three
// sites of scenario 1 in network namespaces, one patronusd per site router
// serving its site, a WAN namespace with an Internet and an MPLS cloud in
// between, and a LAN host behind each router that sends and receives test
// traffic. Nothing of it touches the host's own network namespace.
//
//	go run ./tools/lab up        [-patronusd PATH] [-scenario FILE] [-keep]
//	go run ./tools/lab traffic   [-seconds N]
//	go run ./tools/lab fail      -path NAME [-loss PERCENT] [-seconds N]
//	go run ./tools/lab recover   [-path NAME] [-seconds N]
//	go run ./tools/lab down
//
// Every command needs root. State lives in /tmp/patronus-lab: the daemons'
// data directories, logs and PID files, and a bpffs of the lab's own where
// `fail` pins its droppers so that they outlive the command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Lab-wide names.
const (
	prefix = "patronus-"
	dir    = "/tmp/patronus-lab"
	// pinRoot is the mount point of the lab's bpffs.
	pinRoot = dir + "/bpf"
	// gnmiPort, raftPort and httpPort are patronusd's ports on each
	// router's management address.
	gnmiPort = 9339
	raftPort = 9340
	httpPort = 9341
)

const usage = `usage: go run ./tools/lab <command> [flags]

commands:
  up        build the lab (namespaces "patronus-*"), start one patronusd per site,
            wait for the 3-member cluster and load scenario 1 with the lab's wiring
  traffic   send voice, video, bulk (TCP) and telnet from hq's LAN to branch-1's
            and print hq's per-policy counters every second
  fail      impair a path: drop -loss percent (default 100) of what its source
            endpoint sends into the WAN, and print the voice stream's blackout
  recover   remove the impairment of -path (all of them without -path) and print
            the voice stream's blackout across the change
  down      stop the daemons, delete the namespaces and /tmp/patronus-lab

Run "go run ./tools/lab <command> -h" for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmds := map[string]func(context.Context, []string) error{
		"up": up, "traffic": trafficCmd, "fail": fail, "recover": recoverCmd, "down": down,
	}
	cmd, ok := cmds[os.Args[1]]
	if !ok {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "lab: needs root (network namespaces, eBPF)")
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./tools/lab %s\n\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}
