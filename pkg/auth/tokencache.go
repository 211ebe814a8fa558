package auth

import (
	"crypto/sha256"
	"hash"
	"sync"
	"time"
	"unsafe"
)

// A verified token is remembered briefly, so a caller's next calls cost a
// hash and a map lookup instead of an RSA or ECDSA verification and two
// JSON decodes. Nothing the cache answers could have been refused:
//
//   - it is keyed by the SHA-256 of the exact token text, so only the same
//     token hits; it holds no token itself;
//   - an entry is good until the token's exp (without the clock skew
//     verification allows) or tokenCacheTTL after it was verified,
//     whichever comes first;
//   - a hit is only taken while the key that verified the token is still
//     the one published under its kid: a key withdrawn from the JWKS ends
//     its tokens' entries at once;
//   - only successes are cached: a refused token is checked again in full.
//
// The issuer, audience and client allow-list are fixed for a Verifier's
// life, so they cannot change under an entry.
const (
	tokenCacheTTL     = time.Minute
	tokenCacheEntries = 10_000 // about 1 MiB at most
	tokenCacheSweep   = 10 * time.Second
)

type tokenKey [sha256.Size]byte

var hashers = sync.Pool{New: func() any { return sha256.New() }}

// keyOf is the SHA-256 of raw. The hash reads the token's bytes in place
// (a hash never writes to its input), so a lookup copies nothing.
func keyOf(raw string) tokenKey {
	h := hashers.Get().(hash.Hash)
	h.Reset()
	h.Write(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	var k tokenKey
	h.Sum(k[:0])
	hashers.Put(h)
	return k
}

type cachedToken struct {
	p     Principal
	kid   string
	key   any // the verifyKey.raw that verified it
	until time.Time
}

type tokenCache struct {
	mu        sync.RWMutex
	m         map[tokenKey]cachedToken
	max       int
	lastSweep time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{m: make(map[tokenKey]cachedToken), max: max}
}

// get returns the principal of a token verified before, if its entry is
// still good at now and keyOK accepts the key it was verified with.
func (c *tokenCache) get(k tokenKey, now time.Time, keyOK func(kid string, key any) bool) (Principal, bool) {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) || !keyOK(e.kid, e.key) {
		return Principal{}, false
	}
	return e.p, true
}

func (c *tokenCache) put(k tokenKey, e cachedToken, now time.Time) {
	if !now.Before(e.until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max && now.Sub(c.lastSweep) >= tokenCacheSweep {
		c.lastSweep = now
		for k, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, k)
			}
		}
	}
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		// Full of live tokens: forget one at random (map order); its
		// owner's next call is verified in full.
		for victim := range c.m {
			delete(c.m, victim)
			break
		}
	}
	c.m[k] = e
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
