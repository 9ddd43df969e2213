package routing

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMarkAndTable(t *testing.T) {
	tests := []struct {
		index     uint16
		wantMark  uint32
		wantTable uint32
	}{
		{index: 0, wantMark: 0x50A70000, wantTable: 0x50A70000},
		{index: 7, wantMark: 0x50A70007, wantTable: 0x50A70007},
		{index: 0xFFFF, wantMark: 0x50A7FFFF, wantTable: 0x50A7FFFF},
	}
	for _, tt := range tests {
		if got := Mark(tt.index); got != tt.wantMark {
			t.Errorf("Mark(%d) = %#x, want %#x", tt.index, got, tt.wantMark)
		}
		if got := Mark(tt.index); got&MarkMask != MarkBase || uint16(got&PathIndexMask) != tt.index {
			t.Errorf("Mark(%d) = %#x does not split into MarkBase and the index", tt.index, got)
		}
		if got := Table(tt.index); got != tt.wantTable {
			t.Errorf("Table(%d) = %d, want %d", tt.index, got, tt.wantTable)
		}
		if got, ok := pathIndexOfTable(int(Table(tt.index))); !ok || got != tt.index {
			t.Errorf("pathIndexOfTable(Table(%d)) = %d, %v; want %d, true", tt.index, got, ok, tt.index)
		}
	}
}

func TestReservedRanges(t *testing.T) {
	for _, table := range []int{0, 253, 254, 255, int(TableBase) - 1, int(TableBase) + 0x10000} {
		if _, ok := pathIndexOfTable(table); ok {
			t.Errorf("table %d is inside the reserved range", table)
		}
	}
	if PriorityMin > RulePriority || RulePriority > PriorityMax || PriorityMax >= 32766 {
		t.Errorf("rule priority %d outside [%d, %d] or not before the main table's rule", RulePriority, PriorityMin, PriorityMax)
	}
}

func TestRouteFamilies(t *testing.T) {
	tests := []struct {
		name    string
		gateway netip.Addr
		wantGW  netip.Addr
		want    []family
	}{
		{name: "IPv4", gateway: netip.MustParseAddr("10.0.0.1"), wantGW: netip.MustParseAddr("10.0.0.1"), want: []family{familyV4}},
		{name: "IPv6", gateway: netip.MustParseAddr("2001:db8::1"), wantGW: netip.MustParseAddr("2001:db8::1"), want: []family{familyV6}},
		{name: "IPv4-mapped", gateway: netip.MustParseAddr("::ffff:10.0.0.1"), wantGW: netip.MustParseAddr("10.0.0.1"), want: []family{familyV4}},
		{name: "zoned link-local", gateway: netip.MustParseAddr("fe80::1%wan0"), wantGW: netip.MustParseAddr("fe80::1"), want: []family{familyV6}},
		{name: "no gateway", want: []family{familyV4, familyV6}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Route{PathIndex: 1, Interface: "wan0", Gateway: tt.gateway}
			if diff := cmp.Diff(tt.want, r.families()); diff != "" {
				t.Errorf("families() mismatch (-want +got):\n%s", diff)
			}
			if got := r.gateway(); got != tt.wantGW {
				t.Errorf("gateway() = %v, want %v", got, tt.wantGW)
			}
		})
	}
}
