package cluster

import (
	"bytes"
	"context"
	"time"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// leaderContactBound is how long a follower may go without hearing from its
// leader (which heartbeats it many times a second) before it reports the
// leader unreachable.
const leaderContactBound = time.Second

// leaderViewPeriod is how often a follower copies the leader's view of the
// other members: only the leader hears from every member.
const leaderViewPeriod = time.Second

// contacts keeps the reachable and last-contact leaves of
// /system/cluster/members/member/state current. Each node writes its own
// view: the leader judges every member by its heartbeats; a follower judges
// itself and the leader, and takes the leader's word for the others. A
// reachable member's last-contact is kept to the second, so that the leaf
// changes at most once a second.
type contacts struct {
	fetched time.Time
	// others is the leader's view of members other than this node and the
	// leader, as last fetched.
	others map[string]replication.Contact
}

func (c *Cluster) refreshContacts(ctx context.Context, now time.Time, st replication.Status) {
	view := c.cfg.Repl.Contacts(now, leaderContactBound)
	if st.Leader != "" && st.Leader != c.cfg.NodeName {
		if lc, ok := view[st.Leader]; ok && lc.Reachable && now.Sub(c.contacts.fetched) >= leaderViewPeriod {
			c.contacts.fetched = now
			if others, err := c.leaderView(ctx, st.Leader); err == nil {
				c.contacts.others = others
			}
		}
		for name, ct := range c.contacts.others {
			if _, ok := view[name]; !ok {
				view[name] = ct
			}
		}
	} else {
		c.contacts.others = nil
	}

	prefix := pathkey.Encode([]*gpb.PathElem{{Name: "system"}, {Name: "cluster"}, {Name: "members"}})
	type current struct {
		member          bool
		reachable, last []byte // nil: absent
	}
	have := map[string]*current{}
	var dec pathkey.Decoder
	err := c.cfg.Store.Scan(prefix, func(key, value []byte) error {
		elems, err := dec.Decode(key)
		if err != nil || len(elems) != 6 || elems[3].GetName() != "member" {
			return nil
		}
		name := elems[3].GetKey()["node-name"]
		cur := have[name]
		if cur == nil {
			cur = &current{}
			have[name] = cur
		}
		switch elems[4].GetName() + "/" + elems[5].GetName() {
		case "config/node-name":
			cur.member = true
		case "state/reachable":
			cur.reachable = bytes.Clone(value)
		case "state/last-contact":
			cur.last = bytes.Clone(value)
		}
		return nil
	})
	if err != nil {
		return
	}
	type write struct {
		key, value []byte // nil value: delete
	}
	var writes []write
	for name, cur := range have {
		reach := pathkey.Encode(memberPath(name, "state", "reachable"))
		last := pathkey.Encode(memberPath(name, "state", "last-contact"))
		ct, known := view[name]
		if !cur.member || !known {
			if cur.reachable != nil {
				writes = append(writes, write{key: reach})
			}
			if cur.last != nil {
				writes = append(writes, write{key: last})
			}
			continue
		}
		rv := txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: ct.Reachable}})
		if !bytes.Equal(rv, cur.reachable) {
			writes = append(writes, write{key: reach, value: rv})
		}
		if ct.LastContact.IsZero() {
			if cur.last != nil {
				writes = append(writes, write{key: last})
			}
			continue
		}
		t := ct.LastContact
		if ct.Reachable {
			t = t.Truncate(time.Second)
		}
		lv := txn.EncodeValue(&gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: uint64(t.UnixNano())}})
		if !bytes.Equal(lv, cur.last) {
			writes = append(writes, write{key: last, value: lv})
		}
	}
	if len(writes) == 0 {
		return
	}
	c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		for _, w := range writes {
			if w.value == nil {
				tx.Delete(w.key)
			} else {
				tx.Set(w.key, w.value)
			}
		}
		return nil
	})
}

// leaderView reads the leader's reachable and last-contact leaves of the
// members other than this node and the leader.
func (c *Cluster) leaderView(ctx context.Context, leader string) (map[string]replication.Contact, error) {
	cl, err := c.client(leader)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, leaderContactBound)
	defer cancel()
	resp, err := cl.Get(ctx, &gpb.GetRequest{
		Path:     []*gpb.Path{{Elem: memberPath("*", "state")}},
		Type:     gpb.GetRequest_STATE,
		Encoding: gpb.Encoding_PROTO,
	})
	if err != nil {
		return nil, err
	}
	out := map[string]replication.Contact{}
	for _, n := range resp.GetNotification() {
		for _, u := range n.GetUpdate() {
			elems := append(append([]*gpb.PathElem(nil), n.GetPrefix().GetElem()...), u.GetPath().GetElem()...)
			if len(elems) != 6 || elems[3].GetName() != "member" {
				continue
			}
			name := elems[3].GetKey()["node-name"]
			if name == c.cfg.NodeName || name == leader {
				continue
			}
			ct := out[name]
			switch elems[5].GetName() {
			case "reachable":
				ct.Reachable = u.GetVal().GetBoolVal()
			case "last-contact":
				ct.LastContact = time.Unix(0, int64(u.GetVal().GetUintVal()))
			}
			out[name] = ct
		}
	}
	return out, nil
}
