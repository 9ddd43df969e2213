package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// byteSize is a flag value in bytes, written as a number with an optional
// KiB, MiB or GiB suffix.
type byteSize int

func (b byteSize) String() string {
	switch {
	case b > 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b > 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return strconv.Itoa(int(b))
}

func (b *byteSize) Set(s string) error {
	num, mult := s, int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			num, mult = n, m
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt32/mult {
		return errors.New("want a size such as 16MiB, 512KiB or 1048576, at most 2GiB-1")
	}
	*b = byteSize(n * mult)
	return nil
}

// minMsgSize is the smallest --max-msg-size: below it a join or an
// ordinary Set of a few sites would not fit.
const minMsgSize = 64 << 10

// loopback reports whether every address the host:port addr may listen on
// is a loopback address. An empty host (every interface) is not; a name
// is loopback only if all its addresses are.
func loopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if host == "" {
		return false, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return false, err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// loadCA reads the PEM certificates client certificates must chain to.
func loadCA(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", file)
	}
	return pool, nil
}
