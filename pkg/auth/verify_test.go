package auth_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

const audience = "oms"

// idp is a dev issuer serving its JWKS over a real socket, counting hits.
type idp struct {
	*devissuer.Issuer
	srv  *httptest.Server
	hits atomic.Int64
	down atomic.Bool // answer 503
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	iss, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{Issuer: iss}
	h := iss.Handler()
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == devissuer.JWKSPath {
			p.hits.Add(1)
		}
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	iss.URL = p.srv.URL
	return p
}

func (p *idp) config() auth.Config {
	return auth.Config{Issuer: p.URL, Audience: audience, JWKSURL: p.JWKSURL(), ClockSkew: 30 * time.Second}
}

func (p *idp) mint(t *testing.T, spec devissuer.TokenSpec) string {
	t.Helper()
	if spec.Audience == "" {
		spec.Audience = audience
	}
	tok, err := p.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *idp) kid(t *testing.T, alg string) string {
	t.Helper()
	for _, k := range p.KeyIDs() {
		if strings.HasPrefix(k, "dev-"+strings.ToLower(alg)+"-") {
			return k
		}
	}
	t.Fatalf("no %s key", alg)
	return ""
}

func newVerifier(t *testing.T, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// foreignToken signs claims with a key the issuer never published, under
// the header kid and alg given: a forgery.
func foreignToken(t *testing.T, p *idp, raw any, alg jwa.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	key, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if kid != "" {
		key.Set(jwk.KeyIDKey, kid)
	}
	tok := jwt.New()
	for k, v := range validClaims(p) {
		tok.Set(k, v)
	}
	for k, v := range claims {
		tok.Set(k, v)
	}
	b, err := jwt.Sign(tok, jwt.WithKey(alg, key))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func validClaims(p *idp) map[string]any {
	return map[string]any{"iss": p.URL, "aud": []string{audience}, "sub": "customer-a",
		"iat": time.Now(), "exp": time.Now().Add(time.Hour), "scope": auth.ScopeRead}
}

// handMade builds header.payload.signature with signer over the first two.
func handMade(t *testing.T, header, claims map[string]any, sign func(input []byte) []byte) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

func unixClaims(p *idp) map[string]any {
	c := validClaims(p)
	c["iat"], c["exp"] = time.Now().Unix(), time.Now().Add(time.Hour).Unix()
	return c
}

func hs256(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}

func TestVerify(t *testing.T) {
	p := newIDP(t)
	v := newVerifier(t, p.config())
	rsKid, esKid := p.kid(t, "RS256"), p.kid(t, "ES256")
	rsPub, err := p.PublicKey(rsKid)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(rsPub)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	customer := []string{auth.ScopeCreate, auth.ScopeRead}
	mint := func(s devissuer.TokenSpec) func() string { return func() string { return p.mint(t, s) } }

	tests := []struct {
		name  string
		token func() string
		want  auth.Principal
		err   error
	}{
		{"RS256 customer", mint(devissuer.TokenSpec{Subject: "customer-a", Scopes: customer}),
			auth.Principal{Kind: auth.Customer, Subject: "customer-a", Scopes: customer}, nil},
		{"ES256 service", mint(devissuer.TokenSpec{Subject: "storefront", ClientID: "storefront", Scopes: customer, Alg: devissuer.ES256}),
			auth.Principal{Kind: auth.Service, Subject: "storefront", Scopes: customer}, nil},
		{"client_id other than sub is the customer's", mint(devissuer.TokenSpec{Subject: "customer-b", ClientID: "storefront"}),
			auth.Principal{Kind: auth.Customer, Subject: "customer-b"}, nil},
		{"scp list", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"scp": []string{auth.ScopePay, auth.ScopeRead}}}),
			auth.Principal{Kind: auth.Customer, Subject: "c", Scopes: []string{auth.ScopePay, auth.ScopeRead}}, nil},
		{"scope wins over scp", mint(devissuer.TokenSpec{Subject: "c", Scopes: []string{auth.ScopeRead}, Extra: map[string]any{"scp": []string{auth.ScopePay}}}),
			auth.Principal{Kind: auth.Customer, Subject: "c", Scopes: []string{auth.ScopeRead}}, nil},
		{"scp not strings", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"scp": []any{"orders:read", 7}}}), auth.Principal{}, auth.ErrClaims},
		{"sub of 128 bytes", mint(devissuer.TokenSpec{Subject: strings.Repeat("s", 128)}),
			auth.Principal{Kind: auth.Customer, Subject: strings.Repeat("s", 128)}, nil},
		{"nbf within skew", mint(devissuer.TokenSpec{Subject: "c", NotBefore: now.Add(10 * time.Second)}),
			auth.Principal{Kind: auth.Customer, Subject: "c"}, nil},
		{"exp within skew", mint(devissuer.TokenSpec{Subject: "c", IssuedAt: now.Add(-time.Hour), TTL: time.Hour - 5*time.Second}),
			auth.Principal{Kind: auth.Customer, Subject: "c"}, nil},

		{"no token", func() string { return "" }, auth.Principal{}, auth.ErrMissingToken},
		{"garbage", func() string { return "not-a-token" }, auth.Principal{}, auth.ErrMalformed},
		{"three garbage parts", func() string { return "a.b.c" }, auth.Principal{}, auth.ErrMalformed},
		{"JWE shape", func() string { return "a.b.c.d.e" }, auth.Principal{}, auth.ErrMalformed},
		{"expired", mint(devissuer.TokenSpec{Subject: "c", IssuedAt: now.Add(-2 * time.Hour), TTL: time.Hour}), auth.Principal{}, auth.ErrExpired},
		{"not yet valid", mint(devissuer.TokenSpec{Subject: "c", NotBefore: now.Add(time.Hour)}), auth.Principal{}, auth.ErrNotYetValid},
		{"issued in the future", mint(devissuer.TokenSpec{Subject: "c", IssuedAt: now.Add(time.Hour)}), auth.Principal{}, auth.ErrIssuedInFuture},
		{"no exp", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"exp": nil}}), auth.Principal{}, auth.ErrNoExpiry},
		{"wrong issuer", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"iss": "https://idp.evil.example"}}), auth.Principal{}, auth.ErrIssuer},
		{"wrong audience", mint(devissuer.TokenSpec{Subject: "c", Audience: "billing"}), auth.Principal{}, auth.ErrAudience},
		{"no audience", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"aud": nil}}), auth.Principal{}, auth.ErrAudience},
		{"empty sub", mint(devissuer.TokenSpec{Subject: ""}), auth.Principal{}, auth.ErrSubject},
		{"no sub", mint(devissuer.TokenSpec{Subject: "c", Extra: map[string]any{"sub": nil}}), auth.Principal{}, auth.ErrSubject},
		{"sub of 129 bytes", mint(devissuer.TokenSpec{Subject: strings.Repeat("s", 129)}), auth.Principal{}, auth.ErrSubject},
		{"sub with a space", mint(devissuer.TokenSpec{Subject: "customer a"}), auth.Principal{}, auth.ErrSubject},
		{"sub not ASCII", mint(devissuer.TokenSpec{Subject: "kundé"}), auth.Principal{}, auth.ErrSubject},
		{"sub with a control character", mint(devissuer.TokenSpec{Subject: "c\n1"}), auth.Principal{}, auth.ErrSubject},

		{"signed by another key under a known kid", func() string {
			return foreignToken(t, p, otherRSA, jwa.RS256(), rsKid, nil)
		}, auth.Principal{}, auth.ErrSignature},
		{"ES256 signed by another key under a known kid", func() string {
			return foreignToken(t, p, otherEC, jwa.ES256(), esKid, nil)
		}, auth.Principal{}, auth.ErrSignature},
		{"payload swapped under a valid signature", func() string {
			a := strings.Split(p.mint(t, devissuer.TokenSpec{Subject: "customer-a"}), ".")
			b := strings.Split(p.mint(t, devissuer.TokenSpec{Subject: "customer-b"}), ".")
			return a[0] + "." + b[1] + "." + a[2]
		}, auth.Principal{}, auth.ErrSignature},
		{"RS256 header under the ES256 key's kid", func() string {
			return foreignToken(t, p, otherRSA, jwa.RS256(), esKid, nil)
		}, auth.Principal{}, auth.ErrKeyMismatch},
		{"unknown kid", func() string {
			return foreignToken(t, p, otherRSA, jwa.RS256(), "no-such-key", nil)
		}, auth.Principal{}, auth.ErrUnknownKey},
		{"no kid", func() string {
			return foreignToken(t, p, otherRSA, jwa.RS256(), "", nil)
		}, auth.Principal{}, auth.ErrNoKeyID},
		{"RS384", func() string {
			return foreignToken(t, p, otherRSA, jwa.RS384(), rsKid, nil)
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"PS256", func() string {
			return foreignToken(t, p, otherRSA, jwa.PS256(), rsKid, nil)
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"alg none", func() string {
			return handMade(t, map[string]any{"alg": "none", "typ": "JWT"}, unixClaims(p), func([]byte) []byte { return nil })
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"alg None with a signature", func() string { // not even an algorithm name jwx knows
			return handMade(t, map[string]any{"alg": "None", "kid": rsKid}, unixClaims(p), func([]byte) []byte { return []byte("sig") })
		}, auth.Principal{}, auth.ErrMalformed},
		{"alg none with a signature", func() string {
			return handMade(t, map[string]any{"alg": "none", "kid": rsKid}, unixClaims(p), func([]byte) []byte { return []byte("sig") })
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"no alg", func() string {
			return handMade(t, map[string]any{"kid": rsKid}, unixClaims(p), hs256(pemBytes))
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"HS256 keyed with the RSA public key PEM", func() string {
			return handMade(t, map[string]any{"alg": "HS256", "kid": rsKid, "typ": "JWT"}, unixClaims(p), hs256(pemBytes))
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"HS256 keyed with the RSA public key DER", func() string {
			return handMade(t, map[string]any{"alg": "HS256", "kid": rsKid, "typ": "JWT"}, unixClaims(p), hs256(der))
		}, auth.Principal{}, auth.ErrAlgorithm},
		{"HS256 keyed with the JWKS", func() string {
			return handMade(t, map[string]any{"alg": "HS256", "kid": rsKid}, unixClaims(p), hs256(p.JWKS()))
		}, auth.Principal{}, auth.ErrAlgorithm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(t.Context(), tc.token())
			if err != tc.err {
				t.Fatalf("Verify: error %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if got.Kind != tc.want.Kind || got.Subject != tc.want.Subject || !slices.Equal(got.Scopes, tc.want.Scopes) || got.Dev {
				t.Errorf("Verify = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The refusals a client sees must never carry key material.
func TestVerifyErrorsAreSafe(t *testing.T) {
	for _, err := range []error{auth.ErrMissingToken, auth.ErrMalformed, auth.ErrAlgorithm, auth.ErrNoKeyID, auth.ErrUnknownKey,
		auth.ErrKeyMismatch, auth.ErrSignature, auth.ErrExpired, auth.ErrNotYetValid, auth.ErrIssuedInFuture, auth.ErrNoExpiry,
		auth.ErrIssuer, auth.ErrAudience, auth.ErrSubject, auth.ErrClaims, auth.ErrInvalid, auth.ErrDevModeToken} {
		if s := err.Error(); len(s) > 120 || strings.ContainsAny(s, "{}\n") {
			t.Errorf("%q is not a short, plain message", s)
		}
	}
}

func TestUnknownKidRefetchesOnce(t *testing.T) {
	p := newIDP(t)
	// An hour between unknown-kid refreshes: the second is refused
	// however slow the machine.
	v := newVerifier(t, auth.WithTiming(p.config(), 0, time.Hour))
	if got := p.hits.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times at start, want 1", got)
	}

	// The identity provider rotates: publishes a key after we started.
	kid, err := p.AddKey(devissuer.ES256)
	if err != nil {
		t.Fatal(err)
	}
	tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", KeyID: kid})
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("token signed by the new key: %v", err)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (one refresh for the new kid)", got)
	}
	// Known now: no more fetches.
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}

	// Made-up kids, and even a genuinely new key, within the interval: no fetch.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for i := range 20 {
		forged := foreignToken(t, p, other, jwa.RS256(), "random-"+string(rune('a'+i)), nil)
		if _, err := v.Verify(t.Context(), forged); err != auth.ErrUnknownKey {
			t.Fatalf("made-up kid: %v, want ErrUnknownKey", err)
		}
	}
	kid2, _ := p.AddKey(devissuer.RS256)
	if _, err := v.Verify(t.Context(), p.mint(t, devissuer.TokenSpec{Subject: "c", KeyID: kid2})); err != auth.ErrUnknownKey {
		t.Fatalf("second new key within the interval: %v, want ErrUnknownKey", err)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want still 2: unknown kids must not hammer the IdP", got)
	}
}

func TestStartsWhileTheIdPIsDown(t *testing.T) {
	p := newIDP(t)
	p.down.Store(true)
	v := newVerifier(t, auth.WithTiming(p.config(), 0, time.Nanosecond))
	tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a"})
	if _, err := v.Verify(t.Context(), tok); err != auth.ErrUnknownKey {
		t.Fatalf("with no keys: %v, want ErrUnknownKey", err)
	}
	p.down.Store(false)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("once the IdP is back: %v", err)
	}
	// A failing refresh keeps the keys we have.
	p.down.Store(true)
	kid, _ := p.AddKey(devissuer.ES256)
	if _, err := v.Verify(t.Context(), p.mint(t, devissuer.TokenSpec{Subject: "c", KeyID: kid})); err != auth.ErrUnknownKey {
		t.Fatalf("new key while the IdP is down: %v", err)
	}
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("known key while the IdP is down: %v", err)
	}
}

func TestJWKSFile(t *testing.T) {
	p := newIDP(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(b []byte, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().Add(-time.Hour)
	write(p.JWKS(), start)
	cfg := p.config()
	cfg.JWKSURL, cfg.JWKSFile = "", path
	v := newVerifier(t, auth.WithTiming(cfg, time.Hour, time.Nanosecond))

	tok := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", Alg: devissuer.ES256})
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("key from the file: %v", err)
	}
	kid, _ := p.AddKey(devissuer.RS256)
	rotated := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", KeyID: kid})
	if _, err := v.Verify(t.Context(), rotated); err != auth.ErrUnknownKey {
		t.Fatalf("key not yet in the file: %v, want ErrUnknownKey", err)
	}
	write(p.JWKS(), start.Add(time.Minute))
	if _, err := v.Verify(t.Context(), rotated); err != nil {
		t.Fatalf("key added to the file: %v", err)
	}
	if p.hits.Load() != 0 {
		t.Error("a file-configured verifier fetched over HTTP")
	}
}

// Keys we never verify with are dropped from the set, whatever it says.
func TestUnusableKeysAreIgnored(t *testing.T) {
	short, _ := rsa.GenerateKey(rand.Reader, 1024)
	good, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	set := jwk.NewSet()
	add := func(raw any, kid, alg, use string) {
		k, err := jwk.Import(raw)
		if err != nil {
			t.Fatal(err)
		}
		if pk, err := k.PublicKey(); err == nil {
			k = pk
		}
		k.Set(jwk.KeyIDKey, kid)
		if alg != "" {
			k.Set(jwk.AlgorithmKey, alg)
		}
		if use != "" {
			k.Set(jwk.KeyUsageKey, use)
		}
		set.AddKey(k)
	}
	add([]byte("a shared secret of 32 bytes!!!!!"), "sym", "HS256", "")
	add(good, "rs512", "RS512", "")
	add(good, "enc", "", "enc")
	add(p384, "p384", "", "")
	add(good, "good", "", "") // no alg: taken as RS256
	body, _ := json.Marshal(set)
	// jwx refuses to build a short RSA key, so write that entry by hand.
	shortJSON, _ := json.Marshal(map[string]string{"kty": "RSA", "kid": "short", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(short.N.Bytes()), "e": "AQAB"})
	body = bytes.Replace(body, []byte(`"keys":[`), append(append([]byte(`"keys":[`), shortJSON...), ','), 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()

	p := newIDP(t)
	cfg := p.config()
	cfg.JWKSURL = srv.URL
	v := newVerifier(t, auth.WithTiming(cfg, 0, time.Hour))
	for kid, want := range map[string]error{"short": auth.ErrUnknownKey, "rs512": auth.ErrUnknownKey, "enc": auth.ErrUnknownKey, "good": nil} {
		// Signed by the good key whatever the kid: a kid we dropped is unknown.
		if _, err := v.Verify(t.Context(), foreignToken(t, p, good, jwa.RS256(), kid, nil)); err != want {
			t.Errorf("kid %s: %v, want %v", kid, err, want)
		}
	}
	tok := foreignToken(t, p, p384, jwa.ES384(), "p384", nil)
	if _, err := v.Verify(t.Context(), tok); err != auth.ErrAlgorithm {
		t.Errorf("P-384: %v", err)
	}
	tok = handMade(t, map[string]any{"alg": "HS256", "kid": "sym"}, unixClaims(p), hs256([]byte("a shared secret of 32 bytes!!!!!")))
	if _, err := v.Verify(t.Context(), tok); err != auth.ErrAlgorithm {
		t.Errorf("HS256 with a symmetric key from the JWKS: %v", err)
	}
}

func TestDevMode(t *testing.T) {
	var logs bytes.Buffer
	v, err := auth.NewVerifier(t.Context(), auth.Config{InsecureDevMode: true}, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), auth.DevModeWarning) {
		t.Errorf("no loud warning at start: %s", logs.String())
	}
	p, err := v.Verify(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != auth.Service || p.Subject != "dev" || !p.Dev || !p.AllOrders() || !p.Has(auth.ScopeFulfil) {
		t.Errorf("dev principal = %+v", p)
	}
	if _, err := v.Verify(t.Context(), "a.b.c"); err != auth.ErrDevModeToken {
		t.Errorf("token in dev mode: %v, want ErrDevModeToken", err)
	}
}

func TestNewVerifierRefusesBadConfig(t *testing.T) {
	for name, cfg := range map[string]auth.Config{
		"empty":        {},
		"dev + issuer": {InsecureDevMode: true, Issuer: "https://idp"},
		"no keys":      {Issuer: "https://idp", Audience: "oms"},
		"both sources": {Issuer: "https://idp", Audience: "oms", JWKSURL: "https://idp/jwks", JWKSFile: "/jwks.json"},
		"bad URL":      {Issuer: "https://idp", Audience: "oms", JWKSURL: "ftp://idp/jwks"},
		"huge skew":    {Issuer: "https://idp", Audience: "oms", JWKSURL: "https://idp/jwks", ClockSkew: time.Hour},
	} {
		if _, err := auth.NewVerifier(t.Context(), cfg, nil); err == nil {
			t.Errorf("%s: NewVerifier accepted %+v", name, cfg)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", name, err)
		}
	}
}

// With AUTH_SERVICE_CLIENT_IDS set, only those clients are services: a
// user whose sub happens to equal its client_id cannot pass for one.
func TestServiceClientAllowList(t *testing.T) {
	p := newIDP(t)
	cfg := p.config()
	cfg.ServiceClients = []string{"storefront"}
	v := newVerifier(t, cfg)
	listed := p.mint(t, devissuer.TokenSpec{Subject: "storefront", ClientID: "storefront"})
	if got, err := v.Verify(t.Context(), listed); err != nil || got.Kind != auth.Service {
		t.Errorf("listed client: %+v, %v", got, err)
	}
	unlisted := p.mint(t, devissuer.TokenSpec{Subject: "warehouse", ClientID: "warehouse"})
	if _, err := v.Verify(t.Context(), unlisted); !errors.Is(err, auth.ErrUnknownClient) {
		t.Errorf("unlisted client: %v, want ErrUnknownClient", err)
	}
	customer := p.mint(t, devissuer.TokenSpec{Subject: "customer-a", ClientID: "storefront"})
	if got, err := v.Verify(t.Context(), customer); err != nil || got.Kind != auth.Customer {
		t.Errorf("a customer's token through the storefront: %+v, %v", got, err)
	}
}
