package txn_test

import (
	"math/rand/v2"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// TestMatchKey: reading an encoded key, MatchKey says what Match says of the
// decoded path whenever it is sure, and it is sure of every pattern without
// "..." or a key that must be empty; names and values with bytes that the
// encoding escapes included.
func TestMatchKey(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "ab", "a\x00", "\x03", "\x01b", "state"}
	values := []string{"x", "y", "x\x02", "\x00", "\x03\x03", "x y"}
	keyNames := []string{"k", "l", "k\x01"}
	path := func() []*gpb.PathElem {
		p := make([]*gpb.PathElem, 1+rng.IntN(4))
		for i := range p {
			p[i] = &gpb.PathElem{Name: names[rng.IntN(len(names))]}
			if rng.IntN(2) == 0 {
				p[i].Key = map[string]string{}
				for _, k := range keyNames[:1+rng.IntN(len(keyNames))] {
					p[i].Key[k] = values[rng.IntN(len(values))]
				}
			}
		}
		return p
	}
	pattern := func() ([]*gpb.PathElem, bool) {
		p, decidable := path(), true
		for _, e := range p {
			switch rng.IntN(8) {
			case 0:
				e.Name = "*"
			case 1:
				e.Name = "..."
				e.Key = nil
				decidable = false
			}
			for k := range e.Key {
				switch rng.IntN(4) {
				case 0:
					e.Key[k] = "*"
				case 1:
					delete(e.Key, k)
				case 2:
					if rng.IntN(8) == 0 {
						e.Key[k] = ""
						decidable = false
					}
				}
			}
		}
		return p, decidable
	}
	matched, sure := 0, 0
	for range 20_000 {
		pat, decidable := pattern()
		m := txn.NewMatcher(pat, nil)
		p := path()
		if rng.IntN(3) == 0 { // often a path the pattern may match
			p = nil
			for _, e := range pat {
				if e.GetName() == "..." {
					break
				}
				c := &gpb.PathElem{Name: e.GetName(), Key: map[string]string{}}
				if c.Name == "*" {
					c.Name = names[rng.IntN(len(names))]
				}
				for k, v := range e.GetKey() {
					if v == "*" {
						v = values[rng.IntN(len(values))]
					}
					c.Key[k] = v
				}
				p = append(p, c)
			}
			if len(p) == 0 {
				p = path()
			}
		}
		want := m.Match(p)
		got, ok := m.MatchKey(pathkey.Encode(p))
		if decidable && !ok {
			t.Fatalf("MatchKey not sure of %v against %v", pathkey.String(pat), p)
		}
		if ok {
			sure++
			if got != want {
				t.Fatalf("MatchKey(%q) against %v = %v, Match says %v", pathkey.Encode(p), pat, got, want)
			}
			if got {
				matched++
			}
		}
	}
	if matched < 1000 || sure < 10_000 {
		t.Errorf("only %d sure answers, %d matches: the test draws too few", sure, matched)
	}
}
