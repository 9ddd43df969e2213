package server

import (
	"time"

	"github.com/openconfig/gnmi/proto/gnmi_ext"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gpb "github.com/openconfig/gnmi/proto/gnmi"

	"github.com/patronus-sdwan/patronus/gnmi-server/feed"
	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// historyPoll is how often a range that ends in the future looks for new
// samples.
const historyPoll = time.Second

func historyOf(exts []*gnmi_ext.Extension) *gnmi_ext.History {
	for _, x := range exts {
		if h := x.GetHistory(); h != nil {
			return h
		}
	}
	return nil
}

// history serves a subscription with the History extension
// (rpc/gnmi/gnmi-history.md): a snapshot at a past time with ONCE, or every
// recorded change in a time range with STREAM. Only measured state has a
// history; the subscription's paths select from it.
func (ss *session) history(h *gnmi_ext.History) error {
	hist := ss.s.cfg.History
	if hist == nil {
		return status.Error(codes.Unimplemented, "Subscribe: this node keeps no history")
	}
	now := time.Now().UnixNano()
	mode := ss.list.GetMode()
	switch r := h.GetRequest().(type) {
	case *gnmi_ext.History_SnapshotTime:
		t := r.SnapshotTime
		if mode != gpb.SubscriptionList_ONCE {
			return status.Errorf(codes.InvalidArgument, "Subscribe: a History snapshot_time needs mode ONCE, not %s", mode)
		}
		if t > now {
			return status.Errorf(codes.Unimplemented, "Subscribe: History snapshot_time %s is in the future", time.Unix(0, t).UTC().Format(time.RFC3339Nano))
		}
		rd, at, err := hist.At(t)
		if err != nil {
			return internal(err)
		}
		if rd == nil {
			return status.Errorf(codes.NotFound, "Subscribe: no history is kept at or before %s", time.Unix(0, t).UTC().Format(time.RFC3339Nano))
		}
		if !ss.list.GetUpdatesOnly() {
			if err := ss.sendFrom(rd, ss.subs, at); err != nil {
				return streamError(err)
			}
		}
		return ss.syncResponse()
	case *gnmi_ext.History_Range:
		start, end := r.Range.GetStart(), r.Range.GetEnd()
		if mode != gpb.SubscriptionList_STREAM {
			return status.Errorf(codes.InvalidArgument, "Subscribe: a History range needs mode STREAM, not %s", mode)
		}
		if start > end {
			return status.Errorf(codes.InvalidArgument, "Subscribe: History range starts (%d) after it ends (%d)", start, end)
		}
		if start > now {
			return status.Errorf(codes.Unimplemented, "Subscribe: History range starts in the future (%s)", time.Unix(0, start).UTC().Format(time.RFC3339Nano))
		}
		from := start
		if !ss.list.GetUpdatesOnly() {
			rd, at, err := hist.At(start)
			if err != nil {
				return internal(err)
			}
			if rd != nil {
				if err := ss.sendFrom(rd, ss.subs, at); err != nil {
					return streamError(err)
				}
				if at == start {
					from = start + 1 // that sample was just sent
				}
			}
		}
		if err := ss.syncResponse(); err != nil {
			return err
		}
		return ss.historyRange(from, end)
	}
	return status.Error(codes.InvalidArgument, "Subscribe: the History extension holds neither snapshot_time nor range")
}

// historyRange streams the samples of [from, end); when end is in the
// future it waits for the samples still to come, then closes the RPC.
func (ss *session) historyRange(from, end int64) error {
	ctx := ss.stream.Context()
	for {
		// A sample is stamped before it is written: stay one poll behind
		// the clock so that none lands behind the scan.
		upTo := min(end, time.Now().Add(-historyPoll).UnixNano())
		if upTo < from {
			upTo = from
		}
		err := ss.s.cfg.History.Range(from, upTo, func(t int64, changes []store.Change) error {
			c := feed.Commit{Time: t}
			for _, ch := range changes {
				elems, err := pathkey.Decode(ch.Key)
				if err != nil {
					continue
				}
				fc := feed.Change{Key: ch.Key, Elems: elems}
				if ch.Value != nil {
					if fc.Value, err = txn.DecodeValue(ch.Value); err != nil {
						continue
					}
				}
				c.Changes = append(c.Changes, fc)
			}
			return ss.sendChanges(ss.subs, []feed.Commit{c})
		})
		if err != nil {
			return streamError(err)
		}
		if upTo >= end {
			return nil
		}
		from = upTo
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ss.s.stopping:
			return errShuttingDown
		case <-time.After(historyPoll):
		}
	}
}
