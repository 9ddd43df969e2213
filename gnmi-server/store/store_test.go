package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// TestDurableInMemory checks that the in-memory durable tree and Pebble
// agree: what is read before a reopen is read after it, disk-only keys
// included, and scans across the disk-only prefixes merge all three.
func TestDurableInMemory(t *testing.T) {
	dir := t.TempDir()
	opts := store.Options{DiskOnly: [][]byte{[]byte("h/"), []byte("h/inner/"), []byte("z")}}
	st, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	update(t, st, func(tx store.Tx) error {
		for _, k := range []string{"a", "g/1", "h/1", "h/inner/2", "i/1", "y", "z", "z/9"} {
			tx.Set([]byte(k), []byte("v-"+k))
		}
		tx.SetVolatile("h/v", []byte("volatile"))
		return nil
	})
	update(t, st, func(tx store.Tx) error {
		tx.Delete([]byte("g/1"))
		tx.Delete([]byte("h/1"))
		tx.Delete([]byte("never-written"))
		return nil
	})
	want := map[string]string{"a": "v-a", "h/inner/2": "v-h/inner/2", "h/v": "volatile", "i/1": "v-i/1", "y": "v-y", "z": "v-z", "z/9": "v-z/9"}
	if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
		t.Errorf("scan of everything (-want +got):\n%s", diff)
	}
	wantH := map[string]string{"h/inner/2": "v-h/inner/2", "h/v": "volatile"}
	if diff := cmp.Diff(wantH, all(t, st, "h/")); diff != "" {
		t.Errorf("scan of h/ (-want +got):\n%s", diff)
	}
	var ranged []string
	if err := st.ScanRange([]byte("g"), []byte("h/inner/3"), func(k, _ []byte) error {
		ranged = append(ranged, string(k))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"h/inner/2"}, ranged); diff != "" {
		t.Errorf("ScanRange(g, h/inner/3) (-want +got):\n%s", diff)
	}
	for k, v := range map[string]string{"a": "v-a", "h/inner/2": "v-h/inner/2", "z/9": "v-z/9"} {
		if got, ok, err := st.Get([]byte(k)); err != nil || !ok || string(got) != v {
			t.Errorf("Get(%s) = %q, %v, %v; want %q", k, got, ok, err, v)
		}
	}
	for _, k := range []string{"g/1", "h/1", "never-written"} {
		if _, ok, err := st.Get([]byte(k)); err != nil || ok {
			t.Errorf("Get(%s) = found %v, %v; want not found", k, ok, err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st, err = store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	delete(want, "h/v") // volatile: gone with the store
	if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
}

// TestGroupSeesEarlierTransactions checks that a transaction reads the
// writes of the transactions before it in its commit group, and that one
// that fails leaves nothing for those after it.
func TestGroupSeesEarlierTransactions(t *testing.T) {
	st := open(t, t.TempDir(), nil)
	defer st.Close()
	update(t, st, func(tx store.Tx) error {
		tx.Set([]byte("n"), []byte{0})
		return nil
	})
	// Many concurrent increments land in shared groups; each must read the
	// previous one's value, so none is lost.
	const n = 200
	var wg sync.WaitGroup
	errFail := errors.New("fail")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := st.Update(context.Background(), func(tx store.Tx) error {
				v, _, err := tx.Get([]byte("n"))
				if err != nil {
					return err
				}
				tx.Set([]byte("n"), []byte{v[0] + 1})
				if i%10 == 0 {
					return errFail // discarded: its increment must not count
				}
				return nil
			})
			if err != nil && !errors.Is(err, errFail) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	v, _, err := st.Get([]byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := byte(n - n/10); v[0] != want {
		t.Errorf("n = %d after %d increments of which %d failed; want %d", v[0], n, n/10, want)
	}
}

// TestReadValuesHaveNoSpareCapacity checks that appending to a value a
// reader got copies it instead of writing into the store's memory.
func TestReadValuesHaveNoSpareCapacity(t *testing.T) {
	st := open(t, t.TempDir(), nil)
	defer st.Close()
	update(t, st, func(tx store.Tx) error {
		tx.Set([]byte("k"), make([]byte, 3, 64))
		return nil
	})
	v, _, _ := st.Get([]byte("k"))
	if cap(v) != len(v) {
		t.Fatalf("cap(value) = %d, len %d; want equal", cap(v), len(v))
	}
	_ = append(v, 'x')
	if v2, _, _ := st.Get([]byte("k")); len(v2) != 3 {
		t.Errorf("value changed to %q", v2)
	}
}

// TestRewritesWithoutReading checks that a key a transaction writes several
// times without reading ends with its last write, durable or volatile, and
// that Pebble agrees after a reopen.
func TestRewritesWithoutReading(t *testing.T) {
	dir := t.TempDir()
	var changes []store.Change
	st := open(t, dir, func(c store.Commit) { changes = append(changes, c.Changes...) })
	update(t, st, func(tx store.Tx) error {
		tx.Set([]byte("a"), []byte("1"))
		tx.Set([]byte("a"), []byte("2"))
		tx.Set([]byte("b"), []byte("1"))
		tx.Delete([]byte("b"))
		tx.Delete([]byte("c"))
		tx.Set([]byte("c"), []byte("3"))
		tx.SetVolatile("d", []byte("volatile"))
		tx.Set([]byte("d"), []byte("durable"))
		tx.Set([]byte("e"), []byte("durable"))
		tx.SetVolatile("e", []byte("volatile"))
		return nil
	})
	want := map[string]string{"a": "2", "c": "3", "d": "durable", "e": "volatile"}
	if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
		t.Errorf("after the commit (-want +got):\n%s", diff)
	}
	last := map[string]string{}
	for _, c := range changes {
		last[string(c.Key)] = string(c.Value)
		if c.Value == nil {
			delete(last, string(c.Key))
		}
	}
	if diff := cmp.Diff(want, last); diff != "" {
		t.Errorf("the changes, applied in order (-want +got):\n%s", diff)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open(t, dir, nil)
	defer st.Close()
	delete(want, "e")
	if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
}

// TestCloseAnswersEveryUpdate: Updates and UpdateBatches racing Close all
// return (committed, or ErrClosed), none left waiting on a queue nobody
// reads any more.
func TestCloseAnswersEveryUpdate(t *testing.T) {
	for round := range 20 {
		st := open(t, t.TempDir(), nil)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := 0; ; i++ {
					k := fmt.Sprintf("k/%d/%d", w, i)
					var err error
					if w%2 == 0 {
						err = st.Update(context.Background(), func(tx store.Tx) error { tx.SetVolatile(k, []byte("v")); return nil })
					} else {
						err = errors.Join(st.UpdateBatch(context.Background(), []func(store.Tx) error{
							func(tx store.Tx) error { tx.Set([]byte(k), []byte("v")); return nil },
							func(tx store.Tx) error { tx.Delete([]byte(k)); return nil },
						})...)
					}
					if errors.Is(err, store.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("round %d: %v", round, err)
						return
					}
				}
			})
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: writers still waiting 10 s after Close", round)
		}
	}
}

// TestDeletedRunsSurviveReopen checks the range tombstones a group's
// deletes become: random groups of transactions set, delete (runs of
// neighbours among them), write volatile and fail, around disk-only keys;
// the store must read as a model of them does, and after a reopen too.
func TestDeletedRunsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	opts := store.Options{DiskOnly: [][]byte{[]byte("h/")}}
	st, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	durable, volatile := map[string]string{}, map[string]string{}
	key := func() string { return fmt.Sprintf("%s%02d", []string{"a/", "h/", "m/"}[rng.IntN(3)], rng.IntN(40)) }
	errFail := errors.New("fail")
	for round := range 300 {
		ntx := 1 + rng.IntN(4)
		fns := make([]func(store.Tx) error, ntx)
		// Each transaction's writes, applied to the model if it succeeds.
		type write struct {
			key, value string
			del, vol   bool
		}
		plans := make([][]write, ntx)
		fail := make([]bool, ntx)
		for i := range fns {
			fail[i] = rng.IntN(8) == 0
			for range 1 + rng.IntN(6) {
				switch r := rng.IntN(10); {
				case r < 4:
					plans[i] = append(plans[i], write{key: key(), value: fmt.Sprint("v", round, "-", i)})
				case r < 5:
					plans[i] = append(plans[i], write{key: key(), value: fmt.Sprint("vol", round), vol: true})
				case r < 7:
					plans[i] = append(plans[i], write{key: key(), del: true})
				default: // a run: every key from one to another
					prefix, from := []string{"a/", "h/", "m/"}[rng.IntN(3)], rng.IntN(40)
					for n := range 2 + rng.IntN(12) {
						plans[i] = append(plans[i], write{key: fmt.Sprintf("%s%02d", prefix, (from+n)%40), del: true})
					}
				}
			}
			plan, failed := plans[i], fail[i]
			fns[i] = func(tx store.Tx) error {
				for _, w := range plan {
					switch {
					case w.del:
						tx.Delete([]byte(w.key))
					case w.vol:
						tx.SetVolatile(w.key, []byte(w.value))
					default:
						tx.Set([]byte(w.key), []byte(w.value))
					}
				}
				if failed {
					return errFail
				}
				return nil
			}
		}
		errs := st.UpdateBatch(context.Background(), fns)
		for i, err := range errs {
			if fail[i] {
				if !errors.Is(err, errFail) {
					t.Fatalf("round %d: failing transaction %d returned %v", round, i, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("round %d: transaction %d: %v", round, i, err)
			}
			for _, w := range plans[i] {
				switch {
				case w.del:
					delete(durable, w.key)
					delete(volatile, w.key)
				case w.vol:
					delete(durable, w.key)
					volatile[w.key] = w.value
				default:
					delete(volatile, w.key)
					durable[w.key] = w.value
				}
			}
		}
		if round%10 != 9 {
			continue
		}
		want := maps.Clone(durable)
		maps.Copy(want, volatile)
		if diff := cmp.Diff(want, all(t, st, "")); diff != "" {
			t.Fatalf("round %d (-want +got):\n%s", round, diff)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if st, err = store.Open(dir, opts); err != nil {
			t.Fatal(err)
		}
		clear(volatile)
		if diff := cmp.Diff(durable, all(t, st, "")); diff != "" {
			t.Fatalf("round %d, after reopen (-want +got):\n%s", round, diff)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestScanInTransaction checks a transaction's scans against a model of
// its writes: random sets, deletes (of keys it set, the store has, or
// nobody has) and sets again, with a scan of a random prefix after each.
func TestScanInTransaction(t *testing.T) {
	st := open(t, t.TempDir(), nil)
	defer st.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	key := func() string { return fmt.Sprintf("%c/%d", 'a'+rng.IntN(3), rng.IntN(12)) }
	model := map[string]string{}
	update(t, st, func(tx store.Tx) error {
		for range 15 {
			k := key()
			tx.Set([]byte(k), []byte("base"))
			model[k] = "base"
		}
		return nil
	})
	for round := range 50 {
		want := maps.Clone(model)
		update(t, st, func(tx store.Tx) error {
			for op := range 40 {
				k := key()
				if rng.IntN(2) == 0 {
					v := fmt.Sprint(round, "-", op)
					tx.Set([]byte(k), []byte(v))
					want[k] = v
				} else {
					tx.Delete([]byte(k))
					delete(want, k)
				}
				prefix := []string{"", "a/", "b/1", "c/"}[rng.IntN(4)]
				got := map[string]string{}
				if err := tx.Scan([]byte(prefix), func(k, v []byte) error {
					if _, dup := got[string(k)]; dup {
						t.Errorf("round %d: Scan(%q) sent %q twice", round, prefix, k)
					}
					got[string(k)] = string(v)
					return nil
				}); err != nil {
					return err
				}
				sub := maps.Collect(func(yield func(string, string) bool) {
					for k, v := range want {
						if strings.HasPrefix(k, prefix) && !yield(k, v) {
							return
						}
					}
				})
				if diff := cmp.Diff(sub, got); diff != "" {
					// Not Fatal: this runs on the store's writer.
					return fmt.Errorf("round %d, op %d: Scan(%q) (-want +got):\n%s", round, op, prefix, diff)
				}
			}
			return nil
		})
		model = want
	}
}

// TestIdleFlush: once the store has not written to Pebble for IdleFlush,
// it flushes Pebble's memtables if it wrote 1 MiB or more since it last
// did (freeing their memory), not after a small write; what they held is
// still read, also after a reopen.
func TestIdleFlush(t *testing.T) {
	dir := t.TempDir()
	opts := store.Options{IdleFlush: 50 * time.Millisecond, NoSync: true}
	st, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	update(t, st, func(tx store.Tx) error { tx.Set([]byte("small"), []byte("v")); return nil })
	time.Sleep(300 * time.Millisecond)
	if n := st.Metrics().Flush.Count; n != 0 {
		t.Errorf("%d flushes after a small write, want none", n)
	}
	// 1.1 MB, less than Pebble flushes by itself.
	val := make([]byte, 100)
	update(t, st, func(tx store.Tx) error {
		for i := range 10_000 {
			tx.Set(fmt.Appendf(nil, "big/%06d", i), val)
		}
		return nil
	})
	deadline := time.Now().Add(10 * time.Second)
	for st.Metrics().Flush.Count == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no flush 10 s after 1.1 MB was written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, k := range []string{"small", "big/000000", "big/009999"} {
		if _, ok, err := st.Get([]byte(k)); err != nil || !ok {
			t.Errorf("%s after the idle flush and a reopen: %v, %v", k, ok, err)
		}
	}
}
