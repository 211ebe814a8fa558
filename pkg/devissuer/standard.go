package devissuer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/omsdev/oms/pkg/auth"
)

// The environment variables the standard local tokens go in.
const (
	EnvCustomerA = "OMS_TOKEN_CUSTOMER_A"
	EnvCustomerB = "OMS_TOKEN_CUSTOMER_B"
	EnvService   = "OMS_TOKEN_SERVICE"
	EnvStaff     = "OMS_TOKEN_STAFF"
	// EnvOverride, when set, is the token local clients send instead.
	EnvOverride = "OMS_TOKEN"
)

// LocalTTL is the lifetime of the standard tokens: a working day, so a
// developer's shell keeps working through one `make run`.
const LocalTTL = 12 * time.Hour

// Named is a standard local caller: the environment variable its token
// goes in, and the token to mint.
type Named struct {
	Env  string
	Spec TokenSpec
}

// Standard lists the local callers the stack, the demo, the load generator
// and the end-to-end tests share: two customers, the storefront backend and
// the staff console.
func Standard(audience string) []Named {
	customer := []string{auth.ScopeCreate, auth.ScopeRead, auth.ScopeCancel, auth.ScopePay}
	service := []string{auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeCancel}
	staff := []string{auth.ScopeCreate, auth.ScopeRead, auth.ScopePay, auth.ScopeFulfil, auth.ScopeCancel, auth.ScopeStaff}
	return []Named{
		{EnvCustomerA, TokenSpec{Subject: "customer-a", Scopes: customer, Audience: audience, TTL: LocalTTL}},
		{EnvCustomerB, TokenSpec{Subject: "customer-b", Scopes: customer, Audience: audience, TTL: LocalTTL}},
		// Client-credentials tokens: sub equals client_id (RFC 9068).
		{EnvService, TokenSpec{Subject: "storefront", ClientID: "storefront", Scopes: service, Audience: audience, TTL: LocalTTL}},
		{EnvStaff, TokenSpec{Subject: "staff-console", ClientID: "staff-console", Scopes: staff, Audience: audience, TTL: LocalTTL}},
	}
}

// NamedToken is a minted standard token.
type NamedToken struct {
	Env   string
	Token string
}

// MintStandard mints a token for each of Standard(audience).
func (i *Issuer) MintStandard(audience string) ([]NamedToken, error) {
	var out []NamedToken
	for _, n := range Standard(audience) {
		tok, err := i.Mint(n.Spec)
		if err != nil {
			return nil, fmt.Errorf("mint %s: %w", n.Env, err)
		}
		out = append(out, NamedToken{n.Env, tok})
	}
	return out, nil
}

// StateDir is the local stack's state directory: .oms in the repository
// that holds the working directory (the nearest parent with a go.work), or
// ./.oms outside one.
func StateDir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ".oms"
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, ".oms")
		}
		if filepath.Dir(d) == d {
			return filepath.Join(dir, ".oms")
		}
	}
}

// TokensFile is where the local stack writes the standard tokens.
func TokensFile() string { return filepath.Join(StateDir(), "tokens.env") }

// WriteTokens writes toks as NAME=token lines (for `source` in a shell, or
// an env file) to path with mode 0600; its directory is created with 0700.
func WriteTokens(path string, toks []NamedToken) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("# Local development tokens from omsstack's dev issuer; valid until it restarts or they expire.\n")
	for _, t := range toks {
		fmt.Fprintf(&b, "%s=%s\n", t.Env, t.Token)
	}
	// Write beside and rename, so a reader never sees half a file.
	tmp := path + ".tmp"
	os.Remove(tmp) // WriteFile keeps the mode of a file that exists
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadTokens reads a file WriteTokens wrote.
func ReadTokens(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	toks := map[string]string{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1<<20)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if ok {
			toks[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	return toks, s.Err()
}

// LocalToken is the bearer token a local client sends as the caller in
// name (EnvService, EnvStaff, ...): $OMS_TOKEN if set, else $<name>, else
// name from TokensFile. It returns "" when there is none, as against a
// stack in insecure dev mode, which takes requests without a token.
func LocalToken(name string) string {
	if t := os.Getenv(EnvOverride); t != "" {
		return t
	}
	if t := os.Getenv(name); t != "" {
		return t
	}
	toks, err := ReadTokens(TokensFile())
	if err != nil {
		return ""
	}
	return toks[name]
}
