package txn

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"golang.org/x/crypto/argon2"
	"google.golang.org/grpc/codes"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Event is one entry of /system/events.
type Event struct {
	Severity string // INFO, WARNING, ERROR or CRITICAL
	Type     string // PATH_DOWN, CONFIG_COMMIT, SITE_DELETED, ...
	Subject  string // a gNMI path, or empty
	Message  string
	Node     string
}

// AppendEvent writes ev as the newest event in tx and drops the event that
// falls out of the ring.
func (e *Engine) AppendEvent(tx store.Tx, ev Event) error {
	seq, err := NextSeq(tx, "event")
	if err != nil {
		return err
	}
	// The state as one packed entry, its leaves in suffix order.
	var p store.Packer
	p.Add(leafMessage, AppendString(p.Value(), ev.Message))
	p.Add(leafNode, AppendString(p.Value(), ev.Node))
	p.Add(leafSequence, AppendUint(p.Value(), seq))
	p.Add(leafSeverity, AppendString(p.Value(), ev.Severity))
	if ev.Subject != "" {
		p.Add(leafSubject, AppendString(p.Value(), ev.Subject))
	}
	p.Add(leafTimestamp, AppendUint(p.Value(), uint64(tx.Time())))
	p.Add(leafType, AppendString(p.Value(), ev.Type))
	tx.Set(recordKey(eventPrefix, seq, stateElem), p.AppendTo(nil))
	if seq > e.EventRing {
		return trim(tx, eventPrefix, seq-e.EventRing)
	}
	return nil
}

// PackedPrefixes are where the engine writes packed entries (store.Packer):
// the state of each audit record and event is one key. A store the engine
// writes to is opened with them as store.Options.Packed, so that its
// readers see the leaves.
func PackedPrefixes() [][]byte {
	return [][]byte{
		pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "audit"}}),
		pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "events"}}),
	}
}

// recordPrefix is the key of /system/<container>/<list>[sequence= up to the
// sequence number.
func recordPrefix(container, list string) []byte {
	k := pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: container}, {Name: list, Key: map[string]string{"sequence": "0"}}})
	return k[:len(k)-2] // without the key's value "0" and the element's end
}

var (
	auditPrefix = recordPrefix("audit", "record")
	eventPrefix = recordPrefix("events", "event")
	stateElem   = pathkey.AppendElem(nil, "state", nil)
)

// recordKey returns the key of the record seq under prefix (recordPrefix),
// followed by tail; the decimal digits of seq need no escaping.
func recordKey(prefix []byte, seq uint64, tail []byte) []byte {
	k := make([]byte, 0, len(prefix)+21+len(tail))
	k = strconv.AppendUint(append(k, prefix...), seq, 10)
	return append(append(k, 0), tail...)
}

// Suffixes of the records' leaves.
var (
	leafSequence  = pathkey.AppendElem(nil, "sequence", nil)
	leafTimestamp = pathkey.AppendElem(nil, "timestamp", nil)
	leafSeverity  = pathkey.AppendElem(nil, "severity", nil)
	leafType      = pathkey.AppendElem(nil, "type", nil)
	leafSubject   = pathkey.AppendElem(nil, "subject", nil)
	leafMessage   = pathkey.AppendElem(nil, "message", nil)
	leafNode      = pathkey.AppendElem(nil, "node", nil)
	leafUser      = pathkey.AppendElem(nil, "user", nil)
	leafPeer      = pathkey.AppendElem(nil, "peer", nil)
	leafOperation = pathkey.AppendElem(nil, "operation", nil)
	leafPaths     = pathkey.AppendElem(nil, "paths", nil)
	leafResult    = pathkey.AppendElem(nil, "result", nil)
)

// trim deletes the record seq under prefix (recordPrefix): its packed
// entry, or the leaves of one written before records were packed.
func trim(tx store.Tx, prefix []byte, seq uint64) error {
	key := recordKey(prefix, seq, stateElem)
	if _, ok, err := tx.Get(key); err != nil || ok {
		tx.Delete(key)
		return err
	}
	var keys [][]byte
	if err := tx.Scan(recordKey(prefix, seq, nil), func(k, _ []byte) error {
		keys = append(keys, append([]byte(nil), k...))
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		tx.Delete(k)
	}
	return nil
}

// record writes the audit record and events of a successful Set (operation
// SET, COMMIT_CONFIRM or ROLLBACK).
func (e *Engine) record(tx store.Tx, res *Result, meta Meta, operation, message string, sites []string) error {
	seq, err := e.writeAudit(tx, auditRecord{time: res.Time, user: meta.User, peer: meta.Peer, operation: operation,
		paths: res.Changed, result: "OK", message: message})
	if err != nil {
		return err
	}
	l := Local{Recorded: true, Seq: seq, User: meta.User, Changed: len(res.Changed), Message: message, Sites: sites}
	if meta.local != nil {
		// Evaluate: the events are written where the writes are applied;
		// the entries cleared were noted by apply.
		l.Cleared = meta.local.Cleared
		*meta.local = l
		return nil
	}
	return e.writeEvents(tx, &l, meta.Node)
}

// writeEvents writes the events of a recorded Set (Local.Recorded): one per
// site deleted, then its CONFIG_COMMIT.
func (e *Engine) writeEvents(tx store.Tx, l *Local, node string) error {
	for _, s := range l.Sites {
		subject := pathkey.String([]*gpb.PathElem{{Name: "sites"}, {Name: "site", Key: map[string]string{"name": s}}})
		if err := e.AppendEvent(tx, Event{Severity: "WARNING", Type: "SITE_DELETED", Subject: subject, Message: fmt.Sprintf("site %s deleted with its endpoints and the paths using them", s), Node: node}); err != nil {
			return err
		}
	}
	msg := fmt.Sprintf("configuration commit %d by %q: %d path(s) changed", l.Seq, l.User, l.Changed)
	if l.Message != "" {
		msg += "; " + l.Message
	}
	return e.AppendEvent(tx, Event{Severity: "INFO", Type: "CONFIG_COMMIT", Message: msg, Node: node})
}

type auditRecord struct {
	time                          int64
	user, peer, operation, result string
	message                       string
	paths                         []string
}

// writeAudit appends an audit record and trims the oldest beyond the ring;
// it returns the record's sequence number.
func (e *Engine) writeAudit(tx store.Tx, r auditRecord) (uint64, error) {
	seq, err := NextSeq(tx, "audit")
	if err != nil {
		return 0, err
	}
	// The state as one packed entry, its leaves in suffix order.
	var p store.Packer
	if r.message != "" {
		p.Add(leafMessage, AppendString(p.Value(), r.message))
	}
	p.Add(leafOperation, AppendString(p.Value(), r.operation))
	p.Add(leafPaths, AppendStrings(p.Value(), r.paths))
	p.Add(leafPeer, AppendString(p.Value(), r.peer))
	p.Add(leafResult, AppendString(p.Value(), r.result))
	p.Add(leafSequence, AppendUint(p.Value(), seq))
	p.Add(leafTimestamp, AppendUint(p.Value(), uint64(r.time)))
	p.Add(leafUser, AppendString(p.Value(), r.user))
	tx.Set(recordKey(auditPrefix, seq, stateElem), p.AppendTo(nil))
	if seq > e.AuditRing {
		if err := trim(tx, auditPrefix, seq-e.AuditRing); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

// Rejection is the audit record of a refused request: a Set that failed
// validation, authorization or decoding, or a failed login. It names the
// paths the request named, never their values.
type Rejection struct {
	User, Peer string
	// Node is the node that refused the request, if it was refused before
	// the replication log (empty for a Set the state machine rejected).
	Node string
	// Operation is SET, COMMIT_CONFIRM, ROLLBACK or LOGIN.
	Operation string
	Paths     []string
	// Message is the error the client got, with its code.
	Message string
	// Time is when the request was refused (ns since the epoch); zero
	// means the store transaction's time.
	Time int64
}

// Operation is the audit operation of a Set with commit action c.
func Operation(c *CommitAction) string {
	if c != nil {
		switch c.Kind {
		case CommitConfirm:
			return "COMMIT_CONFIRM"
		case CommitCancel, CommitRollback:
			return "ROLLBACK"
		}
	}
	return "SET"
}

// OpPaths lists the absolute paths ops name, in order.
func OpPaths(ops []Op) []string {
	out := make([]string, 0, len(ops))
	for _, op := range ops {
		out = append(out, pathkey.String(op.Elems))
	}
	return out
}

// Rejected is the audit record of a Set of ops that failed with err.
func Rejected(ops []Op, meta Meta, err *Error) Rejection {
	return Rejection{User: meta.User, Peer: meta.Peer, Operation: Operation(meta.Commit), Paths: OpPaths(ops),
		Message: CodeName(err.Code) + ": " + err.Describe(ops), Time: meta.Time}
}

// Describe is the message a client gets for a Set of ops that failed with
// e: the operation (or the resulting configuration) at fault and why.
func (e *Error) Describe(ops []Op) string {
	where := "the resulting configuration"
	if e.Op >= 0 && e.Op < len(ops) {
		op := ops[e.Op]
		where = fmt.Sprintf("operation %d (%s %s)", e.Op+1, op.Kind, pathkey.String(op.Elems))
	}
	return fmt.Sprintf("%s: %s; nothing was changed", where, e.Error())
}

// CodeName spells a gRPC code as the gRPC specification does
// (INVALID_ARGUMENT, PERMISSION_DENIED ...).
func CodeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// RecordRejected writes the audit record (result REJECTED) of a refused
// request and, for a Set, a SET_REJECTED event naming node, this node. It
// changes nothing else.
func (e *Engine) RecordRejected(tx store.Tx, rej Rejection, node string) error {
	if rej.Time == 0 {
		rej.Time = tx.Time()
	}
	seq, err := e.writeAudit(tx, auditRecord{time: rej.Time, user: rej.User, peer: rej.Peer, operation: rej.Operation,
		paths: rej.Paths, result: "REJECTED", message: rej.Message})
	if err != nil || rej.Operation == "LOGIN" {
		// A failed login has its AUTH_FAILURE event on the node it failed on.
		return err
	}
	msg := fmt.Sprintf("audit record %d: %s by %q rejected: %s", seq, rej.Operation, rej.User, rej.Message)
	return e.AppendEvent(tx, Event{Severity: "WARNING", Type: "SET_REJECTED", Message: msg, Node: node})
}

func strVal(s string) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}
}

// argon2id parameters: OWASP's recommended minimum (19 MiB, 2 passes).
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

// hashSecret replaces a password with its argon2id hash in PHC string form,
// so that no clear-text password is ever stored.
func hashSecret(tv *gpb.TypedValue) (*gpb.TypedValue, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	key := argon2.IDKey([]byte(tv.GetStringVal()), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding
	return strVal(fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, enc.EncodeToString(salt), enc.EncodeToString(key))), nil
}
