// Package devissuer is a tiny OAuth 2.0 token issuer for local development
// and tests ONLY: it makes throwaway RS256 and ES256 keys, publishes their
// public halves as a JWKS, and mints access tokens (RFC 9068 shape) for
// whatever caller a test or a developer asks for. It has no login, no
// client authentication and no token endpoint; anybody holding the Issuer
// value can mint any token. Production verifies tokens from the shop's
// identity provider (see pkg/auth), never from this package.
package devissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// The algorithms the issuer signs with: the only two pkg/auth accepts.
const (
	RS256 = "RS256"
	ES256 = "ES256"
)

// Paths the Handler serves.
const (
	JWKSPath      = "/.well-known/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// DefaultTTL is how long a minted token lives when TokenSpec.TTL is zero.
const DefaultTTL = time.Hour

// Issuer holds signing keys and mints tokens.
type Issuer struct {
	// URL is the issuer identifier put in every token's iss claim. Serve
	// sets it to the address it listens on when it is empty; set it before
	// minting otherwise.
	URL string

	mu   sync.RWMutex
	keys []signingKey // in order of creation; the first of each alg signs by default
}

type signingKey struct {
	kid  string
	alg  jwa.SignatureAlgorithm
	priv jwk.Key
	pub  jwk.Key
}

// New makes an issuer with one fresh RSA-2048 key (kid "dev-rs256-…") and
// one fresh P-256 key (kid "dev-es256-…").
func New() (*Issuer, error) {
	i := &Issuer{}
	for _, alg := range []string{RS256, ES256} {
		if _, err := i.AddKey(alg); err != nil {
			return nil, err
		}
	}
	return i, nil
}

// AddKey makes another signing key for alg and publishes it in the JWKS,
// as an identity provider does when it rotates keys. It returns its kid.
func (i *Issuer) AddKey(alg string) (string, error) {
	var raw any
	var salg jwa.SignatureAlgorithm
	var err error
	switch alg {
	case RS256:
		salg = jwa.RS256()
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case ES256:
		salg = jwa.ES256()
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return "", fmt.Errorf("devissuer: algorithm %q is not supported (RS256 or ES256)", alg)
	}
	if err != nil {
		return "", fmt.Errorf("devissuer: generate %s key: %w", alg, err)
	}
	priv, err := jwk.Import(raw)
	if err != nil {
		return "", fmt.Errorf("devissuer: import %s key: %w", alg, err)
	}
	tp, err := priv.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("devissuer: thumbprint: %w", err)
	}
	kid := "dev-" + strings.ToLower(alg) + "-" + hex.EncodeToString(tp[:6])
	for k, v := range map[string]any{jwk.KeyIDKey: kid, jwk.AlgorithmKey: salg, jwk.KeyUsageKey: "sig"} {
		if err := priv.Set(k, v); err != nil {
			return "", fmt.Errorf("devissuer: set %s: %w", k, err)
		}
	}
	pub, err := priv.PublicKey()
	if err != nil {
		return "", fmt.Errorf("devissuer: public key: %w", err)
	}
	i.mu.Lock()
	i.keys = append(i.keys, signingKey{kid: kid, alg: salg, priv: priv, pub: pub})
	i.mu.Unlock()
	return kid, nil
}

// KeyIDs lists the kids of the published keys, oldest first.
func (i *Issuer) KeyIDs() []string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	ids := make([]string, len(i.keys))
	for n, k := range i.keys {
		ids[n] = k.kid
	}
	return ids
}

// JWKS is the public key set as JSON: public keys only, each with kid, alg
// and use.
func (i *Issuer) JWKS() []byte {
	set := jwk.NewSet()
	i.mu.RLock()
	for _, k := range i.keys {
		_ = set.AddKey(k.pub) // a fresh set only refuses a duplicate, and kids are unique
	}
	i.mu.RUnlock()
	b, err := json.Marshal(set)
	if err != nil {
		panic("devissuer: marshal JWKS: " + err.Error()) // keys we made ourselves always marshal
	}
	return b
}

// JWKSURL is where Handler serves the JWKS under URL.
func (i *Issuer) JWKSURL() string { return strings.TrimSuffix(i.URL, "/") + JWKSPath }

// Handler serves the JWKS and a minimal OpenID discovery document.
func (i *Issuer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+JWKSPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store") // keys change when a test adds one
		w.Write(i.JWKS())
	})
	mux.HandleFunc("GET "+DiscoveryPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                i.URL,
			"jwks_uri":                              i.JWKSURL(),
			"id_token_signing_alg_values_supported": []string{RS256, ES256},
		})
	})
	return mux
}

// Serve listens on addr, which must be a loopback address such as
// 127.0.0.1:8099 (port 0 picks a free one), and serves Handler there. When
// URL is empty it becomes "http://<the address listened on>". It returns
// the issuer URL and a function that stops the server.
func (i *Issuer) Serve(addr string) (string, func() error, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("devissuer: address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", nil, fmt.Errorf("devissuer: address %q is not a loopback address; the development issuer only listens on this machine", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("devissuer: listen: %w", err)
	}
	if i.URL == "" {
		i.URL = "http://" + ln.Addr().String()
	}
	srv := &http.Server{Handler: i.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return i.URL, srv.Close, nil
}

// TokenSpec describes a token to mint.
type TokenSpec struct {
	// Subject is the sub claim: a customer id, or for a client-credentials
	// token the client id (then ClientID must equal it).
	Subject  string
	ClientID string // client_id claim; omitted when empty
	Scopes   []string
	Audience string
	// TTL is the time from IssuedAt to exp; DefaultTTL when zero.
	TTL time.Duration
	// IssuedAt is the iat claim; now when zero.
	IssuedAt time.Time
	// NotBefore is the nbf claim; omitted when zero.
	NotBefore time.Time
	// Alg picks the signing key: RS256 (the default) or ES256.
	Alg string
	// KeyID signs with that key instead (see AddKey); Alg is then ignored.
	KeyID string
	// Extra claims are set last, so they may replace any claim above.
	Extra map[string]any
}

// Mint signs a token for spec.
func (i *Issuer) Mint(spec TokenSpec) (string, error) {
	iat := spec.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	ttl := spec.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	claims := map[string]any{
		jwt.IssuerKey:     i.URL,
		jwt.SubjectKey:    spec.Subject,
		jwt.IssuedAtKey:   iat,
		jwt.ExpirationKey: iat.Add(ttl),
		jwt.JwtIDKey:      randomID(),
	}
	if spec.Audience != "" {
		claims[jwt.AudienceKey] = []string{spec.Audience}
	}
	if spec.ClientID != "" {
		claims["client_id"] = spec.ClientID
	}
	if len(spec.Scopes) > 0 {
		claims["scope"] = strings.Join(spec.Scopes, " ")
	}
	if !spec.NotBefore.IsZero() {
		claims[jwt.NotBeforeKey] = spec.NotBefore
	}
	maps.Copy(claims, spec.Extra)
	return i.Sign(claims, spec.Alg, spec.KeyID)
}

// Sign signs arbitrary claims, for tests that need a token Mint will not
// make (no exp, an odd sub, an scp list). A nil claim value is left out.
// alg and kid pick the key as in TokenSpec.
func (i *Issuer) Sign(claims map[string]any, alg, kid string) (string, error) {
	key, err := i.key(alg, kid)
	if err != nil {
		return "", err
	}
	tok := jwt.New()
	for k, v := range claims {
		if v == nil {
			continue
		}
		if err := tok.Set(k, v); err != nil {
			return "", fmt.Errorf("devissuer: claim %s: %w", k, err)
		}
	}
	b, err := jwt.Sign(tok, jwt.WithKey(key.alg, key.priv))
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	return string(b), nil
}

func (i *Issuer) key(alg, kid string) (signingKey, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if kid != "" {
		for _, k := range i.keys {
			if k.kid == kid {
				return k, nil
			}
		}
		return signingKey{}, fmt.Errorf("devissuer: no key with kid %q", kid)
	}
	if alg == "" {
		alg = RS256
	}
	for _, k := range i.keys {
		if k.alg.String() == alg {
			return k, nil
		}
	}
	return signingKey{}, fmt.Errorf("devissuer: no %s key (RS256 or ES256)", alg)
}

// PublicKey returns the public key with kid as a crypto public key
// (*rsa.PublicKey or *ecdsa.PublicKey), for tests that attack it.
func (i *Issuer) PublicKey(kid string) (any, error) {
	k, err := i.key("", kid)
	if err != nil {
		return nil, err
	}
	var raw any
	if err := jwk.Export(k.pub, &raw); err != nil {
		return nil, fmt.Errorf("devissuer: export %s: %w", kid, err)
	}
	if raw == nil {
		return nil, errors.New("devissuer: empty key")
	}
	return raw, nil
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
