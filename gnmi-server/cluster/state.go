package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// statePeriod is how often /system/cluster/state is refreshed.
const statePeriod = 500 * time.Millisecond

func (c *Cluster) run(ctx context.Context) {
	defer close(c.done)
	changes := c.cfg.Repl.LeaderChanges()
	tick := time.NewTicker(statePeriod)
	defer tick.Stop()
	var last replication.Status
	lastLeader := "\x00"
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changes:
			if !ok {
				return
			}
		case <-tick.C:
		}
		st := c.cfg.Repl.Status()
		if st.Leader != lastLeader {
			lastLeader = st.Leader
			c.leaderChanged(ctx, st)
		}
		if st.Leader == c.cfg.NodeName {
			c.recordSelf(ctx)
		}
		if st != last {
			if err := c.writeState(ctx, st); err == nil {
				last = st
			}
		}
		c.refreshContacts(ctx, time.Now(), st)
	}
}

func (c *Cluster) leaderChanged(ctx context.Context, st replication.Status) {
	msg := "no leader"
	if st.Leader != "" {
		msg = fmt.Sprintf("%s leads term %d", st.Leader, st.Term)
	}
	c.log.Info("cluster leader changed", "leader", st.Leader, "term", st.Term)
	c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		return c.cfg.Engine.AppendEvent(tx, txn.Event{Severity: "INFO", Type: "LEADER_CHANGE", Subject: "/system/cluster/state/leader", Message: msg, Node: c.cfg.NodeName})
	})
}

// recordSelf commits this node's own member entry if the replicated
// configuration does not have it yet (the node that bootstrapped a cluster).
func (c *Cluster) recordSelf(ctx context.Context) {
	if _, ok, err := c.cfg.Store.Get(pathkey.Encode(memberPath(c.cfg.NodeName, "config", "node-name"))); err != nil || ok {
		return
	}
	req := MemberRequest(c.cfg.NodeName, c.cfg.GNMIAddr, c.cfg.RaftAddr, c.cfg.Nonvoter)
	if _, ok, err := c.cfg.Store.Get(pathkey.Encode(statsHistory("interval"))); err == nil && !ok {
		// The first leader of a new cluster also records the defaults of
		// the replicated settings that live outside any list.
		req.Update = append(req.Update, &gpb.Update{
			Path: &gpb.Path{Elem: statsHistory()},
			Val:  &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(`{"interval":10,"retention":604800}`)}},
		})
	}
	meta := txn.Meta{User: InternalUser, Node: c.cfg.NodeName}
	var committed func()
	if _, ok, err := c.cfg.Store.Get([]byte(txn.ClusterSecretKey)); err == nil && !ok && c.cfg.Bootstrap != nil {
		committed = c.cfg.Bootstrap(req, &meta)
	}
	ops, err := Ops(c.cfg.Engine, req)
	if err != nil {
		c.log.Error("recording this node as a cluster member", "err", err)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Commit(cctx, ops, meta); err != nil {
		c.log.Warn("recording this node as a cluster member", "err", err)
		return
	}
	if committed != nil {
		committed()
	}
}

// InternalUser names the node itself in the audit records of the changes it
// makes on its own.
const InternalUser = "patronusd"

// MemberRequest is the SetRequest that records a node in
// /system/cluster/members; a joining node sends it to any member.
func MemberRequest(name, gnmiAddr, raftAddr string, nonvoter bool) *gpb.SetRequest {
	suffrage := "VOTER"
	if nonvoter {
		suffrage = "NONVOTER"
	}
	doc, _ := json.Marshal(map[string]string{"node-name": name, "address": gnmiAddr, "raft-address": raftAddr, "suffrage": suffrage})
	return &gpb.SetRequest{Update: []*gpb.Update{{
		Path: &gpb.Path{Elem: memberPath(name, "config")},
		Val:  &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: doc}},
	}}}
}

func statsHistory(leaf ...string) []*gpb.PathElem {
	elems := []*gpb.PathElem{{Name: "system"}, {Name: "stats-history"}, {Name: "config"}}
	for _, l := range leaf {
		elems = append(elems, &gpb.PathElem{Name: l})
	}
	return elems
}

// Ops prepares the updates of req for commit.
func Ops(eng *txn.Engine, req *gpb.SetRequest) ([]txn.Op, error) {
	var ops []txn.Op
	for _, u := range req.GetUpdate() {
		ops = append(ops, txn.Op{Kind: gpb.UpdateResult_UPDATE, Elems: u.GetPath().GetElem(), Value: u.GetVal(), Path: u.GetPath()})
	}
	return ops, eng.Prepare(ops)
}

func (c *Cluster) writeState(ctx context.Context, st replication.Status) error {
	base := []*gpb.PathElem{{Name: "system"}, {Name: "cluster"}, {Name: "state"}}
	leaf := func(name string) []byte {
		return pathkey.Encode(append(base[:3:3], &gpb.PathElem{Name: name}))
	}
	str := func(s string) []byte {
		return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}})
	}
	u64 := func(u uint64) []byte {
		return txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}})
	}
	return c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if st.Leader != "" {
			tx.Set(leaf("leader"), str(st.Leader))
		} else {
			tx.Delete(leaf("leader"))
		}
		tx.Set(leaf("role"), str(st.Role))
		tx.Set(leaf("term"), u64(st.Term))
		tx.Set(leaf("commit-index"), u64(st.CommitIndex))
		tx.Set(leaf("applied-index"), u64(st.AppliedIndex))
		return nil
	})
}
