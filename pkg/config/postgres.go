package config

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sslModes are the sslmode values bun's pgdriver (v1.2) accepts. It panics
// on any other when the pool is opened, so they are checked here first.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// pgDurations are the parameters pgdriver reads as a number of seconds or a
// Go duration (and panics on otherwise).
var pgDurations = []string{"timeout", "dial_timeout", "connect_timeout", "read_timeout", "write_timeout"}

var keyValueForm = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)

// PostgresURL returns a postgres:// or postgresql:// URL that pgdriver
// opens without panicking, or def. An empty def makes it optional.
//
// A value that does not parse, or is in libpq's key=value form, is
// reported without its text, since it may carry the password where Redact
// cannot find it. Other errors show the URL with its password hidden.
func (e *Env) PostgresURL(name, def string) string {
	v := e.String(name, def)
	if v == "" {
		return ""
	}
	if isKeyValue(v) {
		e.failHidden(name, "must be a postgres:// URL (the key=value form is not supported)")
		return def
	}
	u, err := url.Parse(v) // never quote err: it holds the raw URL
	if err != nil {
		e.failHidden(name, "must be a postgres:// URL and does not parse (write %% in the password as %%25)")
		return def
	}
	if strayAt(u) {
		e.failHidden(name, "has an @ after the host: escape @ / ? # in the password as %%40 %%2F %%3F %%23")
		return def
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		e.failHidden(name, "query string does not parse")
		return def
	}
	shown := Redact(v)
	last := func(k string) string {
		if vs := q[k]; len(vs) > 0 {
			return vs[len(vs)-1] // pgdriver reads the last
		}
		return ""
	}
	ok := true
	check := func(cond bool, format string, a ...any) {
		if !cond && ok {
			e.fail(name, shown, format, a...)
			ok = false
		}
	}
	check(u.Scheme == "postgres" || u.Scheme == "postgresql", "must be a postgres:// or postgresql:// URL")
	check(u.Opaque == "" && (u.Host != "" || last("host") != ""), "must name a host, as in postgres://user@host:5432/db")
	check(u.User == nil || u.User.Username() != "", "user name is empty")
	mode := last("sslmode")
	check(mode == "" || slices.Contains(sslModes, mode), "sslmode must be one of %s", strings.Join(sslModes, ", "))
	for _, k := range pgDurations {
		d := last(k)
		check(d == "" || isPGDuration(d), "%s must be a number of seconds or a duration such as 5s", k)
	}
	if ok && mode != "disable" && (mode != "" || last("sslrootcert") != "") {
		if f := last("sslrootcert"); f != "" {
			pem, err := os.ReadFile(f)
			check(err == nil, "sslrootcert %s cannot be read", f)
			check(err != nil || x509.NewCertPool().AppendCertsFromPEM(pem), "sslrootcert %s holds no PEM certificate", f)
		}
		if c, k := last("sslcert"), last("sslkey"); c != "" && k != "" {
			_, err := tls.LoadX509KeyPair(c, k)
			check(err == nil, "sslcert %s and sslkey %s do not load as a key pair", c, k)
		}
	}
	if !ok {
		return def
	}
	return v
}

func isPGDuration(s string) bool {
	if _, err := strconv.Atoi(s); err == nil {
		return true
	}
	_, err := time.ParseDuration(s)
	return err == nil
}

// isKeyValue reports whether raw looks like libpq's "host=... password=..."
// form rather than a URL.
func isKeyValue(raw string) bool {
	return !strings.Contains(raw, "://") && keyValueForm.MatchString(raw)
}

// strayAt reports an @ outside the user info: a password with an unescaped
// @ (or / ? #) spills into the rest of the URL, where Redact cannot tell
// it from a path.
func strayAt(u *url.URL) bool {
	return strings.Contains(u.Opaque+u.Path+u.RawQuery+u.Fragment, "@")
}
