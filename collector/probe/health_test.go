package probe

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// results parses a script of probe results, one letter each: G answered and
// within the SLA, M answered and marginal (within 10% of a maximum), B
// answered and breaching, L lost (SLA within), X lost and breaching.
func results(t *testing.T, script string) []result {
	t.Helper()
	var rs []result
	for _, c := range strings.ReplaceAll(script, " ", "") {
		switch c {
		case 'G':
			rs = append(rs, result{sla: within})
		case 'M':
			rs = append(rs, result{sla: marginal})
		case 'B':
			rs = append(rs, result{sla: breached})
		case 'L':
			rs = append(rs, result{lost: true, sla: within})
		case 'X':
			rs = append(rs, result{lost: true, sla: breached})
		default:
			t.Fatalf("bad script letter %q", c)
		}
	}
	return rs
}

// states abbreviates health states, one letter each: ? UNKNOWN, U UP,
// D DEGRADED, X DOWN.
func states(hs []Health) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteByte("?UDX"[h])
	}
	return b.String()
}

func TestMachine(t *testing.T) {
	def := thresholds{downAfter: 3, upAfter: 5, breachAfter: 3, clearAfter: 5}
	tests := []struct {
		name   string
		th     thresholds
		script string
		want   string // the state after each result
	}{
		{name: "first reply is up", th: def, script: "G", want: "U"},
		{name: "first reply breaching is degraded", th: def, script: "B", want: "D"},
		{name: "first reply marginal is up", th: def, script: "M", want: "U"},
		{name: "unknown until a reply", th: def, script: "LLG", want: "??U"},
		{name: "dead from the start", th: def, script: "LLLL", want: "??XX"},
		{name: "down after three losses", th: def, script: "GLLL", want: "UUUX"},
		{name: "two losses are not down", th: def, script: "GLLGLLGLLG", want: "UUUUUUUUUU"},
		{
			name:   "up again only after five replies",
			th:     def,
			script: "GLLL GGGGL GGGGG",
			want:   "UUUX XXXXX XXXXU",
		},
		{
			name:   "leaving down while breaching is degraded",
			th:     def,
			script: "GLLL GGGGB",
			want:   "UUUX XXXXD",
		},
		{name: "degraded after three breaches", th: def, script: "GBBBB", want: "UUUDD"},
		{name: "degraded to down", th: def, script: "BLLL", want: "DDDX"},
		{name: "lost and breaching goes down, not degraded", th: def, script: "GXXX", want: "UUUX"},
		{name: "loss breach degrades before down", th: thresholds{downAfter: 5, upAfter: 5, breachAfter: 2, clearAfter: 5}, script: "GXX", want: "UUD"},
		{
			name:   "up after five clear results",
			th:     def,
			script: "B GGGG GGG",
			want:   "D DDDD UUU",
		},
		{
			name:   "alternating at the threshold never degrades",
			th:     def,
			script: "G BGBGBGBGBGBGBG",
			want:   "U UUUUUUUUUUUUUU",
		},
		{
			name:   "hovering in the band holds up",
			th:     def,
			script: "G BBMBBMBBMBBM",
			want:   "U UUUUUUUUUUUU",
		},
		{
			name:   "hovering in the band holds degraded",
			th:     def,
			script: "B GGGGMGGGGMGGGGM",
			want:   "D DDDDDDDDDDDDDDD",
		},
		{
			name:   "band then clear",
			th:     def,
			script: "B MMMM GGGGG",
			want:   "D DDDD DDDDU",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := machine{th: tt.th}
			var got []Health
			for _, r := range results(t, tt.script) {
				m.step(r)
				got = append(got, m.state)
			}
			want := strings.ReplaceAll(tt.want, " ", "")
			if diff := cmp.Diff(want, states(got)); diff != "" {
				t.Errorf("states for %q (-want +got):\n%s", tt.script, diff)
			}
		})
	}
}

func TestMachineReportsChanges(t *testing.T) {
	m := machine{th: thresholds{downAfter: 3, upAfter: 5, breachAfter: 3, clearAfter: 5}}
	var changes []Health
	for _, r := range results(t, "GGLLLGGGGGBBB") {
		if m.step(r) {
			changes = append(changes, m.state)
		}
	}
	if diff := cmp.Diff([]Health{Up, Down, Up, Degraded}, changes); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
}

// TestMachineNoFlapping feeds a metric that crosses its threshold on every
// result for a long time and counts the transitions.
func TestMachineNoFlapping(t *testing.T) {
	m := machine{th: thresholds{downAfter: 3, upAfter: 5, breachAfter: 3, clearAfter: 5}}
	m.step(result{sla: within})
	flips := 0
	for i := range 1000 {
		v := breached
		if i%2 == 0 {
			v = marginal
		}
		if m.step(result{sla: v}) {
			flips++
		}
	}
	if flips != 0 {
		t.Errorf("%d health changes for a metric alternating around its threshold, want 0", flips)
	}
}

func TestHealthString(t *testing.T) {
	got := []string{Unknown.String(), Up.String(), Degraded.String(), Down.String(), Health(9).String()}
	want := []string{"UNKNOWN", "UP", "DEGRADED", "DOWN", "INVALID"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String (-want +got):\n%s", diff)
	}
}
