package auth

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/omsdev/oms/pkg/config"
)

// MaxClockSkew bounds AUTH_CLOCK_SKEW: more would stretch every token's
// lifetime noticeably.
const MaxClockSkew = 5 * time.Minute

// Config says which tokens the Verifier accepts.
type Config struct {
	Issuer   string // AUTH_ISSUER: the iss every token must carry
	Audience string // AUTH_AUDIENCE: a value every token's aud must contain
	// Exactly one of JWKSURL (AUTH_JWKS_URL, http or https) and JWKSFile
	// (AUTH_JWKS_FILE, a JWKS JSON file for air-gapped setups, re-read
	// when its modification time changes) says where the keys are.
	JWKSURL  string
	JWKSFile string
	// ClockSkew (AUTH_CLOCK_SKEW, default 30s, at most 5m) is how far exp,
	// nbf and iat may be off.
	ClockSkew time.Duration
	// InsecureDevMode (AUTH_INSECURE_DEV_MODE, default false) trusts every
	// caller without a token. For a developer machine only.
	InsecureDevMode bool
	// ServiceClients (AUTH_SERVICE_CLIENT_IDS, comma-separated) lists the
	// client ids whose client-credentials tokens are service principals.
	// Empty: any token whose client_id equals its sub (RFC 9068). Set it
	// when the IdP lets users pick their own sub, so that no user can pass
	// for a service by taking a client's name.
	ServiceClients []string

	// Key refresh timing; zero takes the defaults below. Tests change them.
	refreshEvery    time.Duration // periodic JWKS refresh
	fileCheckEvery  time.Duration // how often a JWKS file's mtime is checked
	unknownKidEvery time.Duration // least time between refreshes for an unknown kid
}

const (
	defaultClockSkew       = 30 * time.Second
	defaultRefreshEvery    = 15 * time.Minute
	defaultFileCheckEvery  = 30 * time.Second
	defaultUnknownKidEvery = 10 * time.Second
)

// LoadConfig reads the AUTH_* variables. Bad or inconsistent values are
// recorded on env, to be reported by env.Err with every other bad value.
func LoadConfig(env *config.Env) Config {
	c := Config{
		Issuer:          env.String("AUTH_ISSUER", ""),
		Audience:        env.String("AUTH_AUDIENCE", ""),
		JWKSURL:         env.URL("AUTH_JWKS_URL", "", "http", "https"),
		JWKSFile:        env.String("AUTH_JWKS_FILE", ""),
		ClockSkew:       env.Duration("AUTH_CLOCK_SKEW", defaultClockSkew, 0, MaxClockSkew),
		InsecureDevMode: env.Bool("AUTH_INSECURE_DEV_MODE", false),
		ServiceClients:  strings.FieldsFunc(env.String("AUTH_SERVICE_CLIENT_IDS", ""), func(r rune) bool { return r == ',' || r == ' ' }),
	}
	if name, msg := c.problem(); name != "" {
		env.Check(false, name, "%s", msg)
	}
	return c
}

// Validate reports a configuration NewVerifier cannot use, in one line
// that names the variables.
func (c Config) Validate() error {
	if name, msg := c.problem(); name != "" {
		return fmt.Errorf("%s: %s", name, msg)
	}
	if c.ClockSkew < 0 || c.ClockSkew > MaxClockSkew {
		return fmt.Errorf("AUTH_CLOCK_SKEW=%s: must be from 0s to %s", c.ClockSkew, MaxClockSkew)
	}
	if c.JWKSURL != "" {
		u, err := url.Parse(c.JWKSURL)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return errors.New("AUTH_JWKS_URL: must be an absolute http or https URL")
		}
	}
	return nil
}

// problem names the variable at fault and why, or returns "".
func (c Config) problem() (variable, msg string) {
	if c.InsecureDevMode {
		if c.Issuer != "" || c.Audience != "" || c.JWKSURL != "" || c.JWKSFile != "" {
			return "AUTH_INSECURE_DEV_MODE", "cannot be combined with AUTH_ISSUER, AUTH_AUDIENCE, AUTH_JWKS_URL or AUTH_JWKS_FILE: " +
				"either verify tokens or trust every caller, not both"
		}
		return "", ""
	}
	var missing []string
	if c.Issuer == "" {
		missing = append(missing, "AUTH_ISSUER")
	}
	if c.Audience == "" {
		missing = append(missing, "AUTH_AUDIENCE")
	}
	if c.JWKSURL == "" && c.JWKSFile == "" {
		missing = append(missing, "AUTH_JWKS_URL or AUTH_JWKS_FILE")
	}
	if len(missing) > 0 {
		return strings.Fields(missing[0])[0], "token verification needs AUTH_ISSUER, AUTH_AUDIENCE and one of AUTH_JWKS_URL or AUTH_JWKS_FILE (missing: " +
			strings.Join(missing, ", ") + "); only on a developer machine, AUTH_INSECURE_DEV_MODE=true runs without tokens instead"
	}
	if c.JWKSURL != "" && c.JWKSFile != "" {
		return "AUTH_JWKS_FILE", "set only one of AUTH_JWKS_URL and AUTH_JWKS_FILE"
	}
	if u, err := url.Parse(c.JWKSURL); c.JWKSURL != "" && err == nil && u.Scheme != "https" && !config.LoopbackHost(u.Hostname()) {
		// Whoever sits between the service and the IdP could serve keys.
		return "AUTH_JWKS_URL", "must be https unless it is on loopback"
	}
	return "", ""
}

func (c Config) withDefaults() Config {
	if c.refreshEvery <= 0 {
		c.refreshEvery = defaultRefreshEvery
	}
	if c.fileCheckEvery <= 0 {
		c.fileCheckEvery = defaultFileCheckEvery
	}
	if c.unknownKidEvery <= 0 {
		c.unknownKidEvery = defaultUnknownKidEvery
	}
	return c
}
