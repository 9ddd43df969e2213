package store_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// TestPackedEntries writes packed entries (durable and volatile ones),
// ordinary keys among them and ordinary keys elsewhere whose values look
// packed, at random, and checks every way of reading against a model of the
// leaves: scans of everything, of an entry, of a leaf and of random ranges
// that start and end among an entry's leaves; Gets of leaves and of entries (a container, not a leaf);
// the leaves the commits' changes add up to; and all of it again after a
// reopen. A transaction and Store.Snapshot see the entries as stored.
func TestPackedEntries(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	fed := map[string]string{} // what the commits' changes add up to
	opts := store.Options{Packed: [][]byte{[]byte("p/")}, OnCommit: func(c store.Commit) {
		mu.Lock()
		defer mu.Unlock()
		for _, ch := range c.Changes {
			if ch.Value == nil {
				delete(fed, string(ch.Key))
			} else {
				fed[string(ch.Key)] = string(ch.Value)
			}
		}
	}}
	st, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[string]string{}   // the leaves and ordinary keys readers see
	stored := map[string][]byte{} // the packed entries as stored
	vol := map[string]bool{}      // the entries written volatile
	entry := func(n int) string { return fmt.Sprintf("p/%02d/", n) }
	for round := range 200 {
		// Entries 0-29 are packed; entries 30-39 have ordinary leaves (as
		// written before packing); q/ holds ordinary keys with values that
		// look packed.
		var fns []func(store.Tx) error
		for range 1 + rng.IntN(3) {
			n := rng.IntN(40)
			e := entry(n)
			switch r := rng.IntN(10); {
			case n < 30 && r < 6:
				// In suffix order or not: the Packer sorts.
				suffixes := []string{"a", "b", "c", "d"}
				if rng.IntN(2) == 0 {
					suffixes = []string{"d", "a", "c", "b"}
				}
				var p store.Packer
				maps.DeleteFunc(want, func(k, _ string) bool { return strings.HasPrefix(k, e) })
				for _, s := range suffixes {
					if rng.IntN(3) > 0 {
						val := fmt.Sprint(s, round)
						p.Add([]byte(s), append(p.Value(), val...))
						want[e+s] = val
					}
				}
				v := p.AppendTo(nil)
				stored[e] = v
				if n >= 20 { // entries 20-29 are volatile when packed
					vol[e] = true
					fns = append(fns, func(tx store.Tx) error { tx.SetVolatile(e, v); return nil })
					break
				}
				fns = append(fns, func(tx store.Tx) error { tx.Set([]byte(e), v); return nil })
			case n < 30 && r < 7:
				// An ordinary value at an entry's key: no longer an entry.
				v := fmt.Sprint("plain", round)
				maps.DeleteFunc(want, func(k, _ string) bool { return strings.HasPrefix(k, e) })
				want[e] = v
				stored[e] = []byte(v)
				delete(vol, e)
				fns = append(fns, func(tx store.Tx) error { tx.Set([]byte(e), []byte(v)); return nil })
			case n < 30:
				maps.DeleteFunc(want, func(k, _ string) bool { return strings.HasPrefix(k, e) })
				delete(stored, e)
				delete(vol, e)
				fns = append(fns, func(tx store.Tx) error { tx.Delete([]byte(e)); return nil })
			case r < 7:
				k, v := e+"old", fmt.Sprint("old", round)
				want[k] = v
				fns = append(fns, func(tx store.Tx) error { tx.Set([]byte(k), []byte(v)); return nil })
			case r < 8:
				k := e + "old"
				delete(want, k)
				fns = append(fns, func(tx store.Tx) error { tx.Delete([]byte(k)); return nil })
			default:
				k := fmt.Sprintf("q/%02d", n)
				v := pack("x", "y")
				want[k] = string(v)
				fns = append(fns, func(tx store.Tx) error { tx.Set([]byte(k), v); return nil })
			}
		}
		for i, err := range st.UpdateBatch(context.Background(), fns) {
			if err != nil {
				t.Fatalf("round %d, transaction %d: %v", round, i, err)
			}
		}
		check := func(when string) {
			t.Helper()
			if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
				t.Fatalf("round %d %s: scan of everything (-want +got):\n%s", round, when, diff)
			}
			n := rng.IntN(40)
			for _, prefix := range []string{entry(n), entry(n) + "b", entry(n) + "bb", "p/", "q/"} {
				if diff := cmp.Diff(under(want, prefix), all(t, st, prefix)); diff != "" {
					t.Fatalf("round %d %s: scan of %q (-want +got):\n%s", round, when, prefix, diff)
				}
			}
			lo := entry(rng.IntN(40)) + []string{"", "a", "b", "bz", "c", "z"}[rng.IntN(6)]
			hi := entry(rng.IntN(40)) + []string{"", "a", "b", "c", "cz", "z"}[rng.IntN(6)]
			if lo > hi {
				lo, hi = hi, lo
			}
			var got []string
			if err := st.ScanRange([]byte(lo), []byte(hi), func(k, v []byte) error {
				got = append(got, string(k)+"="+string(v))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			var wantRange []string
			for _, k := range slices.Sorted(maps.Keys(want)) {
				if k >= lo && k < hi {
					wantRange = append(wantRange, k+"="+want[k])
				}
			}
			if diff := cmp.Diff(wantRange, got); diff != "" {
				t.Fatalf("round %d %s: ScanRange(%q, %q) (-want +got):\n%s", round, when, lo, hi, diff)
			}
			for _, k := range []string{entry(n), entry(n) + "a", entry(n) + "c", entry(n) + "old", entry(n) + "e", fmt.Sprintf("q/%02d", n)} {
				v, ok, err := st.Get([]byte(k))
				if w, wok := want[k]; err != nil || ok != wok || string(v) != w {
					t.Fatalf("round %d %s: Get(%q) = %q, %v, %v; want %q, %v", round, when, k, v, ok, err, w, wok)
				}
			}
			// As stored: the entry under its own key, in a snapshot and in a
			// transaction alike.
			e := entry(n)
			snap := st.Snapshot()
			v, ok, _ := snap.Get([]byte(e))
			if w, wok := stored[e]; ok != wok || !bytes.Equal(v, w) {
				t.Fatalf("round %d %s: snapshot Get(%q) = %x, %v; want %x, %v", round, when, e, v, ok, w, wok)
			}
			update(t, st, func(tx store.Tx) error {
				v, ok, _ := tx.Get([]byte(e))
				if w, wok := stored[e]; ok != wok || !bytes.Equal(v, w) {
					return fmt.Errorf("transaction Get(%q) = %x, %v; want %x, %v", e, v, ok, w, wok)
				}
				return nil
			})
		}
		check("")
		mu.Lock()
		if diff := cmp.Diff(want, fed); diff != "" {
			t.Fatalf("round %d: the changes add up to (-want +got):\n%s", round, diff)
		}
		mu.Unlock()
		if round%10 == 9 {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err = store.Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			// The volatile entries are gone (without changes).
			for e := range vol {
				isE := func(k, _ string) bool { return strings.HasPrefix(k, e) }
				maps.DeleteFunc(want, isE)
				maps.DeleteFunc(fed, isE)
				delete(stored, e)
			}
			clear(vol)
			check("after reopen")
		}
	}
}

// under returns the entries of m whose keys start with prefix.
func under(m map[string]string, prefix string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// TestPackedEntryBecomesDurable: an entry written volatile, then durable
// with the same value, changes no leaf a reader sees, but must be stored:
// it is there after a reopen.
func TestPackedEntryBecomesDurable(t *testing.T) {
	dir := t.TempDir()
	opts := store.Options{Packed: [][]byte{[]byte("p/")}}
	st, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	v := pack("a", "1")
	update(t, st, func(tx store.Tx) error { tx.SetVolatile("p/1/", v); return nil })
	update(t, st, func(tx store.Tx) error { tx.Set([]byte("p/1/"), v); return nil })
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := all(t, st, ""); got["p/1/a"] != "1" || len(got) != 1 {
		t.Errorf("after reopen: %v, want p/1/a=1", got)
	}
}

// pack returns the packed value of one leaf.
func pack(suffix, value string) []byte {
	var p store.Packer
	p.Add([]byte(suffix), append(p.Value(), value...))
	return p.AppendTo(nil)
}

// TestPackerReuse: a Packer reset and used again packs only the new leaves,
// sorted or not, and leaves the value it packed before as it was.
func TestPackerReuse(t *testing.T) {
	st, err := store.Open(t.TempDir(), store.Options{Packed: [][]byte{[]byte("p/")}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var p store.Packer
	p.Add([]byte("b"), append(p.Value(), "2"...))
	p.Add([]byte("a"), append(p.Value(), "1"...))
	first := p.AppendTo(nil)
	p.Reset()
	p.Add([]byte("c"), append(p.Value(), "3"...))
	second := p.AppendTo(nil)
	update(t, st, func(tx store.Tx) error {
		tx.Set([]byte("p/1/"), first)
		tx.Set([]byte("p/2/"), second)
		return nil
	})
	want := map[string]string{"p/1/a": "1", "p/1/b": "2", "p/2/c": "3"}
	if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
		t.Errorf("leaves (-want +got):\n%s", diff)
	}
}
