package server

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"syscall"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Set applies the request as one transaction and answers once it is durable.
//
// A Set refused here (a malformed request or extension, a refusal by
// Authorize, a value the schema rejects) is handed to Config.Rejected for
// its audit record; one the engine rejects is audited by the Committer.
// Either way the client gets the refusal's own code and message.
func (s *Server) Set(ctx context.Context, req *gpb.SetRequest) (*gpb.SetResponse, error) {
	meta := txn.Meta{Peer: peerOf(ctx), Node: s.cfg.NodeName}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(ForwardedPeerHeader)) > 0 {
		// A Set forwarded by a follower: audit the client's own address.
		meta.Peer = md.Get(ForwardedPeerHeader)[0]
	}
	if s.cfg.User != nil {
		meta.User = s.cfg.User(ctx)
	}
	var commit *txn.CommitAction
	for _, x := range req.GetExtension() {
		switch e := x.GetExt().(type) {
		case *gnmi_ext.Extension_Commit:
			var err error
			if commit, err = commitAction(e.Commit); err != nil {
				return nil, s.rejected(meta, requestPaths(req), err)
			}
		case *gnmi_ext.Extension_RegisteredExt:
			if e.RegisteredExt.GetId() == AuditExtension {
				return s.audit(ctx, req, e.RegisteredExt.GetMsg())
			}
			return nil, s.rejected(meta, requestPaths(req), status.Errorf(codes.InvalidArgument, "Set: registered extension %d does not apply to Set", e.RegisteredExt.GetId()))
		default:
			return nil, s.rejected(meta, requestPaths(req), status.Errorf(codes.InvalidArgument, "Set: extension %T does not apply to Set", x.GetExt()))
		}
	}
	meta.Commit = commit
	ops, paths, err := setOps(req)
	if err != nil {
		return nil, s.rejected(meta, requestPaths(req), err)
	}
	if len(ops) == 0 && (commit == nil || commit.Kind == txn.CommitStart) {
		return nil, s.rejected(meta, nil, status.Error(codes.InvalidArgument, "SetRequest has no delete, replace or update"))
	}
	if err := s.authorize(ctx, "Set", paths); err != nil {
		return nil, s.rejected(meta, txn.OpPaths(ops), err)
	}
	if err := s.cfg.Engine.Prepare(ops); err != nil {
		return nil, s.rejected(meta, txn.OpPaths(ops), setError(err, ops))
	}
	res, err := s.cfg.Committer.Commit(ctx, ops, meta)
	if err != nil {
		return nil, setError(err, ops)
	}
	if res.Index > 0 {
		grpc.SetHeader(ctx, metadata.Pairs(IndexHeader, strconv.FormatUint(res.Index, 10)))
	}
	resp := &gpb.SetResponse{Prefix: req.GetPrefix(), Timestamp: res.Time}
	for _, op := range ops {
		resp.Response = append(resp.Response, &gpb.UpdateResult{Path: op.Path, Op: op.Kind})
	}
	return resp, nil
}

// rejected hands the refusal of a Set to Config.Rejected and returns err,
// the status the client gets.
func (s *Server) rejected(meta txn.Meta, paths []string, err error) error {
	if s.cfg.Rejected != nil {
		st := status.Convert(err)
		s.cfg.Rejected(txn.Rejection{User: meta.User, Peer: meta.Peer, Node: meta.Node, Operation: txn.Operation(meta.Commit),
			Paths: paths, Message: txn.CodeName(st.Code()) + ": " + st.Message(), Time: time.Now().UnixNano()})
	}
	return err
}

// requestPaths lists the paths a request names, prefix joined, for the audit
// record of a request too malformed to become operations.
func requestPaths(req *gpb.SetRequest) []string {
	var out []string
	add := func(p *gpb.Path) {
		out = append(out, pathkey.String(append(slices.Clone(req.GetPrefix().GetElem()), p.GetElem()...)))
	}
	for _, p := range req.GetDelete() {
		add(p)
	}
	for _, u := range append(append([]*gpb.Update{}, req.GetUnionReplace()...), req.GetReplace()...) {
		add(u.GetPath())
	}
	for _, u := range req.GetUpdate() {
		add(u.GetPath())
	}
	return out
}

// AuditExtension is the registered extension with which a member hands the
// leader the audit record of a request it refused before the log (a
// txn.EncodeRejection command), for the leader to commit. The Set carries
// no operation.
const AuditExtension gnmi_ext.ExtensionID = 0x50a7

// audit commits the audit record a member forwarded.
func (s *Server) audit(ctx context.Context, req *gpb.SetRequest, msg []byte) (*gpb.SetResponse, error) {
	if s.cfg.IsMember != nil && !s.cfg.IsMember(ctx) {
		return nil, status.Error(codes.PermissionDenied, "Set: only a cluster member may submit an audit record")
	}
	if len(req.GetDelete())+len(req.GetReplace())+len(req.GetUpdate())+len(req.GetUnionReplace()) > 0 || len(req.GetExtension()) != 1 {
		return nil, status.Error(codes.InvalidArgument, "Set: an audit record travels alone")
	}
	cmd, err := txn.DecodeCommand(s.cfg.Schema, msg)
	if err != nil || cmd.Rejection == nil {
		return nil, status.Error(codes.InvalidArgument, "Set: malformed audit record")
	}
	if err := s.cfg.Committer.Reject(ctx, *cmd.Rejection); err != nil {
		return nil, setError(err, nil)
	}
	return &gpb.SetResponse{Timestamp: time.Now().UnixNano()}, nil
}

// AuditRecord is the Set with which a member forwards rej to the leader.
func AuditRecord(rej txn.Rejection) *gpb.SetRequest {
	return &gpb.SetRequest{Extension: []*gnmi_ext.Extension{{Ext: &gnmi_ext.Extension_RegisteredExt{
		RegisteredExt: &gnmi_ext.RegisteredExtension{Id: AuditExtension, Msg: txn.EncodeRejection(rej)}}}}}
}

// DefaultRollback is the rollback duration of a confirmed commit that names
// none, as the commit-confirmed specification sets it.
const DefaultRollback = 10 * time.Minute

// commitAction turns gNMI's Commit extension into the engine's action.
func commitAction(c *gnmi_ext.Commit) (*txn.CommitAction, error) {
	a := &txn.CommitAction{ID: c.GetId()}
	if a.ID == "" {
		return nil, status.Error(codes.InvalidArgument, "Set: the commit extension needs an id")
	}
	deadline := func(d *durationpb.Duration, def time.Duration) (int64, error) {
		dur := def
		if d != nil {
			dur = d.AsDuration()
		}
		if dur <= 0 {
			return 0, status.Error(codes.InvalidArgument, "Set: the commit extension's rollback_duration must be positive")
		}
		return time.Now().Add(dur).UnixNano(), nil
	}
	var err error
	switch x := c.GetAction().(type) {
	case *gnmi_ext.Commit_Commit:
		a.Kind = txn.CommitStart
		a.Deadline, err = deadline(x.Commit.GetRollbackDuration(), DefaultRollback)
	case *gnmi_ext.Commit_Confirm:
		a.Kind = txn.CommitConfirm
	case *gnmi_ext.Commit_Cancel:
		a.Kind = txn.CommitCancel
	case *gnmi_ext.Commit_SetRollbackDuration:
		a.Kind = txn.CommitSetDuration
		if x.SetRollbackDuration.GetRollbackDuration() == nil {
			return nil, status.Error(codes.InvalidArgument, "Set: set_rollback_duration needs a rollback_duration")
		}
		a.Deadline, err = deadline(x.SetRollbackDuration.GetRollbackDuration(), 0)
	default:
		return nil, status.Error(codes.InvalidArgument, "Set: the commit extension needs an action")
	}
	return a, err
}

// CommitExtension is the Commit extension that carries action a, for a Set
// that a follower forwards to the leader.
func CommitExtension(a *txn.CommitAction) *gnmi_ext.Extension {
	c := &gnmi_ext.Commit{Id: a.ID}
	left := durationpb.New(time.Until(time.Unix(0, a.Deadline)))
	switch a.Kind {
	case txn.CommitStart:
		c.Action = &gnmi_ext.Commit_Commit{Commit: &gnmi_ext.CommitRequest{RollbackDuration: left}}
	case txn.CommitConfirm:
		c.Action = &gnmi_ext.Commit_Confirm{Confirm: &gnmi_ext.CommitConfirm{}}
	case txn.CommitCancel, txn.CommitRollback:
		c.Action = &gnmi_ext.Commit_Cancel{Cancel: &gnmi_ext.CommitCancel{}}
	case txn.CommitSetDuration:
		c.Action = &gnmi_ext.Commit_SetRollbackDuration{SetRollbackDuration: &gnmi_ext.CommitSetRollbackDuration{RollbackDuration: left}}
	}
	return &gnmi_ext.Extension{Ext: &gnmi_ext.Extension_Commit{Commit: c}}
}

// setOps lists the operations in the order they apply: deletes, replaces
// (union_replace counts as replace: there is one origin), then updates.
func setOps(req *gpb.SetRequest) ([]txn.Op, []*gpb.Path, error) {
	var ops []txn.Op
	var paths []*gpb.Path
	add := func(kind gpb.UpdateResult_Operation, p *gpb.Path, v *gpb.TypedValue) error {
		elems, err := fullPath(req.GetPrefix(), p)
		if err != nil {
			return err
		}
		ops = append(ops, txn.Op{Kind: kind, Elems: elems, Value: v, Path: p})
		paths = append(paths, &gpb.Path{Elem: elems})
		return nil
	}
	for _, p := range req.GetDelete() {
		if err := add(gpb.UpdateResult_DELETE, p, nil); err != nil {
			return nil, nil, err
		}
	}
	for _, u := range append(append([]*gpb.Update{}, req.GetUnionReplace()...), req.GetReplace()...) {
		if err := add(gpb.UpdateResult_REPLACE, u.GetPath(), u.GetVal()); err != nil {
			return nil, nil, err
		}
	}
	for _, u := range req.GetUpdate() {
		if err := add(gpb.UpdateResult_UPDATE, u.GetPath(), u.GetVal()); err != nil {
			return nil, nil, err
		}
	}
	return ops, paths, nil
}

// Metadata that nodes of a cluster exchange on forwarded requests.
const (
	// IndexHeader carries, in a Set response, the replication index of the
	// commit, so that a forwarding follower can wait until it has applied it.
	IndexHeader = "patronus-index"
	// ForwardedPeerHeader carries the original client's address on a Set a
	// follower forwards to the leader.
	ForwardedPeerHeader = "patronus-forwarded-peer"
	// ForwardedUserHeader carries the original client's user name on a
	// Set or linearizable Get that a follower forwards to the leader. The
	// leader believes it only from a member authenticated with the
	// cluster's own credential, and authorizes and audits the request as
	// that user.
	ForwardedUserHeader = "patronus-forwarded-user"
	// ConsistencyHeader set to "linearizable" on a Get asks for a read that
	// reflects every write acknowledged before it, on any node.
	ConsistencyHeader = "patronus-consistency"
)

// setError maps a failed transaction to the status the client gets.
func setError(err error, ops []txn.Op) error {
	var te *txn.Error
	if errors.As(err, &te) {
		return status.Error(te.Code, te.Describe(ops))
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case errors.Is(err, syscall.ENOSPC):
		return status.Errorf(codes.ResourceExhausted, "the store is out of disk space; nothing was changed: %v", err)
	case errors.Is(err, store.ErrClosed):
		return status.Error(codes.Unavailable, "the server is shutting down; nothing was changed")
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return status.Errorf(codes.Unavailable, "the change could not be made durable: %v", err)
}
