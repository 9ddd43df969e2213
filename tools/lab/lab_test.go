package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPathEnds(t *testing.T) {
	for _, tc := range []struct {
		path     string
		src, dst string // site/endpoint; empty: an error
	}{
		{"hq-mpls--branch-1-mpls", "hq/mpls", "branch-1/mpls"},
		{"branch-2-lte--hq-inet", "branch-2/lte", "hq/inet"},
		{"hq-inet-branch-1-inet", "", ""},
		{"hq-sat--branch-1-inet", "", ""},
		{"hq-inet--branch-9-inet", "", ""},
		{"hq--branch-1-inet", "", ""},
	} {
		src, dst, err := pathEnds(tc.path)
		if tc.src == "" {
			if err == nil {
				t.Errorf("pathEnds(%q) = %v, %v; want an error", tc.path, src, dst)
			}
			continue
		}
		if err != nil {
			t.Errorf("pathEnds(%q): %v", tc.path, err)
			continue
		}
		got := []string{src.Site + "/" + src.Name, dst.Site + "/" + dst.Name}
		if diff := cmp.Diff([]string{tc.src, tc.dst}, got); diff != "" {
			t.Errorf("pathEnds(%q) (-want +got):\n%s", tc.path, diff)
		}
	}
}
