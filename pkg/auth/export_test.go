package auth

import "time"

// WithTiming sets the key refresh timing tests need: how often a JWKS
// file is checked, and the least time between unknown-kid refreshes.
func WithTiming(c Config, fileCheck, unknownKid time.Duration) Config {
	c.fileCheckEvery, c.unknownKidEvery = fileCheck, unknownKid
	return c
}

// SetClock replaces the rate limiter's clock.
func SetClock(l *RateLimiter, now func() time.Time) { l.now = now }

// SetMaxEntries replaces the rate limiter's table bound.
func SetMaxEntries(l *RateLimiter, n int) { l.maxEntries = n }

// Entries is the size of the rate limiter's table.
func Entries(l *RateLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// SetTokenCacheSize replaces the verifier's token cache with an empty one
// of n entries.
func SetTokenCacheSize(v *Verifier, n int) { v.cache = newTokenCache(n) }

// TokenCacheLen is how many verified tokens v remembers.
func TokenCacheLen(v *Verifier) int { return v.cache.len() }
