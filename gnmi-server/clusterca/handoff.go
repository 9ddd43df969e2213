package clusterca

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
)

// Method is the gRPC method that hands the cluster CA (certificate and
// key, PEM) to an ADMIN or a member, served next to gNMI on every member.
// A node that joins calls it, authenticated as the admin, before it asks
// to be added. It is a service of its own, not a gNMI path, so that no
// Get or Subscribe can ever reach the CA.
const Method = "/patronus.cluster.ClusterCA/Get"

// handoff is the service's handler type.
type handoff interface {
	handOver(ctx context.Context) ([]byte, error)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "patronus.cluster.ClusterCA",
	HandlerType: (*handoff)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) {
				b, err := srv.(handoff).handOver(ctx)
				if err != nil {
					return nil, err
				}
				return wrapperspb.Bytes(b), nil
			}
			if icpt == nil {
				return h(ctx, in)
			}
			return icpt(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: Method}, h)
		},
	}},
}

// Register serves Method on s, whose interceptors must authenticate
// callers (auth.Authenticator).
func (m *Manager) Register(s *grpc.Server) { s.RegisterService(&serviceDesc, m) }

// handOver returns the CA from this node's store to an authenticated ADMIN
// or member; nobody else may have it.
func (m *Manager) handOver(ctx context.Context) ([]byte, error) {
	u, ok := auth.FromContext(ctx)
	if !ok || u.Role != auth.Admin {
		return nil, status.Error(codes.PermissionDenied, "only an ADMIN or a cluster member may fetch the cluster CA")
	}
	m.mu.Lock()
	st := m.st
	m.mu.Unlock()
	if st == nil {
		return nil, status.Error(codes.Unavailable, "this node has no cluster CA yet; retry")
	}
	b, ok, err := st.Get([]byte(StoreKey))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the cluster CA: %v", err)
	}
	if !ok {
		return nil, status.Error(codes.Unavailable, "the cluster has no CA yet (its leader makes one); retry")
	}
	from := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	m.log.Info("handed the cluster CA over", "user", u.Name, "member", u.Member, "peer", from)
	return b, nil
}

// Fetch asks the member at the other end of cc for the cluster CA; the
// call must be authenticated as an ADMIN or a member. Install takes what
// it returns.
func Fetch(ctx context.Context, cc grpc.ClientConnInterface) ([]byte, error) {
	out := new(wrapperspb.BytesValue)
	if err := cc.Invoke(ctx, Method, &emptypb.Empty{}, out); err != nil {
		return nil, err
	}
	return out.GetValue(), nil
}
