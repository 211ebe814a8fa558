package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

// audience is the API audience the e2e stack's services accept.
const audience = "oms-e2e"

// The scopes of the test principals.
var (
	customerScopes = []string{auth.ScopeCreate, auth.ScopeRead, auth.ScopeCancel, auth.ScopePay}
	staffScopes    = auth.AllScopes()
)

// mint signs a token with the stack's issuer, through the same JWKS the
// services verify against.
func mint(t testing.TB, spec devissuer.TokenSpec) string {
	t.Helper()
	if spec.Audience == "" {
		spec.Audience = audience
	}
	tok, err := sys.issuer.Mint(spec)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// customer returns a token for a new customer of its own, and its id.
func customer(t testing.TB) (token, id string) {
	id = "cust-" + uuid.NewString()[:8]
	return mint(t, devissuer.TokenSpec{Subject: id, Scopes: customerScopes}), id
}

// service returns a client-credentials token (sub = client_id).
func service(t testing.TB, client string, scopes ...string) string {
	return mint(t, devissuer.TokenSpec{Subject: client, ClientID: client, Scopes: scopes})
}

// as is the header pair for do().
func as(token string) []string { return []string{"Authorization", "Bearer " + token} }

// tokenCreds sends a bearer token on every RPC. The e2e stack is
// plaintext on loopback, so it does not insist on transport security.
type tokenCreds string

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if c == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(c)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return false }

var _ credentials.PerRPCCredentials = tokenCreds("")

// grpcAs is a connection to addr whose calls carry token ("" for none).
func grpcAs(t *testing.T, addr, token string) *grpc.ClientConn {
	return grpcConn(t, addr, grpc.WithPerRPCCredentials(tokenCreds(token)))
}

// forge builds a token by hand from a header and claims, signed with sign
// (nil: no signature), for the attacks a library would never produce.
func forge(header, claims map[string]any, sign func(input []byte) []byte) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	sig := ""
	if sign != nil {
		sig = base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
	}
	return input + "." + sig
}

// claimsOf decodes a token's payload.
func claimsOf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// badTokens are the credentials every method must refuse, by name; "" is
// no Authorization header at all.
func badTokens(t *testing.T) map[string]string {
	t.Helper()
	now := time.Now()
	good := service(t, "storefront-"+uuid.NewString()[:8], staffScopes...)
	claims := claimsOf(t, good)
	kid := sys.issuer.KeyIDs()[0] // the RS256 key

	other, err := devissuer.New()
	if err != nil {
		t.Fatal(err)
	}
	other.URL = sys.issuer.URL // same issuer name, keys the JWKS never listed
	unknownKid, err := other.Sign(claims, "RS256", "")
	if err != nil {
		t.Fatal(err)
	}

	pub, err := sys.issuer.PublicKey(kid)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	hs256 := forge(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}, claims, func(in []byte) []byte {
		m := hmac.New(sha256.New, pubPEM)
		m.Write(in)
		return m.Sum(nil)
	})

	// A valid signature over other claims: swap in a payload naming staff.
	parts := strings.Split(good, ".")
	tampered := claimsOf(t, good)
	tampered["sub"], tampered["client_id"] = "staff-console", "staff-console"
	tb, _ := json.Marshal(tampered)
	badSig := parts[0] + "." + base64.RawURLEncoding.EncodeToString(tb) + "." + parts[2]

	return map[string]string{
		"no token":                  "",
		"not a JWT":                 "not-a-jwt",
		"expired":                   mint(t, devissuer.TokenSpec{Subject: "c-exp", Scopes: staffScopes, IssuedAt: now.Add(-2 * time.Hour), TTL: time.Hour}),
		"not yet valid":             mint(t, devissuer.TokenSpec{Subject: "c-nbf", Scopes: staffScopes, NotBefore: now.Add(time.Hour)}),
		"wrong issuer":              mint(t, devissuer.TokenSpec{Subject: "c-iss", Scopes: staffScopes, Extra: map[string]any{"iss": "https://idp.example.org"}}),
		"wrong audience":            mint(t, devissuer.TokenSpec{Subject: "c-aud", Scopes: staffScopes, Audience: "another-api"}),
		"bad signature":             badSig,
		"alg none":                  forge(map[string]any{"alg": "none", "typ": "JWT"}, claims, nil),
		"unknown kid":               unknownKid,
		"HS256 with the public key": hs256,
	}
}
