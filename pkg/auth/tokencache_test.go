package auth_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

// A remembered token is served from the cache only while a full check
// would accept it: not after its exp, not once its key is withdrawn, and
// never for a token that differs from it in any byte.
func TestTokenCacheNeverAcceptsWhatVerifyRefuses(t *testing.T) {
	t.Run("exp", func(t *testing.T) {
		p := newIDP(t)
		cfg := p.config()
		cfg.ClockSkew = 0
		v := newVerifier(t, cfg)
		iat := time.Now()
		tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", IssuedAt: iat, TTL: 2 * time.Second})
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		if auth.TokenCacheLen(v) != 1 {
			t.Fatalf("cache holds %d tokens after one verification, want 1", auth.TokenCacheLen(v))
		}
		// exp is whole seconds: wait until it is well past.
		time.Sleep(time.Until(iat.Add(2 * time.Second).Truncate(time.Second).Add(1500 * time.Millisecond)))
		if _, err := v.Verify(t.Context(), tok); err != auth.ErrExpired {
			t.Fatalf("after exp: %v, want ErrExpired", err)
		}
	})

	t.Run("key withdrawn", func(t *testing.T) {
		p := newIDP(t)
		path := filepath.Join(t.TempDir(), "jwks.json")
		if err := os.WriteFile(path, p.JWKS(), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := p.config()
		cfg.JWKSURL, cfg.JWKSFile = "", path
		v := newVerifier(t, auth.WithTiming(cfg, 10*time.Millisecond, time.Hour))
		tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a"})
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		// The IdP replaces every key (another issuer's set, other kids).
		other, err := devissuer.New()
		if err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute)
		if err := os.WriteFile(path, other.JWKS(), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(path, later, later)
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := v.Verify(t.Context(), tok)
			if err == auth.ErrUnknownKey {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("token of a withdrawn key: %v, want ErrUnknownKey", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("another token", func(t *testing.T) {
		p := newIDP(t)
		v := newVerifier(t, p.config())
		tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a"})
		if _, err := v.Verify(t.Context(), tok); err != nil {
			t.Fatal(err)
		}
		last := tok[len(tok)-2]
		flip := byte('A')
		if last == 'A' {
			flip = 'B'
		}
		tampered := tok[:len(tok)-2] + string(flip) + tok[len(tok)-1:]
		if _, err := v.Verify(t.Context(), tampered); err == nil {
			t.Fatal("a token differing in its signature was accepted")
		}
		// The same token again is still fine.
		if got, err := v.Verify(t.Context(), tok); err != nil || got.Subject != "customer-a" {
			t.Fatalf("the cached token: %+v, %v", got, err)
		}
	})

	t.Run("refusals are not cached", func(t *testing.T) {
		p := newIDP(t)
		cfg := p.config()
		cfg.ServiceClients = []string{"storefront"}
		v := newVerifier(t, cfg)
		unlisted := p.mint(t, devissuer.TokenSpec{Subject: "warehouse", ClientID: "warehouse"})
		for range 2 {
			if _, err := v.Verify(t.Context(), unlisted); !errors.Is(err, auth.ErrUnknownClient) {
				t.Fatalf("unlisted client: %v, want ErrUnknownClient", err)
			}
		}
		if n := auth.TokenCacheLen(v); n != 0 {
			t.Errorf("cache holds %d tokens after refusals only", n)
		}
	})
}

// The cache is bounded: many callers' tokens never grow it past its size,
// and each still verifies.
func TestTokenCacheIsBounded(t *testing.T) {
	p := newIDP(t)
	v := newVerifier(t, p.config())
	auth.SetTokenCacheSize(v, 5)
	for i := range 20 {
		tok := p.mint(t, devissuer.TokenSpec{Subject: fmt.Sprintf("customer-%d", i)})
		for range 2 {
			if got, err := v.Verify(t.Context(), tok); err != nil || got.Subject != fmt.Sprintf("customer-%d", i) {
				t.Fatalf("token %d: %+v, %v", i, got, err)
			}
		}
		if n := auth.TokenCacheLen(v); n > 5 {
			t.Fatalf("cache holds %d tokens, bound is 5", n)
		}
	}
}
