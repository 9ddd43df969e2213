// Package replication makes the store the state machine of a hashicorp/raft
// cluster: every Set is one Raft log entry, applied to Pebble in one batch
// together with its log index on every node.
//
// The Raft log lives in raft-wal, snapshots are streamed from Pebble
// snapshots (taken without blocking apply), and this is the only package that
// imports raft.
package replication

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Timing holds the Raft timeouts. The defaults were chosen by measuring
// failover on a 2-core machine: a follower notices a dead leader within one
// to two heartbeat timeouts and an election then takes one to two election
// timeouts. The leader lease (how long a leader keeps leading without
// hearing from a quorum) is as long as the heartbeat timeout allows: at
// 100 ms a leader stalled for 115 ms on a machine loaded 2.5 times over
// stepped down in a soak without faults. It does not slow failover, only
// how soon a leader cut off from its quorum stops.
type Timing struct {
	Heartbeat, Election, LeaderLease, Commit time.Duration
}

// DefaultTiming is used for zero fields of Config.Timing.
var DefaultTiming = Timing{
	Heartbeat:   150 * time.Millisecond,
	Election:    150 * time.Millisecond,
	LeaderLease: 150 * time.Millisecond,
	Commit:      5 * time.Millisecond,
}

// Config configures a replicated node.
type Config struct {
	// Dir holds the Raft log and snapshots.
	Dir string
	// NodeName is the Raft server ID.
	NodeName string
	// RaftAddr is the address the Raft transport listens on and advertises.
	RaftAddr string
	// Bootstrap makes a node with no Raft state the single voter of a new
	// cluster.
	Bootstrap bool
	Store     *store.Store
	Engine    *txn.Engine
	Schema    *schema.Schema
	Timing    Timing
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one (0: 8192); TrailingLogs how many entries a snapshot
	// leaves in the log for slow followers (0: 10240).
	SnapshotThreshold, TrailingLogs uint64
	Logger                          *slog.Logger
	// TLS, if set, secures Raft traffic with mutual TLS. It is called for
	// every connection, accepted or dialed, and returns a new configuration
	// with this node's certificate and the CA that both ends' certificates
	// must chain to (the dialing end sets ServerName to the host of the
	// address it dials). It returns nil, no error, to let a connection go
	// in plaintext (a cluster from before its CA), or an error to refuse
	// it. Without TLS the transport is plain TCP.
	TLS func() (*tls.Config, error)
}

// Node is this process's member of the Raft cluster.
type Node struct {
	raft      *raft.Raft
	fsm       *fsm
	transport *raft.NetworkTransport
	logs      *logStore
	log       *slog.Logger

	// startIndex is the last index in the log when the node started.
	startIndex uint64
	id         raft.ServerID

	closed chan struct{} // closed by shutdown
	// shutdownOnce guards shutdown, which Close and a halt call.
	shutdownOnce sync.Once
	shutdownErr  error

	mu        sync.Mutex
	observers []*raft.Observer // guarded by mu
	// failing holds, while this node leads, the peers whose heartbeats
	// fail, with the last time each answered; guarded by mu.
	failing map[raft.ServerID]time.Time
	// failingTerm is the term failing belongs to; guarded by mu.
	failingTerm uint64
	applied     uint64        // guarded by mu
	waiters     chan struct{} // closed and replaced on each apply; guarded by mu

	// leaderChanges counts the leaders this node has seen elected; the
	// observer that counts them runs on Raft's goroutine.
	leaderChanges atomic.Uint64
	// handedOff is when this node last handed leadership over for lack of
	// room (since monoStart; see handOff).
	handedOff atomic.Int64
	// leaderMu guards the last leader counted and its term. It is not mu:
	// Raft calls the observer with its observer lock held, which Close
	// takes while holding mu.
	leaderMu   sync.Mutex
	lastLeader raft.ServerID // guarded by leaderMu
	lastTerm   uint64        // guarded by leaderMu
}

// Errors of Apply. ErrNotLeader means nothing was proposed; ErrUnknown means
// the entry was proposed but leadership was lost before it was known to be
// committed, so it may or may not apply.
var (
	ErrNotLeader = errors.New("replication: not the leader")
	ErrUnknown   = errors.New("replication: leadership was lost while the change was in flight; its outcome is unknown")
	// ErrHandingOff means nothing was proposed: this leader's data dir is
	// below its reserve and it is handing leadership to another voter,
	// where the change may be retried. It comes wrapped with the
	// syscall.ENOSPC of the room check.
	ErrHandingOff = errors.New("replication: this leader is out of room and hands leadership over")
	// ErrHalted means the entry was committed but this node stopped
	// applying the log before it (Halted): the change applies on the other
	// members, and here once the node is restarted.
	ErrHalted = errors.New("replication: this node stopped applying the cluster log; the change was committed, but this node has not applied it")
)

// Open starts the node's Raft instance over cfg.Store.
func Open(cfg Config) (*Node, error) {
	t := cfg.Timing
	if t.Heartbeat == 0 {
		t.Heartbeat = DefaultTiming.Heartbeat
	}
	if t.Election == 0 {
		t.Election = DefaultTiming.Election
	}
	if t.LeaderLease == 0 {
		t.LeaderLease = DefaultTiming.LeaderLease
	}
	if t.Commit == 0 {
		t.Commit = DefaultTiming.Commit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "wal"), 0o700); err != nil {
		return nil, fmt.Errorf("replication: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	logs, err := openLogStore(filepath.Join(cfg.Dir, "wal"), hlog)
	if err != nil {
		return nil, fmt.Errorf("replication: open raft-wal: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		logs.Close()
		return nil, fmt.Errorf("replication: snapshot store: %w", err)
	}
	transport, err := newTransport(cfg, hlog)
	if err != nil {
		logs.Close()
		return nil, err
	}
	n := &Node{transport: transport, logs: logs, log: cfg.Logger, waiters: make(chan struct{}), closed: make(chan struct{})}
	n.fsm = &fsm{st: cfg.Store, eng: cfg.Engine, schema: cfg.Schema, node: cfg.NodeName, onApply: n.noteApplied,
		halted: make(chan struct{}), closed: n.closed, log: cfg.Logger}
	// A halted node stops Raft at once: its leadership goes to another
	// voter, and whatever waits for an entry here gets an answer, before
	// the process comes to close the node.
	started := make(chan struct{})
	n.fsm.onHalt = func() {
		go func() {
			<-started // n.raft is set
			n.shutdown()
		}()
	}
	if applied, err := readApplied(cfg.Store); err == nil {
		n.applied = applied
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	n.id = rc.LocalID
	rc.HeartbeatTimeout = t.Heartbeat
	rc.ElectionTimeout = t.Election
	rc.LeaderLeaseTimeout = t.LeaderLease
	rc.CommitTimeout = t.Commit
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	// The store already holds everything up to its applied index, which a
	// snapshot never exceeds (Snapshot syncs the store first); restoring the
	// snapshot at start would roll the store back until the log replays.
	rc.NoSnapshotRestoreOnStart = true
	rc.SnapshotThreshold = 8192
	rc.TrailingLogs = 10240
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
		rc.SnapshotInterval = time.Second
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.Logger = hlog
	// Raft reads each entry back to replicate it and, on followers, to
	// apply it: the cache of the newest entries answers those reads from
	// memory instead of the WAL's segment files.
	cached, err := raft.NewLogCache(4096, logs)
	if err != nil {
		transport.Close()
		logs.Close()
		return nil, fmt.Errorf("replication: log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, n.fsm, cached, logs, snaps, unpipelined{transport})
	if err != nil {
		transport.Close()
		logs.Close()
		return nil, fmt.Errorf("replication: start raft: %w", err)
	}
	n.raft = r
	close(started)
	n.startIndex = r.LastIndex()
	n.watchHeartbeats()
	n.countLeaders()
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(logs, logs, snaps)
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("replication: %w", err)
		}
		if !has {
			f := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: transport.LocalAddr(), Suffrage: raft.Voter}}})
			if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.Close()
				return nil, fmt.Errorf("replication: bootstrap: %w", err)
			}
		}
	}
	return n, nil
}

// HasState reports whether dir (Config.Dir) holds Raft state, a log, a term
// or a snapshot, as the data dir of a node that has been a member of a
// cluster does. The node must not be open.
func HasState(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "wal")); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	hlog := hclog.NewNullLogger()
	logs, err := wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(hlog))
	if err != nil {
		return false, fmt.Errorf("replication: open raft-wal: %w", err)
	}
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hlog)
	if err != nil {
		return false, fmt.Errorf("replication: snapshot store: %w", err)
	}
	has, err := raft.HasExistingState(logs, logs, snaps)
	if err != nil {
		return false, fmt.Errorf("replication: %w", err)
	}
	return has, nil
}

// Close stops Raft and closes the log. The store is the caller's.
func (n *Node) Close() error {
	n.mu.Lock()
	for _, o := range n.observers {
		n.raft.DeregisterObserver(o)
	}
	n.mu.Unlock()
	err := n.shutdown()
	n.transport.Close()
	if cerr := n.logs.Close(); err == nil {
		err = cerr
	}
	return err
}

// shutdown stops Raft, once: the FSM, waiting for closed if it halted,
// returns first.
func (n *Node) shutdown() error {
	n.shutdownOnce.Do(func() {
		close(n.closed)
		n.shutdownErr = n.raft.Shutdown().Error()
	})
	return n.shutdownErr
}

func (n *Node) noteApplied(index uint64) {
	n.mu.Lock()
	if index > n.applied {
		n.applied = index
	}
	close(n.waiters)
	n.waiters = make(chan struct{})
	n.mu.Unlock()
}

// Halted is closed once this node has stopped applying the cluster log,
// for HaltErr: a committed entry it cannot apply (its store failed, or the
// entry is of a kind this build does not know). The node then applies
// nothing more; it is to be closed, and restarted once the cause is mended
// (it applies the log again from what its store holds).
func (n *Node) Halted() <-chan struct{} { return n.fsm.halted }

// HaltErr returns why the node halted, once Halted is closed.
func (n *Node) HaltErr() error {
	if !n.fsm.isHalted() {
		return nil
	}
	return n.fsm.haltErr
}

// Applied returns the index of the last entry applied to the store.
func (n *Node) Applied() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applied
}

// WaitApplied waits until the entry at index has been applied to this
// node's store. It returns ErrHalted if the node halts first.
func (n *Node) WaitApplied(ctx context.Context, index uint64) error {
	for {
		n.mu.Lock()
		if n.applied >= index {
			n.mu.Unlock()
			return nil
		}
		w := n.waiters
		n.mu.Unlock()
		select {
		case <-w:
		case <-n.fsm.halted:
			return n.fsm.haltedErr()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitCaughtUp waits until the node has applied everything its log held
// when it started, so that it does not serve a restart's stale view. Entries
// are only applied once a leader confirms them, so with no quorum reachable
// it waits until ctx ends. It returns ErrHalted if the node halts meanwhile.
func (n *Node) WaitCaughtUp(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for n.raft.AppliedIndex() < n.startIndex || n.Applied() < n.lastCommand() {
		select {
		case <-t.C:
		case <-n.fsm.halted:
			return n.fsm.haltedErr()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// lastCommand is the index of the last command entry at or below the index
// the node started with: Raft's own entries (no-ops, barriers) never reach
// the store, so the store's applied index may stop short of startIndex.
func (n *Node) lastCommand() uint64 {
	for i := n.startIndex; i > 0; i-- {
		var l raft.Log
		if err := n.logs.GetLog(i, &l); err != nil {
			return 0 // compacted away: it is in the store already
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// Apply proposes prepared ops as one entry and returns the Set's result once
// the entry is committed and applied here, with the entry's index. It must
// be called on the leader.
func (n *Node) Apply(ctx context.Context, ops []txn.Op, meta txn.Meta) (*txn.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	if meta.Time == 0 {
		meta.Time = time.Now().UnixNano()
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	cmd := txn.EncodeCommand(ops, meta)
	// With nothing in flight, evaluate the Set here once and replicate
	// what it writes (writeset.go); the check is repeated, exactly, where
	// the entry is applied.
	if last := n.raft.LastIndex(); n.Applied() == last {
		if ws := n.fsm.evaluate(cmd, ops, meta, last); ws != nil {
			cmd = ws
		}
	}
	r, idx, err := n.propose(cmd, timeout)
	if err != nil {
		return nil, 0, err
	}
	return r.res, idx, r.err
}

// Reject proposes the audit-only record of a request refused before the
// log and returns once it is committed and applied here, with the entry's
// index. It must be called on the leader.
func (n *Node) Reject(ctx context.Context, rej txn.Rejection) (uint64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	if rej.Time == 0 {
		rej.Time = time.Now().UnixNano()
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	r, idx, err := n.propose(txn.EncodeRejection(rej), timeout)
	if err != nil {
		return 0, err
	}
	return idx, r.err
}

// SecretPrefix starts the internal keys that hold the cluster's own
// credentials, such as the cluster secret and CA: replicated (in the log and
// in snapshots) but, like every internal key, never served.
const SecretPrefix = "\xfds/"

// SetOnce proposes an entry that sets key, an internal key under
// SecretPrefix, to value unless the store already holds the key, and
// returns once the entry is applied here. It must be called on the leader.
// The first value committed stays: two leaders that each propose one agree
// on the first.
func (n *Node) SetOnce(ctx context.Context, key string, value []byte) error {
	if !strings.HasPrefix(key, SecretPrefix) {
		return fmt.Errorf("replication: SetOnce of %q: not a key under the secret prefix", key)
	}
	if n.raft.State() != raft.Leader {
		return ErrNotLeader
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	r, _, err := n.propose(encodeSetOnce(key, value), timeout)
	if err != nil {
		return err
	}
	return r.err
}

func (n *Node) propose(cmd []byte, timeout time.Duration) (*applyResult, uint64, error) {
	if err := n.roomFor(len(cmd)); err != nil {
		// Short of room for any entry, not only for this one: a voter
		// with room takes over.
		if n.logs.room(0) != nil && n.handOff(err) {
			return nil, 0, fmt.Errorf("%w: %w", ErrHandingOff, err)
		}
		return nil, 0, err
	}
	f := n.raft.Apply(cmd, timeout)
	if err := n.await(f); err != nil {
		switch {
		case errors.Is(err, ErrHalted):
			return nil, 0, err
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			// A leader handing over refuses entries before it
			// proposes them.
			return nil, 0, ErrNotLeader
		case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrRaftShutdown):
			return nil, 0, ErrUnknown
		}
		return nil, 0, fmt.Errorf("replication: %w", err)
	}
	return f.Response().(*applyResult), f.Index(), nil
}

// diskReserve is the free space the data dir must keep beyond an entry's
// own size: room for raft-wal to create its next log segment, which it
// preallocates (64 MiB), and 16 MiB for Pebble's write-ahead log and a
// memtable flush. Below it the leader refuses new entries rather than let
// a node fail on a full disk while applying one it can no longer refuse,
// and every node's log refuses appends (logStore).
var diskReserve = uint64(wal.DefaultSegmentSize) + 16<<20

// roomFor returns an error wrapping syscall.ENOSPC when the data dir would
// keep less than diskReserve free after an entry of size bytes (and what
// applying it writes); nothing is proposed then.
func (n *Node) roomFor(size int) error {
	if err := n.logs.room(4 * uint64(size)); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	return nil
}

// LogFull returns an error wrapping syscall.ENOSPC while this node's Raft
// log refuses entries because the data dir is nearly full (diskReserve),
// and nil otherwise. The log takes entries again, without a restart, once
// there is room.
func (n *Node) LogFull() error {
	if err := n.logs.room(0); err != nil {
		return fmt.Errorf("replication: this node's raft log takes no entries: %w", err)
	}
	return nil
}

// handOffEvery is how often a leader short of room hands leadership over
// at most: if the new leader is short of room too, it hands over in turn,
// not at once.
const handOffEvery = 10 * time.Second

// monoStart is the base of handedOff's monotonic times.
var monoStart = time.Now()

// otherVoters reports whether the configuration has a voter besides this
// node.
func (n *Node) otherVoters() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != n.id {
			return true
		}
	}
	return false
}

// handOff, on a leader whose data dir is below its reserve (why), hands
// leadership to the most up-to-date other voter in the background, at most
// every handOffEvery: one node's full disk then stops the writes sent to
// that node, not the cluster's. It reports whether there is a voter to
// hand over to; a single voter keeps leading.
func (n *Node) handOff(why error) bool {
	if n.raft.State() != raft.Leader || !n.otherVoters() {
		return false
	}
	now, last := int64(time.Since(monoStart)), n.handedOff.Load()
	if last != 0 && now-last < int64(handOffEvery) || !n.handedOff.CompareAndSwap(last, now) {
		return true
	}
	go func() {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("the data dir is nearly full; handing leadership over failed", "reason", why, "err", err)
			return
		}
		n.log.Warn("the data dir is nearly full; handed leadership over", "reason", why)
	}()
	return true
}

// Barrier waits until every entry committed before it is applied here; the
// leader uses it to serve a linearizable read after VerifyLeader.
func (n *Node) Barrier(ctx context.Context) error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return ErrNotLeader
	}
	// A barrier entry commits in the leader's own term, so everything
	// acknowledged before it, by any earlier leader, is applied here after.
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := n.await(n.raft.Barrier(timeout)); err != nil {
		return fmt.Errorf("replication: barrier: %w", err)
	}
	return nil
}

// await returns f's error, or, once Raft is shut down, ErrRaftShutdown (or
// ErrHalted, if this node halted) after a second's grace: hashicorp/raft
// answers no future it still holds when it stops (an entry queued to be
// proposed, or committed and queued for the FSM; hashicorp/raft#498), and a
// halted node stops Raft under proposers that must return for the process
// to exit.
func (n *Node) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.closed:
	}
	select {
	case err := <-done:
		return err
	case <-time.After(time.Second):
		if n.fsm.isHalted() {
			return n.fsm.haltedErr()
		}
		return raft.ErrRaftShutdown
	}
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's node name, or "" when there is none.
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// Member is one server of the Raft configuration.
type Member struct {
	Name, RaftAddr string
	Voter          bool
}

// Members returns the current Raft configuration.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{Name: string(s.ID), RaftAddr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddMember adds (or updates) a server; on the leader only.
func (n *Node) AddMember(m Member) error {
	var f raft.IndexFuture
	if m.Voter {
		f = n.raft.AddVoter(raft.ServerID(m.Name), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second)
	} else {
		f = n.raft.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second)
	}
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return ErrNotLeader
		}
		return fmt.Errorf("replication: add %s: %w", m.Name, err)
	}
	return nil
}

// RemoveMember removes a server; on the leader only.
func (n *Node) RemoveMember(name string) error {
	if err := n.raft.RemoveServer(raft.ServerID(name), 0, 10*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return ErrNotLeader
		}
		return fmt.Errorf("replication: remove %s: %w", name, err)
	}
	return nil
}

// Status is this node's view of the cluster.
type Status struct {
	Role                            string // LEADER, FOLLOWER, CANDIDATE or NONVOTER
	Leader                          string
	Term, CommitIndex, AppliedIndex uint64
}

// Status reports the node's role, leader, term and indexes.
func (n *Node) Status() Status {
	st := Status{Leader: n.Leader(), Term: n.raft.CurrentTerm(), CommitIndex: n.raft.CommitIndex(), AppliedIndex: n.raft.AppliedIndex()}
	switch n.raft.State() {
	case raft.Leader:
		st.Role = "LEADER"
	case raft.Candidate:
		st.Role = "CANDIDATE"
	default:
		st.Role = "FOLLOWER"
		if n.nonvoter() {
			st.Role = "NONVOTER"
		}
	}
	return st
}

func (n *Node) nonvoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == n.id {
			return s.Suffrage == raft.Nonvoter
		}
	}
	return false
}

// TransferLeadership hands leadership to another voter.
func (n *Node) TransferLeadership() error {
	return n.raft.LeadershipTransfer().Error()
}

// LeaderChanges returns a channel that receives the new leader's name (or
// "") on every change, until the node closes. Changes that arrive while the
// reader is busy are dropped: a reader should read the current Status then.
func (n *Node) LeaderChanges() <-chan string {
	obs := n.observe(16, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	out := make(chan string, 16)
	go func() {
		defer close(out)
		for {
			select {
			case ob := <-obs:
				select {
				case out <- string(ob.Data.(raft.LeaderObservation).LeaderID):
				default:
				}
			case <-n.closed:
				return
			}
		}
	}()
	return out
}

// Contact is what this node knows of its contact with another member.
type Contact struct {
	Reachable bool
	// LastContact is when it last heard from the member; zero if never.
	LastContact time.Time
}

// Contacts reports this node's contact with the members it can judge: all
// of them on the leader (from its heartbeats), itself and the leader on a
// follower. lastContactBound is how long a follower may go without hearing
// from its leader before it reports it unreachable.
func (n *Node) Contacts(now time.Time, lastContactBound time.Duration) map[string]Contact {
	out := map[string]Contact{string(n.id): {Reachable: true, LastContact: now}}
	if n.raft.State() != raft.Leader {
		_, id := n.raft.LeaderWithID()
		if id != "" && id != n.id {
			last := n.raft.LastContact()
			out[string(id)] = Contact{Reachable: !last.IsZero() && now.Sub(last) <= lastContactBound, LastContact: last}
		}
		return out
	}
	members, err := n.Members()
	if err != nil {
		return out
	}
	term := n.raft.CurrentTerm()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failingTerm != term {
		n.failing, n.failingTerm = nil, term
	}
	for _, m := range members {
		if m.Name == string(n.id) {
			continue
		}
		if last, bad := n.failing[raft.ServerID(m.Name)]; bad {
			out[m.Name] = Contact{LastContact: last}
		} else {
			out[m.Name] = Contact{Reachable: true, LastContact: now}
		}
	}
	return out
}

// countLeaders counts every leader this node sees elected: a new leader, or
// the same one in a new term. A lost leader that comes back in its own term
// (a follower's brief doubt) is not counted again. The count is kept in the
// observer's filter, which forwards nothing.
func (n *Node) countLeaders() {
	n.observe(1, func(o *raft.Observation) bool {
		lo, ok := o.Data.(raft.LeaderObservation)
		if !ok || lo.LeaderID == "" {
			return false
		}
		term := n.raft.CurrentTerm()
		n.leaderMu.Lock()
		if lo.LeaderID != n.lastLeader || term != n.lastTerm {
			n.lastLeader, n.lastTerm = lo.LeaderID, term
			n.leaderChanges.Add(1)
		}
		n.leaderMu.Unlock()
		return false
	})
}

// Stats is this node's Raft state, for metrics and readiness.
type Stats struct {
	// Role is as in Status: LEADER, FOLLOWER, CANDIDATE or NONVOTER, or
	// SHUTDOWN once Raft has stopped.
	Role string
	// Leader is the leader's node name, "" when none is known.
	Leader string
	Term   uint64
	// CommitIndex is the last entry known to be committed, AppliedIndex the
	// last one handed to the state machine, LastIndex the last one in this
	// node's log (or its latest snapshot).
	CommitIndex, AppliedIndex, LastIndex uint64
	// StoreApplied is the last command entry the store holds.
	StoreApplied uint64
	// LeaderChanges counts the leaders this node has seen elected since it
	// started.
	LeaderChanges uint64
	// Voters and Nonvoters count the servers of the Raft configuration.
	Voters, Nonvoters int
	// LogFull is set while this node's log refuses entries because the
	// data dir is below its reserve (diskReserve; checked now). LogReopens
	// counts the times the log was opened again after a write failed on a
	// full disk.
	LogFull    bool
	LogReopens uint64
	// WriteSets counts the Sets this node applied by the writes the leader
	// evaluated (a write-set entry), Evaluated those it evaluated itself
	// (a write-set entry that another came before, or an entry without
	// one: the leader's first after an election, or one proposed while
	// others were in flight).
	WriteSets, Evaluated uint64
}

// ApplyLag is how many entries the node knows are committed but has not
// applied yet.
func (st Stats) ApplyLag() uint64 {
	if st.CommitIndex <= st.AppliedIndex {
		return 0
	}
	return st.CommitIndex - st.AppliedIndex
}

// Stats reads this node's Raft state now, without waiting on Raft.
func (n *Node) Stats() Stats {
	st := Stats{Leader: n.Leader(), Term: n.raft.CurrentTerm(), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(), LastIndex: n.raft.LastIndex(), StoreApplied: n.Applied(),
		LeaderChanges: n.leaderChanges.Load(), LogFull: n.logs.room(0) != nil, LogReopens: n.logs.reopens.Load(),
		WriteSets: n.fsm.writeSets.Load(), Evaluated: n.fsm.evaluated.Load()}
	nonvoter := false
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if s.Suffrage == raft.Voter {
				st.Voters++
			} else {
				st.Nonvoters++
			}
			if s.ID == n.id {
				nonvoter = s.Suffrage == raft.Nonvoter
			}
		}
	}
	switch n.raft.State() {
	case raft.Leader:
		st.Role = "LEADER"
	case raft.Candidate:
		st.Role = "CANDIDATE"
	case raft.Shutdown:
		st.Role = "SHUTDOWN"
	default:
		st.Role = "FOLLOWER"
		if nonvoter {
			st.Role = "NONVOTER"
		}
	}
	return st
}

// watchHeartbeats follows the leader's failed and resumed heartbeats.
func (n *Node) watchHeartbeats() {
	obs := n.observe(64, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation:
			return true
		}
		return false
	})
	go func() {
		for {
			select {
			case ob := <-obs:
				term := n.raft.CurrentTerm()
				n.mu.Lock()
				if n.failingTerm != term {
					n.failing, n.failingTerm = nil, term
				}
				switch d := ob.Data.(type) {
				case raft.FailedHeartbeatObservation:
					if n.failing == nil {
						n.failing = map[raft.ServerID]time.Time{}
					}
					// The last contact only moves forward: a later failure may
					// report none, or an older one.
					if last, ok := n.failing[d.PeerID]; !ok || d.LastContact.After(last) {
						n.failing[d.PeerID] = d.LastContact
					}
				case raft.ResumedHeartbeatObservation:
					delete(n.failing, d.PeerID)
				}
				n.mu.Unlock()
			case <-n.closed:
				return
			}
		}
	}()
}

// observe registers an observer of the observations filter accepts, which
// Close deregisters; observations that find the channel full are dropped.
func (n *Node) observe(buffer int, filter raft.FilterFn) chan raft.Observation {
	obs := make(chan raft.Observation, buffer)
	o := raft.NewObserver(obs, false, filter)
	n.raft.RegisterObserver(o)
	n.mu.Lock()
	n.observers = append(n.observers, o)
	n.mu.Unlock()
	return obs
}

var _ io.Closer = (*Node)(nil)
