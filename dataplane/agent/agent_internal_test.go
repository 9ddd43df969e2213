package agent

import (
	"testing"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// TestTouchesConfig: the agent reconciles on a change of configuration
// under /sites, /paths or /policies, read from the stored key alone, and not
// on measured state, whatever the names in list keys.
func TestTouchesConfig(t *testing.T) {
	key := func(elems ...*gpb.PathElem) []byte { return pathkey.Encode(elems) }
	e := func(name string, kv ...string) *gpb.PathElem {
		p := &gpb.PathElem{Name: name}
		if len(kv) == 2 {
			p.Key = map[string]string{kv[0]: kv[1]}
		}
		return p
	}
	for _, tc := range []struct {
		name string
		key  []byte
		want bool
	}{
		{"site config", key(e("sites"), e("site", "name", "hq"), e("config"), e("name")), true},
		{"endpoint config", key(e("sites"), e("site", "name", "hq"), e("endpoints"), e("endpoint", "name", "wan1"), e("config"), e("interface")), true},
		{"policy config", key(e("policies"), e("policy", "name", "voice"), e("config"), e("priority")), true},
		{"path config", key(e("paths"), e("path", "name", "p1"), e("config"), e("local-endpoint")), true},
		{"policy counters", key(e("policies"), e("policy", "name", "voice"), e("state"), e("counters"), e("packets-matched")), false},
		{"a policy named config", key(e("policies"), e("policy", "name", "config"), e("state"), e("active-path")), false},
		{"path state", key(e("paths"), e("path", "name", "config"), e("state"), e("latency")), false},
		{"flows", key(e("flows"), e("flow", "protocol", "17"), e("state"), e("packets")), false},
		{"system config", key(e("system"), e("config"), e("hostname")), false},
	} {
		raw := []feed.Commit{{Raw: []store.Change{{Key: tc.key}}}}
		decoded := []feed.Commit{{Changes: []feed.Change{{Key: tc.key}}}}
		if got := touchesConfig(raw); got != tc.want {
			t.Errorf("%s: touchesConfig(raw) = %v, want %v", tc.name, got, tc.want)
		}
		if got := touchesConfig(decoded); got != tc.want {
			t.Errorf("%s: touchesConfig(decoded) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
