package probe

import (
	"bytes"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPacketRoundTrip(t *testing.T) {
	for _, p := range []packet{
		{},
		{seq: 1, sent: 2},
		{reply: true, seq: 1<<64 - 1, sent: -1, received: 1 << 62},
	} {
		var b [PacketLen]byte
		p.encode(b[:])
		got, err := decode(b[:])
		if err != nil {
			t.Fatalf("decode(encode(%+v)): %v", p, err)
		}
		if diff := cmp.Diff(p, got, cmp.AllowUnexported(packet{})); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestPacketLayout(t *testing.T) {
	var b [PacketLen]byte
	packet{reply: true, seq: 0x0102030405060708, sent: 0x1112131415161718, received: 0x2122232425262728}.encode(b[:])
	want := []byte{
		'P', 'T', 'R', 'N', 1, 1, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8,
		0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
		0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28,
	}
	if !bytes.Equal(b[:], want) {
		t.Errorf("encoded\n%x, want\n%x", b, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	var good [PacketLen]byte
	packet{seq: 7}.encode(good[:])
	mutate := func(f func(b []byte) []byte) []byte {
		b := append([]byte(nil), good[:]...)
		return f(b)
	}
	tests := map[string][]byte{
		"empty":       nil,
		"short":       good[:PacketLen-1],
		"magic":       mutate(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 0":   mutate(func(b []byte) []byte { b[4] = 0; return b }),
		"version 2":   mutate(func(b []byte) []byte { b[4] = 2; return b }),
		"just magic":  []byte("PTRN"),
		"other proto": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n....."),
	}
	for name, b := range tests {
		if _, err := decode(b); err == nil {
			t.Errorf("%s: decoded %x, want an error", name, b)
		}
	}
	if _, err := decode(append(good[:], make([]byte, 100)...)); err != nil {
		t.Errorf("padded request: %v", err)
	}
}

func TestResponderAnswer(t *testing.T) {
	r := &Responder{}
	limit := bucket{rate: -1}
	now := time.Unix(100, 5)

	var req [PacketLen + 8]byte
	packet{seq: 42, sent: 1234}.encode(req[:])
	if !r.answer(req[:], now, &limit) {
		t.Fatal("a request was not answered")
	}
	got, err := decode(req[:PacketLen])
	if err != nil {
		t.Fatal(err)
	}
	want := packet{reply: true, seq: 42, sent: 1234, received: now.UnixNano()}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(packet{})); diff != "" {
		t.Errorf("reply (-want +got):\n%s", diff)
	}
	// The reply itself must not be answered: two responders never loop.
	if r.answer(req[:PacketLen], now, &limit) {
		t.Error("a reply was answered")
	}
	if r.answer([]byte("junk"), now, &limit) {
		t.Error("junk was answered")
	}
}

func TestBucket(t *testing.T) {
	b := bucket{rate: 10, tokens: 10}
	now := time.Unix(0, 0)
	n := 0
	for range 100 {
		if b.allow(now) {
			n++
		}
	}
	if n != 10 {
		t.Errorf("burst allowed %d, want 10", n)
	}
	now = now.Add(500 * time.Millisecond)
	n = 0
	for range 100 {
		if b.allow(now) {
			n++
		}
	}
	if n != 5 {
		t.Errorf("after 500 ms at 10/s allowed %d, want 5", n)
	}
}

func FuzzDecode(f *testing.F) {
	var b [PacketLen]byte
	packet{seq: 1, sent: 2}.encode(b[:])
	f.Add(b[:])
	f.Add([]byte("PTRN"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decode(data)
		if err != nil {
			return
		}
		var out [PacketLen]byte
		p.encode(out[:])
		again, err := decode(out[:])
		if err != nil || again != p {
			t.Errorf("decode(encode(%+v)) = %+v, %v", p, again, err)
		}
	})
}

func BenchmarkResponderAnswer(b *testing.B) {
	r := &Responder{}
	limit := bucket{rate: -1}
	var req, buf [PacketLen]byte
	packet{seq: 42, sent: 1234}.encode(req[:])
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		buf = req
		r.answer(buf[:], now, &limit)
	}
}
