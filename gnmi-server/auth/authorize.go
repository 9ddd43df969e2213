package auth

import (
	"context"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// operatorTrees are the top-level containers an OPERATOR may Set.
var operatorTrees = map[string]bool{"sites": true, "paths": true, "policies": true}

// inAAA reports whether elems lie entirely inside /system/aaa.
func inAAA(elems []*gpb.PathElem) bool {
	return len(elems) >= 2 && elems[0].GetName() == "system" && elems[1].GetName() == "aaa"
}

// Authorize decides whether the caller in ctx may perform rpc on paths
// (absolute: prefix and path joined); it is the server's Authorizer.
//
//   - ADMIN may do everything.
//   - OPERATOR may Set under /sites, /paths and /policies only (a Set with
//     no path, a Commit extension's confirm or cancel, included) and read
//     everything but /system/aaa.
//   - VIEWER may Get and Subscribe, never under /system/aaa.
//
// Every authenticated user may ask for Capabilities. A read that is not
// entirely inside /system/aaa is allowed; Visible then hides what lies there.
func (a *Authenticator) Authorize(ctx context.Context, rpc string, paths []*gpb.Path) error {
	u, ok := FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "no authenticated user")
	}
	if u.Role == Admin || rpc == "Capabilities" {
		return nil
	}
	switch rpc {
	case "Get", "Subscribe":
		if u.Role < Viewer {
			break
		}
		for _, p := range paths {
			if inAAA(p.GetElem()) {
				return status.Errorf(codes.PermissionDenied, "%s: user %s (%s) may not read /system/aaa", pathkey.String(p.GetElem()), quote(u.Name), u.Role)
			}
		}
		return nil
	case "Set":
		if u.Role != Operator {
			break
		}
		for _, p := range paths {
			if e := p.GetElem(); len(e) == 0 || !operatorTrees[e[0].GetName()] {
				return status.Errorf(codes.PermissionDenied, "%s: user %s (OPERATOR) may Set only under /sites, /paths and /policies; nothing was changed", pathkey.String(e), quote(u.Name))
			}
		}
		return nil
	}
	if len(paths) > 0 {
		return status.Errorf(codes.PermissionDenied, "%s: user %s (%s) may not %s; nothing was changed", pathkey.String(paths[0].GetElem()), quote(u.Name), u.Role, rpc)
	}
	return status.Errorf(codes.PermissionDenied, "user %s (%s) may not %s", quote(u.Name), u.Role, rpc)
}

// Visible returns the filter of the leaves the caller in ctx may read: nil
// (everything) for an ADMIN, everything but /system/aaa otherwise. It is the
// server's Visible hook.
func (a *Authenticator) Visible(ctx context.Context) func([]*gpb.PathElem) bool {
	if u, ok := FromContext(ctx); ok && u.Role == Admin {
		return nil
	}
	return outsideAAA
}

func outsideAAA(elems []*gpb.PathElem) bool { return !inAAA(elems) }

// IsMember reports whether the caller in ctx is a cluster member,
// authenticated with the cluster secret; it is the server's IsMember hook.
func (a *Authenticator) IsMember(ctx context.Context) bool {
	u, _ := FromContext(ctx)
	return u.Member != ""
}

// UserName returns the name of the caller in ctx, for audit records.
func (a *Authenticator) UserName(ctx context.Context) string {
	u, _ := FromContext(ctx)
	return u.Name
}
