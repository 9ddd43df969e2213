package store_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

func open(t *testing.T, dir string, onCommit func(store.Commit)) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{OnCommit: onCommit})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func update(t *testing.T, st *store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := st.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

// all reads every key under prefix through r.
func all(t *testing.T, r store.Reader, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var last string
	if err := r.Scan([]byte(prefix), func(k, v []byte) error {
		if string(k) <= last {
			t.Errorf("Scan: %q after %q, want key order", k, last)
		}
		last = string(k)
		out[string(k)] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVolatile(t *testing.T) {
	dir := t.TempDir()
	var commits []store.Commit
	st := open(t, dir, func(c store.Commit) { commits = append(commits, c) })

	update(t, st, func(tx store.Tx) error {
		tx.Set([]byte("a/1"), []byte("durable"))
		tx.Set([]byte("a/3"), []byte("durable"))
		tx.Set([]byte("a/5"), []byte("durable, then volatile"))
		return nil
	})
	update(t, st, func(tx store.Tx) error {
		tx.SetVolatile("a/2", []byte("volatile"))
		tx.SetVolatile("a/5", []byte("volatile"))
		tx.SetVolatile("a/9", []byte("volatile"))
		// The transaction reads its own volatile writes.
		if v, ok, err := tx.Get([]byte("a/9")); err != nil || !ok || string(v) != "volatile" {
			t.Errorf("tx.Get(a/9) = %q, %v, %v; want volatile", v, ok, err)
		}
		return nil
	})
	want := map[string]string{"a/1": "durable", "a/2": "volatile", "a/3": "durable", "a/5": "volatile", "a/9": "volatile"}
	if diff := cmp.Diff(want, all(t, st, "a/")); diff != "" {
		t.Errorf("Store.Scan (-want +got):\n%s", diff)
	}
	if err := st.View(func(seq uint64, r store.Reader) error {
		if seq != 2 {
			t.Errorf("View seq = %d, want 2: a volatile-only group is a commit", seq)
		}
		if diff := cmp.Diff(want, all(t, r, "a/")); diff != "" {
			t.Errorf("View Scan (-want +got):\n%s", diff)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// A snapshot keeps what it saw while later commits change and delete
	// volatile keys; a later transaction scans the merged view.
	snap := st.Snapshot()
	update(t, st, func(tx store.Tx) error {
		got := all(t, tx, "a/")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("tx.Scan (-want +got):\n%s", diff)
		}
		tx.Delete([]byte("a/2"))
		tx.SetVolatile("a/9", []byte("changed"))
		tx.Set([]byte("a/3"), []byte("durable again"))
		return nil
	})
	if diff := cmp.Diff(want, all(t, snap, "a/")); diff != "" {
		t.Errorf("Snapshot after later commits (-want +got):\n%s", diff)
	}
	snap.Close()
	want = map[string]string{"a/1": "durable", "a/3": "durable again", "a/5": "volatile", "a/9": "changed"}
	if diff := cmp.Diff(want, all(t, st, "a/")); diff != "" {
		t.Errorf("after delete and change (-want +got):\n%s", diff)
	}
	if v, ok, err := st.Get([]byte("a/2")); err != nil || ok {
		t.Errorf("Get(a/2) after Delete = %q, %v, %v; want absent", v, ok, err)
	}

	// Deleting a/5, volatile over a deleted durable value, leaves nothing.
	update(t, st, func(tx store.Tx) error { tx.Delete([]byte("a/5")); return nil })
	if _, ok, _ := st.Get([]byte("a/5")); ok {
		t.Error("a/5 present after Delete: the durable value it replaced came back")
	}

	gotChanges := map[string]string{}
	for _, c := range commits {
		for _, ch := range c.Changes {
			gotChanges[string(ch.Key)] = string(ch.Value)
		}
	}
	if diff := cmp.Diff(map[string]string{"a/1": "durable", "a/2": "", "a/3": "durable again", "a/5": "", "a/9": "changed"}, gotChanges); diff != "" {
		t.Errorf("last change per key seen by OnCommit (-want +got):\n%s", diff)
	}

	// Volatile keys do not outlive the store; durable ones do.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open(t, dir, nil)
	defer st.Close()
	if diff := cmp.Diff(map[string]string{"a/1": "durable", "a/3": "durable again"}, all(t, st, "a/")); diff != "" {
		t.Errorf("after reopening (-want +got):\n%s", diff)
	}
}

// A failed transaction's volatile writes apply nowhere.
func TestVolatileFailedTx(t *testing.T) {
	st := open(t, t.TempDir(), nil)
	defer st.Close()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		tx.SetVolatile("k", []byte("v"))
		return context.Canceled
	})
	if err == nil {
		t.Fatal("Update returned nil for a failing transaction")
	}
	if _, ok, _ := st.Get([]byte("k")); ok {
		t.Error("a failed transaction's volatile write is visible")
	}
}
