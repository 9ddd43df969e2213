package txn_test

import (
	"bytes"
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// TestAppendHelpersMatchEncodeValue checks that the helpers that write
// stored values without a TypedValue write what EncodeValue writes.
func TestAppendHelpersMatchEncodeValue(t *testing.T) {
	str := func(s string) *gpb.TypedValue { return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}} }
	list := &gpb.ScalarArray{Element: []*gpb.TypedValue{str("/sites/site[name=a]"), str(""), str("/x")}}
	for _, c := range []struct {
		name string
		got  []byte
		tv   *gpb.TypedValue
	}{
		{"uint", txn.AppendUint(nil, 1<<40), &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: 1 << 40}}},
		{"string", txn.AppendString(nil, "héllo"), str("héllo")},
		{"strings", txn.AppendStrings(nil, []string{"/sites/site[name=a]", "", "/x"}), &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: list}}},
		{"no strings", txn.AppendStrings(nil, nil), &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: &gpb.ScalarArray{}}}},
	} {
		if want := txn.EncodeValue(c.tv); !bytes.Equal(c.got, want) {
			t.Errorf("%s: %x; EncodeValue gives %x", c.name, c.got, want)
		}
	}
}
