package txn_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

type env struct {
	t   testing.TB
	st  *store.Store
	eng *txn.Engine
}

func newEnv(t testing.TB) *env {
	t.Helper()
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir(), store.Options{Packed: txn.PackedPrefixes()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{t: t, st: st, eng: txn.New(sch)}
}

func mustPath(t testing.TB, s string) []*gpb.PathElem {
	t.Helper()
	p, err := ygot.StringToStructuredPath(s)
	if err != nil {
		t.Fatalf("path %s: %v", s, err)
	}
	return p.GetElem()
}

func (e *env) apply(ops ...txn.Op) error {
	return e.st.Update(context.Background(), func(tx store.Tx) error {
		_, err := e.eng.Apply(tx, ops, txn.Meta{User: "test", Node: "n1"})
		return err
	})
}

func (e *env) get(path string) (*gpb.TypedValue, bool) {
	e.t.Helper()
	b, ok, err := e.st.Get(pathkey.Encode(mustPath(e.t, path)))
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		return nil, false
	}
	tv, err := txn.DecodeValue(b)
	if err != nil {
		e.t.Fatal(err)
	}
	return tv, true
}

func scenario1(t testing.TB) []byte {
	_, file, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(file), "../../testdata/scenario1/config.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonUpdate(t testing.TB, path string, v []byte) txn.Op {
	return txn.Op{Kind: gpb.UpdateResult_UPDATE, Elems: mustPath(t, path), Value: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: v}}}
}

func TestSiteDeleteCascades(t *testing.T) {
	e := newEnv(t)
	if err := e.apply(jsonUpdate(t, "/", scenario1(t))); err != nil {
		t.Fatal(err)
	}
	if err := e.apply(txn.Op{Kind: gpb.UpdateResult_DELETE, Elems: mustPath(t, "/sites/site[name=branch-1]")}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		"/sites/site[name=branch-1]/config/name",
		"/sites/site[name=branch-1]/endpoints/endpoint[name=inet]/config/address",
		"/paths/path[name=hq-inet--branch-1-inet]/config/name",
		"/paths/path[name=branch-1-mpls--hq-mpls]/state/name",
	} {
		if _, ok := e.get(p); ok {
			t.Errorf("%s survived the site delete", p)
		}
	}
	tv, ok := e.get("/policies/policy[name=voice-sip]/action/config/paths")
	if ok {
		t.Errorf("voice-sip paths = %v, want the leaf gone (both its paths went to branch-1)", tv)
	}
	if _, ok := e.get("/paths/path[name=hq-inet--branch-2-inet]/config/name"); !ok {
		t.Error("a path of branch-2 was deleted")
	}
}

// TestCascadeAudit: the audit record of a site delete names the site and
// each cascaded path entry once, and the policy leaf-list it edited.
func TestCascadeAudit(t *testing.T) {
	e := newEnv(t)
	if err := e.apply(jsonUpdate(t, "/", scenario1(t))); err != nil {
		t.Fatal(err)
	}
	if err := e.apply(txn.Op{Kind: gpb.UpdateResult_DELETE, Elems: mustPath(t, "/sites/site[name=branch-1]")}); err != nil {
		t.Fatal(err)
	}
	tv, ok := e.get("/system/audit/record[sequence=2]/state/paths")
	if !ok {
		t.Fatal("no audit record for the delete")
	}
	var got []string
	for _, el := range tv.GetLeaflistVal().GetElement() {
		got = append(got, el.GetStringVal())
	}
	want := map[string]bool{
		"/sites/site[name=branch-1]":               true,
		"/paths/path[name=branch-1-inet--hq-inet]": true,
		"/paths/path[name=branch-1-mpls--hq-mpls]": true,
		"/paths/path[name=hq-inet--branch-1-inet]": true,
		"/paths/path[name=hq-mpls--branch-1-mpls]": true,
	}
	seen := map[string]int{}
	for _, p := range got {
		seen[p]++
	}
	for p := range want {
		if seen[p] != 1 {
			t.Errorf("audit paths list %s %d times; want once (paths: %v)", p, seen[p], got)
		}
	}
	for p := range seen {
		if !want[p] && !strings.HasPrefix(p, "/policies/policy[") {
			t.Errorf("audit paths list unexpected %s", p)
		}
	}
	if ev, ok := e.get("/system/events/event[sequence=2]/state/type"); !ok || ev.GetStringVal() != "SITE_DELETED" {
		t.Errorf("event 2 = %v; want SITE_DELETED", ev)
	}
}

func TestReplaceConfigContainerKeepsMirror(t *testing.T) {
	e := newEnv(t)
	if err := e.apply(jsonUpdate(t, "/", scenario1(t))); err != nil {
		t.Fatal(err)
	}
	op := jsonUpdate(t, "/sites/site[name=hq]/config", []byte(`{"name":"hq","location":"Munich"}`))
	op.Kind = gpb.UpdateResult_REPLACE
	if err := e.apply(op); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/sites/site[name=hq]/config/location", "/sites/site[name=hq]/state/location"} {
		if tv, ok := e.get(p); !ok || tv.GetStringVal() != "Munich" {
			t.Errorf("%s = %v, %v; want Munich", p, tv, ok)
		}
	}
}

// bigSite is a site "big" whose one endpoint 200 paths use, to measure the
// delete cascade.
func bigSite(t testing.TB) []byte {
	var paths []string
	for i := 0; i < 200; i++ {
		paths = append(paths, fmt.Sprintf(`{"name":"p%d","config":{"name":"p%d","source-site":"big","source-endpoint":"e","destination-site":"other","destination-endpoint":"e"}}`, i, i))
	}
	return []byte(`{"patronus-sites:sites":{"site":[` +
		`{"name":"big","config":{"name":"big"},"endpoints":{"endpoint":[{"name":"e","config":{"name":"e","address":"192.0.2.1"}}]}},` +
		`{"name":"other","config":{"name":"other"},"endpoints":{"endpoint":[{"name":"e","config":{"name":"e","address":"192.0.2.2"}}]}}]},` +
		`"patronus-paths:paths":{"path":[` + strings.Join(paths, ",") + `]},` +
		`"patronus-policies:policies":{"policy":[{"name":"pol","config":{"name":"pol","priority":1},"action":{"config":{"type":"STEER","paths":["p1","p2","p3"]}}}]}}`)
}

// BenchmarkSiteDeleteCascade deletes a site that 200 paths and a policy
// reference, then loads it again (not timed).
func BenchmarkSiteDeleteCascade(b *testing.B) {
	e := newEnv(b)
	doc := bigSite(b)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if err := e.apply(jsonUpdate(b, "/", doc)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := e.apply(txn.Op{Kind: gpb.UpdateResult_DELETE, Elems: mustPath(b, "/sites/site[name=big]")}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSiteDeleteCascadeEngine is the engine's share of the cascade:
// the delete runs in a transaction that is then discarded, so the store is
// the same for every iteration and nothing is written to Pebble.
func BenchmarkSiteDeleteCascadeEngine(b *testing.B) {
	e := newEnv(b)
	if err := e.apply(jsonUpdate(b, "/", bigSite(b))); err != nil {
		b.Fatal(err)
	}
	errDiscard := errors.New("discard")
	del := []txn.Op{{Kind: gpb.UpdateResult_DELETE, Elems: mustPath(b, "/sites/site[name=big]")}}
	for b.Loop() {
		err := e.st.Update(context.Background(), func(tx store.Tx) error {
			res, err := e.eng.Apply(tx, del, txn.Meta{User: "test", Node: "n1"})
			if err != nil {
				return err
			}
			if len(res.Changed) < 200 {
				b.Fatalf("the cascade changed %d paths; want the 200 paths", len(res.Changed))
			}
			return errDiscard
		})
		if !errors.Is(err, errDiscard) {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetLeafEngine is the engine's share of a one-leaf Set, its
// audit record and event included, in a transaction that is then
// discarded.
func BenchmarkSetLeafEngine(b *testing.B) {
	e := newEnv(b)
	if err := e.apply(jsonUpdate(b, "/", bigSite(b))); err != nil {
		b.Fatal(err)
	}
	errDiscard := errors.New("discard")
	i := 0
	for b.Loop() {
		i++
		op := txn.Op{Kind: gpb.UpdateResult_UPDATE, Elems: mustPath(b, "/sites/site[name=big]/config/description"),
			Value: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprint("d", i)}}}
		err := e.st.Update(context.Background(), func(tx store.Tx) error {
			if _, err := e.eng.Apply(tx, []txn.Op{op}, txn.Meta{User: "test", Node: "n1"}); err != nil {
				return err
			}
			return errDiscard
		})
		if !errors.Is(err, errDiscard) {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetHeldMemory: the memory a one-leaf Set leaves held, a hundred
// Sets to a commit (an op): its audit record and event, until the rings are
// full (it fails past 1,000 ops; -benchtime 500x). 335 bytes a Set (50,000): a full
// audit ring of 100,000 records holds 30 MB of every node's memory. (Kept
// on disk only, they cost a Set 2.5 times as much: Pebble point reads of
// the record trimmed and of the new one, for their changes.)
func BenchmarkSetHeldMemory(b *testing.B) {
	e := newEnv(b)
	if err := e.apply(jsonUpdate(b, "/", bigSite(b))); err != nil {
		b.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	h0 := heap()
	elems := mustPath(b, "/sites/site[name=big]/config/description")
	n := 0
	for b.Loop() {
		if n >= 100_000 {
			b.Fatal("the audit ring is full: what a Set holds no longer grows; run fewer ops")
		}
		fns := make([]func(store.Tx) error, 100)
		for j := range fns {
			op := txn.Op{Kind: gpb.UpdateResult_UPDATE, Elems: elems, Value: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprint("d", n)}}}
			n++
			fns[j] = func(tx store.Tx) error {
				_, err := e.eng.Apply(tx, []txn.Op{op}, txn.Meta{User: "admin", Node: "n1", Peer: "127.0.0.1:54321"})
				return err
			}
		}
		for _, err := range e.st.UpdateBatch(context.Background(), fns) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(int64(heap())-int64(h0))/float64(n), "held-B/Set")
}

// TestRecordRings fills the audit and event rings past their size, starting
// from records written one key per leaf (as before records were packed):
// the oldest records go whole, the newest are one packed key each, and
// readers see each record's leaves.
func TestRecordRings(t *testing.T) {
	e := newEnv(t)
	e.eng.AuditRing, e.eng.EventRing = 3, 3
	err := e.st.Update(context.Background(), func(tx store.Tx) error {
		for _, leaf := range []string{"sequence", "timestamp", "user", "result"} {
			tx.Set(pathkey.Encode(mustPath(t, "/system/audit/record[sequence=1]/state/"+leaf)), txn.AppendString(nil, "old"))
		}
		for _, leaf := range []string{"sequence", "type", "message"} {
			tx.Set(pathkey.Encode(mustPath(t, "/system/events/event[sequence=1]/state/"+leaf)), txn.AppendString(nil, "old"))
		}
		tx.Set([]byte("\xfdm/audit"), []byte{0, 0, 0, 0, 0, 0, 0, 1})
		tx.Set([]byte("\xfdm/event"), []byte{0, 0, 0, 0, 0, 0, 0, 1})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.apply(jsonUpdate(t, "/", scenario1(t))); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		op := txn.Op{Kind: gpb.UpdateResult_UPDATE, Elems: mustPath(t, "/sites/site[name=hq]/config/description"),
			Value: &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: fmt.Sprint("d", i)}}}
		if err := e.apply(op); err != nil {
			t.Fatal(err)
		}
	}
	// Six Sets after the old record 1: records 2 to 7, of which 5 to 7 stay.
	for _, c := range []struct {
		prefix string
		leaves []string
	}{
		{"/system/audit", []string{"operation", "paths", "peer", "result", "sequence", "timestamp", "user"}},
		{"/system/events", []string{"message", "node", "sequence", "severity", "timestamp", "type"}},
	} {
		got := map[string][]string{}
		err := e.st.Scan(pathkey.Encode(mustPath(t, c.prefix)), func(k, v []byte) error {
			elems, err := pathkey.Decode(k)
			if err != nil {
				return err
			}
			seq := elems[2].GetKey()["sequence"]
			got[seq] = append(got[seq], elems[len(elems)-1].GetName())
			if _, err := txn.DecodeValue(v); err != nil {
				return fmt.Errorf("%s: %w", pathkey.String(elems), err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]string{"5": c.leaves, "6": c.leaves, "7": c.leaves}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: records and leaves %v, want %v", c.prefix, got, want)
		}
		// As stored: one key per record.
		keys := 0
		if err := e.st.Snapshot().Scan(pathkey.Encode(mustPath(t, c.prefix)), func(_, _ []byte) error { keys++; return nil }); err != nil {
			t.Fatal(err)
		}
		if keys != 3 {
			t.Errorf("%s: %d keys stored, want 3 (one per record)", c.prefix, keys)
		}
	}
}
