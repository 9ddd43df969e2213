package replication

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/patronus-sdwan/patronus/gnmi-server/schema"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// appliedKey holds the index of the last Raft entry applied to the store. It
// is written in the same batch as the entry's changes, so applying is
// idempotent across restarts: entries at or below it are skipped.
var appliedKey = []byte(txn.LocalPrefix + "raft-applied")

// fsm applies committed Set commands to the store.
type fsm struct {
	st     *store.Store
	eng    *txn.Engine
	schema *schema.Schema
	node   string
	// onApply, if set, is called with each applied index after it is durable
	// in the store's view.
	onApply func(index uint64)
	// writeSets counts the write-set entries applied by their writes,
	// evaluated those whose Set was evaluated here instead.
	writeSets, evaluated atomic.Uint64
	// halted is closed, with haltErr set, once this node stopped applying
	// the log (halt); closed is closed when the node stops Raft (on Close,
	// or once halted).
	halted   chan struct{}
	haltOnce sync.Once
	haltErr  error
	closed   <-chan struct{}
	log      *slog.Logger
	// onHalt, if set, is called once the FSM has halted. It must not
	// wait for the FSM: the FSM waits for closed.
	onHalt func()
}

var (
	_ raft.FSM         = (*fsm)(nil)
	_ raft.BatchingFSM = (*fsm)(nil)
)

// applyResult is what Apply returns for a command: the Set's result or its
// (deterministic) validation error.
type applyResult struct {
	res *txn.Result
	err error
}

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies each entry as its own store transaction, in log order.
//
// A Set the engine rejects (a validation error against the replicated state)
// leaves nothing of itself: its transaction is discarded, and a second
// transaction right after it writes the REJECTED audit record instead, with
// the entry's index. Every node does the same at the same point of the log,
// so the record is replicated without a log entry of its own. An audit-only
// command (a request refused before the log) writes its record the same way.
//
// An entry this node cannot apply halts it (see halt): one its build cannot
// read (a build of another version wrote it), or one whose transaction
// failed for want of the store. Skipping it would leave this node's state
// without it for good, while the others have it.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if f.isHalted() {
		return f.haltedResults(out, 0)
	}
	fns := make([]func(store.Tx) error, 0, len(logs))
	// owner[j] is the entry whose result fns[j]'s error belongs to, or -1
	// for the audit record of a rejected Set (its failure is not the
	// client's: the client gets the Set's own error).
	owner := make([]int, 0, len(logs))
	results := make([]*applyResult, len(logs))
	for i, l := range logs {
		idx := l.Index
		// prev is the entry before in this batch, which must have been
		// applied first (0 for the first: none to check).
		var prev uint64
		if i > 0 {
			prev = logs[i-1].Index
		}
		r := &applyResult{}
		results[i] = r
		out[i] = r
		var cmd *txn.Command
		var setOnceEntry *setOnce
		var ws *writeSet
		if l.Type == raft.LogCommand && len(l.Data) > 0 && l.Data[0] == setOnceCommand {
			so, err := decodeSetOnce(l.Data)
			if err != nil {
				r.err = fmt.Errorf("replication: entry %d: %w", idx, err)
			} else {
				setOnceEntry = &so
			}
		} else if l.Type == raft.LogCommand && len(l.Data) > 0 && l.Data[0] == writeSetCommand {
			w, err := decodeWriteSet(l.Data)
			if err != nil {
				r.err = fmt.Errorf("replication: entry %d: %w", idx, err)
			} else {
				ws = &w
			}
		} else if l.Type == raft.LogCommand {
			c, err := txn.DecodeCommand(f.schema, l.Data)
			if errors.Is(err, txn.ErrUnknownCommand) {
				// Not skipped: its transaction fails, unless the entry
				// was applied before (by the build that wrote it), and
				// the node halts.
				fns = append(fns, func(tx store.Tx) error {
					return once(tx, idx, prev, func() error { return unknownEntry(idx, err) })
				})
				owner = append(owner, i)
				continue
			}
			if err != nil {
				r.err = fmt.Errorf("replication: entry %d: %w", idx, err)
			} else {
				cmd = &c
			}
		}
		switch {
		case ws != nil:
			f.applyWriteSet(&fns, &owner, i, idx, prev, *ws, r)
		case setOnceEntry != nil:
			so := *setOnceEntry
			fns = append(fns, func(tx store.Tx) error {
				return once(tx, idx, prev, func() error {
					if _, ok, err := tx.Get(so.key); err != nil || ok {
						return err
					}
					tx.Set(so.key, so.value)
					return nil
				})
			})
			owner = append(owner, i)
		case cmd == nil:
			fns = append(fns, func(tx store.Tx) error { return once(tx, idx, prev, nil) })
			owner = append(owner, i)
		case cmd.Rejection != nil:
			rej := *cmd.Rejection
			fns = append(fns, func(tx store.Tx) error {
				return once(tx, idx, prev, func() error { return f.eng.RecordRejected(tx, rej, f.node) })
			})
			owner = append(owner, i)
		default:
			ops, meta := cmd.Ops, cmd.Meta
			// Node-local records (events) name this node.
			meta.Node = f.node
			fns = append(fns, func(tx store.Tx) error {
				return once(tx, idx, prev, func() error { return f.evaluateSet(tx, ops, meta, r) })
			})
			owner = append(owner, i)
			fns = append(fns, func(tx store.Tx) error {
				var te *txn.Error
				if !errors.As(r.err, &te) {
					return nil // applied, skipped, or failed for want of the store
				}
				return once(tx, idx, prev, func() error { return f.eng.RecordRejected(tx, txn.Rejected(ops, meta, te), f.node) })
			})
			owner = append(owner, -1)
		}
	}
	errs := f.st.UpdateBatch(context.Background(), fns)
	for j, err := range errs {
		if i := owner[j]; err != nil && i >= 0 && results[i].err == nil {
			results[i].err = err
		}
	}
	if i, err := f.firstFailure(logs, owner, errs); err != nil {
		if i > 0 && f.onApply != nil {
			f.onApply(logs[i-1].Index)
		}
		f.halt(err)
		return f.haltedResults(out, i)
	}
	if f.onApply != nil {
		f.onApply(logs[len(logs)-1].Index)
	}
	return out
}

// firstFailure returns the first failure among errs, the errors of a
// batch's transactions (owner as in ApplyBatch), that is not the entry's
// own outcome (the store's, or an entry this build cannot read), with the
// position in logs of the entry it failed. A Set the engine rejected is not
// one: its transaction's error is the rejection, recorded by the next.
func (f *fsm) firstFailure(logs []*raft.Log, owner []int, errs []error) (int, error) {
	for j, err := range errs {
		var te *txn.Error
		if err == nil || errors.As(err, &te) {
			continue
		}
		// The audit record of a rejected Set (owner -1) belongs to the
		// entry of the transaction before it.
		i := owner[j]
		for k := j; i < 0 && k > 0; k-- {
			i = owner[k-1]
		}
		if !errors.Is(err, txn.ErrUnknownCommand) {
			err = fmt.Errorf("the store failed applying entry %d: %w", logs[i].Index, err)
		}
		return i, err
	}
	return 0, nil
}

// unknownEntry is the error of the entry at idx, which this build cannot
// read for err (wrapping txn.ErrUnknownCommand).
func unknownEntry(idx uint64, err error) error {
	return fmt.Errorf("entry %d is of a kind this build of patronusd does not know (%w): a build of another version wrote it; run this node on the version the cluster's leader runs", idx, err)
}

// halt stops this node applying the log, for err, the first time it is
// called: it logs why and closes halted, on which patronusd stops, and the
// FSM then takes no entry and makes no snapshot. The store keeps what it
// had applied before; a restarted node applies the log again from there,
// so nothing committed is lost, where skipping the entry would have lost it
// here for good. (Pebble itself stops a process whose write-ahead log
// failed a write.)
func (f *fsm) halt(err error) {
	f.haltOnce.Do(func() {
		f.haltErr = err
		if f.log != nil {
			f.log.Error("replication: this node stops applying the cluster log", "error", err)
		}
		close(f.halted)
		if f.onHalt != nil {
			f.onHalt()
		}
	})
}

// haltedErr is ErrHalted with why, for whatever waited on a halted node.
func (f *fsm) haltedErr() error { return fmt.Errorf("%w: %v", ErrHalted, f.haltErr) }

func (f *fsm) isHalted() bool {
	select {
	case <-f.halted:
		return true
	default:
		return false
	}
}

// haltedResults waits for the node to stop Raft, Raft's FSM goroutine kept from
// applying anything more meanwhile, and returns out with ErrHalted as the
// result of every entry from the from-th on.
func (f *fsm) haltedResults(out []any, from int) []any {
	<-f.closed
	for i := from; i < len(out); i++ {
		out[i] = &applyResult{err: f.haltedErr()}
	}
	return out
}

// applyWriteSet appends to fns the transactions that apply the write-set
// entry ws at index idx, the batch's i-th, with its result in r: its writes
// if it directly follows the entry its Set was evaluated after, the Set
// evaluated here otherwise (as an entry without a write set is, its
// rejection recorded in a second transaction).
func (f *fsm) applyWriteSet(fns *[]func(store.Tx) error, owner *[]int, i int, idx, prev uint64, ws writeSet, r *applyResult) {
	var ops []txn.Op
	var meta txn.Meta
	*fns = append(*fns, func(tx store.Tx) error {
		applied, err := readApplied(tx)
		if err != nil || idx <= applied {
			return err
		}
		if prev != 0 && applied != prev {
			return errPrevNotApplied
		}
		if idx == ws.base+1 && applied == ws.base {
			// What is this node's own under the entries the Set
			// deleted goes first, found before any write (see
			// txn.DropCleared); the events last, in the same
			// transaction as the writes and the applied index.
			if err := f.eng.DropCleared(tx, &ws.local); err != nil {
				return err
			}
			ws.apply(tx)
			if err := f.eng.WriteLocalEvents(tx, &ws.local, f.node); err != nil {
				return err
			}
			f.writeSets.Add(1)
			r.res = &txn.Result{Time: ws.time}
		} else {
			c, err := txn.DecodeCommand(f.schema, ws.cmd)
			if errors.Is(err, txn.ErrUnknownCommand) {
				return unknownEntry(idx, err)
			}
			if err == nil && c.Rejection != nil {
				err = errors.New("a write-set entry carries a rejection")
			}
			if err != nil {
				r.err = fmt.Errorf("replication: entry %d: %w", idx, err)
				tx.Set(appliedKey, binary.BigEndian.AppendUint64(nil, idx))
				return nil
			}
			ops, meta = c.Ops, c.Meta
			meta.Node = f.node
			if err := f.evaluateSet(tx, ops, meta, r); err != nil {
				return err
			}
		}
		tx.Set(appliedKey, binary.BigEndian.AppendUint64(nil, idx))
		return nil
	})
	*owner = append(*owner, i)
	*fns = append(*fns, func(tx store.Tx) error {
		var te *txn.Error
		if !errors.As(r.err, &te) {
			return nil
		}
		return once(tx, idx, prev, func() error { return f.eng.RecordRejected(tx, txn.Rejected(ops, meta, te), f.node) })
	})
	*owner = append(*owner, -1)
}

// evaluateSet applies a Set by evaluating it here, with its result in r.
func (f *fsm) evaluateSet(tx store.Tx, ops []txn.Op, meta txn.Meta, r *applyResult) error {
	f.evaluated.Add(1)
	res, err := f.eng.Apply(tx, ops, meta)
	if err != nil {
		r.err = err
		return err
	}
	r.res = res
	return nil
}

// errPrevNotApplied fails the transaction of an entry whose batch's entry
// before it was not applied: its transaction, or the group it was
// committed with, failed. (The store runs a batch's transactions without
// waiting for the ones before to be committed.)
var errPrevNotApplied = errors.New("the entry before it was not applied")

// once runs fn in tx unless the entry at idx was applied before (a replay
// after a restart), and then marks it applied. prev, unless 0, is the entry
// that must have been applied last.
func once(tx store.Tx, idx, prev uint64, fn func() error) error {
	applied, err := readApplied(tx)
	if err != nil {
		return err
	}
	if idx <= applied {
		return nil
	}
	if prev != 0 && applied != prev {
		return errPrevNotApplied
	}
	if fn != nil {
		if err := fn(); err != nil {
			return err
		}
	}
	tx.Set(appliedKey, binary.BigEndian.AppendUint64(nil, idx))
	return nil
}

// setOnceCommand starts an entry made by SetOnce. txn's commands start with
// their version, a small number; this byte is none of them.
const setOnceCommand = 0x80

// setOnce is a decoded SetOnce entry: key is set to value unless the store
// holds it already.
type setOnce struct{ key, value []byte }

func encodeSetOnce(key string, value []byte) []byte {
	b := []byte{setOnceCommand}
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	b = binary.AppendUvarint(b, uint64(len(value)))
	return append(b, value...)
}

var errBadSetOnce = errors.New("malformed set-once entry")

func decodeSetOnce(b []byte) (setOnce, error) {
	b = b[1:]
	var parts [2][]byte
	for i := range parts {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return setOnce{}, errBadSetOnce
		}
		parts[i], b = b[k:k+int(n)], b[k+int(n):]
	}
	if len(b) != 0 || !strings.HasPrefix(string(parts[0]), SecretPrefix) {
		return setOnce{}, errBadSetOnce
	}
	return setOnce{key: parts[0], value: parts[1]}, nil
}

func readApplied(r store.Reader) (uint64, error) {
	b, ok, err := r.Get(appliedKey)
	if err != nil || !ok || len(b) != 8 {
		return 0, err
	}
	return binary.BigEndian.Uint64(b), nil
}

// Snapshot captures the replicated part of the store. The store is synced
// first: once the snapshot exists Raft may truncate its log, and entries
// Pebble had not made durable could not be applied again.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	if f.isHalted() {
		// Raft counts the entry that halted it as applied: a snapshot
		// now would let it truncate the log of an entry the store lacks.
		return nil, fmt.Errorf("replication: no snapshot: %w", f.haltedErr())
	}
	if err := f.st.Sync(); err != nil {
		return nil, fmt.Errorf("replication: sync before snapshot: %w", err)
	}
	return &fsmSnapshot{snap: f.st.Snapshot(), schema: f.schema}, nil
}

type fsmSnapshot struct {
	snap   *store.Snapshot
	schema *schema.Schema
}

// Persist streams the snapshot: the applied index, then key/value pairs.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<20)
	applied, err := readApplied(s.snap)
	if err == nil {
		_, err = w.Write(binary.BigEndian.AppendUint64(nil, applied))
	}
	if err == nil {
		err = s.snap.Scan(nil, func(k, v []byte) error {
			if !txn.Replicated(s.schema, k) {
				return nil
			}
			b := binary.AppendUvarint(nil, uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(v)))
			if _, err := w.Write(b); err != nil {
				return err
			}
			_, err := w.Write(v)
			return err
		})
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("replication: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.snap.Close() }

// Restore replaces the replicated part of the store with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	r := bufio.NewReaderSize(rc, 1<<20)
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	applied := binary.BigEndian.Uint64(hdr[:])
	type kv struct{ k, v []byte }
	var pairs []kv
	for {
		k, err := readChunk(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("replication: restore: %w", err)
		}
		v, err := readChunk(r)
		if err != nil {
			return fmt.Errorf("replication: restore: %w", err)
		}
		pairs = append(pairs, kv{k, v})
	}
	err := f.st.Update(context.Background(), func(tx store.Tx) error {
		var stale [][]byte
		if err := tx.Scan(nil, func(k, _ []byte) error {
			if txn.Replicated(f.schema, k) {
				stale = append(stale, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			tx.Delete(k)
		}
		for _, p := range pairs {
			tx.Set(p.k, p.v)
		}
		tx.Set(appliedKey, binary.BigEndian.AppendUint64(nil, applied))
		return nil
	})
	if err != nil {
		return fmt.Errorf("replication: restore: %w", err)
	}
	if err := f.st.Sync(); err != nil {
		return err
	}
	if f.onApply != nil {
		f.onApply(applied)
	}
	return nil
}

func readChunk(r *bufio.Reader) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}
