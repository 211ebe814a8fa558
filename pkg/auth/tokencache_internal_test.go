package auth

import (
	"crypto/sha256"
	"testing"
)

func TestKeyOfIsSHA256(t *testing.T) {
	for _, s := range []string{"", "a.b.c", string(make([]byte, 5000))} {
		if keyOf(s) != tokenKey(sha256.Sum256([]byte(s))) {
			t.Errorf("keyOf(%d bytes) is not their SHA-256", len(s))
		}
	}
}
