package pathkey_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"github.com/openconfig/ygot/ygot"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/patronus-sdwan/patronus/gnmi-server/pathkey"
)

// el builds a path element; kv alternates key names and values.
func el(name string, kv ...string) *gpb.PathElem {
	e := &gpb.PathElem{Name: name}
	if len(kv) > 0 {
		e.Key = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Key[kv[i]] = kv[i+1]
		}
	}
	return e
}

func path(elems ...*gpb.PathElem) []*gpb.PathElem { return elems }

var roundTripCases = []struct {
	name  string
	elems []*gpb.PathElem
	// enc, if set, is the exact encoding expected.
	enc []byte
}{
	{name: "root", elems: nil, enc: nil},
	{name: "one element", elems: path(el("sites")), enc: []byte("sites\x00")},
	{name: "two elements", elems: path(el("a"), el("b")), enc: []byte("a\x00b\x00")},
	{name: "list entry", elems: path(el("sites"), el("site", "name", "hq"), el("config"), el("name")),
		enc: []byte("sites\x00site\x01name\x02hq\x00config\x00name\x00")},
	{name: "keys sorted by name", elems: path(el("flow", "source-port", "1", "protocol", "6", "destination-address", "::1")),
		enc: []byte("flow\x01destination-address\x02::1\x01protocol\x026\x01source-port\x021\x00")},
	{name: "empty key value", elems: path(el("l", "k", "")), enc: []byte("l\x01k\x02\x00")},
	{name: "empty name", elems: path(el("")), enc: []byte("\x00")},
	{name: "separator bytes in value", elems: path(el("l", "k", "a\x00b\x01c\x02d\x03e")),
		enc: []byte("l\x01k\x02a\x03\x00b\x03\x01c\x03\x02d\x03\x03e\x00")},
	{name: "only separator bytes", elems: path(el("l", "k", "\x00\x01\x02\x03")),
		enc: []byte("l\x01k\x02\x03\x00\x03\x01\x03\x02\x03\x03\x00")},
	{name: "separator bytes in name and key name", elems: path(el("a\x00", "\x01k\x03", "v"), el("\x02")),
		enc: []byte("a\x03\x00\x01\x03\x01k\x03\x03\x02v\x00\x03\x02\x00")},
	{name: "trailing escape byte", elems: path(el("l", "k", "v\x03")), enc: []byte("l\x01k\x02v\x03\x03\x00")},
	{name: "gnmi path syntax in value", elems: path(el("l", "k", "a]b=c[d\\e/f*"))},
	{name: "unicode", elems: path(el("größe", "schlüssel", "日本語 ✓ 🚀"), el("ß"))},
	{name: "high bytes", elems: path(el("l", "k", "\xf0\xfe\xff"), el("\xff"))},
	{name: "many keys", elems: path(el("l", "k3", "c", "k1", "a", "k2", "b"), el("x", "k", "1"))},
	{name: "deep", elems: path(el("a"), el("b"), el("c"), el("d"), el("e"), el("f"), el("g"), el("h"))},
}

func equalElems(t *testing.T, want, got []*gpb.PathElem) {
	t.Helper()
	if len(want) == 0 && len(got) == 0 {
		return
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("elements differ (-want +got):\n%s", diff)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases {
		t.Run(tc.name, func(t *testing.T) {
			enc := pathkey.Encode(tc.elems)
			if tc.enc != nil && !bytes.Equal(enc, tc.enc) {
				t.Errorf("Encode = %q, want %q", enc, tc.enc)
			}
			got, err := pathkey.Decode(enc)
			if err != nil {
				t.Fatalf("Decode(%q): %v", enc, err)
			}
			equalElems(t, tc.elems, got)
			if n := pathkey.Count(enc); n != len(tc.elems) {
				t.Errorf("Count = %d, want %d", n, len(tc.elems))
			}
			if b := pathkey.AppendElems([]byte("pre"), tc.elems); !bytes.Equal(b, append([]byte("pre"), enc...)) {
				t.Errorf("AppendElems appended %q, want %q", b[3:], enc)
			}
		})
	}
}

// TestKeyOrderIndependent: a map's iteration order must not change the
// encoding.
func TestKeyOrderIndependent(t *testing.T) {
	e := el("flow", "protocol", "6", "source-address", "192.0.2.1", "source-port", "1000", "destination-address", "198.51.100.1", "destination-port", "443")
	first := pathkey.Encode(path(e))
	for i := 0; i < 50; i++ {
		if got := pathkey.Encode(path(e)); !bytes.Equal(got, first) {
			t.Fatalf("encoding changed between calls: %q vs %q", first, got)
		}
	}
}

func TestPrefixProperty(t *testing.T) {
	for _, tc := range []struct {
		name   string
		parent []*gpb.PathElem
		child  []*gpb.PathElem // below parent
		other  []*gpb.PathElem // not below parent
	}{
		{name: "element name extends the parent's",
			parent: path(el("a"), el("b")), child: path(el("a"), el("b"), el("c")), other: path(el("a"), el("bc"))},
		{name: "element name extends, deeper",
			parent: path(el("a"), el("b")), child: path(el("a"), el("b"), el("c")), other: path(el("a"), el("bc"), el("c"))},
		{name: "key value extends the parent's",
			parent: path(el("l", "k", "a")), child: path(el("l", "k", "a"), el("x")), other: path(el("l", "k", "ab"))},
		{name: "key value extends, deeper",
			parent: path(el("l", "k", "a")), child: path(el("l", "k", "a"), el("x")), other: path(el("l", "k", "ab"), el("x"))},
		{name: "key name extends the parent's",
			parent: path(el("l", "k", "a")), child: path(el("l", "k", "a"), el("x")), other: path(el("l", "kk", "a"))},
		{name: "more keys",
			parent: path(el("l", "k", "a")), child: path(el("l", "k", "a"), el("x")), other: path(el("l", "k", "a", "m", "b"))},
		{name: "unkeyed parent vs keyed sibling",
			parent: path(el("l")), child: path(el("l"), el("x")), other: path(el("l", "k", "a"))},
		{name: "escaped byte in sibling",
			parent: path(el("l", "k", "a")), child: path(el("l", "k", "a"), el("\x00")), other: path(el("l", "k", "a\x00"))},
		{name: "site hq vs hq2",
			parent: path(el("sites"), el("site", "name", "hq")), child: path(el("sites"), el("site", "name", "hq"), el("config"), el("name")),
			other: path(el("sites"), el("site", "name", "hq2"), el("config"), el("name"))},
		{name: "root is everyone's prefix", parent: nil, child: path(el("a")), other: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c := pathkey.Encode(tc.parent), pathkey.Encode(tc.child)
			if !bytes.HasPrefix(c, p) {
				t.Errorf("Encode(parent) %q is not a prefix of Encode(child) %q", p, c)
			}
			if tc.other != nil {
				if o := pathkey.Encode(tc.other); bytes.HasPrefix(o, p) {
					t.Errorf("Encode(parent) %q is a prefix of Encode(%s) %q, which is not below it", p, pathkey.String(tc.other), o)
				}
			}
			// The subtree is the range [p, PrefixEnd(p)).
			if end := pathkey.PrefixEnd(p); end != nil && bytes.Compare(c, end) >= 0 {
				t.Errorf("child %q sorts at or after PrefixEnd(parent) %q", c, end)
			}
		})
	}
}

func TestListPrefix(t *testing.T) {
	pre := pathkey.AppendListPrefix([]byte("sites\x00"), "site")
	for _, e := range []*gpb.PathElem{el("site", "name", "hq"), el("site", "name", ""), el("site", "a", "1", "b", "2")} {
		k := pathkey.Encode(path(el("sites"), e, el("config")))
		if !bytes.HasPrefix(k, pre) {
			t.Errorf("list prefix %q is not a prefix of %q", pre, k)
		}
	}
	for _, e := range []*gpb.PathElem{el("site"), el("sites", "name", "hq"), el("site2", "name", "hq")} {
		k := pathkey.Encode(path(el("sites"), e))
		if bytes.HasPrefix(k, pre) {
			t.Errorf("list prefix %q is a prefix of %q (%s)", pre, k, pathkey.String(path(el("sites"), e)))
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want []byte }{
		{[]byte("a\x00"), []byte("a\x01")},
		{[]byte("a\xff"), []byte("b")},
		{[]byte("\xff\xff"), nil},
		{nil, nil},
	} {
		if got := pathkey.PrefixEnd(tc.in); !bytes.Equal(got, tc.want) {
			t.Errorf("PrefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCountAndSplit(t *testing.T) {
	elems := path(el("sites"), el("site", "name", "h\x00q"), el("endpoints\x03"), el("endpoint", "name", "inet\x01"), el("config"))
	key := pathkey.Encode(elems)
	if got := pathkey.Count(key); got != len(elems) {
		t.Fatalf("Count = %d, want %d", got, len(elems))
	}
	for n := 0; n <= len(elems); n++ {
		head, tail, ok := pathkey.Split(key, n)
		if !ok {
			t.Fatalf("Split(%d) not ok", n)
		}
		if want := pathkey.Encode(elems[:n]); !bytes.Equal(head, want) {
			t.Errorf("Split(%d) head = %q, want %q", n, head, want)
		}
		if want := pathkey.Encode(elems[n:]); !bytes.Equal(tail, want) {
			t.Errorf("Split(%d) tail = %q, want %q", n, tail, want)
		}
		if got := pathkey.Count(head); got != n {
			t.Errorf("Count(head of Split(%d)) = %d", n, got)
		}
	}
	if _, _, ok := pathkey.Split(key, len(elems)+1); ok {
		t.Errorf("Split(%d) of a %d-element key is ok", len(elems)+1, len(elems))
	}
	if got := pathkey.Count(nil); got != 0 {
		t.Errorf("Count(nil) = %d", got)
	}
	if head, tail, ok := pathkey.Split(nil, 0); !ok || head != nil || tail != nil {
		t.Errorf("Split(nil, 0) = %q, %q, %v", head, tail, ok)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, in := range []string{
		"a",                // no terminator
		"a\x01k\x02v",      // unterminated value
		"a\x01k\x00",       // key without value
		"a\x01k",           // unterminated key name
		"a\x02v\x00",       // value without a key
		"a\x01k\x02v\x02w", // two values
		"a\x03",            // escape at the end
		"a\x00b",           // second element unterminated
		"a\x01k\x02v\x01",  // second key unterminated
		"\x01k\x02v\x03",   // escape at the end of a value
	} {
		elems, err := pathkey.Decode([]byte(in))
		if !errors.Is(err, pathkey.ErrMalformed) {
			t.Errorf("Decode(%q) = %v, %v; want ErrMalformed", in, elems, err)
		}
	}
}

// TestDecodeCanonical: Encode is the only producer of keys, so Decode must
// accept exactly what Encode produces. Accepting other byte strings gives one
// path several keys, and decoding a key and re-encoding it lands elsewhere.
func TestDecodeCanonical(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"escape before an ordinary byte", "\x03a\x00"},
		{"escape before an ordinary byte in a value", "l\x01k\x02\x03v\x00"},
		{"keys out of order", "l\x01b\x021\x01a\x022\x00"},
		{"duplicate key", "l\x01k\x021\x01k\x022\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			elems, err := pathkey.Decode([]byte(tc.in))
			if err != nil {
				return // rejected: fine
			}
			if re := pathkey.Encode(elems); !bytes.Equal(re, []byte(tc.in)) {
				t.Errorf("Decode(%q) accepted a non-canonical key: it decodes to %s, which encodes as %q", tc.in, pathkey.String(elems), re)
			}
		})
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name  string
		elems []*gpb.PathElem
		want  string
	}{
		{"root", nil, "/"},
		{"plain", path(el("sites"), el("site", "name", "hq"), el("config")), "/sites/site[name=hq]/config"},
		{"keys sorted", path(el("l", "b", "2", "a", "1")), "/l[a=1][b=2]"},
		{"close bracket", path(el("l", "k", "a]b")), `/l[k=a\]b]`},
		{"backslash", path(el("l", "k", `a\b`)), `/l[k=a\\b]`},
		{"backslash then bracket", path(el("l", "k", `\]`)), `/l[k=\\\]]`},
		{"slash", path(el("l", "k", "a/b")), "/l[k=a/b]"},
		{"unicode", path(el("l", "k", "日本 ✓")), "/l[k=日本 ✓]"},
		{"wildcards", path(el("l", "k", "*"), el("...")), "/l[k=*]/..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pathkey.String(tc.elems); got != tc.want {
				t.Errorf("String = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestStringParses: what String renders, a gNMI path parser reads back as the
// same path, whatever the key values hold.
func TestStringParses(t *testing.T) {
	for _, v := range []string{
		"hq", "a]b", `a\b`, `\]`, "a=b", "==", "a[b", "[x]", "a/b", "日本 ✓", `a\]b=c[d`, "*x", "...", " lead", "trail ",
	} {
		elems := path(el("sites"), el("site", "name", v), el("config"))
		s := pathkey.String(elems)
		p, err := ygot.StringToStructuredPath(s)
		if err != nil {
			t.Errorf("value %q: String gave %s, which does not parse: %v", v, s, err)
			continue
		}
		if diff := cmp.Diff(elems, p.GetElem(), protocmp.Transform()); diff != "" {
			t.Errorf("value %q: String gave %s, which parses to another path (-want +got):\n%s", v, s, diff)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, tc := range roundTripCases {
		f.Add(pathkey.Encode(tc.elems))
	}
	f.Add([]byte("a\x01k\x02v"))
	f.Add([]byte("a\x03"))
	f.Add([]byte("\xfeu/policies/policy\x0010\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		elems, err := pathkey.Decode(b)
		if err != nil {
			if !errors.Is(err, pathkey.ErrMalformed) {
				t.Fatalf("Decode(%q) error %v is not ErrMalformed", b, err)
			}
			return
		}
		if re := pathkey.Encode(elems); !bytes.Equal(re, b) {
			t.Fatalf("Decode(%q) = %s, which encodes as %q", b, pathkey.String(elems), re)
		}
		if n := pathkey.Count(b); n != len(elems) {
			t.Fatalf("Count(%q) = %d, Decode found %d elements", b, n, len(elems))
		}
		for i := 0; i <= len(elems); i++ {
			head, tail, ok := pathkey.Split(b, i)
			if !ok || !bytes.Equal(head, pathkey.Encode(elems[:i])) || !bytes.Equal(tail, pathkey.Encode(elems[i:])) {
				t.Fatalf("Split(%q, %d) = %q, %q, %v", b, i, head, tail, ok)
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("sites", "name", "hq", "config", "x")
	f.Add("l", "k", "a\x00b", "\x03", "\x01")
	f.Add("a", "", "", "", "")
	f.Add("größe", "k", "]=\\", "b", "日本")
	f.Fuzz(func(t *testing.T, list, key, val, child, extra string) {
		entry := path(el(list, key, val))
		full := path(el(list, key, val), el(child))
		p, c := pathkey.Encode(entry), pathkey.Encode(full)
		got, err := pathkey.Decode(c)
		if err != nil {
			t.Fatalf("Decode(Encode(%q)) = %v", full, err)
		}
		equalElems(t, full, got)
		if n := pathkey.Count(c); n != 2 {
			t.Fatalf("Count = %d, want 2", n)
		}
		if head, tail, ok := pathkey.Split(c, 1); !ok || !bytes.Equal(head, p) || !bytes.Equal(tail, pathkey.Encode(path(el(child)))) {
			t.Fatalf("Split(%q, 1) = %q, %q, %v", c, head, tail, ok)
		}
		if !bytes.HasPrefix(c, p) {
			t.Fatalf("Encode(%q) is not a prefix of Encode(%q)", entry, full)
		}
		if extra == "" {
			return
		}
		// Siblings whose name, key name or key value extends the entry's are
		// not below it.
		for _, sib := range [][]*gpb.PathElem{
			path(el(list+extra, key, val), el(child)),
			path(el(list, key+extra, val), el(child)),
			path(el(list, key, val+extra), el(child)),
			path(el(list, key, val, key+extra, val), el(child)),
		} {
			if s := pathkey.Encode(sib); bytes.HasPrefix(s, p) {
				t.Fatalf("Encode(%q) = %q is a prefix of Encode(%q) = %q", entry, p, sib, s)
			}
		}
		// Distinct paths have distinct keys.
		other := path(el(list, key, val+extra), el(child))
		if bytes.Equal(pathkey.Encode(other), c) {
			t.Fatalf("%q and %q encode alike", full, other)
		}
	})
}
