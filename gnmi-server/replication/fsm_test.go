package replication

import (
	"bytes"
	"context"
	"errors"
	"strings"
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
		closed := make(chan struct{})
		f := testFSMIn(t, sch, "n2", t.TempDir(), closed)
		newer := append([]*raft.Log{}, entries...)
		newer[2] = &raft.Log{Index: 4, Type: raft.LogCommand, Data: []byte{0x7f, 1, 2, 3}}
		errs := halted(t, f, closed, newer, "entry 4 is of a kind this build of patronusd does not know")
		if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], ErrHalted) || !errors.Is(errs[3], ErrHalted) {
			t.Errorf("results %v; want entries 1 and 2 applied, 4 and 5 ErrHalted", errs)
		}
		if applied, _ := readApplied(f.st); applied != 2 {
			t.Errorf("applied index %d; want 2: the entries before the unknown one, not it", applied)
		}
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
