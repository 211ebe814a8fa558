package config

import (
	"net/url"
	"regexp"
)

// HiddenURL stands for a value Redact cannot take apart safely.
const HiddenURL = "<unparseable URL hidden>"

// kvPassword finds password and sslpassword in libpq's key=value form,
// quoted ('se cret', with \' escapes) or not.
var kvPassword = regexp.MustCompile(`(?i)\b((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

// Redact hides the passwords of a URL (its user info and any password or
// sslpassword parameter) so errors and logs never carry them. A value in
// libpq's key=value form has its password values replaced. A value that
// does not parse, or has an @ outside the user info (an unescaped @ in a
// password), becomes HiddenURL as a whole.
func Redact(raw string) string {
	if isKeyValue(raw) {
		return kvPassword.ReplaceAllString(raw, "${1}xxxxx")
	}
	u, err := url.Parse(raw)
	if err != nil || strayAt(u) {
		return HiddenURL
	}
	if u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return HiddenURL
		}
		found := false
		for k := range q {
			if kvPassword.MatchString(k + "=") {
				q[k] = []string{"xxxxx"}
				found = true
			}
		}
		if found {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}
