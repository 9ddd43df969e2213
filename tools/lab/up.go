package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"golang.org/x/sys/unix"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

func up(ctx context.Context, args []string) error {
	fs := flags("up", "up [-patronusd PATH] [-scenario FILE] [-keep] [-timeout D]")
	bin := fs.String("patronusd", "", "patronusd binary to run (default: go build ./cmd/patronusd into "+dir+")")
	scenario := fs.String("scenario", "testdata/scenario1/config.json", "scenario to load (JSON_IETF, top-level sites, paths and policies)")
	keep := fs.Bool("keep", false, "on failure, leave the lab up for inspection (then run down)")
	timeout := fs.Duration("timeout", 2*time.Minute, "how long to wait for the cluster")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tp := topo.New(prefix)
	for _, ns := range tp.Namespaces() {
		if topo.Exists(ns) {
			return fmt.Errorf("the lab is up already (namespace %s exists): run `go run ./tools/lab down` first", ns)
		}
	}
	if pids, _ := filepath.Glob(filepath.Join(dir, "*.pid")); len(pids) > 0 {
		return fmt.Errorf("daemons of an earlier lab may be running (%s): run `go run ./tools/lab down` first", strings.Join(pids, ", "))
	}
	doc, err := os.ReadFile(*scenario)
	if err != nil {
		return fmt.Errorf("scenario: %w (run from the repository root or pass -scenario)", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if *bin == "" {
		*bin = filepath.Join(dir, "patronusd")
		fmt.Println("building patronusd …")
		if out, err := exec.CommandContext(ctx, "go", "build", "-o", *bin, "./cmd/patronusd").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/patronusd: %w\n%s", err, out)
		}
	} else if *bin, err = filepath.Abs(*bin); err != nil {
		return err
	}

	err = bringUp(ctx, *bin, doc, *timeout)
	if err != nil && !*keep {
		fmt.Fprintln(os.Stderr, "lab: up failed, tearing down:", err)
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		if terr := teardown(false); terr != nil {
			err = errors.Join(err, terr)
		}
		if len(logs) > 0 {
			fmt.Fprintf(os.Stderr, "lab: the daemons' logs are kept: %s\n", strings.Join(logs, " "))
		}
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "lab: up failed; the lab stays up (-keep): run `go run ./tools/lab down` when done")
	}
	return err
}

func bringUp(ctx context.Context, bin string, doc []byte, timeout time.Duration) error {
	fmt.Println("building the namespaces …")
	tp, err := topo.Build(ctx, prefix)
	if err != nil {
		return err
	}
	// From here on down owns the namespaces.
	if err := os.MkdirAll(pinRoot, 0o700); err != nil {
		return err
	}
	if err := unix.Mount("bpf", pinRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount a bpffs on %s: %w", pinRoot, err)
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hq := topo.Sites[0]
	for i, s := range topo.Sites {
		if err := startDaemon(tp, s, bin, i > 0); err != nil {
			return err
		}
		if i == 0 {
			// The branches join through hq, which must lead first.
			if err := waitCluster(ctx, tp, hq, 1); err != nil {
				return err
			}
		}
	}
	if err := waitCluster(ctx, tp, hq, len(topo.Sites)); err != nil {
		return err
	}
	fmt.Println("loading the scenario and the lab's wiring …")
	if err := load(ctx, tp, doc); err != nil {
		return err
	}
	fmt.Print(watchHelp)
	return nil
}

const watchHelp = `
The lab is up. patronusd of hq, branch-1 and branch-2 listen on 10.255.0.{1,2,3}:9339
(gNMI, plaintext), reachable from the namespace patronus-mgmt only.

  go run ./tools/lab traffic -seconds 60                  voice, video, bulk, telnet; hq's counters
  go run ./tools/lab fail -path hq-mpls--branch-1-mpls    cut a path (-loss 5 for 5 % loss)
  go run ./tools/lab recover                              remove every impairment
  go run ./tools/lab down                                 stop and remove everything

  tail -f /tmp/patronus-lab/*.log
  GNMI_USER=admin GNMI_PASS=$(cat /tmp/patronus-lab/admin-password) \
    ip netns exec patronus-mgmt go tool gnmi_cli -a 10.255.0.1:9339 -insecure -with_user_pass \
      -qt s -pi 1s -q /paths/path/state/health-status
  ip netns exec patronus-hq ip rule; ip -n patronus-hq route show table all
  ip -n patronus-wan -s link                              the WAN links' counters
`

// startDaemon starts patronusd for site s in its router namespace, in a
// session of its own so that it outlives this command, and records its
// PID.
func startDaemon(tp *topo.Topology, s topo.Site, bin string, join bool) error {
	m := s.Mgmt()
	// Plaintext on the management network, which exists only between the
	// lab's own namespaces.
	args := []string{"--insecure", "--insecure-non-loopback-dangerous", "--node-name", s.Name, "--site", s.Name,
		"--data-dir", filepath.Join(dir, s.Name),
		"--listen", netip.AddrPortFrom(m, gnmiPort).String(),
		"--http", netip.AddrPortFrom(m, httpPort).String(),
		"--raft-listen", netip.AddrPortFrom(m, raftPort).String(),
		"--admin-password-file", passwordFile}
	if _, err := labPassword(); err != nil {
		return fmt.Errorf("the lab's admin password: %w", err)
	}
	if join {
		args = append(args, "--join", gnmiAddr(topo.Sites[0]))
	}
	log, err := os.Create(filepath.Join(dir, s.Name+".log"))
	if err != nil {
		return err
	}
	defer log.Close()
	// Not CommandContext: the daemon outlives the command.
	cmd := topo.Exec(context.Background(), tp.Router(s), bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	fmt.Printf("starting patronusd for %s in %s: %s\n", s.Name, tp.Router(s), strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start patronusd for %s: %w", s.Name, err)
	}
	// ip netns exec execs the daemon, so this is its PID.
	pid := cmd.Process.Pid
	if err := os.WriteFile(pidFile(s), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	go cmd.Wait() // reap it should it die while this command runs
	return nil
}

func pidFile(s topo.Site) string { return filepath.Join(dir, s.Name+".pid") }

// waitCluster waits until the patronusd of s sees a leader and n members.
func waitCluster(ctx context.Context, tp *topo.Topology, s topo.Site, n int) error {
	c, err := dial(tp, s)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Printf("waiting for a cluster of %d …\n", n)
	var last error
	for {
		for _, d := range topo.Sites {
			if alive, err := daemonAlive(d); err == nil && !alive {
				return fmt.Errorf("patronusd of %s exited; see %s", d.Name, filepath.Join(dir, d.Name+".log"))
			}
		}
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		names, leader, err := c.members(gctx)
		cancel()
		switch {
		case err != nil:
			last = err
		case leader == "":
			last = errors.New("no leader yet")
		case len(names) < n:
			last = fmt.Errorf("members %v", names)
		default:
			slices.Sort(names)
			fmt.Printf("cluster: leader %s, members %s\n", leader, strings.Join(names, ", "))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster of %d not formed: %w (last: %v)", n, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// daemonAlive reports whether the daemon of s recorded in its PID file
// is running.
func daemonAlive(s topo.Site) (bool, error) {
	b, err := os.ReadFile(pidFile(s))
	if err != nil {
		return false, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return false, fmt.Errorf("%s: %w", pidFile(s), err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false, nil
	}
	// A zombie has an empty command line; a reused PID another one.
	return strings.Contains(string(cmdline), "\x00--node-name\x00"+s.Name+"\x00"), nil
}

// load replaces /sites, /paths and /policies with the scenario's and adds
// the lab's wiring, in one transaction sent to the leader.
func load(ctx context.Context, tp *topo.Topology, doc []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return fmt.Errorf("scenario: %w", err)
	}
	req := &gpb.SetRequest{}
	for _, k := range []string{"patronus-sites:sites", "patronus-paths:paths", "patronus-policies:policies"} {
		v, ok := top[k]
		if !ok {
			return fmt.Errorf("scenario has no %s", k)
		}
		_, name, _ := strings.Cut(k, ":")
		req.Replace = append(req.Replace, &gpb.Update{Path: gpath("/" + name),
			Val: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: v}}})
	}
	req.Update = append(req.Update, &gpb.Update{Path: gpath("/sites"),
		Val: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: topo.Wiring()}}})

	c, err := dial(tp, topo.Sites[0])
	if err != nil {
		return err
	}
	defer c.Close()
	_, leader, err := c.members(ctx)
	if err != nil {
		return err
	}
	if ls, ok := topo.SiteByName(leader); ok && ls.Name != c.site.Name {
		c.Close()
		if c, err = dial(tp, ls); err != nil {
			return err
		}
	}
	if _, err := c.Set(ctx, req); err != nil {
		return fmt.Errorf("load scenario on %s: %w", c.site.Name, err)
	}
	return nil
}
