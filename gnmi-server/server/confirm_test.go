package server_test

import (
	"testing"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func commitExt(id string, action any) []*gnmi_ext.Extension {
	c := &gnmi_ext.Commit{Id: id}
	switch a := action.(type) {
	case time.Duration:
		c.Action = &gnmi_ext.Commit_Commit{Commit: &gnmi_ext.CommitRequest{RollbackDuration: durationpb.New(a)}}
	case string:
		switch a {
		case "confirm":
			c.Action = &gnmi_ext.Commit_Confirm{Confirm: &gnmi_ext.CommitConfirm{}}
		case "cancel":
			c.Action = &gnmi_ext.Commit_Cancel{Cancel: &gnmi_ext.CommitCancel{}}
		}
	}
	return []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_Commit{Commit: c}}}
}

// TestCommitConfirmed: a confirmed commit applies at once; confirm keeps it;
// cancel, or no confirmation before the deadline, restores the previous
// configuration exactly (cascades included); while one waits, other Sets
// are refused with FAILED_PRECONDITION.
func TestCommitConfirmed(t *testing.T) {
	deleteBranch1 := func(ext []*gnmi_ext.Extension) *gpb.SetRequest {
		return &gpb.SetRequest{Delete: []*gpb.Path{pathT(t, "/sites/site[name=branch-1]")}, Extension: ext}
	}
	for _, tc := range []struct {
		name   string
		finish func(t *testing.T, c gpb.GNMIClient)
		kept   bool
	}{
		{name: "confirm", kept: true, finish: func(t *testing.T, c gpb.GNMIClient) {
			if _, err := c.Set(ctxT(t), &gpb.SetRequest{Extension: commitExt("c1", "confirm")}); err != nil {
				t.Fatalf("confirm: %v", err)
			}
		}},
		{name: "cancel", finish: func(t *testing.T, c gpb.GNMIClient) {
			if _, err := c.Set(ctxT(t), &gpb.SetRequest{Extension: commitExt("c1", "cancel")}); err != nil {
				t.Fatalf("cancel: %v", err)
			}
		}},
		{name: "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startScenario1(t)
			before := treeLeaves(t, n.Client)
			rollback := 800 * time.Millisecond
			if tc.name != "timeout" {
				rollback = time.Minute
			}
			if _, err := n.Client.Set(ctxT(t), deleteBranch1(commitExt("c1", rollback))); err != nil {
				t.Fatalf("commit: %v", err)
			}
			if leafExists(t, n.Client, "/paths/path[name=hq-inet--branch-1-inet]/config/name") {
				t.Fatal("the commit did not apply")
			}
			// While it waits: other Sets, a second commit, a wrong id.
			if _, err := n.Client.Set(ctxT(t), setDescription(t, "x")); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("plain Set during the window: %v; want FAILED_PRECONDITION", err)
			}
			if _, err := n.Client.Set(ctxT(t), setDescriptionExt(t, "y", commitExt("c2", time.Minute))); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("second commit during the window: %v; want FAILED_PRECONDITION", err)
			}
			if _, err := n.Client.Set(ctxT(t), &gpb.SetRequest{Extension: commitExt("other", "confirm")}); status.Code(err) != codes.InvalidArgument {
				t.Errorf("confirm with a wrong id: %v; want INVALID_ARGUMENT", err)
			}
			if tc.finish != nil {
				tc.finish(t, n.Client)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !tc.kept && !leafExists(t, n.Client, "/paths/path[name=hq-inet--branch-1-inet]/config/name") {
				if time.Now().After(deadline) {
					t.Fatal("the commit was not rolled back")
				}
				time.Sleep(50 * time.Millisecond)
			}
			after := treeLeaves(t, n.Client)
			configOnly := func(m map[string]string) map[string]string {
				out := map[string]string{}
				for k, v := range m {
					if !hasPrefixAny(k, "/system/") {
						out[k] = v
					}
				}
				return out
			}
			if tc.kept {
				if leafExists(t, n.Client, "/sites/site[name=branch-1]/config/name") {
					t.Error("confirmed delete was undone")
				}
			} else if checksum(configOnly(after)) != checksum(configOnly(before)) {
				t.Errorf("rollback did not restore the configuration exactly:\n%s", treeDiff(configOnly(before), configOnly(after)))
			}
			// The window is over: plain Sets work again.
			if _, err := n.Client.Set(ctxT(t), setDescription(t, "z")); err != nil {
				t.Errorf("Set after the window: %v", err)
			}
		})
	}
}

func hasPrefixAny(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

func setDescription(t *testing.T, v string) *gpb.SetRequest { return setDescriptionExt(t, v, nil) }

func setDescriptionExt(t *testing.T, v string, ext []*gnmi_ext.Extension) *gpb.SetRequest {
	return &gpb.SetRequest{Update: []*gpb.Update{{
		Path: pathT(t, "/sites/site[name=hq]/config/description"),
		Val:  &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: v}},
	}}, Extension: ext}
}

func leafExists(t *testing.T, c gpb.GNMIClient, path string) bool {
	t.Helper()
	_, err := c.Get(ctxT(t), &gpb.GetRequest{Path: []*gpb.Path{pathT(t, path)}, Encoding: gpb.Encoding_PROTO})
	if status.Code(err) == codes.NotFound {
		return false
	}
	if err != nil {
		t.Fatalf("Get %s: %v", path, err)
	}
	return true
}
