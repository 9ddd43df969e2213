package schema

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/protobuf/encoding/prototext"
)

// flattenAll returns path -> value text of every leaf in a JSON document.
func flattenAll(t *testing.T, s *Schema, doc []byte) (map[string]string, [][]*gpb.PathElem, []*gpb.TypedValue) {
	t.Helper()
	v, err := DecodeJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	var paths [][]*gpb.PathElem
	var vals []*gpb.TypedValue
	err = s.Flatten(nil, s.Root, v, func(elems []*gpb.PathElem, n *Node, tv *gpb.TypedValue) error {
		out[pathString(elems)] = prototext.Format(tv)
		paths = append(paths, elems)
		vals = append(vals, tv)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, paths, vals
}

// TestBuilderRoundTrip flattens scenario 1, rebuilds it with the Builder in
// both JSON flavours, and checks the result flattens to the same leaves and
// that the streamed JSON equals encoding/json's rendering of the same tree.
func TestBuilderRoundTrip(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../testdata/scenario1/config.json")
	if err != nil {
		t.Fatal(err)
	}
	want, paths, vals := flattenAll(t, s, doc)
	if len(want) < 50 {
		t.Fatalf("scenario 1 flattened to only %d leaves", len(want))
	}
	for _, ietf := range []bool{true, false} {
		b := s.NewBuilder(s.Root, ietf)
		for i, p := range paths {
			nodes := make([]*Node, len(p))
			cur := s.Root
			for j, e := range p {
				cur = cur.Children[e.GetName()]
				nodes[j] = cur
			}
			b.Add(p, nodes, ToJSON(nodes[len(nodes)-1], vals[i], ietf))
		}
		streamed := b.JSON()
		var fromStream, fromValue any
		if err := json.Unmarshal(streamed, &fromStream); err != nil {
			t.Fatalf("ietf=%v: Builder.JSON is not JSON: %v\n%s", ietf, err, streamed)
		}
		viaStd, err := MarshalJSON(b.Value())
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(viaStd, &fromValue); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(fromValue, fromStream); diff != "" {
			t.Errorf("ietf=%v: streamed JSON differs from encoding/json (-std +streamed):\n%s", ietf, diff)
		}
		got, _, _ := flattenAll(t, s, streamed)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ietf=%v: round trip changed leaves (-want +got):\n%s", ietf, diff)
		}
	}
}

func TestJSONStringEscaping(t *testing.T) {
	for _, s := range []string{"plain", `quo"te`, `back\slash`, "ctl\x01\n\t", "ünïcødé ✓"} {
		var got string
		if err := json.Unmarshal(appendJSONString(nil, s), &got); err != nil || got != s {
			t.Errorf("appendJSONString(%q) decodes to %q, %v", s, got, err)
		}
	}
}
