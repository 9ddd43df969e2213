package history

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

func open(t *testing.T) (*store.Store, *schema.Schema) {
	t.Helper()
	sch, err := schema.Load()
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, sch
}

func counterKey(policy string) []byte {
	return pathkey.Encode([]*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": policy}},
		{Name: "state"}, {Name: "counters"}, {Name: "packets-matched"}})
}

func configKey(policy string) []byte {
	return pathkey.Encode([]*gpb.PathElem{{Name: "policies"}, {Name: "policy", Key: map[string]string{"name": policy}},
		{Name: "config"}, {Name: "name"}})
}

func write(t *testing.T, st *store.Store, set map[string]uint64, del ...string) {
	t.Helper()
	err := st.Update(context.Background(), func(tx store.Tx) error {
		for p, v := range set {
			tx.Set(configKey(p), txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: p}}))
			tx.Set(counterKey(p), txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: v}}))
		}
		for _, p := range del {
			tx.Delete(counterKey(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// counters reads the packets-matched leaves of r by policy.
func counters(t *testing.T, r store.Reader) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	err := r.Scan(pathkey.Encode([]*gpb.PathElem{{Name: "policies"}}), func(k, v []byte) error {
		elems, err := pathkey.Decode(k)
		if err != nil {
			return err
		}
		if elems[len(elems)-1].GetName() == "name" {
			t.Errorf("configuration leaf %s recorded in the history", pathkey.String(elems))
		}
		tv, err := txn.DecodeValue(v)
		if err != nil {
			return err
		}
		out[elems[1].GetKey()["name"]] = tv.GetUintVal()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRecordAndReadBack(t *testing.T) {
	st, sch := open(t)
	ctx := context.Background()
	rec, rd := NewRecorder(st, sch), NewReader(st)
	t0 := time.Unix(1800000000, 0)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Second) }

	write(t, st, map[string]uint64{"voice": 1, "bulk": 10})
	if err := rec.Sample(ctx, at(0)); err != nil {
		t.Fatal(err)
	}
	write(t, st, map[string]uint64{"voice": 2})
	if err := rec.Sample(ctx, at(1)); err != nil {
		t.Fatal(err)
	}
	write(t, st, map[string]uint64{"video": 7}, "bulk")
	if err := rec.Sample(ctx, at(2)); err != nil {
		t.Fatal(err)
	}

	if r, _, err := rd.At(at(0).UnixNano() - 1); err != nil || r != nil {
		t.Errorf("At before the first sample = %v, %v; want nothing", r, err)
	}
	for i, want := range []map[string]uint64{
		{"voice": 1, "bulk": 10},
		{"voice": 2, "bulk": 10},
		{"voice": 2, "video": 7},
	} {
		// Between samples, the state is the earlier sample's.
		r, ts, err := rd.At(at(i).UnixNano() + int64(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if ts != at(i).UnixNano() {
			t.Errorf("At(sample %d + 5s) is the sample of %v", i, time.Unix(0, ts))
		}
		if diff := cmp.Diff(want, counters(t, r)); diff != "" {
			t.Errorf("state at sample %d (-want +got):\n%s", i, diff)
		}
	}

	// The range lists each sample's changes: the first sample (a keyframe)
	// in full, then only what changed, with the deletion.
	type sample struct {
		T       time.Time
		Changed map[string]uint64
		Deleted int
	}
	var got []sample
	err := rd.Range(at(0).UnixNano(), at(2).UnixNano()+1, func(ts int64, changes []store.Change) error {
		s := sample{T: time.Unix(0, ts), Changed: map[string]uint64{}}
		for _, c := range changes {
			elems, _ := pathkey.Decode(c.Key)
			if c.Value == nil {
				s.Deleted++
				continue
			}
			tv, _ := txn.DecodeValue(c.Value)
			s.Changed[elems[1].GetKey()["name"]] = tv.GetUintVal()
		}
		got = append(got, s)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []sample{
		{at(0), map[string]uint64{"voice": 1, "bulk": 10}, 0},
		{at(1), map[string]uint64{"voice": 2}, 0},
		{at(2), map[string]uint64{"video": 7}, 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("range (-want +got):\n%s", diff)
	}
	// Half-open: a range ending at a sample's time leaves it out.
	n := 0
	rd.Range(at(1).UnixNano(), at(2).UnixNano(), func(int64, []store.Change) error { n++; return nil })
	if n != 1 {
		t.Errorf("range [sample 1, sample 2) held %d samples, want 1", n)
	}
}

func TestTrimKeepsAKeyframe(t *testing.T) {
	st, sch := open(t)
	ctx := context.Background()
	rec, rd := NewRecorder(st, sch), NewReader(st)
	t0 := time.Unix(1800000000, 0)
	for i := range 2*keyframeEvery + 5 {
		write(t, st, map[string]uint64{"voice": uint64(i)})
		if err := rec.Sample(ctx, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := t0.Add(time.Duration(keyframeEvery+10) * time.Second)
	if err := rec.Trim(ctx, cutoff); err != nil {
		t.Fatal(err)
	}
	// The state at the cutoff can still be rebuilt; earlier is gone.
	r, _, err := rd.At(cutoff.UnixNano())
	if err != nil || r == nil {
		t.Fatalf("At(cutoff) after Trim = %v, %v", r, err)
	}
	if got := counters(t, r)["voice"]; got != keyframeEvery+10 {
		t.Errorf("voice at the cutoff = %d, want %d", got, keyframeEvery+10)
	}
	if r, _, _ := rd.At(t0.Add(time.Duration(keyframeEvery-1) * time.Second).UnixNano()); r != nil {
		t.Errorf("a sample older than the kept keyframe survived Trim")
	}
	var kept int
	st.Scan([]byte(txn.LocalPrefix+"hist/d/"), func(_, _ []byte) error { kept++; return nil })
	if kept != keyframeEvery+5 {
		t.Errorf("%d samples kept after Trim, want %d (from the keyframe before the cutoff)", kept, keyframeEvery+5)
	}
}
