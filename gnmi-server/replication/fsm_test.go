package replication

import (
	"bytes"
	"testing"
)

func TestSetOnceEncoding(t *testing.T) {
	good := encodeSetOnce(SecretPrefix+"cluster-ca", []byte("pem"))
	so, err := decodeSetOnce(good)
	if err != nil || string(so.key) != SecretPrefix+"cluster-ca" || !bytes.Equal(so.value, []byte("pem")) {
		t.Errorf("decode(encode): %q=%q, %v", so.key, so.value, err)
	}
	for name, b := range map[string][]byte{
		"outside the secret prefix": encodeSetOnce("\xfdl/raft-applied", []byte{1}),
		"a data path":               encodeSetOnce("sites", []byte{1}),
		"truncated":                 good[:len(good)-1],
		"trailing bytes":            append(bytes.Clone(good), 0),
		"only the kind":             {setOnceCommand},
	} {
		if _, err := decodeSetOnce(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
