package replication

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// handshakeTimeout bounds a Raft connection's TLS handshake, so that a
// client that connects and sends nothing does not hold a goroutine.
const handshakeTimeout = 10 * time.Second

// newTransport returns Raft's network transport on cfg.RaftAddr: over
// mutual TLS when cfg.TLS is set, else plain TCP.
func newTransport(cfg Config, hlog hclog.Logger) (*raft.NetworkTransport, error) {
	addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("replication: --raft-listen %s: %w", cfg.RaftAddr, err)
	}
	if cfg.TLS == nil {
		t, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 8, 2*time.Second, hlog)
		if err != nil {
			return nil, fmt.Errorf("replication: --raft-listen %s: %w", cfg.RaftAddr, err)
		}
		return t, nil
	}
	if addr.IP == nil || addr.IP.IsUnspecified() {
		return nil, fmt.Errorf("replication: --raft-listen %s: not an address other members can reach", cfg.RaftAddr)
	}
	lis, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, fmt.Errorf("replication: --raft-listen %s: %w", cfg.RaftAddr, err)
	}
	layer := &streamLayer{Listener: lis, advertise: addr, config: cfg.TLS, log: cfg.Logger}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 8, Timeout: 2 * time.Second, Logger: hlog,
	}), nil
}

// streamLayer carries Raft over TLS: both ends present a certificate and
// verify the other's with the configuration config returns for each
// connection (see Config.TLS). A connection config refuses is closed before
// Raft reads a byte of it.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	config    func() (*tls.Config, error)
	log       *slog.Logger
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Accept returns the next connection. Its TLS handshake runs on its first
// read or write, in Raft's goroutine for the connection, so that a slow
// client does not hold up the others; a failed handshake fails that read.
func (l *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cfg, err := l.config()
		switch {
		case err != nil:
			l.log.Debug("refused a Raft connection", "peer", c.RemoteAddr().String(), "err", err)
			c.Close()
			continue
		case cfg == nil:
			return c, nil
		}
		return &serverConn{Conn: tls.Server(c, cfg)}, nil
	}
}

// Dial connects to another member's Raft address and verifies its
// certificate for the address's host.
func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg, err := l.config()
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{Timeout: timeout}
	if cfg == nil {
		return d.Dial("tcp", string(addr))
	}
	host, _, err := net.SplitHostPort(string(addr))
	if err != nil {
		return nil, err
	}
	cfg = cfg.Clone()
	cfg.ServerName = host
	return tls.DialWithDialer(d, "tcp", string(addr), cfg)
}

// serverConn is an accepted connection whose handshake is bounded by
// handshakeTimeout.
type serverConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *serverConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("refused a Raft connection from %s: %w", c.RemoteAddr(), err)
		}
	})
	return c.err
}

func (c *serverConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *serverConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// unpipelined is Raft's network transport without pipelined replication:
// the leader sends a follower one AppendEntries at a time (each carrying up
// to MaxAppendEntries entries). hashicorp/raft's pipeline deadlocks when a
// follower refuses an append while another is in flight (its decoder stops
// at the refusal, the transport's unbuffered channels then block the next
// send, and the send loop never sees the decoder stop): the leader sends
// that follower heartbeats and nothing else, for good
// (https://github.com/hashicorp/raft/issues/612). A follower refuses an
// append whenever its log cannot take it (a full disk) or does not match
// (after a leader change). TestMemberDiskFull catches it.
type unpipelined struct{ *raft.NetworkTransport }

// Raft asks its transport for these; the wrapper must keep them.
var (
	_ raft.WithPreVote = unpipelined{}
	_ raft.WithClose   = unpipelined{}
)

// AppendEntriesPipeline implements raft.Transport: Raft then replicates
// with AppendEntries alone.
func (unpipelined) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
