package auth

import (
	"context"
	"encoding/json"

	gpb "github.com/openconfig/gnmi/proto/gnmi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/patronus-sdwan/patronus/gnmi-server/txn"
)

// Password is a client's per-RPC credentials: a user name and password sent
// in the request metadata.
type Password struct {
	Username, Password string
}

var _ credentials.PerRPCCredentials = Password{}

// GetRequestMetadata returns the credentials as metadata.
func (p Password) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{UsernameKey: p.Username, PasswordKey: p.Password}, nil
}

// RequireTransportSecurity is false so that the credentials also travel
// over --insecure loopback connections (development and tests); patronusd
// serves TLS otherwise.
func (Password) RequireTransportSecurity() bool { return false }

// memberCredentials authenticate this node to the other members with the
// cluster secret, read from the store on every call: a node that joined
// learns it by replication.
type memberCredentials struct {
	a    *Authenticator
	name string
}

// MemberCredentials returns the credentials with which this node, named
// nodeName, calls other members: MemberUser+nodeName and the cluster secret.
func (a *Authenticator) MemberCredentials(nodeName string) credentials.PerRPCCredentials {
	return memberCredentials{a: a, name: MemberUser + nodeName}
}

// ErrNoSecret is the error of a call made before this node knows the
// cluster secret; nothing was sent.
const ErrNoSecret = "this node does not know the cluster secret yet; nothing was sent"

func (m memberCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	secret, ok := m.a.ClusterSecret()
	if !ok {
		return nil, status.Error(codes.Unavailable, ErrNoSecret)
	}
	return map[string]string{UsernameKey: m.name, PasswordKey: secret}, nil
}

func (memberCredentials) RequireTransportSecurity() bool { return false }

// ClusterSecret returns the cluster secret from the store, if it holds one.
func (a *Authenticator) ClusterSecret() (string, bool) {
	b, ok, err := a.cfg.Store.Get([]byte(txn.ClusterSecretKey))
	if err != nil || !ok {
		return "", false
	}
	return string(b), true
}

// FirstAdmin is the user a new cluster starts with.
const FirstAdmin = "admin"

// Bootstrap adds to req, the first commit of a new cluster, the first admin
// (user "admin", role ADMIN, with cfg.AdminPassword or a generated
// password), and to meta a new cluster secret. Call committed once the
// commit succeeded: it hands a generated password to cfg.PrintPassword.
// The password is hashed when the request is prepared, before it enters
// the replication log.
func (a *Authenticator) Bootstrap(req *gpb.SetRequest, meta *txn.Meta) (committed func()) {
	password, generated := a.cfg.AdminPassword, false
	if password == "" {
		password, generated = NewPassword(), true
	}
	doc, _ := json.Marshal(map[string]string{"username": FirstAdmin, "role": "ADMIN", "password": password})
	req.Update = append(req.Update, &gpb.Update{
		Path: &gpb.Path{Elem: []*gpb.PathElem{{Name: "system"}, {Name: "aaa"}, {Name: "users"},
			{Name: "user", Key: map[string]string{"username": FirstAdmin}}, {Name: "config"}}},
		Val: &gpb.TypedValue{Value: &gpb.TypedValue_JsonIetfVal{JsonIetfVal: doc}},
	})
	meta.ClusterSecret = NewPassword() + NewPassword()
	return func() {
		if generated && a.cfg.PrintPassword != nil {
			a.cfg.PrintPassword(password)
		}
	}
}
