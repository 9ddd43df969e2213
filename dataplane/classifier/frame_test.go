package classifier

import (
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
)

// requireRoot skips tests that load eBPF programs or create namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: loading eBPF programs and creating network namespaces needs root")
	}
}

const (
	protoICMP = 1
	protoTCP  = 6
	protoUDP  = 17
)

// pkt describes a test frame.
type pkt struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	tos          uint8 // IPv4 TOS or IPv6 traffic class
	payload      int
	fragOffset   uint16 // IPv4 only, in 8-byte units
}

// frame builds an Ethernet frame carrying p.
func (p pkt) frame() []byte {
	var l4 []byte
	switch p.proto {
	case protoUDP:
		l4 = make([]byte, 8+p.payload)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	case protoTCP:
		l4 = make([]byte, 20+p.payload)
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
		l4[12] = 5 << 4
		l4[13] = 0x18 // PSH|ACK
	default:
		l4 = make([]byte, 8+p.payload)
		l4[0] = 8 // echo request
	}
	b := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0, 0}
	if p.src.Is4() {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		ip[1] = p.tos
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], p.fragOffset)
		ip[8] = 64
		ip[9] = p.proto
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], ipv4Checksum(ip))
		b = append(b, ip...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86DD)
		ip := make([]byte, 40)
		binary.BigEndian.PutUint32(ip[0:], 6<<28|uint32(p.tos)<<20)
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6] = p.proto
		ip[7] = 64
		s, d := p.src.As16(), p.dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
	}
	return append(b, l4...)
}

// ipv4Checksum returns the checksum of an IPv4 header; over a header with a
// correct checksum field it returns 0.
func ipv4Checksum(h []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		if i == 10 {
			continue
		}
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// tosOf returns the IPv4 TOS or IPv6 traffic class of a frame.
func tosOf(f []byte) uint8 {
	if binary.BigEndian.Uint16(f[12:]) == 0x0800 {
		return f[15]
	}
	return uint8(binary.BigEndian.Uint32(f[14:]) >> 20)
}

// skbCtx mirrors struct __sk_buff up to the fields BPF_PROG_TEST_RUN
// copies back; the rest is padding to the struct's 192 bytes.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol uint32
	VlanPresent, VlanTCI, VlanProto, Priority  uint32
	IngressIfindex, Ifindex, TCIndex           uint32
	CB                                         [5]uint32
	Hash, TCClassid, Data, DataEnd, NapiID     uint32
	Rest                                       [26]uint32
}
