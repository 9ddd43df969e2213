package main

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// wireCodec sends protobuf messages and receives a SubscribeResponse as a
// countedResponse, or a GetResponse as a countedGet, read off the wire
// without building their messages.
type wireCodec struct{}

var _ encoding.CodecV2 = wireCodec{}

func (wireCodec) Name() string { return "proto" }

func (wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("wire codec: cannot send %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	var read func([]byte) error
	switch r := v.(type) {
	case *countedResponse:
		read = r.read
	case *countedGet:
		read = r.read
	default:
		return fmt.Errorf("wire codec: cannot receive into %T", v)
	}
	if len(data) == 1 {
		return read(data[0].ReadOnlyData())
	}
	// A message split across buffers: copied once, into a pooled buffer.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return read(buf.ReadOnlyData())
}

// countedGet is what the benchmark needs of a GetResponse: how many of its
// notifications' updates carry a path and a value.
type countedGet struct {
	leaves int
}

func (g *countedGet) read(b []byte) error {
	*g = countedGet{}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != getNotification || typ != protowire.BytesType {
			return nil
		}
		var n countedResponse
		if err := n.readNotification(v); err != nil {
			return err
		}
		g.leaves += n.leaves
		return nil
	})
}

// countedResponse is what the benchmark needs of a SubscribeResponse: whether
// it is a sync_response, or a notification with its timestamp and how many
// of its updates carry a path (with at least one element) and a value.
type countedResponse struct {
	sync         bool
	notification bool
	timestamp    int64
	leaves       int
}

// Field numbers of gnmi.proto.
const (
	getNotification    = 1 // GetResponse.notification: repeated Notification
	responseUpdate     = 1 // SubscribeResponse.update: Notification
	responseSync       = 3 // SubscribeResponse.sync_response: bool
	notificationTime   = 1 // Notification.timestamp: int64
	notificationUpdate = 4 // Notification.update: repeated Update
	updatePath         = 1 // Update.path: Path
	updateVal          = 3 // Update.val: TypedValue
	pathElem           = 3 // Path.elem: repeated PathElem
)

var errTruncated = errors.New("wire codec: truncated message")

func (r *countedResponse) read(b []byte) error {
	*r = countedResponse{}
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == responseSync && typ == protowire.VarintType:
			r.sync = x != 0
		case num == responseUpdate && typ == protowire.BytesType:
			r.notification = true
			return r.readNotification(v)
		}
		return nil
	})
}

func (r *countedResponse) readNotification(b []byte) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == notificationTime && typ == protowire.VarintType:
			r.timestamp = int64(x)
		case num == notificationUpdate && typ == protowire.BytesType:
			leaf, err := isLeafUpdate(v)
			if err != nil {
				return err
			}
			if leaf {
				r.leaves++
			}
		}
		return nil
	})
}

// isLeafUpdate reports whether the Update b has a path with elements and a
// value: a TypedValue's fields are all in its value oneof, so any field set
// is the value.
func isLeafUpdate(b []byte) (bool, error) {
	var elems, value bool
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == updatePath && typ == protowire.BytesType:
			return eachField(v, func(num protowire.Number, typ protowire.Type, _ []byte, _ uint64) error {
				elems = elems || (num == pathElem && typ == protowire.BytesType)
				return nil
			})
		case num == updateVal && typ == protowire.BytesType:
			value = len(v) > 0
		}
		return nil
	})
	return elems && value, err
}

// eachField calls f with every field of the message b: its number, type,
// and its bytes (length-delimited fields) or its value (varints and fixed).
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
