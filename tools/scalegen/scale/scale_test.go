package scale_test

import (
	"bytes"
	"testing"

	"github.com/patronus-sdwan/patronus/gen/model"
	"github.com/patronus-sdwan/patronus/tools/scalegen/scale"
)

func mustJSON(t *testing.T, s *scale.Set) []byte {
	t.Helper()
	b, err := s.JSON()
	if err != nil {
		t.Fatalf("JSON(): %v", err)
	}
	return b
}

func TestDeterministic(t *testing.T) {
	a, b := scale.Generate(1), scale.Generate(1)
	if !bytes.Equal(mustJSON(t, a), mustJSON(t, b)) {
		t.Error("two configs from seed 1 differ")
	}
	fa, err := a.FlowsJSON()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := b.FlowsJSON()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fa, fb) {
		t.Error("two flow sets from seed 1 differ")
	}
	if bytes.Equal(mustJSON(t, a), mustJSON(t, scale.Generate(2))) {
		t.Error("configs from seeds 1 and 2 are identical")
	}
}

// load parses data as JSON_IETF into a Device and validates it, which
// checks types, patterns, ranges and leafrefs.
func load(t *testing.T, data []byte) *model.Device {
	t.Helper()
	d := &model.Device{}
	if err := model.Unmarshal(data, d); err != nil {
		t.Fatalf("model.Unmarshal: %v", err)
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return d
}

func TestValidAndCounts(t *testing.T) {
	for _, seed := range []int64{1, 42} {
		set := scale.Generate(seed)
		d := load(t, mustJSON(t, set))

		sites := d.GetSites().Site
		if len(sites) != scale.NumSites {
			t.Errorf("seed %d: %d sites, want %d", seed, len(sites), scale.NumSites)
		}
		eps := 0
		for _, s := range sites {
			eps += len(s.GetEndpoints().Endpoint)
		}
		if eps != scale.NumSites*scale.EndpointsPerSite {
			t.Errorf("seed %d: %d endpoints, want %d", seed, eps, scale.NumSites*scale.EndpointsPerSite)
		}
		paths := d.GetPaths().Path
		if len(paths) != scale.NumPaths {
			t.Errorf("seed %d: %d paths, want %d", seed, len(paths), scale.NumPaths)
		}
		for name, p := range paths {
			c := p.GetConfig()
			if c.GetSourceSite() == c.GetDestinationSite() {
				t.Errorf("seed %d: path %s joins a site to itself", seed, name)
			}
		}
		pols := d.GetPolicies().Policy
		if len(pols) != scale.NumPolicies {
			t.Errorf("seed %d: %d policies, want %d", seed, len(pols), scale.NumPolicies)
		}
		prios := map[uint32]string{}
		for name, p := range pols {
			pr := p.GetConfig().GetPriority()
			if pr < 1 || pr > scale.NumPolicies {
				t.Errorf("seed %d: policy %s priority %d out of 1..%d", seed, name, pr, scale.NumPolicies)
			}
			if other, dup := prios[pr]; dup {
				t.Errorf("seed %d: policies %s and %s share priority %d", seed, name, other, pr)
			}
			prios[pr] = name
			for _, pn := range p.GetAction().GetConfig().Paths {
				if paths[pn] == nil {
					t.Errorf("seed %d: policy %s steers onto unknown path %s", seed, name, pn)
				}
			}
		}

		if len(set.Flows) != scale.NumFlows {
			t.Errorf("seed %d: %d flows, want %d", seed, len(set.Flows), scale.NumFlows)
		}
		type key struct {
			proto    uint8
			src, dst string
			sp, dp   uint16
		}
		seen := map[key]bool{}
		for _, f := range set.Flows {
			k := key{f.Protocol, f.SourceAddress, f.DestinationAddress, f.SourcePort, f.DestinationPort}
			if seen[k] {
				t.Errorf("seed %d: duplicate flow %+v", seed, f)
			}
			seen[k] = true
			p := pols[f.Policy]
			if p == nil {
				t.Fatalf("seed %d: flow %+v names unknown policy", seed, f)
			}
			a := p.GetAction().GetConfig()
			if a.GetType() == model.PatronusPolicies_ActionType_STEER {
				if len(a.Paths) == 0 || f.Path != a.Paths[0] {
					t.Errorf("seed %d: flow %+v: path %q, want first path of %s %v", seed, f, f.Path, f.Policy, a.Paths)
				}
			} else if f.Path != "" {
				t.Errorf("seed %d: flow %+v of non-steering policy has a path", seed, f)
			}
		}
	}
}
