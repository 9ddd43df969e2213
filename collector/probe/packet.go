package probe

import (
	"encoding/binary"
	"errors"
)

// PacketLen is the length of a probe header, and of every reply.
const PacketLen = 32

const (
	packetVersion = 1
	flagReply     = 1 << 0
)

var packetMagic = [4]byte{'P', 'T', 'R', 'N'}

var errBadPacket = errors.New("probe: not a probe packet")

// packet is a decoded probe request or reply.
type packet struct {
	reply    bool
	seq      uint64
	sent     int64 // sender's timestamp, ns since the epoch
	received int64 // responder's receive timestamp, ns since the epoch
}

// encode writes p into b, which must hold PacketLen bytes.
func (p packet) encode(b []byte) {
	_ = b[PacketLen-1]
	copy(b[0:4], packetMagic[:])
	b[4] = packetVersion
	b[5] = 0
	if p.reply {
		b[5] = flagReply
	}
	b[6], b[7] = 0, 0
	binary.BigEndian.PutUint64(b[8:], p.seq)
	binary.BigEndian.PutUint64(b[16:], uint64(p.sent))
	binary.BigEndian.PutUint64(b[24:], uint64(p.received))
}

// decode parses b. It fails on anything shorter than a header, with another
// magic or with another version; it never panics.
func decode(b []byte) (packet, error) {
	if len(b) < PacketLen || [4]byte(b[0:4]) != packetMagic || b[4] != packetVersion {
		return packet{}, errBadPacket
	}
	return packet{
		reply:    b[5]&flagReply != 0,
		seq:      binary.BigEndian.Uint64(b[8:]),
		sent:     int64(binary.BigEndian.Uint64(b[16:])),
		received: int64(binary.BigEndian.Uint64(b[24:])),
	}, nil
}
