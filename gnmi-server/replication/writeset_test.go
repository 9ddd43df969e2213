package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/grpc/codes"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

func testFSM(t *testing.T, sch *schema.Schema, node string) *fsm {
	t.Helper()
	return testFSMIn(t, sch, node, t.TempDir(), make(chan struct{}))
}

// testFSMIn is testFSM over the store in dir, for a node that closes
// closed when it closes.
func testFSMIn(t *testing.T, sch *schema.Schema, node, dir string, closed <-chan struct{}) *fsm {
	t.Helper()
	st, err := store.Open(dir, store.Options{NoSync: true, Packed: txn.PackedPrefixes()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &fsm{st: st, eng: txn.New(sch), schema: sch, node: node, halted: make(chan struct{}), closed: closed}
}

func elems(t *testing.T, s string) []*gpb.PathElem {
	t.Helper()
	p, err := ygot.StringToStructuredPath(s)
	if err != nil {
		t.Fatal(err)
	}
	return p.GetElem()
}

// measure writes measured state (volatile keys) under the paths and
// endpoints named, as a node's collectors do.
func measure(t *testing.T, f *fsm, value string, paths ...string) {
	t.Helper()
	err := f.st.Update(context.Background(), func(tx store.Tx) error {
		for _, p := range paths {
			tx.SetVolatile(string(pathkey.Encode(elems(t, p))), txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: value}}))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// contents is what f's store holds but its events (their times and node
// names are the node's own), as key=value lines.
func contents(t *testing.T, f *fsm, replicatedOnly bool) string {
	t.Helper()
	var b strings.Builder
	err := f.st.Scan(nil, func(k, v []byte) error {
		if replicatedOnly && !txn.Replicated(f.schema, k) || bytes.HasPrefix(k, pathkey.Encode(elems(t, "/system/events"))) {
			return nil
		}
		fmt.Fprintf(&b, "%q=%q\n", k, v)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func apply(f *fsm, idx uint64, data []byte) *applyResult {
	return f.ApplyBatch([]*raft.Log{{Index: idx, Type: raft.LogCommand, Data: data}})[0].(*applyResult)
}

// TestWriteSetsMatchEvaluation runs a series of Sets three ways: a leader
// evaluates each and applies the write-set entry it makes, a follower
// applies that entry, and a reference node applies the plain command (the
// way every entry was applied before write sets). The follower and the
// reference measure the same state, the leader other state; the follower
// must end each step exactly as the reference (measured state included),
// and the leader with the same replicated state.
func TestWriteSetsMatchEvaluation(t *testing.T) {
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	leader, follower, ref := testFSM(t, sch, "n1"), testFSM(t, sch, "n2"), testFSM(t, sch, "n2")
	config, err := os.ReadFile("../../testdata/scenario1/config.json")
	if err != nil {
		t.Fatal(err)
	}
	jsonOp := func(kind gpb.UpdateResult_Operation, path, v string) txn.Op {
		return txn.Op{Kind: kind, Elems: elems(t, path), Value: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(v)}}}
	}
	del := func(path string) txn.Op { return txn.Op{Kind: gpb.UpdateResult_DELETE, Elems: elems(t, path)} }
	const path1 = "/paths/path[name=hq-inet--branch-1-inet]"
	steps := []struct {
		name    string
		ops     []txn.Op
		commit  *txn.CommitAction
		measure []string // measured state the follower and reference hold from this step on
		code    codes.Code
	}{
		{name: "load", ops: []txn.Op{jsonOp(gpb.UpdateResult_UPDATE, "/", string(config))},
			measure: []string{path1 + "/state/latency", path1 + "/state/health", "/sites/site[name=branch-1]/endpoints/endpoint[name=inet]/state/oper-status"}},
		{name: "leaf", ops: []txn.Op{jsonOp(gpb.UpdateResult_UPDATE, "/sites/site[name=hq]/config/location", `"Berlin"`)}},
		{name: "replace path", ops: []txn.Op{jsonOp(gpb.UpdateResult_REPLACE, path1,
			`{"name":"hq-inet--branch-1-inet","config":{"name":"hq-inet--branch-1-inet","source-site":"hq","source-endpoint":"mpls","destination-site":"branch-1","destination-endpoint":"inet"}}`)}},
		{name: "dangling reference", code: codes.InvalidArgument,
			ops: []txn.Op{jsonOp(gpb.UpdateResult_UPDATE, "/paths/path[name=x]/config", `{"name":"x","source-site":"nowhere","source-endpoint":"inet","destination-site":"hq","destination-endpoint":"inet"}`)}},
		{name: "commit start", commit: &txn.CommitAction{Kind: txn.CommitStart, ID: "c1", Deadline: time.Now().Add(time.Hour).UnixNano()},
			ops: []txn.Op{del("/sites/site[name=branch-2]")}},
		{name: "commit cancel", commit: &txn.CommitAction{Kind: txn.CommitCancel, ID: "c1"}},
		{name: "site cascade", ops: []txn.Op{del("/sites/site[name=branch-1]")},
			measure: []string{path1 + "/state/jitter"}},
		{name: "site again", ops: []txn.Op{jsonOp(gpb.UpdateResult_UPDATE, "/sites/site[name=branch-1]",
			`{"name":"branch-1","config":{"name":"branch-1"},"endpoints":{"endpoint":[{"name":"inet","config":{"name":"inet","address":"203.0.113.11"}}]}}`)}},
		{name: "wildcard delete", ops: []txn.Op{del("/policies/policy[name=*]/config/description")}},
	}
	// The leader measures state of its own, under other keys.
	measure(t, leader, "leader's", path1+"/state/loss", "/sites/site[name=branch-2]/endpoints/endpoint[name=inet]/state/oper-status")
	var idx uint64
	for i, s := range steps {
		if len(s.measure) > 0 {
			measure(t, follower, fmt.Sprint("step ", i), s.measure...)
			measure(t, ref, fmt.Sprint("step ", i), s.measure...)
		}
		if i == 0 {
			// State a node keeps for itself on disk (as a member's
			// contact state is), under a path the cascade deletes.
			for _, f := range []*fsm{follower, ref} {
				err := f.st.Update(context.Background(), func(tx store.Tx) error {
					tx.Set(pathkey.Encode(elems(t, "/paths/path[name=hq-mpls--branch-1-mpls]/state/latency")), txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 7}}))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		meta := txn.Meta{User: "alice", Peer: "127.0.0.1:1", Time: int64(1e18) + int64(i), Commit: s.commit}
		if err := leader.eng.Prepare(s.ops); err != nil {
			t.Fatal(err)
		}
		cmd := txn.EncodeCommand(s.ops, meta)
		entry := leader.evaluate(cmd, s.ops, meta, idx)
		if (entry == nil) != (s.code != codes.OK) {
			t.Fatalf("%s: write set made: %v; want one for a Set that succeeds", s.name, entry != nil)
		}
		if entry == nil {
			entry = cmd
		}
		idx++
		sets := follower.writeSets.Load()
		results := []*applyResult{apply(leader, idx, entry), apply(follower, idx, entry), apply(ref, idx, cmd)}
		for j, r := range results {
			var te *txn.Error
			if got := codes.OK; r.err != nil {
				if got = codes.Unknown; errors.As(r.err, &te) {
					got = te.Code
				}
				if got != s.code {
					t.Fatalf("%s: node %d: %v; want %v", s.name, j, r.err, s.code)
				}
			} else if s.code != codes.OK {
				t.Fatalf("%s: node %d succeeded; want %v", s.name, j, s.code)
			} else if r.res == nil || r.res.Time != meta.Time {
				t.Fatalf("%s: node %d: result %+v; want time %d", s.name, j, r.res, meta.Time)
			}
		}
		if want := sets + 1; s.code == codes.OK && follower.writeSets.Load() != want {
			t.Fatalf("%s: the follower applied %d write sets; want %d", s.name, follower.writeSets.Load(), want)
		}
		if got, want := contents(t, follower, false), contents(t, ref, false); got != want {
			t.Fatalf("%s: the follower holds\n%s\nthe reference\n%s", s.name, got, want)
		}
		if got, want := contents(t, leader, true), contents(t, ref, true); got != want {
			t.Fatalf("%s: the leader's replicated state\n%s\nthe reference's\n%s", s.name, got, want)
		}
	}
	// Each node recorded the same events, naming itself.
	events := func(f *fsm) (n int) {
		f.st.Scan(pathkey.Encode(elems(t, "/system/events")), func(k, v []byte) error {
			if strings.HasSuffix(string(k), string(pathkey.AppendElem(nil, "type", nil))) {
				n++
			}
			return nil
		})
		return n
	}
	if n := events(ref); n == 0 || events(follower) != n || events(leader) != n {
		t.Errorf("events: leader %d, follower %d, reference %d; want the same, more than none", events(leader), events(follower), n)
	}

	// An entry that another came before since its Set was evaluated is
	// evaluated again where it applies, and ends the same.
	meta := txn.Meta{User: "alice", Time: int64(2e18)}
	ops := []txn.Op{del("/sites/site[name=hq]")}
	cmd := txn.EncodeCommand(ops, meta)
	hqOps := []txn.Op{jsonOp(gpb.UpdateResult_UPDATE, "/sites/site[name=hq]/config/location", `"Paris"`)}
	if err := leader.eng.Prepare(hqOps); err != nil {
		t.Fatal(err)
	}
	entry := leader.evaluate(cmd, ops, meta, idx)
	if entry == nil {
		t.Fatal("no write set for the delete of hq")
	}
	between := txn.EncodeCommand(hqOps, txn.Meta{User: "bob", Time: int64(2e18) - 1})
	for _, f := range []*fsm{leader, follower, ref} {
		if r := apply(f, idx+1, between); r.err != nil {
			t.Fatal(r.err)
		}
	}
	evaluated := follower.evaluated.Load()
	for _, r := range []*applyResult{apply(leader, idx+2, entry), apply(follower, idx+2, entry), apply(ref, idx+2, cmd)} {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	if follower.evaluated.Load() != evaluated+1 {
		t.Errorf("the follower evaluated %d Sets; want %d", follower.evaluated.Load(), evaluated+1)
	}
	if got, want := contents(t, follower, false), contents(t, ref, false); got != want {
		t.Fatalf("stale write set: the follower holds\n%s\nthe reference\n%s", got, want)
	}
}

func TestWriteSetDecode(t *testing.T) {
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	leader := testFSM(t, sch, "n1")
	ops := []txn.Op{{Kind: gpb.UpdateResult_UPDATE, Elems: elems(t, "/sites/site[name=a]/config"),
		Value: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(`{"name":"a","location":"x"}`)}}}}
	meta := txn.Meta{User: "alice", Time: 1}
	if err := leader.eng.Prepare(ops); err != nil {
		t.Fatal(err)
	}
	entry := leader.evaluate(txn.EncodeCommand(ops, meta), ops, meta, 0)
	if entry == nil {
		t.Fatal("no write set")
	}
	ws, err := decodeWriteSet(entry)
	if err != nil || ws.base != 0 || ws.time != 1 || !ws.local.Recorded || ws.local.User != "alice" || len(ws.writes) == 0 {
		t.Fatalf("decode: %+v, %v", ws, err)
	}
	for n := 1; n < len(entry); n++ {
		if _, err := decodeWriteSet(entry[:n]); err == nil {
			t.Fatalf("decoded the first %d of %d bytes", n, len(entry))
		}
	}
	if _, err := decodeWriteSet(append(bytes.Clone(entry), 7)); err == nil {
		t.Error("decoded a write of kind 7")
	}
	// A malformed entry is refused where it applies and changes nothing.
	follower := testFSM(t, sch, "n2")
	before := contents(t, follower, true)
	if r := apply(follower, 1, entry[:len(entry)-1]); r.err == nil || !errors.Is(r.err, errBadWriteSet) {
		t.Errorf("a truncated entry: %v", r.err)
	}
	if got := contents(t, follower, true); got != before {
		t.Errorf("a truncated entry left\n%s", got)
	}
}
