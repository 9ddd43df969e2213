package txn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/protobuf/proto"
)

// Stored values use a compact tagged encoding for the scalar kinds the
// models use, which decodes several times faster than a TypedValue proto;
// anything else is stored as a marshaled TypedValue.
const (
	tagString   = 's'
	tagUint     = 'u'
	tagInt      = 'i'
	tagBool     = 'b'
	tagDouble   = 'd'
	tagLeafList = 'l'
	tagProto    = 'p'
)

// EncodeValue is the stored form of a value.
func EncodeValue(tv *gpb.TypedValue) []byte {
	return appendValue(nil, tv)
}

// AppendUint appends the stored form of an unsigned integer to b, as
// EncodeValue would encode a UintVal, without building a TypedValue.
func AppendUint(b []byte, u uint64) []byte { return binary.AppendUvarint(append(b, tagUint), u) }

// AppendString appends the stored form of a string to b, as EncodeValue
// would encode a StringVal.
func AppendString(b []byte, s string) []byte { return append(append(b, tagString), s...) }

// AppendStrings appends the stored form of a leaf-list of strings to b, as
// EncodeValue would encode a LeaflistVal of StringVals.
func AppendStrings(b []byte, ss []string) []byte {
	b = append(b, tagLeafList)
	for _, s := range ss {
		b = binary.AppendUvarint(b, uint64(1+len(s)))
		b = AppendString(b, s)
	}
	return b
}

func appendValue(b []byte, tv *gpb.TypedValue) []byte {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		b = append(b, tagString)
		return append(b, v.StringVal...)
	case *gpb.TypedValue_UintVal:
		return binary.AppendUvarint(append(b, tagUint), v.UintVal)
	case *gpb.TypedValue_IntVal:
		return binary.AppendVarint(append(b, tagInt), v.IntVal)
	case *gpb.TypedValue_BoolVal:
		if v.BoolVal {
			return append(b, tagBool, 1)
		}
		return append(b, tagBool, 0)
	case *gpb.TypedValue_DoubleVal:
		return binary.BigEndian.AppendUint64(append(b, tagDouble), math.Float64bits(v.DoubleVal))
	case *gpb.TypedValue_LeaflistVal:
		b = append(b, tagLeafList)
		for _, el := range v.LeaflistVal.GetElement() {
			enc := appendValue(nil, el)
			b = binary.AppendUvarint(b, uint64(len(enc)))
			b = append(b, enc...)
		}
		return b
	}
	p, err := proto.MarshalOptions{Deterministic: true}.Marshal(tv)
	if err != nil {
		panic(fmt.Sprintf("txn: marshal value: %v", err))
	}
	return append(append(b, tagProto), p...)
}

var errBadValue = errors.New("txn: malformed stored value")

// DecodeValue parses a stored value.
func DecodeValue(b []byte) (*gpb.TypedValue, error) {
	if len(b) == 0 {
		return nil, errBadValue
	}
	body := b[1:]
	switch b[0] {
	case tagString:
		return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: string(body)}}, nil
	case tagUint:
		u, n := binary.Uvarint(body)
		if n <= 0 {
			return nil, errBadValue
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}}, nil
	case tagInt:
		i, n := binary.Varint(body)
		if n <= 0 {
			return nil, errBadValue
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: i}}, nil
	case tagBool:
		if len(body) != 1 {
			return nil, errBadValue
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: body[0] == 1}}, nil
	case tagDouble:
		if len(body) != 8 {
			return nil, errBadValue
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_DoubleVal{DoubleVal: math.Float64frombits(binary.BigEndian.Uint64(body))}}, nil
	case tagLeafList:
		arr := &gpb.ScalarArray{}
		for len(body) > 0 {
			l, n := binary.Uvarint(body)
			if n <= 0 || uint64(len(body)-n) < l {
				return nil, errBadValue
			}
			el, err := DecodeValue(body[n : n+int(l)])
			if err != nil {
				return nil, err
			}
			arr.Element = append(arr.Element, el)
			body = body[n+int(l):]
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: arr}}, nil
	case tagProto:
		tv := &gpb.TypedValue{}
		if err := proto.Unmarshal(body, tv); err != nil {
			return nil, err
		}
		return tv, nil
	}
	return nil, errBadValue
}
