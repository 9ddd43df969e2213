package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/patronus-sdwan/patronus/tools/lab/topo"
)

// client is a gNMI client of the patronusd of one site, connected through
// the mgmt namespace.
type client struct {
	site topo.Site
	conn *grpc.ClientConn
	gpb.GNMIClient
}

func gnmiAddr(s topo.Site) string {
	return netip.AddrPortFrom(s.Mgmt(), gnmiPort).String()
}

// passwordFile holds the lab cluster's admin password: up writes it and
// hands it to every daemon (--admin-password-file); the other commands
// read it to authenticate as user admin.
var passwordFile = filepath.Join(dir, "admin-password")

// labPassword returns the lab's admin password, creating it if need be.
func labPassword() (string, error) {
	b, err := os.ReadFile(passwordFile)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !os.IsNotExist(err) {
		return "", err
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	pw := base64.RawURLEncoding.EncodeToString(raw)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return pw, os.WriteFile(passwordFile, []byte(pw+"\n"), 0o600)
}

// password sends the lab's admin credentials in the request metadata.
type password string

func (p password) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"username": "admin", "password": string(p)}, nil
}

// RequireTransportSecurity is false: the lab runs --insecure on its own
// management network.
func (password) RequireTransportSecurity() bool { return false }

func dial(tp *topo.Topology, s topo.Site) (*client, error) {
	pw, err := labPassword()
	if err != nil {
		return nil, fmt.Errorf("the lab's admin password: %w", err)
	}
	cc, err := grpc.NewClient("passthrough:///"+gnmiAddr(s),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(password(pw)),
		grpc.WithContextDialer(topo.Dialer(tp.MgmtNS())))
	if err != nil {
		return nil, fmt.Errorf("gNMI client of %s: %w", s.Name, err)
	}
	return &client{site: s, conn: cc, GNMIClient: gpb.NewGNMIClient(cc)}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// gpath parses a path like /a/b[k=v]/c (values without '/' or ']').
func gpath(s string) *gpb.Path {
	p := &gpb.Path{}
	s = strings.Trim(s, "/")
	if s == "" {
		return p
	}
	for _, e := range strings.Split(s, "/") {
		name, key, _ := strings.Cut(e, "[")
		pe := &gpb.PathElem{Name: name}
		if k, v, ok := strings.Cut(strings.TrimSuffix(key, "]"), "="); ok {
			pe.Key = map[string]string{k: v}
		}
		p.Elem = append(p.Elem, pe)
	}
	return p
}

// leaf is one leaf of a Get answer.
type leaf struct {
	path *gpb.Path
	val  *gpb.TypedValue
}

// key returns the value of key k of the list entry elem in the leaf's path.
func (l leaf) key(elem, k string) string {
	for _, e := range l.path.GetElem() {
		if e.GetName() == elem {
			return e.GetKey()[k]
		}
	}
	return ""
}

// name is the leaf's name.
func (l leaf) name() string {
	es := l.path.GetElem()
	if len(es) == 0 {
		return ""
	}
	return es[len(es)-1].GetName()
}

// parent is the name of the leaf's parent container.
func (l leaf) parent() string {
	es := l.path.GetElem()
	if len(es) < 2 {
		return ""
	}
	return es[len(es)-2].GetName()
}

// str renders the value as text.
func (l leaf) str() string {
	switch v := l.val.GetValue().(type) {
	case *gpb.TypedValue_StringVal:
		return v.StringVal
	case *gpb.TypedValue_UintVal:
		return strconv.FormatUint(v.UintVal, 10)
	case *gpb.TypedValue_IntVal:
		return strconv.FormatInt(v.IntVal, 10)
	case *gpb.TypedValue_BoolVal:
		return strconv.FormatBool(v.BoolVal)
	}
	return l.val.String()
}

// uint returns the value as a number (0 if it is not one).
func (l leaf) uint() uint64 {
	switch v := l.val.GetValue().(type) {
	case *gpb.TypedValue_UintVal:
		return v.UintVal
	case *gpb.TypedValue_IntVal:
		return uint64(v.IntVal)
	}
	n, _ := strconv.ParseUint(l.str(), 10, 64)
	return n
}

// get returns every leaf under path, one per update (PROTO encoding).
func (c *client) get(ctx context.Context, path string) ([]leaf, error) {
	r, err := c.Get(ctx, &gpb.GetRequest{Path: []*gpb.Path{gpath(path)}, Encoding: gpb.Encoding_PROTO})
	if err != nil {
		return nil, fmt.Errorf("%s: Get %s: %w", c.site.Name, path, err)
	}
	var ls []leaf
	for _, n := range r.GetNotification() {
		for _, u := range n.GetUpdate() {
			p := u.GetPath()
			if pre := n.GetPrefix(); pre != nil {
				p = &gpb.Path{Elem: append(append([]*gpb.PathElem(nil), pre.GetElem()...), p.GetElem()...)}
			}
			ls = append(ls, leaf{path: p, val: u.GetVal()})
		}
	}
	return ls, nil
}

// members returns the node names of the cluster members c knows and the
// leader it sees.
func (c *client) members(ctx context.Context) (names []string, leader string, err error) {
	ls, err := c.get(ctx, "/system/cluster")
	if err != nil {
		return nil, "", err
	}
	seen := map[string]bool{}
	for _, l := range ls {
		if n := l.key("member", "node-name"); n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
		if l.name() == "leader" && l.parent() == "state" {
			leader = l.str()
		}
	}
	return names, leader, nil
}

// policyState is what `traffic` prints of one policy.
type policyState struct {
	packets, bytes, flows uint64
	activePath            string
}

func (c *client) policies(ctx context.Context) (map[string]*policyState, error) {
	ls, err := c.get(ctx, "/policies")
	if err != nil {
		return nil, err
	}
	out := map[string]*policyState{}
	for _, l := range ls {
		name := l.key("policy", "name")
		if name == "" {
			continue
		}
		p := out[name]
		if p == nil {
			p = &policyState{}
			out[name] = p
		}
		switch {
		case l.parent() == "counters" && l.name() == "packets-matched":
			p.packets = l.uint()
		case l.parent() == "counters" && l.name() == "bytes-matched":
			p.bytes = l.uint()
		case l.parent() == "counters" && l.name() == "active-flows":
			p.flows = l.uint()
		case l.parent() == "state" && l.name() == "active-path":
			p.activePath = l.str()
		}
	}
	return out, nil
}

// pathHealth returns the health-status of every path c measures.
func (c *client) pathHealth(ctx context.Context) (map[string]string, error) {
	ls, err := c.get(ctx, "/paths")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range ls {
		if l.parent() == "state" && l.name() == "health-status" {
			out[l.key("path", "name")] = l.str()
		}
	}
	return out, nil
}
