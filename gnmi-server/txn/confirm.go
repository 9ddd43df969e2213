package txn

import (
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Commit confirmed (gNMI's Commit extension): a Set can apply with a
// rollback deadline. Until it is confirmed, the previous value of every key
// it changed is kept in an undo log in the replicated store, so whichever
// node leads when the deadline passes, or when the commit is cancelled, can
// restore the configuration exactly, as one transaction.

// CommitKind is the action of a commit-confirmed request.
type CommitKind int

// The commit-confirmed actions.
const (
	CommitStart CommitKind = iota + 1
	CommitConfirm
	CommitCancel
	CommitSetDuration
	// CommitRollback is the rollback the leader issues at the deadline.
	CommitRollback
)

// CommitAction is the commit-confirmed part of a Set.
type CommitAction struct {
	Kind CommitKind
	ID   string
	// Deadline (ns since the epoch) for CommitStart and CommitSetDuration.
	Deadline int64
}

// Pending is a commit waiting for confirmation.
type Pending struct {
	ID       string
	Deadline int64
}

const (
	pendingKey = "\xfec/pending"
	undoPrefix = "\xfec/undo/"
)

// ReadPending returns the commit waiting for confirmation, or nil.
func ReadPending(r store.Reader) (*Pending, error) {
	b, ok, err := r.Get([]byte(pendingKey))
	if err != nil || !ok {
		return nil, err
	}
	if len(b) < 8 {
		return nil, errBadValue
	}
	return &Pending{Deadline: int64(binary.BigEndian.Uint64(b)), ID: string(b[8:])}, nil
}

func writePending(tx store.Tx, p Pending) {
	tx.Set([]byte(pendingKey), append(binary.BigEndian.AppendUint64(nil, uint64(p.Deadline)), p.ID...))
}

// Apply applies ops to tx as one validated transaction, with meta.Commit's
// commit-confirmed action if any. On error the caller must discard tx.
func (e *Engine) Apply(tx store.Tx, ops []Op, meta Meta) (*Result, error) {
	if meta.ClusterSecret != "" {
		if _, ok, err := tx.Get([]byte(ClusterSecretKey)); err != nil {
			return nil, err
		} else if !ok {
			tx.Set([]byte(ClusterSecretKey), []byte(meta.ClusterSecret))
		}
	}
	pending, err := ReadPending(tx)
	if err != nil {
		return nil, err
	}
	c := meta.Commit
	if c == nil {
		if pending != nil {
			return nil, &Error{Code: codes.FailedPrecondition, Op: -1, Msg: fmt.Sprintf("confirmed commit %q is waiting for confirmation until %s; confirm or cancel it first", pending.ID, time.Unix(0, pending.Deadline).UTC().Format(time.RFC3339))}
		}
		res, sites, err := e.apply(tx, ops, meta)
		if err != nil {
			return nil, err
		}
		return res, e.record(tx, res, meta, "SET", "", sites)
	}
	if c.ID == "" {
		return nil, &Error{Code: codes.InvalidArgument, Op: -1, Msg: "the commit extension needs an id"}
	}
	if c.Kind == CommitStart {
		if pending != nil {
			return nil, &Error{Code: codes.FailedPrecondition, Op: -1, Msg: fmt.Sprintf("confirmed commit %q is already waiting for confirmation", pending.ID)}
		}
		rec := &undoTx{Tx: tx, e: e, seen: map[string]bool{}}
		res, sites, err := e.apply(rec, ops, meta)
		if err != nil {
			return nil, err
		}
		writePending(tx, Pending{ID: c.ID, Deadline: c.Deadline})
		msg := fmt.Sprintf("commit %q rolls back at %s unless confirmed", c.ID, time.Unix(0, c.Deadline).UTC().Format(time.RFC3339Nano))
		return res, e.record(tx, res, meta, "SET", msg, sites)
	}
	if pending == nil {
		return nil, &Error{Code: codes.FailedPrecondition, Op: -1, Msg: fmt.Sprintf("no confirmed commit is waiting (commit %q)", c.ID)}
	}
	if pending.ID != c.ID {
		return nil, &Error{Code: codes.InvalidArgument, Op: -1, Msg: fmt.Sprintf("commit %q is not the one waiting (%q)", c.ID, pending.ID)}
	}
	if len(ops) > 0 {
		return nil, &Error{Code: codes.InvalidArgument, Op: 0, Msg: "confirm, cancel and set-rollback-duration take no operations"}
	}
	res := &Result{Time: tx.Time()}
	if meta.Time != 0 {
		res.Time = meta.Time
	}
	switch c.Kind {
	case CommitSetDuration:
		writePending(tx, Pending{ID: c.ID, Deadline: c.Deadline})
		return res, nil
	case CommitConfirm:
		if err := e.dropUndo(tx, false, res); err != nil {
			return nil, err
		}
		tx.Delete([]byte(pendingKey))
		return res, e.record(tx, res, meta, "COMMIT_CONFIRM", fmt.Sprintf("commit %q confirmed", c.ID), nil)
	case CommitCancel, CommitRollback:
		if err := e.dropUndo(tx, true, res); err != nil {
			return nil, err
		}
		tx.Delete([]byte(pendingKey))
		why := "cancelled"
		if c.Kind == CommitRollback {
			why = "not confirmed in time"
		}
		return res, e.record(tx, res, meta, "ROLLBACK", fmt.Sprintf("commit %q rolled back: %s", c.ID, why), nil)
	}
	return nil, &Error{Code: codes.InvalidArgument, Op: -1, Msg: "unknown commit action"}
}

// dropUndo deletes the undo log, first restoring what it holds if restore.
func (e *Engine) dropUndo(tx store.Tx, restore bool, res *Result) error {
	type kv struct{ k, v []byte }
	var undo []kv
	if err := tx.Scan([]byte(undoPrefix), func(k, v []byte) error {
		undo = append(undo, kv{append([]byte(nil), k...), append([]byte(nil), v...)})
		return nil
	}); err != nil {
		return err
	}
	for _, u := range undo {
		tx.Delete(u.k)
		if !restore {
			continue
		}
		key := u.k[len(undoPrefix):]
		if len(u.v) > 0 && u.v[0] == 1 {
			tx.Set(key, u.v[1:])
		} else {
			tx.Delete(key)
		}
		if !IsInternal(key) {
			res.Changed = append(res.Changed, keyString(key))
		}
	}
	return nil
}

// undoTx records the value each replicated configuration key had before the
// transaction first wrote it.
type undoTx struct {
	store.Tx
	e    *Engine
	seen map[string]bool
}

func (u *undoTx) note(key []byte) {
	k := string(key)
	if u.seen[k] || strings.HasPrefix(k, undoPrefix) || !Replicated(u.e.s, key) || isAudit(key) {
		return
	}
	u.seen[k] = true
	old, ok, err := u.Tx.Get(key)
	v := []byte{0}
	if err == nil && ok {
		v = append([]byte{1}, old...)
	}
	u.Tx.Set(append([]byte(undoPrefix), key...), v)
}

func (u *undoTx) Set(key, value []byte) { u.note(key); u.Tx.Set(key, value) }
func (u *undoTx) Delete(key []byte)     { u.note(key); u.Tx.Delete(key) }

func keyString(key []byte) string {
	elems, err := pathkey.Decode(key)
	if err != nil {
		return fmt.Sprintf("%q", key)
	}
	return pathkey.String(elems)
}

func isAudit(key []byte) bool {
	return strings.HasPrefix(string(key), string(pathkey.Encode(auditPath)))
}

var auditPath = []*gpb.PathElem{{Name: "system"}, {Name: "audit"}}
