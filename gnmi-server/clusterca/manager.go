package clusterca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/store"
)

// Files in Config.Dir.
const (
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
	CACertFile   = "cluster-ca.crt"
)

// Config configures a Manager.
type Config struct {
	// Dir receives the node certificate, its key and the CA certificate
	// (<data-dir>/tls).
	Dir      string
	NodeName string
	// Addrs are this node's addresses as other members reach them
	// (host:port): its Raft and gNMI addresses. The node certificate names
	// their hosts; an unspecified address (0.0.0.0) names none.
	Addrs  []string
	Logger *slog.Logger
}

// Proposer commits the CA to the replicated store; replication.Node is one.
type Proposer interface {
	IsLeader() bool
	SetOnce(ctx context.Context, key string, value []byte) error
}

// Manager keeps this node's certificate issued by the cluster CA and gives
// out the TLS configurations of the members' traffic. Its methods are safe
// for concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	hosts []string

	// cur is the CA certificate and node certificate in use; nil until
	// this node has them.
	cur atomic.Pointer[material]
	// legacy is set while this node belongs to a cluster from before its
	// CA: Raft then goes in plaintext until the CA arrives.
	legacy atomic.Bool

	// mu serializes issuing and writing the certificates, and guards the
	// fields below it.
	mu      sync.Mutex
	st      *store.Store
	pending *CA    // made here, for the leader to commit
	stored  []byte // StoreKey's value as last installed

	cancel context.CancelFunc
	done   chan struct{}
}

type material struct {
	ca   *x509.Certificate
	pool *x509.CertPool
	cert tls.Certificate // with Leaf
}

// New returns a Manager that has no CA yet; Open gives it one.
func New(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{cfg: cfg, log: cfg.Logger}
	add := func(host string) {
		if ip := net.ParseIP(host); ip != nil {
			if ip.IsUnspecified() {
				return
			}
			host = ip.String()
		}
		if !slices.Contains(m.hosts, host) {
			m.hosts = append(m.hosts, host)
		}
	}
	for _, a := range cfg.Addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			continue
		}
		add(host)
		if net.ParseIP(host) == nil {
			// Raft may advertise the address a name resolves to (as
			// the first node of a cluster does), so the certificate
			// names both.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ips, _ := net.DefaultResolver.LookupIPAddr(ctx, host)
			cancel()
			for _, ip := range ips {
				add(ip.IP.String())
			}
		}
	}
	slices.Sort(m.hosts)
	return m
}

// Open loads the CA from st and makes sure this node has a current
// certificate of it, before Raft starts. Without a CA in st:
//
//   - a node with Raft state (raftState) uses the CA and node certificates
//     in Config.Dir: the store may lag the Raft log after a crash (it is
//     not synced; the log is replayed once a leader confirms it, over
//     Raft), and the CA entry is then among what it lost. Without those
//     files it belongs to a cluster from before the CA, and lets Raft go
//     in plaintext until the leader has committed one;
//   - a node that creates a new cluster (not joining, no Raft state)
//     generates one, for the leader to commit once it leads;
//   - a node that joins waits for Install (see Fetch): Raft refuses every
//     connection until then. Files in Config.Dir are not trusted then:
//     they may be another cluster's.
func (m *Manager) Open(st *store.Store, joining, raftState bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st = st
	b, ok, err := st.Get([]byte(StoreKey))
	if err != nil {
		return fmt.Errorf("clusterca: %w", err)
	}
	switch {
	case ok:
		return m.installLocked(b)
	case raftState:
		if ca, err := m.loadCACert(); err == nil {
			if cert, err := m.loadNodeCert(ca, false); err == nil {
				m.setLocked(ca, cert)
				return nil
			}
		}
		m.legacy.Store(true)
		m.log.Warn("this cluster has no CA yet: Raft traffic stays plaintext until its leader has made one and this node has it")
	case !joining:
		ca, err := Generate()
		if err != nil {
			return fmt.Errorf("clusterca: generating the cluster CA: %w", err)
		}
		m.pending = ca
		return m.useLocked(ca)
	}
	return nil
}

// Install makes b (a CA's certificate and key, as Fetch returns them) this
// node's CA and issues the node certificate.
func (m *Manager) Install(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.installLocked(b)
}

func (m *Manager) installLocked(b []byte) error {
	// What was installed from b before was good then; only time changes.
	if cur := m.cur.Load(); cur != nil && bytes.Equal(b, m.stored) && time.Until(cur.cert.Leaf.NotAfter) >= renewBefore {
		return nil
	}
	ca, err := Decode(b)
	if err != nil {
		return err
	}
	if err := m.useLocked(ca); err != nil {
		return err
	}
	m.stored = bytes.Clone(b)
	return nil
}

// useLocked makes ca this node's CA: it keeps the node certificate in use
// or in Config.Dir if it is good for ca (see good), and otherwise issues
// and writes a new one.
func (m *Manager) useLocked(ca *CA) error {
	if cur := m.cur.Load(); cur != nil && cur.ca.Equal(ca.Cert) && m.good(cur.cert.Leaf, ca.Cert, true) == nil {
		return nil
	}
	cert, err := m.loadNodeCert(ca.Cert, true)
	if err != nil {
		if cert, err = ca.Issue(m.cfg.NodeName, m.hosts); err != nil {
			return fmt.Errorf("clusterca: issuing the node certificate: %w", err)
		}
		if err := m.writeFiles(ca.Cert, cert); err != nil {
			return fmt.Errorf("clusterca: writing the node certificate: %w", err)
		}
		m.log.Info("issued this node's certificate of the cluster CA", "names", strings.Join(m.hosts, ","), "expires", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	} else if err := writeFile(filepath.Join(m.cfg.Dir, CACertFile), pemCert(ca.Cert)); err != nil {
		return fmt.Errorf("clusterca: %w", err)
	}
	m.setLocked(ca.Cert, cert)
	return nil
}

func (m *Manager) setLocked(ca *x509.Certificate, cert tls.Certificate) {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	had := m.cur.Swap(&material{ca: ca, pool: pool, cert: cert})
	if had == nil || !had.ca.Equal(ca) {
		sum := sha256.Sum256(ca.Raw)
		m.log.Info("cluster CA in use: Raft and the members' calls to each other are mutual TLS", "ca-sha256-fingerprint", hex.EncodeToString(sum[:]))
	}
}

// good returns nil if leaf is a node certificate ca signed for this node,
// valid now; strict also asks that it name this node's hosts and not be
// due for renewal (renewBefore), as a certificate this node keeps using
// must.
func (m *Manager) good(leaf, ca *x509.Certificate, strict bool) error {
	now := time.Now()
	switch {
	case leaf.CheckSignatureFrom(ca) != nil:
		return errors.New("signed by another CA")
	case leaf.Subject.CommonName != auth.MemberUser+m.cfg.NodeName:
		return errors.New("another node's")
	case now.Before(leaf.NotBefore) || now.After(leaf.NotAfter):
		return errors.New("not valid now")
	case !strict:
		return nil
	case time.Until(leaf.NotAfter) < renewBefore:
		return errors.New("expires soon")
	}
	var names []string
	names = append(names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	slices.Sort(names)
	if !slices.Equal(names, m.hosts) {
		return errors.New("names other addresses")
	}
	return nil
}

// loadNodeCert returns the node certificate in Config.Dir if it is good
// for ca.
func (m *Manager) loadNodeCert(ca *x509.Certificate, strict bool) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(m.cfg.Dir, NodeCertFile), filepath.Join(m.cfg.Dir, NodeKeyFile))
	if err != nil {
		return cert, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return cert, err
		}
	}
	return cert, m.good(cert.Leaf, ca, strict)
}

// loadCACert returns the CA certificate in Config.Dir.
func (m *Manager) loadCACert() (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(m.cfg.Dir, CACertFile))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("clusterca: %s: no certificate", CACertFile)
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("clusterca: %s: %w", CACertFile, err)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("clusterca: %s: not a CA", CACertFile)
	}
	return ca, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func (m *Manager) writeFiles(ca *x509.Certificate, cert tls.Certificate) error {
	kb, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.cfg.Dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{NodeKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})},
		{NodeCertFile, pemCert(cert.Leaf)},
		{CACertFile, pemCert(ca)},
	} {
		if err := writeFile(filepath.Join(m.cfg.Dir, f.name), f.data); err != nil {
			return err
		}
	}
	return nil
}

// writeFile replaces file with data (mode 0600) unless it holds data
// already, so that a crash never leaves half a file.
func writeFile(file string, data []byte) error {
	if old, err := os.ReadFile(file); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), file)
}

// Ready reports whether this node has the CA and its certificate.
func (m *Manager) Ready() bool { return m.cur.Load() != nil }

// Cert returns the CA certificate, or nil while this node has none.
func (m *Manager) Cert() *x509.Certificate {
	if cur := m.cur.Load(); cur != nil {
		return cur.ca
	}
	return nil
}

// watchPeriod is how often Start's loop looks at the store.
const watchPeriod = 250 * time.Millisecond

// fetchPeriod is how often a node of a cluster from before the CA asks the
// other members for it while it has none.
const fetchPeriod = 2 * time.Second

// Start runs the Manager's background work until Close: on the leader,
// committing the CA when the store has none (a new cluster's, or one made
// now for a cluster from before the CA); on every node, taking up the CA
// the store holds and renewing the node certificate before it expires. A
// node of a cluster from before the CA that has none yet also asks the
// other members for it with fetch, if not nil: Raft may already refuse it
// its plaintext.
func (m *Manager) Start(p Proposer, fetch func(context.Context) ([]byte, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		t := time.NewTicker(watchPeriod)
		defer t.Stop()
		var lastFetch time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := m.step(ctx, p, fetch, &lastFetch); err != nil && ctx.Err() == nil {
				m.log.Warn("cluster CA", "err", err)
			}
		}
	}()
}

func (m *Manager) step(ctx context.Context, p Proposer, fetch func(context.Context) ([]byte, error), lastFetch *time.Time) error {
	m.mu.Lock()
	st := m.st
	m.mu.Unlock()
	b, ok, err := st.Get([]byte(StoreKey))
	if err != nil {
		return err
	}
	if ok {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.pending = nil
		return m.installLocked(b)
	}
	if p.IsLeader() {
		m.mu.Lock()
		if m.pending == nil {
			if m.pending, err = Generate(); err != nil {
				m.mu.Unlock()
				return err
			}
		}
		ca := m.pending
		m.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := p.SetOnce(cctx, StoreKey, ca.Encode()); err != nil {
			return fmt.Errorf("committing the cluster CA: %w", err)
		}
		m.log.Info("committed the cluster CA")
		return nil
	}
	if fetch != nil && m.legacy.Load() && !m.Ready() && time.Since(*lastFetch) >= fetchPeriod {
		*lastFetch = time.Now()
		cctx, cancel := context.WithTimeout(ctx, fetchPeriod)
		defer cancel()
		b, err := fetch(cctx)
		if err != nil {
			m.log.Debug("asking the other members for the cluster CA", "err", err)
			return nil
		}
		return m.Install(b)
	}
	return nil
}

// Close stops the background work of Start.
func (m *Manager) Close() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
}
