package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/omsdev/oms/pkg/orderstore"
)

// The filter language (a subset of AIP-160): terms joined by AND, each
// "field op value"; values may be quoted.
//
//	state = PAID
//	customer_id = "c-1"
//	create_time >= "2026-01-01T00:00:00Z"   (also >, <, <=)
var termRE = regexp.MustCompile(`^\s*([a-z_]+)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$`)

// splitAnd splits f on the word AND (any case) outside double quotes.
func splitAnd(f string) []string {
	var terms []string
	start, quoted := 0, false
	for i := 0; i < len(f); i++ {
		switch c := f[i]; {
		case c == '\\' && quoted:
			i++ // an escaped character inside quotes
		case c == '"':
			quoted = !quoted
		case !quoted && i+5 <= len(f) && isSpace(f[i]) && strings.EqualFold(f[i+1:i+4], "and") && isSpace(f[i+4]):
			terms = append(terms, f[start:i])
			start = i + 5
			i += 4
		}
	}
	return append(terms, f[start:])
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func parseFilter(f string) (orderstore.ListQuery, error) {
	var q orderstore.ListQuery
	if strings.TrimSpace(f) == "" {
		return q, nil
	}
	if !utf8.ValidString(f) {
		return q, fmt.Errorf("must be valid UTF-8")
	}
	seen := map[string]bool{}
	for _, term := range splitAnd(strings.TrimSpace(f)) {
		m := termRE.FindStringSubmatch(term)
		if m == nil {
			return q, fmt.Errorf("cannot parse %q: want field op value, e.g. state = PAID", term)
		}
		field, op, raw := m[1], m[2], m[3]
		val, err := unquote(raw)
		if err != nil {
			return q, fmt.Errorf("%s: %v", field, err)
		}
		switch field {
		case "state", "customer_id":
			if op != "=" {
				return q, fmt.Errorf("%s supports only =", field)
			}
			if seen[field] {
				return q, fmt.Errorf("%s appears twice", field)
			}
			seen[field] = true
			if field == "customer_id" {
				if err := checkCustomerID(val); err != nil {
					return q, fmt.Errorf("customer_id %v", err)
				}
				q.CustomerID = val
				break
			}
			if q.State, err = parseStateName(val); err != nil {
				return q, fmt.Errorf("state: %v", err)
			}
		case "create_time":
			if op == "=" || op == "!=" {
				return q, fmt.Errorf("create_time supports <, <=, > and >=")
			}
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return q, fmt.Errorf("create_time: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", val)
			}
			if !inTimestampRange(t) {
				return q, fmt.Errorf("create_time: %q is outside %s", val, timestampRange)
			}
			q.CreateTime = append(q.CreateTime, orderstore.TimeBound{Op: op, Time: t})
		default:
			return q, fmt.Errorf("cannot filter on %q; use state, customer_id or create_time", field)
		}
	}
	return q, nil
}

// checkCustomerID refuses what no stored customer id can be. An empty id
// would mean "any customer" to the store, and PostgreSQL refuses NUL and
// invalid UTF-8 in text outright.
func checkCustomerID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("must not be empty")
	case !utf8.ValidString(id):
		return fmt.Errorf("must be valid UTF-8")
	case strings.IndexFunc(id, unicode.IsControl) >= 0:
		return fmt.Errorf("must not contain control characters")
	}
	return nil
}

// timestampRange is the span of google.protobuf.Timestamp, which the API's
// times are; PostgreSQL has no year 0, so earlier times cannot even be
// compared with.
const timestampRange = "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"

func inTimestampRange(t time.Time) bool { return timestamppb.New(t).IsValid() }

func unquote(s string) (string, error) {
	if strings.HasPrefix(s, `"`) {
		v, err := strconv.Unquote(s)
		if err != nil {
			return "", fmt.Errorf("bad quoted value %s", s)
		}
		return v, nil
	}
	if s == "" || strings.ContainsAny(s, ` "`) {
		return "", fmt.Errorf("value %q must be one word or quoted", s)
	}
	return s, nil
}
