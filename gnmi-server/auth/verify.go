package auth

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var errMismatch = errors.New("auth: password does not match")

// dummyHash stands in for the hash of a user that does not exist, so that
// the answer for an unknown user costs the same as for a wrong password.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$ak3j0zr4cVXW2kR0CZ3nBnYzCmE2bE1Lr0k9Xq2m0aQ"

// verify checks password against an argon2id hash in PHC string form, as
// txn stores it. At most maxVerifying checks run at once (each takes tens
// of milliseconds and 19 MiB); others wait, within ctx.
func (a *Authenticator) verify(ctx context.Context, phc, password string) error {
	if phc == "" {
		phc = dummyHash
	}
	select {
	case a.verifying <- struct{}{}:
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-a.verifying }()
	return checkHash(phc, password)
}

// checkHash compares password with a PHC string
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<key>.
func checkHash(phc, password string) error {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return status.Error(codes.Internal, "a stored password hash is not argon2id")
	}
	var version int
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return status.Error(codes.Internal, "a stored password hash has an unknown argon2 version")
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 {
		return status.Error(codes.Internal, "a stored password hash has bad argon2 parameters")
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	key, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(key) == 0 {
		return status.Error(codes.Internal, "a stored password hash is not valid base64")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(key)))
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return errMismatch
	}
	return nil
}
