package txn

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"golang.org/x/crypto/argon2"

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
	base := []*gpb.PathElem{{Name: "system"}, {Name: "events"}, {Name: "event", Key: map[string]string{"sequence": strconv.FormatUint(seq, 10)}}, {Name: "state"}}
	put := func(name string, tv *gpb.TypedValue) {
		tx.Set(pathkey.Encode(append(base[:4:4], &gpb.PathElem{Name: name})), EncodeValue(tv))
	}
	put("sequence", uintVal(seq))
	put("timestamp", uintVal(uint64(tx.Time())))
	put("severity", strVal(ev.Severity))
	put("type", strVal(ev.Type))
	if ev.Subject != "" {
		put("subject", strVal(ev.Subject))
	}
	put("message", strVal(ev.Message))
	put("node", strVal(ev.Node))
	if seq > e.EventRing {
		return trim(tx, "events", "event", seq-e.EventRing)
	}
	return nil
}

func trim(tx store.Tx, container, list string, seq uint64) error {
	prefix := pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: container}, {Name: list, Key: map[string]string{"sequence": strconv.FormatUint(seq, 10)}}})
	var keys [][]byte
	if err := tx.Scan(prefix, func(k, _ []byte) error {
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
	seq, err := NextSeq(tx, "audit")
	if err != nil {
		return err
	}
	base := []*gpb.PathElem{{Name: "system"}, {Name: "audit"}, {Name: "record", Key: map[string]string{"sequence": strconv.FormatUint(seq, 10)}}, {Name: "state"}}
	put := func(name string, tv *gpb.TypedValue) {
		tx.Set(pathkey.Encode(append(base[:4:4], &gpb.PathElem{Name: name})), EncodeValue(tv))
	}
	paths := &gpb.ScalarArray{}
	for _, p := range res.Changed {
		paths.Element = append(paths.Element, strVal(p))
	}
	put("sequence", uintVal(seq))
	put("timestamp", uintVal(uint64(res.Time)))
	put("user", strVal(meta.User))
	put("peer", strVal(meta.Peer))
	put("operation", strVal(operation))
	if message != "" {
		put("message", strVal(message))
	}
	put("paths", &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: paths}})
	put("result", strVal("OK"))
	if seq > e.AuditRing {
		if err := trim(tx, "audit", "record", seq-e.AuditRing); err != nil {
			return err
		}
	}
	for _, s := range sites {
		subject := pathkey.String([]*gpb.PathElem{{Name: "sites"}, {Name: "site", Key: map[string]string{"name": s}}})
		if err := e.AppendEvent(tx, Event{Severity: "WARNING", Type: "SITE_DELETED", Subject: subject, Message: fmt.Sprintf("site %s deleted with its endpoints and the paths using them", s), Node: meta.Node}); err != nil {
			return err
		}
	}
	msg := fmt.Sprintf("configuration commit %d by %q: %d path(s) changed", seq, meta.User, len(res.Changed))
	if message != "" {
		msg += "; " + message
	}
	return e.AppendEvent(tx, Event{Severity: "INFO", Type: "CONFIG_COMMIT", Message: msg, Node: meta.Node})
}

func uintVal(u uint64) *gpb.TypedValue {
	return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}}
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
