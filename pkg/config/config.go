// Package config reads settings from environment variables. Every setting
// has a documented default; a bad value is reported in one clear line that
// names the variable, and every bad value is reported at once.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Env reads variables, collecting errors instead of stopping at the first.
type Env struct {
	lookup func(string) (string, bool)
	errs   []error
}

// FromOS reads the process environment.
func FromOS() *Env { return &Env{lookup: os.LookupEnv} }

// FromMaps reads base with overrides on top, for tests; an override of ""
// unsets the variable.
func FromMaps(base, overrides map[string]string) *Env {
	m := make(map[string]string, len(base)+len(overrides))
	for k, v := range base {
		m[k] = v
	}
	for k, v := range overrides {
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	return FromMap(m)
}

// FromMap reads vars, for tests.
func FromMap(vars map[string]string) *Env {
	return &Env{lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
}

func (e *Env) get(name string) (string, bool) {
	v, ok := e.lookup(name)
	if !ok || strings.TrimSpace(v) == "" {
		return "", false
	}
	return strings.TrimSpace(v), true
}

func (e *Env) fail(name, v, format string, a ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s=%q: %s", name, v, fmt.Sprintf(format, a...)))
}

// failHidden records a failure without the value, for values that may
// carry a secret in a form Redact cannot take apart.
func (e *Env) failHidden(name, format string, a ...any) {
	e.errs = append(e.errs, fmt.Errorf("%s: %s; value hidden", name, fmt.Sprintf(format, a...)))
}

// Errorf records a failure that no single variable's value explains, such
// as a rule spanning several variables. It must not quote secrets.
func (e *Env) Errorf(format string, a ...any) {
	e.errs = append(e.errs, fmt.Errorf(format, a...))
}

// Err reports every bad value, or nil.
func (e *Env) Err() error {
	if len(e.errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid configuration: %w", errors.Join(e.errs...))
}

// String returns the variable or def.
func (e *Env) String(name, def string) string {
	if v, ok := e.get(name); ok {
		return v
	}
	return def
}

// Int returns the variable, which must lie in [min, max], or def.
func (e *Env) Int(name string, def, min, max int) int {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < min || n > max {
		e.fail(name, v, "must be an integer from %d to %d", min, max)
		return def
	}
	return n
}

// Float returns the variable, which must lie in [min, max], or def.
func (e *Env) Float(name string, def, min, max float64) float64 {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < min || f > max {
		e.fail(name, v, "must be a number from %g to %g", min, max)
		return def
	}
	return f
}

// Duration returns the variable (a Go duration such as 5s) in [min, max],
// or def.
func (e *Env) Duration(name string, def, min, max time.Duration) time.Duration {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < min || d > max {
		e.fail(name, v, "must be a duration such as 5s or 250ms, from %s to %s", min, max)
		return def
	}
	return d
}

// Bool returns the variable (true/false/1/0) or def.
func (e *Env) Bool(name string, def bool) bool {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.fail(name, v, "must be true or false")
		return def
	}
	return b
}

// OneOf returns the variable, which must be one of allowed (compared
// without regard to case, returned as spelled in allowed), or def.
func (e *Env) OneOf(name, def string, allowed ...string) string {
	v, ok := e.get(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	e.fail(name, v, "must be one of %s", strings.Join(allowed, ", "))
	return def
}

// Addr returns a host:port listen address, or def.
func (e *Env) Addr(name, def string) string {
	v := e.String(name, def)
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		e.fail(name, v, "must be host:port, such as 127.0.0.1:8080 or :8080")
		return def
	}
	return v
}

// URL returns an absolute URL, or def. An empty def makes it optional.
func (e *Env) URL(name, def string, schemes ...string) string {
	v := e.String(name, def)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		e.fail(name, Redact(v), "must be an absolute URL")
		return def
	}
	if len(schemes) > 0 && !contains(schemes, u.Scheme) {
		e.fail(name, Redact(v), "scheme must be one of %s", strings.Join(schemes, ", "))
	}
	return v
}

// Check records a failure for name when ok is false: for rules that span
// several variables.
func (e *Env) Check(ok bool, name, format string, a ...any) {
	if !ok {
		v, _ := e.get(name)
		e.fail(name, v, format, a...)
	}
}

func contains(xs []string, x string) bool {
	for _, s := range xs {
		if s == x {
			return true
		}
	}
	return false
}

// Secret returns a secret variable ("" when unset) with its rules: at
// least minLen characters. A failure never quotes the value.
func (e *Env) Secret(name string, minLen int) string {
	v, ok := e.get(name)
	if ok && len(v) < minLen {
		e.failHidden(name, "must be at least %d characters", minLen)
	}
	return v
}

// LoopbackHost reports whether host (a name or an IP, no port) is this
// machine's loopback: localhost, 127.0.0.0/8 or ::1.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
