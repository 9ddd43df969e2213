// Package clusterca is a cluster's own certificate authority, which secures
// the members' traffic with each other.
//
// The CA (ECDSA P-256, 10 years) is made when a cluster is created and kept
// in the replicated store under StoreKey, an internal key that Get,
// Subscribe and audit records never show, like the cluster secret. Every
// member therefore holds it, and issues itself a node certificate
// (CommonName auth.MemberUser+node name, the hosts of its Raft and gNMI
// addresses, one year), written with the CA certificate into
// <data-dir>/tls. The node certificates make Raft mutual TLS (Manager.RaftTLS)
// and authenticate the members' gNMI calls to each other
// (Manager.TransportCredentials, Manager.ServeMembers). A node that joins
// fetches the CA from any member, authenticated as an admin (Fetch,
// Manager.Register), before it asks to be added, so that it can answer the
// leader's first Raft call.
package clusterca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/patronus-sdwan/patronus/gnmi-server/auth"
	"github.com/patronus-sdwan/patronus/gnmi-server/replication"
)

// StoreKey holds the CA's certificate and key (PEM) in the replicated
// store. It lies under replication.SecretPrefix: set once, by the leader,
// and never served.
const StoreKey = replication.SecretPrefix + "cluster-ca"

// Validity of the CA and of node certificates; a node certificate is
// issued again once less than renewBefore of it is left.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// CA is the cluster's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Generate makes a new CA.
func Generate() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Patronus cluster CA " + serial.Text(16)[:8], Organization: []string{"Patronus"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// Encode returns the CA's certificate and key as PEM, as StoreKey holds
// them.
func (ca *CA) Encode() []byte {
	kb, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
	return append(b, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})...)
}

// Decode parses what Encode returns.
func Decode(b []byte) (*CA, error) {
	ca := &CA{}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		var err error
		switch blk.Type {
		case "CERTIFICATE":
			ca.Cert, err = x509.ParseCertificate(blk.Bytes)
		case "EC PRIVATE KEY":
			ca.Key, err = x509.ParseECPrivateKey(blk.Bytes)
		}
		if err != nil {
			return nil, fmt.Errorf("clusterca: %w", err)
		}
	}
	if ca.Cert == nil || ca.Key == nil || !ca.Cert.IsCA {
		return nil, errors.New("clusterca: not a CA certificate and key")
	}
	if !ca.Key.PublicKey.Equal(ca.Cert.PublicKey) {
		return nil, errors.New("clusterca: the key is not the certificate's")
	}
	return ca, nil
}

// Issue makes node's certificate, for both ends of a connection, naming
// hosts (host names or IP addresses).
func (ca *CA) Issue(node string, hosts []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := newSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: auth.MemberUser + node, Organization: []string{"Patronus"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(nodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
