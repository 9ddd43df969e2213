package model_test

import (
	"strings"
	"testing"

	"github.com/openconfig/goyang/pkg/yang"

	"github.com/patronus-sdwan/patronus/gen/model"
)

// lookup walks the schema tree from the fake root along a /-separated path.
func lookup(t *testing.T, root *yang.Entry, path string) *yang.Entry {
	t.Helper()
	e := root
	for _, elem := range strings.Split(strings.Trim(path, "/"), "/") {
		next, ok := e.Dir[elem]
		if !ok {
			t.Fatalf("schema path %s: no child %q under %s", path, elem, e.Path())
		}
		e = next
	}
	return e
}

func TestSchemaTopLevel(t *testing.T) {
	s, err := model.Schema()
	if err != nil {
		t.Fatalf("model.Schema(): %v", err)
	}
	root := s.RootSchema()
	if root == nil {
		t.Fatal("schema has no root")
	}
	if _, ok := s.Root.(*model.Device); !ok {
		t.Fatalf("schema root is %T, want *model.Device", s.Root)
	}
	for _, name := range []string{"sites", "paths", "policies", "flows", "system"} {
		if _, ok := root.Dir[name]; !ok {
			t.Errorf("fake root has no child %q", name)
		}
	}
	if len(model.ΓModelData) != 5 {
		t.Errorf("ΓModelData has %d modules, want 5", len(model.ΓModelData))
	}
}

func TestSchemaPaths(t *testing.T) {
	s, err := model.Schema()
	if err != nil {
		t.Fatalf("model.Schema(): %v", err)
	}
	root := s.RootSchema()

	port := lookup(t, root, "/sites/site/endpoints/endpoint/config/port")
	if !port.IsLeaf() || port.Type.Kind != yang.Yuint16 {
		t.Errorf("endpoint port: got leaf=%v kind=%v, want uint16 leaf", port.IsLeaf(), port.Type.Kind)
	}
	if d, ok := port.SingleDefaultValue(); !ok || d != "4784" {
		t.Errorf("endpoint port default = %q (%v), want \"4784\"", d, ok)
	}

	txBytes := lookup(t, root, "/paths/path/state/counters/tx-bytes")
	if !txBytes.IsLeaf() || txBytes.Type.Kind != yang.Yuint64 || !txBytes.ReadOnly() {
		t.Errorf("tx-bytes: leaf=%v kind=%v ro=%v, want read-only uint64 leaf", txBytes.IsLeaf(), txBytes.Type.Kind, txBytes.ReadOnly())
	}

	actPaths := lookup(t, root, "/policies/policy/action/config/paths")
	if !actPaths.IsLeafList() {
		t.Errorf("action/config/paths is not a leaf-list")
	}
	if actPaths.Type.Kind != yang.Yleafref {
		t.Errorf("action/config/paths kind = %v, want leafref", actPaths.Type.Kind)
	}

	flow := lookup(t, root, "/flows/flow")
	if got, want := flow.Key, "protocol source-address source-port destination-address destination-port"; got != want {
		t.Errorf("flow key = %q, want %q", got, want)
	}
	if !flow.ReadOnly() {
		t.Errorf("/flows/flow is not read-only")
	}

	for _, p := range []string{
		"/system/state/current-datetime",
		"/system/cluster/state/applied-index",
		"/system/cluster/members/member/state/last-contact",
		"/system/aaa/users/user/config/password",
		"/system/stats-history/state/retention",
		"/system/events/event/state/node",
		"/system/audit/record/state/paths",
		"/policies/policy/action/sla/state/max-loss",
		"/policies/policy/match/state/dscp",
	} {
		lookup(t, root, p)
	}
	if _, ok := lookup(t, root, "/system/aaa/users/user/state").Dir["password"]; ok {
		t.Errorf("user state must not carry the password")
	}
}

func TestUnmarshalJSONIETF(t *testing.T) {
	const doc = `{"patronus-sites:sites":{"site":[{"name":"hq","config":{"name":"hq","location":"Frankfurt"}}]}}`
	d := &model.Device{}
	if err := model.Unmarshal([]byte(doc), d); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	site := d.GetSites().GetSite("hq")
	if site == nil {
		t.Fatal("site hq missing after Unmarshal")
	}
	if got := site.GetConfig().GetLocation(); got != "Frankfurt" {
		t.Errorf("location = %q, want Frankfurt", got)
	}
	if got := site.GetConfig().GetName(); got != "hq" {
		t.Errorf("config/name = %q, want hq", got)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}
