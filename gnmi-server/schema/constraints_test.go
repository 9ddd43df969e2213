package schema

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openconfig/goyang/pkg/yang"
)

// TestConstraintsMatchYANG reads the YANG modules with goyang, collects the
// refine-mandatory leaves and unique statements, and checks the tables the
// server enforces list exactly those.
func TestConstraintsMatchYANG(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "../../yang")
	files, err := filepath.Glob(filepath.Join(dir, "*.yang"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no YANG modules in %s: %v", dir, err)
	}
	ms := yang.NewModules()
	ms.AddPath(dir)
	ms.ParseOptions.StoreUses = true
	for _, f := range files {
		if err := ms.Read(f); err != nil {
			t.Fatal(err)
		}
	}
	if errs := ms.Process(); len(errs) > 0 {
		t.Fatal(errs)
	}
	mandatory := map[string]bool{}
	unique := map[string]string{}
	var walk func(e *yang.Entry, path string)
	walk = func(e *yang.Entry, path string) {
		for _, u := range e.Uses {
			for _, r := range u.Uses.Refine {
				if r.Mandatory != nil && r.Mandatory.Name == "true" {
					mandatory[path+"/"+r.Name] = true
				}
			}
		}
		if l, ok := e.Node.(*yang.List); ok {
			for _, u := range l.Unique {
				unique[path] = strings.TrimSpace(u.Name)
			}
		}
		for name, c := range e.Dir {
			walk(c, path+"/"+name)
		}
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yang")
		m, ok := ms.Modules[name]
		if !ok {
			t.Fatalf("module %s not loaded", name)
		}
		e := yang.ToEntry(m)
		for n, c := range e.Dir {
			walk(c, "/"+n)
		}
	}
	if diff := cmp.Diff(RefinedMandatory, mandatory); diff != "" {
		t.Errorf("RefinedMandatory differs from the YANG refine statements (-table +yang):\n%s", diff)
	}
	if diff := cmp.Diff(Unique, unique); diff != "" {
		t.Errorf("Unique differs from the YANG unique statements (-table +yang):\n%s", diff)
	}
}
