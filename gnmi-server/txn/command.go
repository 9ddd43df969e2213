package txn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
)

// A command is what replication carries: a prepared SetRequest, with the
// operations' decoded, canonical leaves (passwords already hashed), so that
// applying it is deterministic on every node; or the audit record of a
// request refused before it reached the log (a Rejection).
//
// Version 4 follows the version byte with the command's kind; versions 3
// (a Set with the cluster secret) and 2 (a Set without it) are Sets only, as
// a log written by an older build still holds them.
const (
	commandVersion  = 4
	commandVersion3 = 3
	commandVersion2 = 2
)

// Command kinds of version 4.
const (
	kindSet       = 0
	kindRejection = 1
)

// Command is a decoded command: a Set (Ops and Meta) or, when Rejection is
// set, an audit-only record.
type Command struct {
	Ops       []Op
	Meta      Meta
	Rejection *Rejection
}

var errBadCommand = errors.New("txn: malformed command")

// ErrUnknownCommand is DecodeCommand's error for a command this build cannot
// read: one of a version or kind it does not know, or naming a path its
// schema lacks, which a build of another version wrote.
var ErrUnknownCommand = errors.New("txn: unknown command")

// EncodeCommand serializes prepared ops and their meta.
func EncodeCommand(ops []Op, meta Meta) []byte {
	b := []byte{commandVersion, kindSet}
	for _, s := range []string{meta.User, meta.Peer, meta.Node, meta.ClusterSecret} {
		b = appendBytes(b, []byte(s))
	}
	b = binary.AppendVarint(b, meta.Time)
	if c := meta.Commit; c != nil {
		b = append(b, byte(c.Kind))
		b = appendBytes(b, []byte(c.ID))
		b = binary.AppendVarint(b, c.Deadline)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = append(b, byte(op.Kind))
		b = appendBytes(b, pathkey.Encode(op.Elems))
		b = binary.AppendUvarint(b, uint64(len(op.leaves)))
		for _, l := range op.leaves {
			b = appendBytes(b, pathkey.Encode(l.Elems))
			b = appendBytes(b, EncodeValue(l.Value))
		}
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadCommand
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	l := r.uvarint()
	if r.err != nil || uint64(len(r.b)) < l {
		r.err = errBadCommand
		return nil
	}
	v := r.b[:l]
	r.b = r.b[l:]
	return v
}

// EncodeRejection serializes an audit-only record.
func EncodeRejection(rej Rejection) []byte {
	b := []byte{commandVersion, kindRejection}
	for _, s := range []string{rej.User, rej.Peer, rej.Node, rej.Operation, rej.Message} {
		b = appendBytes(b, []byte(s))
	}
	b = binary.AppendVarint(b, rej.Time)
	b = binary.AppendUvarint(b, uint64(len(rej.Paths)))
	for _, p := range rej.Paths {
		b = appendBytes(b, []byte(p))
	}
	return b
}

// DecodeCommand parses a command made by EncodeCommand or EncodeRejection.
func DecodeCommand(s *schema.Schema, b []byte) (Command, error) {
	if len(b) == 0 {
		return Command{}, errBadCommand
	}
	switch b[0] {
	case commandVersion2, commandVersion3:
		ops, meta, err := decodeSet(s, b[1:], b[0] == commandVersion3)
		return Command{Ops: ops, Meta: meta}, err
	case commandVersion:
		if len(b) < 2 {
			return Command{}, errBadCommand
		}
		switch b[1] {
		case kindSet:
			ops, meta, err := decodeSet(s, b[2:], true)
			return Command{Ops: ops, Meta: meta}, err
		case kindRejection:
			rej, err := decodeRejection(b[2:])
			return Command{Rejection: rej}, err
		}
		return Command{}, fmt.Errorf("%w kind %d", ErrUnknownCommand, b[1])
	}
	return Command{}, fmt.Errorf("%w version %d", ErrUnknownCommand, b[0])
}

func decodeRejection(b []byte) (*Rejection, error) {
	r := &reader{b: b}
	rej := &Rejection{User: string(r.bytes()), Peer: string(r.bytes()), Node: string(r.bytes()), Operation: string(r.bytes()), Message: string(r.bytes())}
	t, n := binary.Varint(r.b)
	if r.err != nil || n <= 0 {
		return nil, errBadCommand
	}
	rej.Time, r.b = t, r.b[n:]
	np := r.uvarint()
	if r.err != nil || np > uint64(len(r.b)) {
		return nil, errBadCommand
	}
	for i := uint64(0); i < np && r.err == nil; i++ {
		rej.Paths = append(rej.Paths, string(r.bytes()))
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, errBadCommand
	}
	return rej, nil
}

// known reports whether the schema has the nodes elems names, up to its
// first wildcard name (a delete's path may have them). Prepare resolved the
// names, so a path that fails is one a build with another schema wrote.
func known(s *schema.Schema, elems []*gpb.PathElem) bool {
	k := slices.IndexFunc(elems, func(e *gpb.PathElem) bool { return e.GetName() == "*" || e.GetName() == "..." })
	if k < 0 {
		k = len(elems)
	}
	return s.Lookup(elems[:k]) != nil
}

// decodeSet parses the body of a Set command; withSecret tells whether the
// format carries the cluster secret (version 3 on).
func decodeSet(s *schema.Schema, body []byte, withSecret bool) ([]Op, Meta, error) {
	var meta Meta
	r := &reader{b: body}
	meta.User, meta.Peer, meta.Node = string(r.bytes()), string(r.bytes()), string(r.bytes())
	if withSecret {
		meta.ClusterSecret = string(r.bytes())
	}
	if r.err != nil {
		return nil, meta, r.err
	}
	t, n := binary.Varint(r.b)
	if n <= 0 {
		return nil, meta, errBadCommand
	}
	meta.Time, r.b = t, r.b[n:]
	if len(r.b) == 0 {
		return nil, meta, errBadCommand
	}
	if kind := CommitKind(r.b[0]); kind != 0 {
		r.b = r.b[1:]
		c := &CommitAction{Kind: kind, ID: string(r.bytes())}
		d, n := binary.Varint(r.b)
		if n <= 0 {
			return nil, meta, errBadCommand
		}
		c.Deadline, r.b = d, r.b[n:]
		meta.Commit = c
	} else {
		r.b = r.b[1:]
	}
	nops := r.uvarint()
	if r.err != nil || nops > uint64(len(r.b)) {
		return nil, meta, errBadCommand
	}
	ops := make([]Op, 0, nops)
	for i := uint64(0); i < nops && r.err == nil; i++ {
		if len(r.b) == 0 {
			return nil, meta, errBadCommand
		}
		op := Op{Kind: gpb.UpdateResult_Operation(r.b[0])}
		r.b = r.b[1:]
		elems, err := pathkey.Decode(r.bytes())
		if err != nil {
			return nil, meta, errBadCommand
		}
		op.Elems, op.Path = elems, &gpb.Path{Elem: elems}
		if !known(s, elems) {
			// Written by a build with another schema.
			return nil, meta, fmt.Errorf("%w: it names %s, which is not in this build's schema", ErrUnknownCommand, pathkey.String(elems))
		}
		nl := r.uvarint()
		if nl > uint64(len(r.b)) {
			return nil, meta, errBadCommand
		}
		op.leaves = make([]Leaf, 0, nl)
		for j := uint64(0); j < nl && r.err == nil; j++ {
			le, err := pathkey.Decode(r.bytes())
			if err != nil {
				return nil, meta, errBadCommand
			}
			tv, err := DecodeValue(r.bytes())
			if err != nil {
				return nil, meta, errBadCommand
			}
			n := s.Lookup(le)
			if n == nil {
				// Written by a build with another schema.
				return nil, meta, fmt.Errorf("%w: it names %s, which is not in this build's schema", ErrUnknownCommand, pathkey.String(le))
			}
			op.leaves = append(op.leaves, Leaf{Elems: le, Node: n, Value: tv})
		}
		ops = append(ops, op)
	}
	if r.err != nil {
		return nil, meta, r.err
	}
	return ops, meta, nil
}

// Replicated reports whether a stored key belongs to the replicated state
// (configuration, its state mirrors, the audit log and their indexes) rather
// than to what this node measures or records for itself (events, /system
// state, measured state).
func Replicated(s *schema.Schema, key []byte) bool {
	if IsInternal(key) {
		return !strings.HasPrefix(string(key), metaPrefix+"event") && !strings.HasPrefix(string(key), LocalPrefix)
	}
	elems, err := pathkey.Decode(key)
	if err != nil || len(elems) == 0 {
		return false
	}
	if n := s.Lookup(elems); n != nil && (n.Config || n.Mirrored) {
		return true
	}
	return len(elems) >= 2 && elems[0].GetName() == "system" && elems[1].GetName() == "audit"
}

// LocalPrefix starts internal keys that each node keeps for itself, such as
// the Raft index applied to the store.
const LocalPrefix = "\xfdl/"

// Leaves returns the decoded leaves of a prepared update or replace.
func Leaves(op Op) []Leaf { return op.leaves }
