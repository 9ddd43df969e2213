// Package server implements the gNMI service (Capabilities, Get, Set and
// Subscribe) over the Patronus data tree.
//
// It is the RPC edge: requests are checked against the schema, Sets are
// applied as transactions by the txn engine through the store's serializing
// writer, and subscriptions read the change feed. Errors become gRPC status
// codes here and only here.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Origin is the origin name of the Patronus models; an empty origin means
// the same.
const Origin = "patronus"

// Authorizer decides whether the caller in ctx may perform rpc on paths. It
// returns a gRPC status error to refuse. A nil Authorizer allows everything.
type Authorizer func(ctx context.Context, rpc string, paths []*gpb.Path) error

// Committer commits the prepared operations of a Set as one transaction and
// returns its result once the change is durable and visible on this node.
//
// A Set that Commit rejects for a validation error is audited by Commit
// itself (result REJECTED), in the transaction that would have applied it.
type Committer interface {
	Commit(ctx context.Context, ops []txn.Op, meta txn.Meta) (*txn.Result, error)
	// Reject durably records, as an audit-only transaction, a request
	// refused before it reached Commit.
	Reject(ctx context.Context, rej txn.Rejection) error
}

// Reads serves linearizable reads: Linearize returns nil once this node may
// serve a read that reflects every write acknowledged before the call, or a
// client of the node that can (the leader) to forward the read to.
type Reads interface {
	Linearize(ctx context.Context) (gpb.GNMIClient, error)
}

// LocalCommitter commits straight to the store: a node without replication.
type LocalCommitter struct {
	Store  *store.Store
	Engine *txn.Engine
}

// Commit runs the operations as one store transaction. If the engine
// rejects them, the audit record of the rejection is written instead.
func (c LocalCommitter) Commit(ctx context.Context, ops []txn.Op, meta txn.Meta) (*txn.Result, error) {
	var res *txn.Result
	err := c.Store.Update(ctx, func(tx store.Tx) error {
		r, err := c.Engine.Apply(tx, ops, meta)
		res = r
		return err
	})
	var te *txn.Error
	if errors.As(err, &te) {
		// The client gets the Set's own error, whatever becomes of its record.
		rej := txn.Rejected(ops, meta, te)
		rej.Node = meta.Node
		_ = c.Reject(context.WithoutCancel(ctx), rej)
	}
	return res, err
}

// Reject writes the audit record of a refused request.
func (c LocalCommitter) Reject(ctx context.Context, rej txn.Rejection) error {
	return c.Store.Update(ctx, func(tx store.Tx) error { return c.Engine.RecordRejected(tx, rej, rej.Node) })
}

// Config configures a Server.
type Config struct {
	Schema *schema.Schema
	Store  *store.Store
	Feed   *feed.Feed
	Engine *txn.Engine
	// Committer commits Sets; nil means a LocalCommitter.
	Committer Committer
	// Reads, if set, serves linearizable Gets; without it every read is
	// already linearizable (one node).
	Reads Reads
	// NodeName is this node's name, recorded in events.
	NodeName string
	// MinSampleInterval is the smallest SAMPLE interval accepted.
	MinSampleInterval time.Duration
	// TargetDefinedInterval is the sample interval TARGET_DEFINED uses for
	// counters.
	TargetDefinedInterval time.Duration
	// Authorize, if set, is consulted on every RPC.
	Authorize Authorizer
	// User returns the authenticated user of a request, for audit records
	// and for the reads and Sets this node forwards to the leader on the
	// user's behalf.
	User func(ctx context.Context) string
	// Visible, if set, returns the filter of the leaves the caller in ctx
	// may read: Get, Subscribe (initial sync, polls, samples, streamed
	// changes and history) leave out every leaf whose path it rejects. A
	// nil filter, like a nil Visible, shows everything. It is called once
	// per request and its filter once per leaf, so the filter must be cheap.
	Visible func(ctx context.Context) func(elems []*gpb.PathElem) bool
	// Rejected, if set, hears of every Set refused before it reached the
	// Committer (a malformed request, a refusal by Authorize, a value the
	// schema rejects), to audit it; it must not block.
	Rejected func(rej txn.Rejection)
	// IsMember reports whether the caller in ctx is a member of the cluster
	// (authenticated with the cluster's own credential); only a member may
	// hand this node an audit record to commit (AuditExtension). Nil means
	// every caller may: there is no authentication.
	IsMember func(ctx context.Context) bool
	// History, if set, serves the History extension of Subscribe.
	History History
	// Publisher, if set, is the publisher of Feed: a session that follows
	// the feed tells it what it wants decoded (Publisher.Want). Without it
	// the feed's commits are decoded whole.
	Publisher *Publisher
	Logger    *slog.Logger
}

// History reads a node's measured state as it was in the past.
type History interface {
	// At returns the recorded state as of the newest sample taken at or
	// before t (ns since the epoch), and that sample's time.
	At(t int64) (store.Reader, int64, error)
	// Range calls fn for every sample taken in [start, end), in time
	// order, with the leaves it changed (a nil Value: deleted).
	Range(start, end int64, fn func(t int64, changes []store.Change) error) error
}

// Server is the gNMI service.
type Server struct {
	gpb.UnimplementedGNMIServer
	cfg Config
	log *slog.Logger

	stopping     chan struct{} // closed by Shutdown
	shutdownOnce sync.Once

	sent    subscribeCounters // see SubscribeStats
	readers readers
	renders renderings // commits rendered for STREAM sessions alike
}

// Shutdown ends every open subscription with UNAVAILABLE, so that a
// graceful stop of the gRPC server does not wait on streams that never end
// by themselves.
func (s *Server) Shutdown() {
	s.shutdownOnce.Do(func() { close(s.stopping) })
}

var errShuttingDown = status.Error(codes.Unavailable, "the server is shutting down")

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MinSampleInterval == 0 {
		cfg.MinSampleInterval = 100 * time.Millisecond
	}
	if cfg.TargetDefinedInterval == 0 {
		cfg.TargetDefinedInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Committer == nil {
		cfg.Committer = LocalCommitter{Store: cfg.Store, Engine: cfg.Engine}
	}
	return &Server{cfg: cfg, log: cfg.Logger, stopping: make(chan struct{})}
}

var _ gpb.GNMIServer = (*Server)(nil)

// Publisher turns store commits into feed commits: it hands the store's
// changes to the feed as they are, and decodes a commit's data keys for
// every reader when the first one reads it (feed.PublishRaw), leaving out
// bookkeeping and write-only leaves. A commit no reader reads, such as the
// measured state of a node nobody subscribes to, is never decoded.
//
// Most keys a commit changes are leaves of a list entry or container whose
// other leaves it changes too, in this commit and the next (a collector
// rewrites the same counters every second), so the publisher decodes and
// looks up a leaf's parent once and keeps it: a leaf then costs a map lookup
// instead of decoding its path and walking the schema.
type Publisher struct {
	s *schema.Schema
	f *feed.Feed

	// wantMu guards the fields below: the readers of the feed's decoded
	// commits, counted by the top-level container they read (Want), and
	// the filter of decoded keys made from them.
	wantMu  sync.Mutex
	wanted  map[string]*wish
	wantAll wish
	filter  func(key []byte) bool // nil: decode every key
	stale   bool                  // filter must be made again
	// quiet are the top-level containers published only while a reader
	// wants them (Quiet).
	quiet []string

	// mu serializes decoding: the fields below are its.
	mu sync.Mutex

	// parents and oldParents map the encoded key of a leaf's parent to its
	// decoded path; a parent not used since oldParents took over is
	// forgotten when parents is full.
	parents, oldParents map[string]*parent
	last                *parent // the parent of the previous key
	kids                map[*schema.Node]*kids
	dec                 pathkey.Decoder
	slab                []*gpb.PathElem // room for the paths of leaves
}

// parent is a decoded parent of leaves.
type parent struct {
	key   string
	elems []*gpb.PathElem // shared by the paths of its leaves, never changed
	kids  *kids           // nil: not in the schema
}

// kids are the children of a schema node met so far, each with the path
// element that names it (shared by every path through it).
type kids struct {
	parent *schema.Node
	names  []string
	nodes  []*schema.Node
	elems  []*gpb.PathElem
}

// child returns the child of k named name, or nil.
func (k *kids) child(name []byte) (*schema.Node, *gpb.PathElem) {
	for i, n := range k.names {
		if n == string(name) {
			return k.nodes[i], k.elems[i]
		}
	}
	n := k.parent.Children[string(name)]
	if n == nil {
		return nil, nil
	}
	e := &gpb.PathElem{Name: string(name)}
	k.names, k.nodes, k.elems = append(k.names, e.Name), append(k.nodes, n), append(k.elems, e)
	return n, e
}

// maxParents bounds Publisher.parents (and so the publisher's memory, at
// about 1 KiB for a flow's parent): with oldParents, room for the parents of
// the scale set's flow table and counters.
const maxParents = 1 << 14

// NewPublisher returns a publisher into f.
func NewPublisher(s *schema.Schema, f *feed.Feed) *Publisher {
	return &Publisher{s: s, f: f, parents: map[string]*parent{}, kids: map[*schema.Node]*kids{}}
}

// Quiet names top-level containers whose changes are published only while
// a reader of decoded commits wants them (Want): measured state that no
// raw reader (the dataplane agent) needs. The flow table's changes would
// otherwise stay in the feed for its retention with nobody to read them:
// a second of 10,000 active flows changes 30,000 leaves, 5.5 MB of stored
// changes (19 MB of the feed's budget, which counts them as decoded), held
// for 2 s; the classifier's 131,072 flows would fill that budget and push
// out the commits its readers still need. Call it before the first commit.
func (p *Publisher) Quiet(names ...string) { p.quiet = append(p.quiet, names...) }

// OnCommit publishes a commit; it is the store's OnCommit hook. It costs a
// pass over the commit's keys (see feed.PublishRaw), not their decoding.
// Internal keys (bookkeeping, a node's stats history) are left out: no
// reader sees them, and a history keyframe's hundred thousand keys would
// otherwise take the feed's whole budget and push every commit out of it.
// So are the keys of quiet containers no reader wants (Quiet): a reader
// that comes to want one calls Want before it reads the state it follows
// the feed from, which the store shows only once this call returns; and
// the commit is published before Want can run again, so that a Want after
// this one's choice starts after this commit (its since).
func (p *Publisher) OnCommit(c store.Commit) {
	var unwanted [4]string // the quiet containers no reader wants
	drop := unwanted[:0]
	if len(p.quiet) > 0 {
		// Held until the commit is published (the feed's lock comes after
		// it, as in Want; the feed's publishing does not decode).
		p.wantMu.Lock()
		defer p.wantMu.Unlock()
		if p.wantAll.readers == 0 {
			for _, n := range p.quiet {
				if p.wanted[n] == nil {
					drop = append(drop, n)
				}
			}
		}
	}
	// leftOut matches top-level containers as the decoding filter (wants)
	// does.
	leftOut := func(k []byte) bool {
		if txn.IsInternal(k) {
			return true
		}
		if len(drop) == 0 {
			return false
		}
		name, _, _, ok := pathkey.SplitElem(k)
		for _, n := range drop {
			if ok && string(name) == n {
				return true
			}
		}
		return false
	}
	changes := c.Changes
	for i, ch := range changes {
		if leftOut(ch.Key) {
			changes = slices.Clip(changes[:i])
			for _, ch := range c.Changes[i+1:] {
				if !leftOut(ch.Key) {
					changes = append(changes, ch)
				}
			}
			break
		}
	}
	p.f.PublishRaw(c.Seq, c.Time, changes, p.decode)
}

// wish counts the readers that want a top-level container (or every one).
type wish struct {
	readers int
	// since is the last commit published before readers last went from
	// none to one: every commit after it is decoded with the container.
	since uint64
}

// Want tells p that a reader of the feed's decoded commits wants the
// changes under the top-level containers of paths (all of them for a path
// without elements or one whose first element is a wildcard), until it
// calls done. A commit is decoded with the containers some reader wants
// when it is decoded: the flow table's fifty thousand changes a second are
// not decoded (nor held) for readers of /paths alone.
//
// A reader calls Want before it reads the store state it follows the feed
// from: a commit after that state is published after the call, and so
// decoded with the reader's containers. from tells the reader the earliest
// state it may follow the feed from if it starts from a state another
// reader read (a shared initial sync): every commit after from is decoded
// with its containers, wanted without a break since then.
func (p *Publisher) Want(paths [][]*gpb.PathElem) (from uint64, done func()) {
	if p == nil {
		return 0, func() {}
	}
	var names []string
	all := false
	for _, elems := range paths {
		if len(elems) == 0 || elems[0].GetName() == "*" || elems[0].GetName() == "..." {
			all = true
		} else if !slices.Contains(names, elems[0].GetName()) {
			names = append(names, elems[0].GetName())
		}
	}
	if all {
		names = nil
	}
	p.wantMu.Lock()
	defer p.wantMu.Unlock()
	if p.wanted == nil {
		p.wanted = map[string]*wish{}
	}
	last := p.f.Last()
	add := func(w *wish) {
		if w.readers++; w.readers == 1 {
			w.since = last
			p.stale = true
		}
		from = max(from, w.since)
	}
	if all {
		add(&p.wantAll)
	}
	for _, n := range names {
		w := p.wanted[n]
		if w == nil {
			w = &wish{}
			p.wanted[n] = w
		}
		add(w)
	}
	return from, sync.OnceFunc(func() {
		p.wantMu.Lock()
		defer p.wantMu.Unlock()
		if all {
			if p.wantAll.readers--; p.wantAll.readers == 0 {
				p.stale = true
			}
		}
		for _, n := range names {
			if p.wanted[n].readers--; p.wanted[n].readers == 0 {
				delete(p.wanted, n)
				p.stale = true
			}
		}
	})
}

// wants returns the filter of the keys some reader wants (Want); nil if
// every key is wanted, or no reader said what it wants.
func (p *Publisher) wants() func(key []byte) bool {
	p.wantMu.Lock()
	defer p.wantMu.Unlock()
	if !p.stale {
		return p.filter
	}
	p.stale = false
	p.filter = nil
	if p.wantAll.readers > 0 || len(p.wanted) == 0 {
		return nil
	}
	names := make(map[string]bool, len(p.wanted))
	for n := range p.wanted {
		names[n] = true
	}
	p.filter = func(key []byte) bool {
		// A top-level container's name needs no escapes (see pathkey).
		name, _, _, ok := pathkey.SplitElem(key)
		return ok && names[string(name)]
	}
	return p.filter
}

// decode returns the feed changes of a commit's store changes.
func (p *Publisher) decode(changes []store.Change) []feed.Change {
	want := p.wants()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]feed.Change, 0, len(changes))
	for _, ch := range changes { // OnCommit left internal keys out
		if want != nil && !want(ch.Key) {
			continue
		}
		elems, n := p.path(ch.Key)
		if n == nil || n.WriteOnly {
			continue
		}
		fc := feed.Change{Key: ch.Key, Elems: elems, Node: n}
		if ch.Value != nil {
			var err error
			if fc.Value, err = txn.DecodeValue(ch.Value); err != nil {
				continue
			}
		}
		out = append(out, fc)
	}
	return slices.Clip(out)
}

// path returns the elements and the schema node of a stored key; a nil node
// if the key is malformed or not in the schema.
func (p *Publisher) path(key []byte) ([]*gpb.PathElem, *schema.Node) {
	pa := p.last
	var name []byte
	if pa != nil && len(key) > len(pa.key) && string(key[:len(pa.key)]) == pa.key {
		name = leafName(key[len(pa.key):])
	}
	if name == nil {
		pk, n, ok := splitLeaf(key)
		if !ok {
			return p.decodeKey(key)
		}
		name = n
		if pa = p.parents[string(pk)]; pa == nil {
			if pa = p.oldParents[string(pk)]; pa == nil {
				return p.decodeKey(key)
			}
			p.remember(pa)
		}
		p.last = pa
	}
	if pa.kids == nil {
		return nil, nil
	}
	n, e := pa.kids.child(name)
	if n == nil {
		return nil, nil
	}
	k := len(pa.elems) + 1
	if len(p.slab) < k {
		p.slab = make([]*gpb.PathElem, max(4096, k))
	}
	elems := p.slab[:k:k]
	p.slab = p.slab[k:]
	copy(elems, pa.elems)
	elems[k-1] = e
	return elems, n
}

// decodeKey decodes key in full, and remembers its parent.
func (p *Publisher) decodeKey(key []byte) ([]*gpb.PathElem, *schema.Node) {
	elems, err := p.dec.Decode(key)
	if err != nil || len(elems) == 0 {
		return nil, nil
	}
	if pk, _, ok := splitLeaf(key); ok {
		pe := elems[: len(elems)-1 : len(elems)-1]
		pa := &parent{key: string(pk), elems: pe}
		if n := p.s.Lookup(pe); n != nil {
			if pa.kids = p.kids[n]; pa.kids == nil {
				pa.kids = &kids{parent: n}
				p.kids[n] = pa.kids
			}
		}
		p.remember(pa)
		p.last = pa
	}
	return elems, p.s.Lookup(elems)
}

func (p *Publisher) remember(pa *parent) {
	if len(p.parents) >= maxParents {
		p.oldParents, p.parents = p.parents, make(map[string]*parent, maxParents)
	}
	p.parents[pa.key] = pa
}

// The bytes of pathkey's encoding that splitLeaf reads (see the pathkey
// package doc): every element ends in elemEnd, and bytes up to keyEscape in
// names and values are escaped with it.
const (
	keyElemEnd = 0x00
	keyEscape  = 0x03
)

// splitLeaf splits an encoded key into the encoding of its parent and the
// name of its last element; ok is false if the last element has keys or
// escaped bytes. It reads the key from its end: a byte up to keyEscape
// before the last one ends the parent if it is keyElemEnd and not escaped,
// which it is if an odd number of keyEscape bytes come before it.
func splitLeaf(key []byte) (parent, name []byte, ok bool) {
	if len(key) < 2 || key[len(key)-1] != keyElemEnd {
		return nil, nil, false
	}
	i := len(key) - 2
	for i >= 0 && key[i] > keyEscape {
		i--
	}
	if i == len(key)-2 {
		return nil, nil, false // an empty name
	}
	if i < 0 {
		return nil, key[:len(key)-1], true
	}
	if key[i] != keyElemEnd {
		return nil, nil, false
	}
	escapes := 0
	for j := i - 1; j >= 0 && key[j] == keyEscape; j-- {
		escapes++
	}
	if escapes%2 == 1 {
		return nil, nil, false
	}
	return key[:i+1], key[i+1 : len(key)-1], true
}

// leafName returns the name of the element b encodes if b is one element
// without keys or escaped bytes, else nil.
func leafName(b []byte) []byte {
	if len(b) < 2 || b[len(b)-1] != keyElemEnd {
		return nil
	}
	name := b[:len(b)-1]
	for _, c := range name {
		if c <= keyEscape {
			return nil
		}
	}
	return name
}

// Capabilities reports the models, encodings and gNMI version served.
func (s *Server) Capabilities(ctx context.Context, req *gpb.CapabilityRequest) (*gpb.CapabilityResponse, error) {
	if err := s.authorize(ctx, "Capabilities", nil); err != nil {
		return nil, err
	}
	if len(req.GetExtension()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "Capabilities takes no extensions")
	}
	version, _ := proto.GetExtension(gpb.File_github_com_openconfig_gnmi_proto_gnmi_gnmi_proto.Options(), gpb.E_GnmiService).(string)
	// Extensions this server understands, each as an empty instance.
	exts := []*gnmi_ext.Extension{
		{Ext: &gnmi_ext.Extension_Depth{Depth: &gnmi_ext.Depth{}}},
		{Ext: &gnmi_ext.Extension_Commit{Commit: &gnmi_ext.Commit{}}},
	}
	if s.cfg.History != nil {
		exts = append(exts, &gnmi_ext.Extension{Ext: &gnmi_ext.Extension_History{History: &gnmi_ext.History{}}})
	}
	return &gpb.CapabilityResponse{
		SupportedModels:    s.cfg.Schema.Modules,
		SupportedEncodings: []gpb.Encoding{gpb.Encoding_JSON, gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO},
		GNMIVersion:        version,
		Extension:          exts,
	}, nil
}

// visible returns the caller's leaf filter, nil when everything is visible.
func (s *Server) visible(ctx context.Context) func([]*gpb.PathElem) bool {
	if s.cfg.Visible == nil {
		return nil
	}
	return s.cfg.Visible(ctx)
}

// userOf returns the authenticated user of ctx, "" without authentication.
func (s *Server) userOf(ctx context.Context) string {
	if s.cfg.User == nil {
		return ""
	}
	return s.cfg.User(ctx)
}

func (s *Server) authorize(ctx context.Context, rpc string, paths []*gpb.Path) error {
	if s.cfg.Authorize == nil {
		return nil
	}
	return s.cfg.Authorize(ctx, rpc, paths)
}

// fullPath joins prefix and path into absolute elements after checking the
// origin and rejecting the deprecated string elements.
func fullPath(prefix, p *gpb.Path) ([]*gpb.PathElem, error) {
	for _, x := range []*gpb.Path{prefix, p} {
		if x == nil {
			continue
		}
		if len(x.GetElement()) > 0 && len(x.GetElem()) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "path %v uses the deprecated 'element' field; use 'elem'", x.GetElement())
		}
		if o := x.GetOrigin(); o != "" && o != Origin {
			return nil, status.Errorf(codes.InvalidArgument, "%s: unknown origin %q; use %q or none", pathkey.String(x.GetElem()), o, Origin)
		}
	}
	if p.GetOrigin() != "" && prefix.GetOrigin() != "" {
		return nil, status.Errorf(codes.InvalidArgument, "%s: origin set in both the prefix and the path", pathkey.String(p.GetElem()))
	}
	elems := make([]*gpb.PathElem, 0, len(prefix.GetElem())+len(p.GetElem()))
	for _, e := range append(append([]*gpb.PathElem{}, prefix.GetElem()...), p.GetElem()...) {
		if e.GetName() == "" {
			return nil, status.Errorf(codes.InvalidArgument, "%s: empty element name", pathkey.String(append(prefix.GetElem(), p.GetElem()...)))
		}
		elems = append(elems, &gpb.PathElem{Name: e.GetName(), Key: e.GetKey()})
	}
	return elems, nil
}

// resolve checks a request path against the schema.
func (s *Server) resolve(elems []*gpb.PathElem) ([]*schema.Node, error) {
	nodes, err := s.cfg.Schema.Resolve(elems, true)
	if err != nil {
		var pe *schema.PathError
		if errors.As(err, &pe) {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %s", pe.Path, pe.Msg)
		}
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return nodes, nil
}

func checkEncoding(e gpb.Encoding) error {
	switch e {
	case gpb.Encoding_JSON, gpb.Encoding_JSON_IETF, gpb.Encoding_PROTO:
		return nil
	}
	return status.Errorf(codes.Unimplemented, "encoding %s is not supported; use JSON, JSON_IETF or PROTO", e)
}

// depthOf returns the Depth extension's level (0: unlimited) and rejects
// extensions that do not apply. History is Subscribe's, read by historyOf.
func depthOf(exts []*gnmi_ext.Extension, rpc string) (uint32, error) {
	var depth uint32
	for _, x := range exts {
		switch e := x.GetExt().(type) {
		case *gnmi_ext.Extension_Depth:
			depth = e.Depth.GetLevel()
		case *gnmi_ext.Extension_History:
			if rpc != "Subscribe" {
				return 0, status.Errorf(codes.InvalidArgument, "%s: the History extension applies to Subscribe only", rpc)
			}
		case *gnmi_ext.Extension_RegisteredExt:
			return 0, status.Errorf(codes.Unimplemented, "%s: registered extension %d is not supported", rpc, e.RegisteredExt.GetId())
		default:
			return 0, status.Errorf(codes.InvalidArgument, "%s: extension %T does not apply to %s", rpc, x.GetExt(), rpc)
		}
	}
	return depth, nil
}

func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// leafValue renders a stored value in the requested encoding as a scalar
// TypedValue.
func leafValue(n *schema.Node, tv *gpb.TypedValue, enc gpb.Encoding) (*gpb.TypedValue, error) {
	switch enc {
	case gpb.Encoding_JSON, gpb.Encoding_JSON_IETF:
		ietf := enc == gpb.Encoding_JSON_IETF
		b, err := schema.MarshalJSON(schema.ToJSON(n, tv, ietf))
		if err != nil {
			return nil, err
		}
		if ietf {
			return &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: b}}, nil
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_JsonVal{JsonVal: b}}, nil
	}
	return tv, nil
}

func internal(err error) error {
	return status.Error(codes.Internal, fmt.Sprintf("internal error: %v", err))
}
