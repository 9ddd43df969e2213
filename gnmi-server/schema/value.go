package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/goyang/pkg/yang"
)

// Values are stored in one canonical TypedValue form per YANG type:
// strings, enumerations and unions of strings as StringVal; signed integers
// as IntVal; unsigned as UintVal; booleans as BoolVal; decimal64 as
// DoubleVal rounded to the type's fraction digits; leaf-lists as LeafListVal.

// ParseString parses the textual form of a value (a default, a list key).
func ParseString(n *Node, s string) (*gpb.TypedValue, error) {
	return scalar(n.Type, s)
}

// FromTyped validates tv, a value sent in a SetRequest, for leaf n and
// returns its canonical form. JSON and JSON_IETF values are decoded first.
func FromTyped(n *Node, tv *gpb.TypedValue) (*gpb.TypedValue, error) {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_JsonVal:
		return FromJSONBytes(n, v.JsonVal)
	case *gpb.TypedValue_JsonIetfVal:
		return FromJSONBytes(n, v.JsonIetfVal)
	case nil:
		return nil, errors.New("empty value")
	}
	if n.Kind == LeafList {
		ll, ok := tv.GetValue().(*gpb.TypedValue_LeaflistVal)
		if !ok {
			return nil, fmt.Errorf("a leaf-list takes a leaflist_val, not %T", tv.GetValue())
		}
		out := &gpb.ScalarArray{}
		for _, el := range ll.LeaflistVal.GetElement() {
			c, err := scalar(n.Type, el)
			if err != nil {
				return nil, err
			}
			out.Element = append(out.Element, c)
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: out}}, nil
	}
	return scalar(n.Type, tv)
}

// FromJSONBytes decodes one JSON value for leaf n.
func FromJSONBytes(n *Node, b []byte) (*gpb.TypedValue, error) {
	v, err := DecodeJSON(b)
	if err != nil {
		return nil, err
	}
	return FromJSON(n, v)
}

// DecodeJSON decodes JSON keeping numbers exact.
func DecodeJSON(b []byte) (any, error) {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if d.More() {
		return nil, errors.New("invalid JSON: trailing data")
	}
	return v, nil
}

// FromJSON validates a decoded JSON value for leaf or leaf-list n.
func FromJSON(n *Node, v any) (*gpb.TypedValue, error) {
	if n.Kind == LeafList {
		arr, ok := v.([]any)
		if !ok {
			return nil, fmt.Errorf("a leaf-list takes a JSON array, not %s", jsonKind(v))
		}
		out := &gpb.ScalarArray{}
		for _, el := range arr {
			c, err := scalar(n.Type, el)
			if err != nil {
				return nil, err
			}
			out.Element = append(out.Element, c)
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_LeaflistVal{LeaflistVal: out}}, nil
	}
	if arr, ok := v.([]any); ok && n.Type.Kind == yang.Yempty && len(arr) == 1 && arr[0] == nil {
		return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: true}}, nil
	}
	return scalar(n.Type, v)
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// scalar converts v, which is a string, json.Number, bool, a JSON value or a
// scalar TypedValue, to the canonical value of type t.
func scalar(t *yang.YangType, v any) (*gpb.TypedValue, error) {
	if tv, ok := v.(*gpb.TypedValue); ok {
		v = fromTypedScalar(tv)
		if v == nil {
			return nil, fmt.Errorf("unsupported value type %T", tv.GetValue())
		}
	}
	switch t.Kind {
	case yang.Yunion:
		var errs []string
		for _, m := range t.Type {
			if tv, err := scalar(m, v); err == nil {
				return tv, nil
			} else {
				errs = append(errs, err.Error())
			}
		}
		return nil, fmt.Errorf("matches no member of union %s: %s", t.Name, strings.Join(errs, "; "))
	case yang.Ystring:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want a string, got %s", jsonKind(v))
		}
		if err := checkString(t, s); err != nil {
			return nil, err
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}, nil
	case yang.Yenum:
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("want an enumeration name, got %s", jsonKind(v))
		}
		if _, ok := t.Enum.ToInt[s]; !ok {
			return nil, fmt.Errorf("%q is not one of %s", s, strings.Join(enumNames(t), ", "))
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_StringVal{StringVal: s}}, nil
	case yang.Ybool:
		switch b := v.(type) {
		case bool:
			return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: b}}, nil
		case string:
			if b == "true" || b == "false" {
				return &gpb.TypedValue{Value: &gpb.TypedValue_BoolVal{BoolVal: b == "true"}}, nil
			}
		}
		return nil, fmt.Errorf("want a boolean, got %s", jsonKind(v))
	case yang.Yint8, yang.Yint16, yang.Yint32, yang.Yint64:
		i, err := toInt(v)
		if err != nil {
			return nil, err
		}
		lo, hi := intBounds(t.Kind)
		if i < lo || i > hi {
			return nil, fmt.Errorf("%d is out of range for %s", i, kindName(t.Kind))
		}
		if err := checkRange(t, yang.FromInt(i)); err != nil {
			return nil, err
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_IntVal{IntVal: i}}, nil
	case yang.Yuint8, yang.Yuint16, yang.Yuint32, yang.Yuint64:
		u, err := toUint(v)
		if err != nil {
			return nil, err
		}
		if hi := uintBound(t.Kind); u > hi {
			return nil, fmt.Errorf("%d is out of range for %s", u, kindName(t.Kind))
		}
		if err := checkRange(t, yang.FromUint(u)); err != nil {
			return nil, err
		}
		return &gpb.TypedValue{Value: &gpb.TypedValue_UintVal{UintVal: u}}, nil
	case yang.Ydecimal64:
		var s string
		switch d := v.(type) {
		case json.Number:
			s = d.String()
		case string:
			s = d
		case float64:
			s = strconv.FormatFloat(d, 'f', -1, 64)
		default:
			return nil, fmt.Errorf("want a decimal number, got %s", jsonKind(v))
		}
		num, err := yang.ParseDecimal(s, uint8(t.FractionDigits))
		if err != nil {
			return nil, fmt.Errorf("%q is not a decimal64 with %d fraction digits", s, t.FractionDigits)
		}
		if err := checkRange(t, num); err != nil {
			return nil, err
		}
		f, _ := strconv.ParseFloat(s, 64)
		return &gpb.TypedValue{Value: &gpb.TypedValue_DoubleVal{DoubleVal: f}}, nil
	}
	return nil, fmt.Errorf("values of YANG type %s are not supported", kindName(t.Kind))
}

// fromTypedScalar unwraps a scalar TypedValue to the Go value scalar takes.
func fromTypedScalar(tv *gpb.TypedValue) any {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return v.StringVal
	case *gpb.TypedValue_AsciiVal:
		return v.AsciiVal
	case *gpb.TypedValue_BoolVal:
		return v.BoolVal
	case *gpb.TypedValue_IntVal:
		return json.Number(strconv.FormatInt(v.IntVal, 10))
	case *gpb.TypedValue_UintVal:
		return json.Number(strconv.FormatUint(v.UintVal, 10))
	case *gpb.TypedValue_DoubleVal:
		return json.Number(strconv.FormatFloat(v.DoubleVal, 'f', -1, 64))
	case *gpb.TypedValue_FloatVal:
		return json.Number(strconv.FormatFloat(float64(v.FloatVal), 'f', -1, 32))
	case *gpb.TypedValue_DecimalVal:
		d := v.DecimalVal
		return json.Number(strconv.FormatFloat(float64(d.GetDigits())/math.Pow10(int(d.GetPrecision())), 'f', -1, 64))
	}
	return nil
}

// numberText returns the text of a number sent as a JSON number or, as
// RFC 7951 does for 64-bit integers, as a string.
func numberText(v any, want string) (string, error) {
	switch n := v.(type) {
	case json.Number:
		return n.String(), nil
	case string:
		return n, nil
	}
	return "", fmt.Errorf("want %s, got %s", want, jsonKind(v))
}

func toInt(v any) (int64, error) {
	s, err := numberText(v, "an integer")
	if err != nil {
		return 0, err
	}
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer in range", s)
	}
	return i, nil
}

func toUint(v any) (uint64, error) {
	s, err := numberText(v, "an unsigned integer")
	if err != nil {
		return 0, err
	}
	u, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an unsigned integer in range", s)
	}
	return u, nil
}

func intBounds(k yang.TypeKind) (int64, int64) {
	switch k {
	case yang.Yint8:
		return math.MinInt8, math.MaxInt8
	case yang.Yint16:
		return math.MinInt16, math.MaxInt16
	case yang.Yint32:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

func uintBound(k yang.TypeKind) uint64 {
	switch k {
	case yang.Yuint8:
		return math.MaxUint8
	case yang.Yuint16:
		return math.MaxUint16
	case yang.Yuint32:
		return math.MaxUint32
	}
	return math.MaxUint64
}

func kindName(k yang.TypeKind) string { return yang.TypeKindToName[k] }

func checkRange(t *yang.YangType, n yang.Number) error {
	if len(t.Range) == 0 {
		return nil
	}
	for _, r := range t.Range {
		if !n.Less(r.Min) && !r.Max.Less(n) {
			return nil
		}
	}
	return fmt.Errorf("%s is outside the allowed range %s", n.String(), t.Range.String())
}

var (
	patternMu sync.Mutex
	patterns  = map[string]*regexp.Regexp{}
)

func compiled(p string) (*regexp.Regexp, error) {
	patternMu.Lock()
	defer patternMu.Unlock()
	if re, ok := patterns[p]; ok {
		return re, nil
	}
	re, err := regexp.Compile(`^(?:` + p + `)$`)
	if err != nil {
		return nil, err
	}
	patterns[p] = re
	return re, nil
}

// semantic holds checks that patterns cannot express, by typedef name.
var semantic = map[string]func(string) error{
	"ipv4-address": func(s string) error { return checkAddr(s, true) },
	"ipv6-address": func(s string) error { return checkAddr(s, false) },
	"ipv4-prefix":  func(s string) error { return checkPrefix(s, true) },
	"ipv6-prefix":  func(s string) error { return checkPrefix(s, false) },
	"port-range":   checkPortRange,
}

func checkString(t *yang.YangType, s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if len(t.Length) > 0 {
		n := yang.FromInt(int64(utf8.RuneCountInString(s)))
		ok := false
		for _, r := range t.Length {
			if !n.Less(r.Min) && !r.Max.Less(n) {
				ok = true
			}
		}
		if !ok {
			return fmt.Errorf("length %d of %q is outside %s", utf8.RuneCountInString(s), s, t.Length.String())
		}
	}
	for _, p := range t.Pattern {
		re, err := compiled(p)
		if err != nil {
			return fmt.Errorf("schema pattern %q does not compile: %w", p, err)
		}
		if !re.MatchString(s) {
			return fmt.Errorf("%q does not match the pattern %s of type %s", s, p, t.Name)
		}
	}
	if check := semantic[t.Name]; check != nil {
		return check(s)
	}
	return nil
}

func checkAddr(s string, v4 bool) error {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Is4() != v4 || a.Zone() != "" {
		return fmt.Errorf("%q is not a valid IPv%s address", s, map[bool]string{true: "4", false: "6"}[v4])
	}
	return nil
}

func checkPrefix(s string, v4 bool) error {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Is4() != v4 {
		return fmt.Errorf("%q is not a valid IPv%s prefix", s, map[bool]string{true: "4", false: "6"}[v4])
	}
	if p.Masked() != p {
		return fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
	}
	return nil
}

func checkPortRange(s string) error {
	lo, hi, isRange := strings.Cut(s, "..")
	a, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return fmt.Errorf("port range %q: %q is not a port", s, lo)
	}
	if !isRange {
		return nil
	}
	b, err := strconv.ParseUint(hi, 10, 16)
	if err != nil {
		return fmt.Errorf("port range %q: %q is not a port", s, hi)
	}
	if a > b {
		return fmt.Errorf("port range %q is empty: %d > %d", s, a, b)
	}
	return nil
}

func enumNames(t *yang.YangType) []string {
	names := make([]string, 0, len(t.Enum.ToInt))
	for i := int64(0); len(names) < len(t.Enum.ToInt) && i < 1<<16; i++ {
		if n, ok := t.Enum.ToString[i]; ok {
			names = append(names, n)
		}
	}
	return names
}

// ToJSON returns the JSON form of a stored value of n: RFC 7951 rules when
// ietf is set (64-bit integers and decimals as strings), plain JSON numbers
// otherwise.
func ToJSON(n *Node, tv *gpb.TypedValue, ietf bool) any {
	if ll, ok := tv.GetValue().(*gpb.TypedValue_LeaflistVal); ok {
		out := make([]any, 0, len(ll.LeaflistVal.GetElement()))
		for _, el := range ll.LeaflistVal.GetElement() {
			out = append(out, scalarJSON(n, el, ietf))
		}
		return out
	}
	return scalarJSON(n, tv, ietf)
}

func scalarJSON(n *Node, tv *gpb.TypedValue, ietf bool) any {
	switch v := tv.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return v.StringVal
	case *gpb.TypedValue_BoolVal:
		return v.BoolVal
	case *gpb.TypedValue_IntVal:
		if ietf && v.IntVal > math.MaxInt32 || ietf && v.IntVal < math.MinInt32 {
			return strconv.FormatInt(v.IntVal, 10)
		}
		if ietf && n != nil && n.Type != nil && n.Type.Kind == yang.Yint64 {
			return strconv.FormatInt(v.IntVal, 10)
		}
		return json.Number(strconv.FormatInt(v.IntVal, 10))
	case *gpb.TypedValue_UintVal:
		if ietf && (v.UintVal > math.MaxUint32 || n != nil && n.Type != nil && n.Type.Kind == yang.Yuint64) {
			return strconv.FormatUint(v.UintVal, 10)
		}
		return json.Number(strconv.FormatUint(v.UintVal, 10))
	case *gpb.TypedValue_DoubleVal:
		fd := 3
		if n != nil && n.Type != nil && n.Type.FractionDigits > 0 {
			fd = n.Type.FractionDigits
		}
		s := strconv.FormatFloat(v.DoubleVal, 'f', fd, 64)
		if ietf {
			return s
		}
		return json.Number(s)
	}
	return nil
}

// MarshalJSON renders a value built by ToJSON or the Builder.
func MarshalJSON(v any) ([]byte, error) { return json.Marshal(v) }
