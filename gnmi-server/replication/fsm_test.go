package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

func TestSetOnceEncoding(t *testing.T) {
	good := encodeSetOnce(SecretPrefix+"cluster-ca", []byte("pem"))
	so, err := decodeSetOnce(good)
	if err != nil || string(so.key) != SecretPrefix+"cluster-ca" || !bytes.Equal(so.value, []byte("pem")) {
		t.Errorf("decode(encode): %q=%q, %v", so.key, so.value, err)
	}
	for name, b := range map[string][]byte{
		"outside the secret prefix": encodeSetOnce("\xfdl/raft-applied", []byte{1}),
		"a data path":               encodeSetOnce("sites", []byte{1}),
		"truncated":                 good[:len(good)-1],
		"trailing bytes":            append(bytes.Clone(good), 0),
		"only the kind":             {setOnceCommand},
	} {
		if _, err := decodeSetOnce(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestHaltOnUnappliableEntry: an entry a node cannot apply, because its
// store failed or because the entry is of a kind its build does not know,
// halts the node rather than being skipped (the others apply it: skipping
// it would lose it here for good). A halted FSM applies nothing more and
// refuses to snapshot, and the node's Sets get ErrHalted; restarted on its
// store, the node applies the entries and ends as a node that never failed.
func TestHaltOnUnappliableEntry(t *testing.T) {
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	cmd := func(path string, v *gpb.TypedValue) []byte {
		ops := []txn.Op{{Kind: gpb.UpdateResult_UPDATE, Elems: elems(t, path), Value: v}}
		if err := txn.New(sch).Prepare(ops); err != nil {
			t.Fatal(err)
		}
		return txn.EncodeCommand(ops, txn.Meta{User: "admin", Time: 1})
	}
	leaf := func(v string) []byte {
		return cmd("/sites/site[name=hq]/config/location", &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v}})
	}
	site := cmd("/sites/site[name=hq]", &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: []byte(`{"name":"hq","config":{"name":"hq"}}`)}})
	entries := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: site},
		{Index: 2, Type: raft.LogCommand, Data: leaf("Berlin")},
		{Index: 4, Type: raft.LogCommand, Data: leaf("Paris")}, // 3: a no-op the FSM never sees
		{Index: 5, Type: raft.LogCommand, Data: leaf("Rome")},
	}
	ref := testFSM(t, sch, "n2")
	if errs := results(ref.ApplyBatch(entries)); errs != nil {
		t.Fatalf("reference: %v", errs)
	}

	// halted applies entries, waiting for the FSM to halt, and returns
	// what ApplyBatch returned once the node closed.
	halted := func(t *testing.T, f *fsm, closed chan struct{}, logs []*raft.Log, want string) []error {
		t.Helper()
		done := make(chan []any, 1)
		go func() { done <- f.ApplyBatch(logs) }()
		select {
		case <-f.halted:
		case out := <-done:
			t.Fatalf("ApplyBatch returned %v without halting", results(out))
		case <-time.After(10 * time.Second):
			t.Fatal("not halted after 10 s")
		}
		if err := f.haltErr; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("halted for %v; want an error that says %q", err, want)
		}
		if _, err := f.Snapshot(); !errors.Is(err, ErrHalted) {
			t.Errorf("Snapshot of a halted FSM: %v; want ErrHalted", err)
		}
		select {
		case out := <-done:
			t.Fatalf("ApplyBatch returned %v before the node closed: Raft would take its entries as applied", results(out))
		case <-time.After(50 * time.Millisecond):
		}
		close(closed)
		errs := results(<-done)
		if errs == nil {
			t.Fatal("every entry of the halted batch applied")
		}
		if errs := results(f.ApplyBatch(logs[len(logs)-1:])); len(errs) != 1 || !errors.Is(errs[0], ErrHalted) {
			t.Errorf("an entry after the halt: %v; want ErrHalted", errs)
		}
		return errs
	}

	// haltsOn applies entries with data as entry 4 on a new node, which
	// must halt for want.
	haltsOn := func(t *testing.T, data []byte, want string) (*fsm, []error) {
		t.Helper()
		closed := make(chan struct{})
		f := testFSMIn(t, sch, "n2", t.TempDir(), closed)
		newer := append([]*raft.Log{}, entries...)
		newer[2] = &raft.Log{Index: 4, Type: raft.LogCommand, Data: data}
		return f, halted(t, f, closed, newer, want)
	}

	t.Run("store failed", func(t *testing.T) {
		dir, closed := t.TempDir(), make(chan struct{})
		f := testFSMIn(t, sch, "n2", dir, closed)
		if errs := results(f.ApplyBatch(entries[:2])); errs != nil {
			t.Fatal(errs)
		}
		f.st.Close() // every transaction fails from here on
		errs := halted(t, f, closed, entries[2:], "the store failed applying entry 4")
		for i, err := range errs {
			if !errors.Is(err, ErrHalted) {
				t.Errorf("entry %d: %v; want ErrHalted", entries[2+i].Index, err)
			}
		}
		// Restarted on the same store, the node applies them.
		g := testFSMIn(t, sch, "n2", dir, make(chan struct{}))
		if applied, _ := readApplied(g.st); applied != 2 {
			t.Fatalf("applied index %d after the halt; want 2", applied)
		}
		if errs := results(g.ApplyBatch(entries)); errs != nil {
			t.Fatal(errs)
		}
		if got, want := contents(t, g, false), contents(t, ref, false); got != want {
			t.Errorf("after the restart:\n%s\nwant (a node that never failed):\n%s", got, want)
		}
	})
	t.Run("unknown kind", func(t *testing.T) {
		f, errs := haltsOn(t, []byte{0x7f, 1, 2, 3}, "entry 4 is of a kind this build of patronusd does not know")
		if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrHalted) || !errors.Is(errs[3], ErrHalted) {
			t.Errorf("results %v; want entries 1 and 2 applied, 4 and 5 ErrHalted", errs)
		}
		if applied, _ := readApplied(f.st); applied != 2 {
			t.Errorf("applied index %d; want 2: the entries before the unknown one, not it", applied)
		}
	})
	t.Run("unknown kind applied before", func(t *testing.T) {
		// A log replayed after a downgrade, or an old log, holds
		// entries of a kind this build does not read, applied before
		// by the build that wrote them: they do not halt the node.
		f := testFSM(t, sch, "n2")
		if errs := results(f.ApplyBatch(entries[:2])); errs != nil {
			t.Fatal(errs)
		}
		old := &raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte{1, 9, 9}}
		if errs := results(f.ApplyBatch([]*raft.Log{old, entries[2]})); errs != nil || f.isHalted() {
			t.Fatalf("replaying an applied entry this build does not read: %v (halted: %v)", errs, f.isHalted())
		}
	})
	t.Run("write set's command unknown", func(t *testing.T) {
		// A write-set entry evaluated here (its base is not the entry
		// before it) whose command this build does not read.
		ws := []byte{writeSetCommand}
		ws = binary.AppendUvarint(ws, 1) // base 1: entry 4 is not right after it
		ws = binary.AppendUvarint(ws, 1)
		ws = appendBytes(ws, []byte{0x7f})
		ws = append(ws, 0, 0, 0, 0, 0, 0, 0, 0) // Local: nothing recorded, no sites, nothing cleared; no writes
		haltsOn(t, ws, "entry 4 is of a kind this build of patronusd does not know")
	})
	t.Run("path not in the schema", func(t *testing.T) {
		// A Set of a path this build's schema lacks: a newer schema.
		haltsOn(t, bytes.ReplaceAll(leaf("Lima"), []byte("location"), []byte("locatiox")), "which is not in this build's schema")
	})
	t.Run("deleted path not in the schema", func(t *testing.T) {
		// A delete carries no leaves: its path itself is checked.
		ops := []txn.Op{{Kind: gpb.UpdateResult_DELETE, Elems: elems(t, "/sites/site[name=hq]/config/location")}}
		if err := txn.New(sch).Prepare(ops); err != nil {
			t.Fatal(err)
		}
		haltsOn(t, bytes.ReplaceAll(txn.EncodeCommand(ops, txn.Meta{User: "admin", Time: 1}), []byte("location"), []byte("locatiox")), "which is not in this build's schema")
	})
	t.Run("entry before not applied", func(t *testing.T) {
		// The store runs a batch's transactions without waiting for
		// the commits of those before: one whose predecessor in the
		// batch failed must not apply on top of the gap.
		f := testFSM(t, sch, "n2")
		err := f.st.Update(context.Background(), func(tx store.Tx) error {
			return once(tx, 5, 4, func() error {
				t.Error("ran an entry whose predecessor was not applied")
				return nil
			})
		})
		if !errors.Is(err, errPrevNotApplied) {
			t.Errorf("once after a gap: %v; want errPrevNotApplied", err)
		}
		if applied, _ := readApplied(f.st); applied != 0 {
			t.Errorf("applied index %d; want 0", applied)
		}
	})
}

// results returns the errors of ApplyBatch's results, nil if there are none.
func results(out []any) []error {
	var errs []error
	var any bool
	for _, o := range out {
		r, _ := o.(*applyResult)
		var err error
		if r == nil {
			err = errors.New("no result")
		} else {
			err = r.err
		}
		errs = append(errs, err)
		any = any || err != nil
	}
	if !any {
		return nil
	}
	return errs
}

// TestHaltStopsRaft: a real one-voter node that meets an entry it cannot
// apply stops Raft at once, so that its leadership passes and whatever
// waits for an entry here is answered, before anything closes the node
// (which first waits for goroutines that propose).
func TestHaltStopsRaft(t *testing.T) {
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{NoSync: true, Packed: txn.PackedPrefixes()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	n, err := Open(Config{Dir: filepath.Join(dir, "raft"), NodeName: "n1", RaftAddr: addr, Bootstrap: true,
		Store: st, Engine: txn.New(sch), Schema: sch})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader after 10 s")
		}
	}
	// Sets proposed meanwhile, some queued behind the halting entry.
	leafOps := func(v string) []txn.Op {
		ops := []txn.Op{{Kind: gpb.UpdateResult_UPDATE, Elems: elems(t, "/system/stats-history/config/interval"),
			Value: &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 10}}}}
		if err := txn.New(sch).Prepare(ops); err != nil {
			t.Fatal(err)
		}
		return ops
	}
	var proposers sync.WaitGroup
	for i := range 16 {
		ops := leafOps(fmt.Sprint(i))
		proposers.Go(func() {
			for {
				if _, _, err := n.Apply(context.Background(), ops, txn.Meta{User: "admin"}); err != nil {
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	proposed := make(chan error, 1)
	go func() {
		r, _, err := n.propose([]byte{0x7f}, 5*time.Second)
		if err == nil {
			err = r.err
		}
		proposed <- err
	}()
	select {
	case err := <-proposed:
		if !errors.Is(err, ErrHalted) && !errors.Is(err, ErrUnknown) {
			t.Errorf("proposing an entry the node cannot apply: %v; want ErrHalted or ErrUnknown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the entry's proposer still waits after 5 s")
	}
	select {
	case <-n.Halted():
	case <-time.After(5 * time.Second):
		t.Fatal("not halted")
	}
	if err := n.HaltErr(); err == nil || !strings.Contains(err.Error(), "does not know") {
		t.Errorf("HaltErr: %v", err)
	}
	// A Set proposed after the halt is answered at once, not when the
	// node closes.
	done := make(chan error, 1)
	go func() {
		_, _, err := n.Apply(context.Background(), nil, txn.Meta{User: "admin"})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a Set on a halted node succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Set on a halted node still waits after 5 s")
	}
	stopped := make(chan struct{})
	go func() { proposers.Wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("Sets proposed around the halt still wait after 5 s")
	}
	if s := n.raft.State(); s != raft.Shutdown {
		t.Errorf("Raft is %v after the halt; want Shutdown", s)
	}
}
