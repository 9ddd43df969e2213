// Package cluster turns a replicated node into a member of a Patronus
// cluster: Sets sent to any node are committed through the leader (a
// follower forwards them and answers once it has applied the change itself),
// membership follows /system/cluster/members, and each node keeps its view
// of the cluster in /system/cluster/state.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Config configures a cluster member.
type Config struct {
	NodeName string
	// GNMIAddr and RaftAddr are this node's advertised addresses.
	GNMIAddr, RaftAddr string
	Nonvoter           bool
	Repl               *replication.Node
	Store              *store.Store
	Engine             *txn.Engine
	// Dial opens a client connection to another member's gNMI server; with
	// authentication on, the connection carries this member's credentials.
	Dial func(addr string) (*grpc.ClientConn, error)
	// Bootstrap, if set, adds to the first commit of a new cluster (the one
	// in which its first leader records itself as a member) what a cluster
	// starts with, such as the first admin and the cluster secret; the
	// function it returns is called once that commit succeeded.
	Bootstrap func(req *gpb.SetRequest, meta *txn.Meta) (committed func())
	Logger    *slog.Logger
}

// Cluster is this node's membership in the cluster.
type Cluster struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by gNMI address; guarded by mu

	contacts contacts // owned by the run loop

	cancel context.CancelFunc
	done   chan struct{}
}

var (
	_ server.Committer = (*Cluster)(nil)
	_ server.Reads     = (*Cluster)(nil)
)

// Start runs the member's background work: recording its own membership
// when it leads, and keeping /system/cluster/state current.
func Start(cfg Config) *Cluster {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{cfg: cfg, log: cfg.Logger, conns: map[string]*grpc.ClientConn{}, cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

// Close stops the background work and closes connections to other members.
func (c *Cluster) Close() {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		cc.Close()
	}
}

// Commit commits ops through the leader. On the leader it proposes them; on
// a follower it forwards the Set to the leader and returns once this node has
// applied the result, so the client reads its own write here.
func (c *Cluster) Commit(ctx context.Context, ops []txn.Op, meta txn.Meta) (*txn.Result, error) {
	for {
		if err := c.halted(); err != nil {
			return nil, err
		}
		if c.cfg.Repl.IsLeader() {
			moved, err := c.membership(ops)
			if err != nil {
				return nil, err
			}
			if !moved {
				res, idx, err := c.cfg.Repl.Apply(ctx, ops, meta)
				switch {
				case errors.Is(err, replication.ErrNotLeader):
					// Nothing was proposed: try the new leader.
				case errors.Is(err, replication.ErrUnknown), errors.Is(err, replication.ErrHalted):
					return nil, status.Error(codes.Unavailable, err.Error())
				case errors.Is(err, replication.ErrHandingOff) && forwarded(ctx):
					return nil, status.Error(codes.Unavailable, notLeader)
				case err != nil:
					return nil, err
				default:
					res.Index = idx
					return res, nil
				}
			}
		} else if leader := c.cfg.Repl.Leader(); leader != "" {
			if forwarded(ctx) {
				// Forwarded to us as leader, but we no longer are: the
				// forwarding node retries.
				return nil, status.Error(codes.Unavailable, notLeader)
			}
			// A follower whose log is full could not apply the change
			// to answer.
			if err := c.cfg.Repl.LogFull(); err != nil {
				return nil, err
			}
			res, err := c.forward(ctx, leader, ops, meta)
			if err == nil || !retryable(err) {
				return res, err
			}
		}
		// No leader known, or it could not take the Set: wait for an
		// election, within the deadline.
		select {
		case <-ctx.Done():
			return nil, status.Error(codes.Unavailable, "no cluster leader took the change; nothing was changed")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// halted returns UNAVAILABLE once this node has stopped applying the
// cluster log (replication.Node.Halted): it has no leader to try, and
// nothing it commits would be applied here.
func (c *Cluster) halted() error {
	if err := c.cfg.Repl.HaltErr(); err != nil {
		return status.Errorf(codes.Unavailable, "this node stopped applying the cluster log and is shutting down: %v", err)
	}
	return nil
}

// Reject commits the audit record of a request refused before the log: on
// the leader it proposes it, on a follower it hands it to the leader (a Set
// with server.AuditExtension, authenticated as this member).
func (c *Cluster) Reject(ctx context.Context, rej txn.Rejection) error {
	for {
		if err := c.halted(); err != nil {
			return err
		}
		if c.cfg.Repl.IsLeader() {
			_, err := c.cfg.Repl.Reject(ctx, rej)
			switch {
			case errors.Is(err, replication.ErrNotLeader):
			case errors.Is(err, replication.ErrUnknown), errors.Is(err, replication.ErrHalted):
				return status.Error(codes.Unavailable, err.Error())
			case errors.Is(err, replication.ErrHandingOff) && forwarded(ctx):
				return status.Error(codes.Unavailable, notLeader)
			default:
				return err
			}
		} else if leader := c.cfg.Repl.Leader(); leader != "" {
			if forwarded(ctx) {
				return status.Error(codes.Unavailable, notLeader)
			}
			if err := c.cfg.Repl.LogFull(); err != nil {
				return err
			}
			err := c.forwardRejection(ctx, leader, rej)
			if err == nil || !retryable(err) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return status.Error(codes.Unavailable, "no cluster leader took the audit record")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Cluster) forwardRejection(ctx context.Context, leader string, rej txn.Rejection) error {
	client, err := c.client(leader)
	if err != nil {
		return status.Errorf(codes.Unavailable, "cannot reach the leader %s: %v", leader, err)
	}
	// The header marks the call as forwarded, so that a leader that has
	// just lost its place answers notLeader rather than forwarding again.
	out := metadata.Pairs(server.ForwardedPeerHeader, rej.Peer)
	_, err = client.Set(metadata.NewOutgoingContext(ctx, out), server.AuditRecord(rej))
	return err
}

// forwarded reports whether the request in ctx was forwarded by another
// member.
func forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(server.ForwardedPeerHeader)) > 0
}

// notLeader is the message of a forwarded Set that reached a node that is
// no longer the leader, before anything was proposed.
const notLeader = "not the leader; nothing was changed"

// retryable reports whether a forwarded Set failed before the leader
// received it, so that it can be sent again without risk of applying twice.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return false
	}
	msg := st.Message()
	// A failed TLS handshake (say, a member that has not got the cluster
	// CA yet) sent nothing either.
	for _, s := range []string{notLeader, "no cluster leader", "while dialing", "connection refused", "cannot reach the leader", "nothing was sent", "authentication handshake failed"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// forward sends the original Set to the leader and waits to apply it here.
func (c *Cluster) forward(ctx context.Context, leader string, ops []txn.Op, meta txn.Meta) (*txn.Result, error) {
	client, err := c.client(leader)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cannot reach the leader %s: %v; nothing was changed", leader, err)
	}
	req := &gpb.SetRequest{}
	for _, op := range ops {
		switch op.Kind {
		case gpb.UpdateResult_DELETE:
			req.Delete = append(req.Delete, &gpb.Path{Elem: op.Elems})
		case gpb.UpdateResult_REPLACE:
			req.Replace = append(req.Replace, &gpb.Update{Path: &gpb.Path{Elem: op.Elems}, Val: op.Value})
		case gpb.UpdateResult_UPDATE:
			req.Update = append(req.Update, &gpb.Update{Path: &gpb.Path{Elem: op.Elems}, Val: op.Value})
		}
	}
	if meta.Commit != nil {
		req.Extension = append(req.Extension, server.CommitExtension(meta.Commit))
	}
	// The leader authorizes and audits the Set as the client's user.
	out := metadata.Pairs(server.ForwardedPeerHeader, meta.Peer, server.ForwardedUserHeader, meta.User)
	var header metadata.MD
	resp, err := client.Set(metadata.NewOutgoingContext(ctx, out), req, grpc.Header(&header))
	if err != nil {
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded && st.Code() != codes.Canceled {
			return nil, err // the leader's own answer: a validation error, say
		}
		if retryable(err) {
			return nil, err
		}
		return nil, status.Errorf(codes.Unavailable, "the change was sent to the leader %s but no answer came back; its outcome is unknown: %v", leader, err)
	}
	res := &txn.Result{Time: resp.GetTimestamp()}
	if v := header.Get(server.IndexHeader); len(v) > 0 {
		if res.Index, err = strconv.ParseUint(v[0], 10, 64); err != nil {
			return nil, status.Errorf(codes.Internal, "leader sent a bad %s: %v", server.IndexHeader, err)
		}
		if err := c.cfg.Repl.WaitApplied(ctx, res.Index); errors.Is(err, replication.ErrHalted) {
			return nil, status.Errorf(codes.Unavailable, "the change was committed (index %d) but this node stopped applying the cluster log: %v", res.Index, err)
		} else if err != nil {
			return nil, status.Errorf(codes.DeadlineExceeded, "the change was committed (index %d) but not yet applied on this node: %v", res.Index, err)
		}
	}
	return res, nil
}

// Linearize lets the leader serve a read after confirming its leadership
// with a quorum, and points followers at the leader.
func (c *Cluster) Linearize(ctx context.Context) (gpb.GNMIClient, error) {
	leader := c.cfg.Repl.Leader()
	if c.cfg.Repl.IsLeader() || leader == c.cfg.NodeName {
		if err := c.cfg.Repl.Barrier(ctx); err != nil {
			return nil, err
		}
		return nil, nil
	}
	if leader == "" {
		return nil, errors.New("no cluster leader")
	}
	return c.client(leader)
}

// client returns a gNMI client of a member, by node name.
func (c *Cluster) client(name string) (gpb.GNMIClient, error) {
	cc, err := c.conn(name)
	if err != nil {
		return nil, err
	}
	return gpb.NewGNMIClient(cc), nil
}

// conn returns the connection to a member's gNMI server, by node name.
func (c *Cluster) conn(name string) (*grpc.ClientConn, error) {
	addr, err := c.address(name)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cc := c.conns[addr]
	if cc == nil {
		if cc, err = c.cfg.Dial(addr); err != nil {
			return nil, err
		}
		c.conns[addr] = cc
	}
	return cc, nil
}

// AskMembers calls ask with a connection to each other member listed in
// /system/cluster/members, the leader first, until one call succeeds; it
// returns the last error otherwise. The connection carries this member's
// credentials.
func (c *Cluster) AskMembers(ctx context.Context, ask func(context.Context, grpc.ClientConnInterface) error) error {
	names := []string{c.cfg.Repl.Leader()}
	prefix := pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "cluster"}, {Name: "members"}})
	var dec pathkey.Decoder
	if err := c.cfg.Store.Scan(prefix, func(key, _ []byte) error {
		elems, err := dec.Decode(key)
		if err == nil && len(elems) == 6 && elems[4].GetName() == "config" && elems[5].GetName() == "node-name" {
			names = append(names, elems[3].GetKey()["node-name"])
		}
		return nil
	}); err != nil {
		return err
	}
	err := errors.New("no other member is known")
	seen := map[string]bool{"": true, c.cfg.NodeName: true}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		cc, cerr := c.conn(name)
		if cerr != nil {
			err = cerr
			continue
		}
		if err = ask(ctx, cc); err == nil || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func memberPath(name string, leaf ...string) []*gpb.PathElem {
	elems := []*gpb.PathElem{{Name: "system"}, {Name: "cluster"}, {Name: "members"}, {Name: "member", Key: map[string]string{"node-name": name}}}
	for _, l := range leaf {
		elems = append(elems, &gpb.PathElem{Name: l})
	}
	return elems
}

// address reads a member's gNMI address from /system/cluster/members.
func (c *Cluster) address(name string) (string, error) {
	b, ok, err := c.cfg.Store.Get(pathkey.Encode(memberPath(name, "config", "address")))
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("member %s has no address in /system/cluster/members yet", name)
	}
	tv, err := txn.DecodeValue(b)
	if err != nil {
		return "", err
	}
	return tv.GetStringVal(), nil
}

// membership makes the Raft configuration follow a Set that adds or removes
// /system/cluster/members entries, before the Set itself is committed.
//
// Removing the leader itself first hands leadership to another voter
// (moved is then true): the new leader removes the old one.
func (c *Cluster) membership(ops []txn.Op) (moved bool, err error) {
	type add struct{ raftAddr, suffrage string }
	adds := map[string]*add{}
	for _, op := range ops {
		if isMember(op.Elems) && op.Kind == gpb.UpdateResult_DELETE {
			name := op.Elems[3].GetKey()["node-name"]
			if len(op.Elems) == 4 && name != "" && name != "*" {
				if name == c.cfg.NodeName {
					if err := c.cfg.Repl.TransferLeadership(); err != nil {
						return false, status.Errorf(codes.Unavailable, "removing the leader %s: handing over leadership: %v; nothing was changed", name, err)
					}
					return true, nil
				}
				if err := c.cfg.Repl.RemoveMember(name); err != nil {
					return false, status.Errorf(codes.Unavailable, "removing member %s: %v", name, err)
				}
			}
			continue
		}
		for _, l := range txn.Leaves(op) {
			if !isMember(l.Elems) || len(l.Elems) != 6 || l.Elems[4].GetName() != "config" {
				continue
			}
			name := l.Elems[3].GetKey()["node-name"]
			a := adds[name]
			if a == nil {
				a = &add{}
				adds[name] = a
			}
			switch l.Elems[5].GetName() {
			case "raft-address":
				a.raftAddr = l.Value.GetStringVal()
			case "suffrage":
				a.suffrage = l.Value.GetStringVal()
			}
		}
	}
	if len(adds) == 0 {
		return false, nil
	}
	current, err := c.cfg.Repl.Members()
	if err != nil {
		return false, status.Errorf(codes.Unavailable, "reading the cluster configuration: %v", err)
	}
	for name, a := range adds {
		if a.raftAddr == "" || a.suffrage == "" {
			continue // not a complete member entry: validation will say so
		}
		voter := a.suffrage == "VOTER"
		known := false
		for _, m := range current {
			if m.Name == name && m.RaftAddr == a.raftAddr && m.Voter == voter {
				known = true
			}
		}
		if !known {
			if err := c.cfg.Repl.AddMember(replication.Member{Name: name, RaftAddr: a.raftAddr, Voter: voter}); err != nil {
				return false, status.Errorf(codes.Unavailable, "adding member %s: %v", name, err)
			}
		}
	}
	return false, nil
}

func isMember(elems []*gpb.PathElem) bool {
	return len(elems) >= 4 && elems[0].GetName() == "system" && elems[1].GetName() == "cluster" &&
		elems[2].GetName() == "members" && elems[3].GetName() == "member"
}
