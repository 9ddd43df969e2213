package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

func down(_ context.Context, args []string) error {
	fs := flags("down", "down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return teardown(true)
}

// teardown stops the daemons (SIGTERM, then SIGKILL after 10 s), removes
// the lab's bpffs (and with it every pinned dropper) and namespaces, and
// then, if all is true, /tmp/patronus-lab; otherwise it keeps the logs.
// It does what it can and reports every failure.
func teardown(all bool) error {
	var errs []error
	var pids []int
	for _, s := range topo.Sites {
		b, err := os.ReadFile(pidFile(s))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		if alive, _ := daemonAlive(s); alive {
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			fmt.Printf("stopping patronusd of %s (pid %d)\n", s.Name, pid)
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				errs = append(errs, fmt.Errorf("SIGTERM %d: %w", pid, err))
			}
			pids = append(pids, pid)
		}
		if err := os.Remove(pidFile(s)); err != nil {
			errs = append(errs, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for running(pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if running(pid) {
			fmt.Printf("pid %d still running after 10 s: SIGKILL\n", pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("SIGKILL %d: %w", pid, err))
			}
		}
	}
	if err := unix.Unmount(pinRoot, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", pinRoot, err))
	}
	if err := topo.Remove(prefix); err != nil {
		errs = append(errs, err)
	}
	if all {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	} else {
		os.Remove(pinRoot)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Println("the lab is down")
	return nil
}

// running reports whether pid is a live process (not a zombie).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
