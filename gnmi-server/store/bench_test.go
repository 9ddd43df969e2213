package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// BenchmarkDeleteRun is the store's share of a delete cascade: a store of
// 100,000 durable keys (with volatile ones beside them) and one transaction
// that deletes 4,800 neighbouring ones, like the 200 paths of a deleted
// site; the keys are written again, untimed, before each delete.
func BenchmarkDeleteRun(b *testing.B) {
	st, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	key := func(entry, leaf int) []byte {
		return fmt.Appendf(nil, "paths\x00path\x01name\x02site-%04d-path-%04d\x00config\x00leaf-%02d\x00", entry/1000, entry%1000, leaf)
	}
	const entries, leaves, deleted = 4000, 25, 200
	for e := 0; e < entries; e += 100 {
		if err := st.Update(ctx, func(tx store.Tx) error {
			for i := e; i < e+100; i++ {
				for l := range leaves {
					tx.Set(key(i, l), []byte("value"))
				}
				tx.SetVolatile(string(key(i, 99)), []byte("state"))
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	from := entries / 2
	for b.Loop() {
		b.StopTimer()
		if err := st.Update(ctx, func(tx store.Tx) error {
			for i := from; i < from+deleted; i++ {
				for l := range leaves - 1 {
					tx.Set(key(i, l), []byte("value"))
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := st.Update(ctx, func(tx store.Tx) error {
			for i := from; i < from+deleted; i++ {
				for l := range leaves - 1 {
					tx.Delete(key(i, l))
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}
