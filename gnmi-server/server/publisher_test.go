package server_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/server"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// TestPublisherDecodes: the publisher's feed commits hold what decoding
// every key in full gives, whatever it remembered of the keys before: each
// data leaf with its path, schema node and value, and neither internal keys,
// malformed ones, paths outside the schema nor write-only leaves.
func TestPublisherDecodes(t *testing.T) {
	sch, f, p := newPublisher(t, 16, 1<<20)
	commits := publisherCommits(t)
	for i, c := range commits {
		p.OnCommit(store.Commit{Seq: uint64(i + 1), Time: int64(i), Changes: c})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := f.From(0).Next(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(commits) {
		t.Fatalf("the feed holds %d commits, want %d", len(got), len(commits))
	}
	for i, c := range commits {
		want := reference(sch, c)
		if diff := cmp.Diff(want, got[i].Changes, protocmp.Transform(), sameNode); diff != "" {
			t.Errorf("commit %d (-want +got):\n%s", i+1, diff)
		}
	}
}

// publisherCommits are commits of every kind of key: flows and policies,
// internal, malformed, outside the schema, write-only, escaped.
func publisherCommits(t *testing.T) [][]store.Change {
	key := func(s string) []byte {
		elems, err := schemaPath(s)
		if err != nil {
			t.Fatal(err)
		}
		return pathkey.Encode(elems)
	}
	flow := func(src, leaf string) []byte {
		return key("/flows/flow[protocol=17][source-address=" + src + "][source-port=4000][destination-address=10.2.0.2][destination-port=5060]/state/" + leaf)
	}
	u := func(v uint64) []byte { return txn.AppendUint(nil, v) }
	s := func(v string) []byte { return txn.AppendString(nil, v) }
	commits := [][]store.Change{
		{
			{Key: flow("10.1.0.1", "packets"), Value: u(1)},
			{Key: flow("10.1.0.1", "bytes"), Value: u(100)},
			{Key: flow("10.1.0.2", "packets"), Value: u(2)},
			{Key: flow("10.1.0.1", "last-seen"), Value: u(3)},
			{Key: key("/policies/policy[name=voice]/state/counters/packets-matched"), Value: u(5)},
			{Key: key("/policies/policy[name=voice]/state/counters/bytes-matched"), Value: u(500)},
			{Key: key("/policies/policy[name=voice]/state/active-path"), Value: s("a")},
			{Key: []byte{txn.InternalPrefix, 'x'}, Value: u(1)},
			{Key: key("/policies/policy[name=voice]/state/no-such-leaf"), Value: u(1)},
			{Key: key("/no-such-root/leaf"), Value: u(1)},
			{Key: key("/system/aaa/users/user[username=u]/config/password"), Value: s("secret")},
			{Key: key("/system/aaa/users/user[username=u]/config/role"), Value: s("ADMIN")},
			{Key: []byte("flows\x00flow\x01"), Value: u(1)}, // malformed
			{Key: key("/policies/policy[name=v\x03]/name"), Value: s("v\x03")},
			{Key: key("/policies/policy[name=q\x00state]"), Value: u(1)},
		},
		{
			// The same parents again, one deleted leaf, a parent whose key
			// has escaped bytes, and one with a leaf of the same name.
			{Key: flow("10.1.0.2", "bytes"), Value: u(200)},
			{Key: flow("10.1.0.1", "packets"), Value: u(4)},
			{Key: flow("10.1.0.1", "path")},
			{Key: key("/policies/policy[name=v\x01\x03]/state/counters/packets-matched"), Value: u(6)},
			{Key: key("/policies/policy[name=v\x01\x03]/config/name"), Value: s("v\x01\x03")},
			{Key: key("/policies/policy[name=voice]/state/counters/packets-matched"), Value: u(7)},
			{Key: key("/flows"), Value: u(1)},
			{Key: key("/policies/policy[name=v\x03]/name"), Value: s("v\x03")},
			{Key: key("/policies/policy[name=q\x00state]/name"), Value: s("q\x00state")},
			{Key: flow("10.1.0.2", "no-such-leaf"), Value: u(1)},
			{Key: flow("10.1.0.2", "packets"), Value: []byte{0xff}}, // a value that does not decode
		},
	}
	return commits
}

// newPublisher returns a publisher into a new feed of slots and maxBytes.
func newPublisher(t *testing.T, slots, maxBytes int) (*schema.Schema, *feed.Feed, *server.Publisher) {
	t.Helper()
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	f := feed.New(slots, maxBytes)
	return sch, f, server.NewPublisher(sch, f)
}

// sameNode compares schema nodes by identity.
var sameNode = cmp.Comparer(func(a, b *schema.Node) bool { return a == b })

// reference decodes changes the plain way: each key in full.
func reference(sch *schema.Schema, changes []store.Change) []feed.Change {
	out := []feed.Change{}
	for _, ch := range changes {
		if txn.IsInternal(ch.Key) {
			continue
		}
		elems, err := pathkey.Decode(ch.Key)
		if err != nil {
			continue
		}
		n := sch.Lookup(elems)
		if n == nil || n.WriteOnly {
			continue
		}
		fc := feed.Change{Key: ch.Key, Elems: elems, Node: n}
		if ch.Value != nil {
			if fc.Value, err = txn.DecodeValue(ch.Value); err != nil {
				continue
			}
		}
		out = append(out, fc)
	}
	return out
}

// schemaPath parses a path with raw key values (no escapes).
func schemaPath(s string) ([]*gpb.PathElem, error) {
	var elems []*gpb.PathElem
	for len(s) > 0 {
		s = s[1:] // '/'
		e := &gpb.PathElem{}
		i := 0
		for i < len(s) && s[i] != '/' && s[i] != '[' {
			i++
		}
		e.Name, s = s[:i], s[i:]
		for len(s) > 0 && s[0] == '[' {
			eq, end := 1, 1
			for s[eq] != '=' {
				eq++
			}
			for s[end] != ']' {
				end++
			}
			if e.Key == nil {
				e.Key = map[string]string{}
			}
			e.Key[s[1:eq]] = s[eq+1 : end]
			s = s[end+1:]
		}
		elems = append(elems, e)
	}
	return elems, nil
}

// TestPublisherLeavesOutInternalKeys: internal keys (such as a stats history
// keyframe's, many more than the feed's budget) reach no reader, raw or
// decoded, take none of the feed's budget and are not in its record of
// deletes.
func TestPublisherLeavesOutInternalKeys(t *testing.T) {
	_, f, p := newPublisher(t, 16, 100_000) // room for about 160 changes of 100-byte keys
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	leaf := pathkey.Encode([]*gpb.PathElem{{Name: "paths"}, {Name: "path", Key: map[string]string{"name": "p"}}, {Name: "state"}, {Name: "latency"}})
	p.OnCommit(store.Commit{Seq: 1, Changes: []store.Change{{Key: leaf, Value: txn.AppendUint(nil, 5)}}})
	var internal []store.Change
	for i := range 10_000 {
		k := append([]byte{txn.InternalPrefix}, fmt.Sprintf("l/hist/%096d", i)...)
		internal = append(internal, store.Change{Key: k, Value: []byte{1}}, store.Change{Key: append(k, 'x')})
	}
	internal = append(internal, store.Change{Key: leaf, Value: txn.AppendUint(nil, 6)})
	p.OnCommit(store.Commit{Seq: 2, Changes: internal})

	for _, c := range []*feed.Cursor{f.From(0), f.FromRaw(0)} {
		got, err := c.Next(ctx, nil, nil)
		if err != nil {
			t.Fatalf("reading both commits: %v (the internal keys pushed the first out)", err)
		}
		if len(got) != 2 || len(got[1].Raw) != 1 || string(got[1].Raw[0].Key) != string(leaf) {
			t.Fatalf("read %d commits, the second with %d raw changes; want 2, the second with only the data leaf", len(got), len(got[1].Raw))
		}
	}
	err := f.From(0).Skip(ctx, 2, func(k []byte) error {
		t.Errorf("the record of deletes holds %q", k)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPublisherDecodesWhatIsWanted: once readers said what they want, a
// commit is decoded with the top-level containers some reader wants, and
// whole again when one wants everything or none is left.
func TestPublisherDecodesWhatIsWanted(t *testing.T) {
	sch, f, p := newPublisher(t, 64, 1<<20)
	commits := publisherCommits(t)
	path := func(s string) []*gpb.PathElem {
		elems, err := schemaPath(s)
		if err != nil {
			t.Fatal(err)
		}
		return elems
	}
	want := func(paths ...string) (uint64, func()) {
		var elems [][]*gpb.PathElem
		for _, s := range paths {
			if s == "/" {
				elems = append(elems, nil)
			} else {
				elems = append(elems, path(s))
			}
		}
		return p.Want(elems)
	}
	_, policies := want("/policies/policy[name=*]/state")
	var flows, root func()
	seq := uint64(0)
	for _, step := range []struct {
		name   string
		before func()
		want   []string // top-level containers decoded; nil: all
	}{
		{"policies", func() {}, []string{"policies"}},
		{"policies and flows", func() {
			// /policies has been wanted since the start, /flows from now.
			from, done := want("/flows", "/policies")
			if from != f.Last() {
				t.Errorf("Want(/flows, /policies) after commit %d: from %d, want %d", f.Last(), from, f.Last())
			}
			from, again := want("/policies")
			if from != 0 {
				t.Errorf("Want(/policies), wanted since the start: from %d, want 0", from)
			}
			again()
			flows = done
		}, []string{"flows", "policies"}},
		{"flows", policies, []string{"flows", "policies"}}, // the second Want holds policies too
		{"everything, from the root", func() { _, root = want("/") }, nil},
		{"flows again", func() { root(); root() }, []string{"flows", "policies"}},
		{"nobody", func() { flows() }, nil},
	} {
		step.before()
		for _, c := range commits {
			seq++
			p.OnCommit(store.Commit{Seq: seq, Time: int64(seq), Changes: c})
			got := onlyCommit(t, f.From(seq-1), step.name)
			want := reference(sch, c)
			if step.want != nil {
				want = slices.DeleteFunc(want, func(ch feed.Change) bool { return !slices.Contains(step.want, ch.Elems[0].GetName()) })
			}
			if diff := cmp.Diff(want, got.Changes, protocmp.Transform(), sameNode); diff != "" {
				t.Errorf("%s: commit %d (-want +got):\n%s", step.name, seq, diff)
			}
		}
	}
}

// TestPublisherQuiet: the changes of a quiet container reach the feed, raw
// or decoded, only while some reader wants that container (or everything);
// the rest of a commit is published as ever.
func TestPublisherQuiet(t *testing.T) {
	_, f, p := newPublisher(t, 64, 1<<20)
	p.Quiet("flows")
	commits := publisherCommits(t)
	isFlow := func(k []byte) bool {
		name, _, _, ok := pathkey.SplitElem(k)
		return ok && string(name) == "flows"
	}
	flowsIn := func(c []store.Change) (n int) {
		for _, ch := range c {
			if isFlow(ch.Key) {
				n++
			}
		}
		return n
	}
	seq := uint64(0)
	var done func()
	for _, step := range []struct {
		name   string
		before func()
		flows  bool // published with the commit's flow changes
	}{
		{"nobody", func() {}, false},
		{"a reader of /flows", func() { _, done = p.Want([][]*gpb.PathElem{{{Name: "flows"}}}) }, true},
		{"a reader of everything", func() {
			_, all := p.Want([][]*gpb.PathElem{nil})
			done()
			done = all
		}, true},
		{"a reader of /policies alone", func() {
			_, pol := p.Want([][]*gpb.PathElem{{{Name: "policies"}}})
			done()
			done = pol
		}, false},
	} {
		step.before()
		checked := 0
		for _, c := range commits {
			if flowsIn(c) == 0 {
				continue
			}
			checked++
			seq++
			p.OnCommit(store.Commit{Seq: seq, Time: int64(seq), Changes: c})
			raw := onlyCommit(t, f.FromRaw(seq-1), step.name)
			wantRaw := slices.DeleteFunc(slices.Clone(c), func(ch store.Change) bool { return txn.IsInternal(ch.Key) || !step.flows && isFlow(ch.Key) })
			if diff := cmp.Diff(wantRaw, raw.Raw); diff != "" {
				t.Errorf("%s: commit %d, raw (-want +got):\n%s", step.name, seq, diff)
			}
			if step.flows && flowsIn(raw.Raw) == 0 {
				t.Errorf("%s: commit %d published without its %d flow changes", step.name, seq, flowsIn(c))
			}
			for _, ch := range onlyCommit(t, f.From(seq-1), step.name).Changes {
				if !step.flows && ch.Elems[0].GetName() == "flows" {
					t.Errorf("%s: commit %d decoded with %v", step.name, seq, ch.Elems)
				}
			}
		}
		if checked == 0 {
			t.Fatalf("%s: no commit with flow changes to publish", step.name)
		}
	}
}

// onlyCommit reads the one commit after cur's start, and closes cur.
func onlyCommit(t *testing.T, cur *feed.Cursor, what string) feed.Commit {
	t.Helper()
	defer cur.Close()
	got, err := cur.Next(context.Background(), nil, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("%s: read %d commits, %v; want one", what, len(got), err)
	}
	return got[0]
}
