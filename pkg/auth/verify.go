package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Verification errors. Their text is safe to return to the caller: it
// names what is wrong with the token, never a key.
var (
	ErrMissingToken   = errors.New("missing bearer token: send Authorization: Bearer <token>")
	ErrMalformed      = errors.New("token is malformed")
	ErrAlgorithm      = errors.New("token algorithm is not accepted (RS256 or ES256 only)")
	ErrNoKeyID        = errors.New("token has no key id (kid)")
	ErrUnknownKey     = errors.New("token signed by an unknown key")
	ErrKeyMismatch    = errors.New("token algorithm does not match its key")
	ErrSignature      = errors.New("token signature is invalid")
	ErrExpired        = errors.New("token expired")
	ErrNotYetValid    = errors.New("token is not valid yet")
	ErrIssuedInFuture = errors.New("token is issued in the future")
	ErrNoExpiry       = errors.New("token has no expiry (exp)")
	ErrIssuer         = errors.New("token issuer is not accepted")
	ErrAudience       = errors.New("token audience is not accepted")
	ErrSubject        = errors.New("token subject (sub) must be 1 to 128 printable ASCII characters without spaces")
	ErrClaims         = errors.New("token claims are malformed")
	ErrInvalid        = errors.New("token is invalid")
	ErrDevModeToken   = errors.New("this server runs without token verification: send no token")
	ErrUnknownClient  = errors.New("token's client is not a known service client")
)

// DevModeWarning is logged at start, and again every 15 minutes, by a
// Verifier in insecure dev mode.
const DevModeWarning = "AUTH_INSECURE_DEV_MODE is on: every caller is trusted; never use this outside a developer machine"

const (
	maxTokenBytes   = 16 << 10 // far above any real access token; bounds the work an attacker buys
	maxSubjectBytes = 128
	maxJWKSBytes    = 1 << 20
	fetchTimeout    = 10 * time.Second
)

// AllScopes lists every scope, in the order of the constants.
func AllScopes() []string {
	return []string{ScopeCreate, ScopeRead, ScopePay, ScopeFulfil, ScopeCancel, ScopeStaff}
}

// DevPrincipal is who every caller is in insecure dev mode: a staff
// service holding every scope.
func DevPrincipal() Principal {
	return Principal{Kind: Service, Subject: "dev", Scopes: AllScopes(), Dev: true}
}

// Verifier checks bearer tokens and turns them into principals.
type Verifier struct {
	cfg  Config
	log  *slog.Logger
	keys *keyCache // nil in insecure dev mode
	// cache remembers verified tokens briefly (tokencache.go).
	cache *tokenCache
}

// NewVerifier checks cfg and loads the signing keys. A JWKS that cannot be
// fetched yet is not fatal: the service starts, refuses tokens as signed
// by an unknown key, and keeps trying in the background. The verifier
// refreshes its keys until ctx ends.
func NewVerifier(ctx context.Context, cfg Config, log *slog.Logger) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	v := &Verifier{cfg: cfg, log: log, cache: newTokenCache(tokenCacheEntries)}
	if cfg.InsecureDevMode {
		log.Warn(DevModeWarning)
		go repeatWarning(ctx, log, 15*time.Minute)
		return v, nil
	}
	var src keySource = newURLSource(cfg.JWKSURL)
	every := cfg.refreshEvery
	if cfg.JWKSFile != "" {
		src, every = &fileSource{path: cfg.JWKSFile}, cfg.fileCheckEvery
	}
	v.keys = newKeyCache(src, log, cfg.unknownKidEvery)
	ok := v.keys.refreshNow(ctx)
	go v.keys.run(ctx, every, ok)
	return v, nil
}

func repeatWarning(ctx context.Context, log *slog.Logger, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			log.Warn(DevModeWarning)
		}
	}
}

// DevMode reports whether v trusts every caller.
func (v *Verifier) DevMode() bool { return v.cfg.InsecureDevMode }

// Verify checks rawToken (without the "Bearer " prefix; "" when the request
// carried none) and returns its principal. Its errors are safe to show.
func (v *Verifier) Verify(ctx context.Context, rawToken string) (Principal, error) {
	if v.cfg.InsecureDevMode {
		if rawToken != "" {
			return Principal{}, ErrDevModeToken
		}
		return DevPrincipal(), nil
	}
	if rawToken == "" {
		return Principal{}, ErrMissingToken
	}
	// Compact serialization only: exactly one signature, no JSON forms,
	// no JWE (which has four dots).
	if len(rawToken) > maxTokenBytes || strings.Count(rawToken, ".") != 2 {
		return Principal{}, ErrMalformed
	}
	now := time.Now()
	ck := keyOf(rawToken)
	if p, ok := v.cache.get(ck, now, v.keys.holds); ok {
		return p, nil
	}
	alg, kid, err := compactHeader(rawToken)
	if err != nil {
		return Principal{}, err
	}
	key, ok := v.keys.lookup(ctx, kid)
	if !ok {
		return Principal{}, ErrUnknownKey
	}
	if key.alg != alg {
		return Principal{}, ErrKeyMismatch
	}
	// One parse: the signature is verified, then the claims decoded and
	// validated.
	tok, err := jwt.Parse([]byte(rawToken),
		jwt.WithKey(alg, key.raw),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithAudience(v.cfg.Audience),
		jwt.WithAcceptableSkew(v.cfg.ClockSkew),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	)
	if err != nil {
		safe := classify(err)
		v.log.DebugContext(ctx, "token refused", "reason", safe.Error(), "kid", kid, "error", err)
		return Principal{}, safe
	}
	p, err := principalOf(tok)
	if err != nil {
		return Principal{}, err
	}
	if p.Kind == Service && len(v.cfg.ServiceClients) > 0 && !slices.Contains(v.cfg.ServiceClients, p.Subject) {
		return Principal{}, ErrUnknownClient
	}
	if exp, ok := tok.Expiration(); ok {
		v.cache.put(ck, cachedToken{p: p, kid: kid, key: key.raw, until: minTime(exp, now.Add(tokenCacheTTL))}, now)
	}
	return p, nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// compactHeader reads the algorithm and key id from a compact token's
// protected header, with the same parser jwt.Parse then verifies with.
// The algorithm is decided here, from a fixed list, before any key is
// touched: this is what stops "none" and HS256-with-the-public-key.
func compactHeader(raw string) (jwa.SignatureAlgorithm, string, error) {
	var none jwa.SignatureAlgorithm
	seg, _, _ := strings.Cut(raw, ".")
	hdr := jwsbb.HeaderParseCompact([]byte(seg))
	name, err := jwsbb.HeaderGetString(hdr, jws.AlgorithmKey)
	switch {
	case errors.Is(err, jwsbb.ErrHeaderNotFound()):
		return none, "", ErrAlgorithm
	case err != nil:
		return none, "", ErrMalformed // not base64, not a JSON object, or alg not a string
	}
	alg, known := jwa.LookupSignatureAlgorithm(name)
	if !known {
		return none, "", ErrMalformed
	}
	if alg != jwa.RS256() && alg != jwa.ES256() {
		return none, "", ErrAlgorithm
	}
	kid, err := jwsbb.HeaderGetString(hdr, jws.KeyIDKey)
	switch {
	case errors.Is(err, jwsbb.ErrHeaderNotFound()) || (err == nil && kid == ""):
		return none, "", ErrNoKeyID
	case err != nil:
		return none, "", ErrMalformed
	}
	return alg, kid, nil
}

// classify maps a jwx error to one of ours.
func classify(err error) error {
	switch {
	case errors.Is(err, jws.VerificationError()), errors.Is(err, jws.VerifyError()):
		return ErrSignature
	case errors.Is(err, jwt.TokenExpiredError()):
		return ErrExpired
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return ErrNotYetValid
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return ErrIssuedInFuture
	case errors.Is(err, jwt.InvalidIssuerError()):
		return ErrIssuer
	case errors.Is(err, jwt.InvalidAudienceError()):
		return ErrAudience
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return ErrNoExpiry
	case errors.Is(err, jwt.ValidateError()):
		return ErrInvalid
	}
	return ErrMalformed
}

// principalOf reads the claims of a verified token. RFC 9068: a token
// whose client_id equals its sub was issued to the client itself (client
// credentials), so it is a service; any other is a customer's.
func principalOf(tok jwt.Token) (Principal, error) {
	sub, _ := tok.Subject()
	if !validSubject(sub) {
		return Principal{}, ErrSubject
	}
	var clientID string
	if tok.Has("client_id") {
		if err := tok.Get("client_id", &clientID); err != nil {
			return Principal{}, ErrClaims
		}
	}
	scopes, err := scopesOf(tok)
	if err != nil {
		return Principal{}, err
	}
	kind := Customer
	if clientID != "" && clientID == sub {
		kind = Service
	}
	return Principal{Kind: kind, Subject: sub, Scopes: scopes}, nil
}

// scopesOf reads "scope" (a space-separated string, RFC 9068) or else
// "scp" (a list, as some identity providers write it; a string is taken
// too).
func scopesOf(tok jwt.Token) ([]string, error) {
	var v any
	switch {
	case tok.Has("scope"):
		if err := tok.Get("scope", &v); err != nil {
			return nil, ErrClaims
		}
	case tok.Has("scp"):
		if err := tok.Get("scp", &v); err != nil {
			return nil, ErrClaims
		}
	default:
		return nil, nil
	}
	switch v := v.(type) {
	case string:
		return ParseScopes(v), nil
	case []string:
		return v, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, s := range v {
			str, ok := s.(string)
			if !ok {
				return nil, ErrClaims
			}
			out = append(out, str)
		}
		return out, nil
	}
	return nil, ErrClaims
}

// validSubject: sub becomes a customer id and an idempotency scope, so it
// is short and plain.
func validSubject(s string) bool {
	if s == "" || len(s) > maxSubjectBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// verifyKey is a usable public key with the one algorithm it verifies.
type verifyKey struct {
	alg jwa.SignatureAlgorithm
	raw any // *rsa.PublicKey or *ecdsa.PublicKey
}

// keySource loads a JWKS.
type keySource interface {
	// load returns the set, or nil and no error when it is unchanged
	// since the last successful load.
	load(ctx context.Context) (jwk.Set, error)
	String() string
}

type urlSource struct {
	url    string
	client *http.Client
}

func newURLSource(u string) *urlSource {
	return &urlSource{url: u, client: &http.Client{
		Timeout: fetchTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect from https to http refused")
			}
			return nil
		},
	}}
}

func (s *urlSource) load(ctx context.Context) (jwk.Set, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET: %s", resp.Status)
	}
	return parseJWKS(resp.Body)
}

// parseJWKS reads a bounded JWKS. Parsing is lenient, so one entry we
// cannot read does not cost us the others.
func parseJWKS(r io.Reader) (jwk.Set, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	return jwk.Parse(b, jwk.WithStrictKeySetParsing(false))
}

func (s *urlSource) String() string { return s.url }

// fileSource re-reads its file only when its mtime or size changes. It is
// only used under keyCache.sem.
type fileSource struct {
	path    string
	modTime time.Time
	size    int64
	loaded  bool
}

func (s *fileSource) load(context.Context) (jwk.Set, error) {
	fi, err := os.Stat(s.path)
	if err != nil {
		return nil, err
	}
	if s.loaded && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return nil, nil
	}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	set, err := parseJWKS(f)
	if err != nil {
		return nil, err
	}
	s.modTime, s.size, s.loaded = fi.ModTime(), fi.Size(), true
	return set, nil
}

func (s *fileSource) String() string { return s.path }

// keyCache holds the current keys by kid. Reads are lock-free; refreshes
// run one at a time.
type keyCache struct {
	src             keySource
	log             *slog.Logger
	unknownKidEvery time.Duration
	keys            atomic.Pointer[map[string]verifyKey]

	sem          chan struct{} // held while refreshing
	lastOnDemand time.Time     // guarded by sem
}

func newKeyCache(src keySource, log *slog.Logger, unknownKidEvery time.Duration) *keyCache {
	c := &keyCache{src: src, log: log, unknownKidEvery: unknownKidEvery, sem: make(chan struct{}, 1)}
	c.keys.Store(&map[string]verifyKey{})
	return c
}

func (c *keyCache) get(kid string) (verifyKey, bool) {
	k, ok := (*c.keys.Load())[kid]
	return k, ok
}

// holds reports whether kid still names the public key raw (a refresh
// parses the keys anew, so equal keys are not always the same pointer).
func (c *keyCache) holds(kid string, raw any) bool {
	k, ok := c.get(kid)
	if !ok {
		return false
	}
	if k.raw == raw {
		return true
	}
	eq, ok := k.raw.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(raw)
}

// lookup finds kid, refreshing the keys once if it is unknown: an
// identity provider publishes a new key before signing with it. Such
// refreshes happen at most once per unknownKidEvery, so tokens with made-up
// kids cannot make us hammer the provider.
func (c *keyCache) lookup(ctx context.Context, kid string) (verifyKey, bool) {
	if k, ok := c.get(kid); ok {
		return k, true
	}
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return verifyKey{}, false
	}
	defer func() { <-c.sem }()
	if k, ok := c.get(kid); ok { // refreshed while we waited
		return k, true
	}
	if !c.lastOnDemand.IsZero() && time.Since(c.lastOnDemand) < c.unknownKidEvery {
		return verifyKey{}, false
	}
	c.lastOnDemand = time.Now()
	if err := c.refresh(ctx); err != nil {
		c.log.WarnContext(ctx, "auth: cannot refresh the JWKS for an unknown key id; keeping the keys we have",
			"jwks", c.src.String(), "error", err)
	}
	return c.get(kid)
}

// refreshNow loads the keys under the semaphore and reports success.
func (c *keyCache) refreshNow(ctx context.Context) bool {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-c.sem }()
	err := c.refresh(ctx)
	if err != nil {
		have := len(*c.keys.Load())
		msg := "auth: cannot load the JWKS; keeping the keys we have and retrying"
		if have == 0 {
			msg = "auth: cannot load the JWKS; every token is refused until it loads, retrying"
		}
		c.log.WarnContext(ctx, msg, "jwks", c.src.String(), "keys", have, "error", err)
	}
	return err == nil
}

// refresh loads the source; the caller holds sem. A failure keeps the
// keys we have: an identity provider that is briefly down must not lock
// everybody out.
func (c *keyCache) refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	set, err := c.src.load(ctx)
	if err != nil {
		return err
	}
	if set == nil {
		return nil // unchanged
	}
	keys := c.usable(set)
	if len(keys) == 0 {
		return errors.New("the JWKS has no usable key (RSA of 2048 bits or more for RS256, or P-256 for ES256, each with a kid)")
	}
	c.keys.Store(&keys)
	c.log.Info("auth: JWKS loaded", "jwks", c.src.String(), "keys", len(keys))
	return nil
}

// usable keeps the signing keys we accept: RSA (2048 bits or more) for
// RS256 and P-256 for ES256, each with a kid. Only public halves are kept.
// Symmetric keys are never used, whatever the set holds.
func (c *keyCache) usable(set jwk.Set) map[string]verifyKey {
	keys := make(map[string]verifyKey, set.Len())
	for i := range set.Len() {
		k, _ := set.Key(i)
		kid, _ := k.KeyID()
		raw, alg, err := checkKey(k)
		if err != nil {
			c.log.Info("auth: JWKS key ignored", "kid", kid, "reason", err.Error())
			continue
		}
		if _, dup := keys[kid]; dup {
			c.log.Warn("auth: JWKS key ignored", "kid", kid, "reason", "duplicate kid")
			continue
		}
		keys[kid] = verifyKey{alg: alg, raw: raw}
	}
	return keys
}

// checkKey returns the public key k holds, as a crypto key, and the one
// algorithm it verifies.
func checkKey(k jwk.Key) (any, jwa.SignatureAlgorithm, error) {
	var none jwa.SignatureAlgorithm
	if uk, ok := k.(jwk.UnsupportedKey); ok {
		return nil, none, uk.Reason()
	}
	if kid, _ := k.KeyID(); kid == "" {
		return nil, none, errors.New("no kid")
	}
	if use, ok := k.KeyUsage(); ok && use != "" && use != jwk.ForSignature.String() {
		return nil, none, fmt.Errorf("use is %q, not sig", use)
	}
	var want jwa.SignatureAlgorithm
	switch k.KeyType() {
	case jwa.RSA():
		want = jwa.RS256()
	case jwa.EC():
		want = jwa.ES256()
	default:
		return nil, none, fmt.Errorf("key type %s is not accepted", k.KeyType())
	}
	if a, ok := k.Algorithm(); ok && a.String() != want.String() {
		return nil, none, fmt.Errorf("alg %s is not accepted for a %s key", a, k.KeyType())
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, none, err
	}
	var raw any
	if err := jwk.Export(pub, &raw); err != nil {
		return nil, none, err
	}
	switch r := raw.(type) {
	case *rsa.PublicKey:
		if r.N.BitLen() < 2048 {
			return nil, none, fmt.Errorf("RSA key of %d bits is too short", r.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if r.Curve != elliptic.P256() {
			return nil, none, errors.New("EC key is not on P-256")
		}
	default:
		return nil, none, fmt.Errorf("unexpected key %T", raw)
	}
	return raw, want, nil
}

// run refreshes the keys every interval until ctx ends. While loading
// fails it retries sooner, backing off from a second to a minute.
func (c *keyCache) run(ctx context.Context, every time.Duration, ok bool) {
	const firstRetry, maxRetry = time.Second, time.Minute
	retry := firstRetry
	for {
		wait := every
		if !ok {
			wait, retry = min(retry, every), min(2*retry, maxRetry)
		} else {
			retry = firstRetry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ok = c.refreshNow(ctx)
	}
}
