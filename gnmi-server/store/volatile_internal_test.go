package store

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// contents reads every key of m.
func contents(m *memTree) map[string]string {
	out := map[string]string{}
	for _, kv := range memRange(m, nil, nil) {
		out[kv.key] = string(kv.value)
		if v, ok := memGet(m, []byte(kv.key)); !ok || string(v) != string(kv.value) {
			panic(fmt.Sprintf("memGet(%q) = %q, %v; the range has %q", kv.key, v, ok, kv.value))
		}
	}
	return out
}

// TestMemTreeGroups: commit groups of random sets and deletes, some of them
// never published (a failed commit), leave each published tree as it was
// when published, and the newest one holding what a map says; rewriting the
// same keys in the same order, as a collector does, too.
func TestMemTreeGroups(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pub := newMemTree()
	model := map[string]string{}
	type published struct {
		m    *memTree
		want map[string]string
	}
	var history []published
	for group := range 300 {
		g := &groupMem{pub: pub}
		next := maps.Clone(model)
		sequential := group%3 == 0
		for i := range 1 + rng.IntN(200) {
			n := rng.IntN(400)
			if sequential {
				n = i % 400
			}
			k := fmt.Sprintf("k%03d", n)
			if n == 0 {
				k = "" // a key like any other
			}
			switch {
			case !sequential && rng.IntN(4) == 0:
				_, had := next[k]
				if got := g.drop(k); got != had {
					t.Fatalf("group %d: drop(%s) = %v, want %v", group, k, got, had)
				}
				delete(next, k)
			default:
				v := fmt.Sprintf("v%d.%d", group, i)
				_, had := next[k]
				if got := g.set(k, []byte(v)); got != !had {
					t.Fatalf("group %d: set(%s) = %v, want %v", group, k, got, !had)
				}
				next[k] = v
			}
		}
		if diff := cmp.Diff(next, contents(g.view())); diff != "" {
			t.Fatalf("group %d before publishing (-want +got):\n%s", group, diff)
		}
		if rng.IntN(5) == 0 {
			continue // not published: the next group starts from pub again
		}
		if g.work != nil {
			pub = g.work
		}
		model = next
		history = append(history, published{pub, maps.Clone(model)})
	}
	for i, h := range history {
		if diff := cmp.Diff(h.want, contents(h.m)); diff != "" {
			t.Errorf("published tree %d changed later (-want +got):\n%s", i, diff)
		}
	}
}
