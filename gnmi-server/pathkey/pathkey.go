// Package pathkey encodes gNMI data paths as byte strings that sort so that
// every subtree of the data tree is one contiguous key range.
//
// A path is encoded element by element. Each element is its name, then each
// of its keys in ascending key-name order as 0x01 name 0x02 value, then a
// terminating 0x00. Bytes 0x00 to 0x03 inside names and values are escaped
// with 0x03, so the separators are unambiguous. Because every element ends in
// 0x00, the encoding of a path is a prefix of the encoding of every path below
// it and of no other path: the subtree at P is the key range that starts with
// Encode(P).
package pathkey

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
)

const (
	elemEnd  = 0x00
	keyStart = 0x01
	keyValue = 0x02
	escape   = 0x03
)

// Encode returns the key for a concrete path (one without wildcards).
func Encode(elems []*gpb.PathElem) []byte {
	n := 0 // the size without escapes, which are rare
	for _, e := range elems {
		n += len(e.GetName()) + 1
		for k, v := range e.GetKey() {
			n += len(k) + len(v) + 2
		}
	}
	return AppendElems(make([]byte, 0, n), elems)
}

// AppendElems appends the encoding of elems to b.
func AppendElems(b []byte, elems []*gpb.PathElem) []byte {
	for _, e := range elems {
		b = AppendElem(b, e.GetName(), e.GetKey())
	}
	return b
}

// AppendElem appends one element with its keys to b.
func AppendElem(b []byte, name string, keys map[string]string) []byte {
	b = appendEscaped(b, name)
	if len(keys) == 1 {
		for k, v := range keys {
			b = append(b, keyStart)
			b = appendEscaped(b, k)
			b = append(b, keyValue)
			b = appendEscaped(b, v)
		}
	} else if len(keys) > 1 {
		names := make([]string, 0, len(keys))
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			b = append(b, keyStart)
			b = appendEscaped(b, k)
			b = append(b, keyValue)
			b = appendEscaped(b, keys[k])
		}
	}
	return append(b, elemEnd)
}

func appendEscaped(b []byte, s string) []byte {
	i := 0
	for i < len(s) && s[i] > escape {
		i++
	}
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		if c <= escape {
			b = append(b, escape)
		}
		b = append(b, c)
	}
	return b
}

// ErrMalformed is returned by Decode for bytes that are not an encoded path.
var ErrMalformed = errors.New("pathkey: malformed key")

// Decode returns the path elements encoded in key.
func Decode(key []byte) ([]*gpb.PathElem, error) {
	var elems []*gpb.PathElem
	for len(key) > 0 {
		e, rest, err := decodeElem(key)
		if err != nil {
			return nil, err
		}
		elems = append(elems, e)
		key = rest
	}
	return elems, nil
}

// Count returns the number of elements in an encoded path.
func Count(key []byte) int {
	n := 0
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case escape:
			i++
		case elemEnd:
			n++
		}
	}
	return n
}

// Split returns the encodings of the first n elements of key and of the rest.
// It returns ok false if key has fewer than n elements.
func Split(key []byte, n int) (head, tail []byte, ok bool) {
	if n == 0 {
		return nil, key, true
	}
	seen := 0
	for i := 0; i < len(key); i++ {
		switch key[i] {
		case escape:
			i++
		case elemEnd:
			seen++
			if seen == n {
				return key[:i+1], key[i+1:], true
			}
		}
	}
	return nil, nil, false
}

func decodeElem(b []byte) (*gpb.PathElem, []byte, error) {
	name, b, term, err := readToken(b)
	if err != nil {
		return nil, nil, err
	}
	e := &gpb.PathElem{Name: name}
	var prev string
	for term == keyStart {
		var k, v string
		k, b, term, err = readToken(b)
		if err != nil || term != keyValue {
			return nil, nil, ErrMalformed
		}
		v, b, term, err = readToken(b)
		if err != nil || term == keyValue {
			return nil, nil, ErrMalformed
		}
		if e.Key == nil {
			e.Key = map[string]string{}
		} else if k <= prev {
			// Keys are encoded once each, in ascending order.
			return nil, nil, ErrMalformed
		}
		prev = k
		e.Key[k] = v
	}
	if term != elemEnd {
		return nil, nil, ErrMalformed
	}
	return e, b, nil
}

// readToken reads escaped bytes up to the next separator, which it returns
// with the remaining input after it.
func readToken(b []byte) (string, []byte, byte, error) {
	// Fast path: no escapes before the separator.
	for i := 0; i < len(b); i++ {
		if c := b[i]; c == escape {
			break
		} else if c < escape {
			return string(b[:i]), b[i+1:], c, nil
		}
	}
	var sb strings.Builder
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == escape:
			if i+1 >= len(b) || b[i+1] > escape {
				return "", nil, 0, ErrMalformed
			}
			i++
			sb.WriteByte(b[i])
		case c < escape:
			return sb.String(), b[i+1:], c, nil
		default:
			sb.WriteByte(c)
		}
	}
	return "", nil, 0, ErrMalformed
}

// PrefixEnd returns the smallest key greater than every key that starts with
// prefix, for use as an exclusive upper bound of a range scan. It returns nil
// when there is no such key.
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// String renders elems as a gNMI path string, /a/b[k=v]/c, with keys in
// ascending order and ] and \ in key values escaped as gNMI requires.
func String(elems []*gpb.PathElem) string {
	if len(elems) == 0 {
		return "/"
	}
	var sb strings.Builder
	for _, e := range elems {
		sb.WriteByte('/')
		sb.WriteString(e.GetName())
		keys := make([]string, 0, len(e.GetKey()))
		for k := range e.GetKey() {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&sb, "[%s=%s]", k, escapeKeyValue(e.GetKey()[k]))
		}
	}
	return sb.String()
}

func escapeKeyValue(v string) string {
	if !strings.ContainsAny(v, `]\`) {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `]`, `\]`)
	return r.Replace(v)
}

// AppendListPrefix appends the prefix shared by the encodings of every entry
// of the list element name, whatever its keys.
func AppendListPrefix(b []byte, name string) []byte {
	return append(appendEscaped(b, name), keyStart)
}

// Decoder decodes keys that arrive in order, as from a range scan. It reuses
// the elements of the previous key's common prefix, so a scan allocates only
// for the elements that change from one key to the next. Elements returned
// are shared between results and must not be modified.
type Decoder struct {
	last  []byte
	ends  []int // ends[i] is the offset just past element i of last
	elems []*gpb.PathElem
}

// Decode returns the elements of key.
func (d *Decoder) Decode(key []byte) ([]*gpb.PathElem, error) {
	// Find how many whole elements key shares with the previous key.
	common := 0
	n := len(key)
	if len(d.last) < n {
		n = len(d.last)
	}
	same := 0
	for same < n && key[same] == d.last[same] {
		same++
	}
	for common < len(d.ends) && d.ends[common] <= same {
		common++
	}
	elems := make([]*gpb.PathElem, common, common+4)
	copy(elems, d.elems[:common])
	ends := d.ends[:common]
	off := 0
	if common > 0 {
		off = ends[common-1]
	}
	rest := key[off:]
	for len(rest) > 0 {
		e, r, err := decodeElem(rest)
		if err != nil {
			d.last, d.ends, d.elems = nil, nil, nil
			return nil, err
		}
		off += len(rest) - len(r)
		rest = r
		elems = append(elems, e)
		ends = append(ends, off)
	}
	d.last = append(d.last[:0], key...)
	d.ends = ends
	d.elems = elems
	return elems, nil
}

// SplitElem splits the first element off key without decoding it: its name
// and its keys as they are encoded (escaped; see SplitKey), and the rest of
// key. ok is false if key does not start with a whole element.
func SplitElem(key []byte) (name, keys, rest []byte, ok bool) {
	i, sep := token(key)
	if i < 0 {
		return nil, nil, nil, false
	}
	name = key[:i]
	if sep == elemEnd {
		return name, nil, key[i+1:], true
	}
	if sep != keyStart {
		return nil, nil, nil, false
	}
	// The keys run to the element's end: every 0x00 inside them is escaped.
	for j := i; j < len(key); j++ {
		switch key[j] {
		case escape:
			j++
		case elemEnd:
			return name, key[i:j], key[j+1:], true
		}
	}
	return nil, nil, nil, false
}

// SplitKey splits the first key off the keys of an element as SplitElem
// returns them: its name and value, still escaped, and the other keys. ok
// is false when keys is empty or malformed.
func SplitKey(keys []byte) (name, value, rest []byte, ok bool) {
	if len(keys) == 0 || keys[0] != keyStart {
		return nil, nil, nil, false
	}
	keys = keys[1:]
	i, sep := token(keys)
	if i < 0 || sep != keyValue {
		return nil, nil, nil, false
	}
	name, keys = keys[:i], keys[i+1:]
	j, _ := token(keys)
	if j < 0 {
		j = len(keys) // the last value runs to the end
	}
	return name, keys[:j], keys[j:], true
}

// token returns the index of the first separator (0x00, 0x01 or 0x02) of b
// outside escapes and which it is; -1 if there is none.
func token(b []byte) (int, byte) {
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case c == escape:
			i++
		case c < escape:
			return i, c
		}
	}
	return -1, 0
}

// AppendEscaped appends s as it is encoded in a name or key value.
func AppendEscaped(b []byte, s string) []byte { return appendEscaped(b, s) }
