package orderstore

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/order"
)

// The reads scan rows by hand: each column into its field through a small
// database/sql Scanner for the value pgdriver returns, and the two JSON
// values a read gets (the shipping address, a page's line items) by a
// parser for the shape PostgreSQL writes, with encoding/json for anything
// else.

// dest is where column col of r scans to; every column of orderRow has
// one (TestEveryOrderColumnIsRead).
func (r *orderRow) dest(col string) any {
	switch col {
	case "id":
		return nullString{&r.ID}
	case "customer_id":
		return nullString{&r.CustomerID}
	case "state":
		return nullString{&r.State}
	case "currency_code":
		return nullString{&r.CurrencyCode}
	case "subtotal_minor":
		return nullInt{&r.SubtotalMinor}
	case "total_minor":
		return nullInt{&r.TotalMinor}
	case "shipping_address":
		return addressValue{&r.ShippingAddress}
	case "payment_reference":
		return nullString{&r.PaymentReference}
	case "payment_amount_minor":
		return intPtr{&r.PaymentAmountMinor}
	case "pay_time":
		return nullTime{&r.PayTime}
	case "carrier":
		return nullString{&r.Carrier}
	case "tracking_number":
		return nullString{&r.TrackingNumber}
	case "ship_time":
		return nullTime{&r.ShipTime}
	case "deliver_time":
		return nullTime{&r.DeliverTime}
	case "cancel_reason":
		return stringPtr{&r.CancelReason}
	case "cancel_time":
		return nullTime{&r.CancelTime}
	case "refund_due":
		return nullBool{&r.RefundDue}
	case "rejection_reason":
		return nullString{&r.RejectionReason}
	case "created_by":
		return nullString{&r.CreatedBy}
	case "version":
		return nullInt{&r.Version}
	case "last_event_seq":
		return nullInt{&r.LastEventSeq}
	case "create_time":
		return nullTime{&r.CreateTime}
	case "update_time":
		return nullTime{&r.UpdateTime}
	}
	return unknownColumn(col)
}

// Scanners for the values pgdriver returns: string for text, []byte for
// uuid and jsonb, int64, bool, time.Time, nil for NULL. Each holds one
// pointer, so passing one as an interface does not allocate.

type nullString struct{ p *string }

func (d nullString) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = ""
	case string:
		*d.p = v
	case []byte:
		*d.p = string(v)
	default:
		return fmt.Errorf("cannot read %T as text", v)
	}
	return nil
}

type stringPtr struct{ p **string }

func (d stringPtr) Scan(v any) error {
	if v == nil {
		*d.p = nil
		return nil
	}
	var s string
	if err := (nullString{&s}).Scan(v); err != nil {
		return err
	}
	*d.p = &s
	return nil
}

type nullInt struct{ p *int64 }

func (d nullInt) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = 0
	case int64:
		*d.p = v
	default:
		return fmt.Errorf("cannot read %T as an integer", v)
	}
	return nil
}

type intPtr struct{ p **int64 }

func (d intPtr) Scan(v any) error {
	if v == nil {
		*d.p = nil
		return nil
	}
	n, ok := v.(int64)
	if !ok {
		return fmt.Errorf("cannot read %T as an integer", v)
	}
	*d.p = &n
	return nil
}

type nullBool struct{ p *bool }

func (d nullBool) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = false
	case bool:
		*d.p = v
	default:
		return fmt.Errorf("cannot read %T as a boolean", v)
	}
	return nil
}

// nullTime reads a timestamptz, as the driver parsed it or as text (see
// timeColumns).
type nullTime struct{ p *time.Time }

func (d nullTime) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = time.Time{}
	case time.Time:
		*d.p = v
	case string:
		t, ok := parseUTCTime(v)
		if !ok {
			var err error
			if t, err = pgdriver.ParseTime(v); err != nil {
				return err
			}
		}
		*d.p = t
	default:
		return fmt.Errorf("cannot read %T as a time", v)
	}
	return nil
}

// parseUTCTime reads the form PostgreSQL writes a timestamptz in when its
// TimeZone is UTC, "2006-01-02 15:04:05.999999+00", to what
// pgdriver.ParseTime makes of it; ok is false for anything else, which the
// caller leaves to ParseTime.
func parseUTCTime(s string) (time.Time, bool) {
	const base = len("2006-01-02 15:04:05")
	if len(s) < base+3 || s[4] != '-' || s[7] != '-' || s[10] != ' ' || s[13] != ':' || s[16] != ':' || s[len(s)-3:] != "+00" {
		return time.Time{}, false
	}
	num := func(i, n int) (int, bool) {
		v := 0
		for _, c := range []byte(s[i : i+n]) {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 2)
	day, ok3 := num(8, 2)
	hour, ok4 := num(11, 2)
	minute, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 ||
		day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return time.Time{}, false
	}
	nanos := 0
	if frac := s[base : len(s)-3]; frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		n, ok := num(base+1, len(frac)-1)
		if !ok {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			n *= 10
		}
		nanos = n
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nanos, time.UTC), true
}

// jsonValue reads a jsonb column into a *T: NULL (and JSON null) is nil.
type jsonValue[T any] struct{ p **T }

func (d jsonValue[T]) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		*d.p = nil
		return nil
	case []byte:
		*d.p = nil
		return json.Unmarshal(v, d.p)
	case string:
		*d.p = nil
		return json.Unmarshal([]byte(v), d.p)
	}
	return fmt.Errorf("cannot read %T as JSON", v)
}

// addressValue reads the shipping_address jsonb. The object PostgreSQL
// sends (keys we write, string values without escapes) is read by hand;
// anything else is left to encoding/json, which reads it as before.
type addressValue struct{ p **order.Address }

func (d addressValue) Scan(v any) error {
	if b, ok := v.([]byte); ok {
		if a, ok := parseAddress(b); ok {
			*d.p = a
			return nil
		}
	}
	return jsonValue[order.Address]{d.p}.Scan(v)
}

// parseAddress reads {"key": "value", "address_lines": ["line", ...]}.
func parseAddress(b []byte) (*order.Address, bool) {
	p := jsonScan{b: b}
	a := &order.Address{}
	if !p.byte('{') {
		return nil, false
	}
	if p.byte('}') {
		return a, p.end()
	}
	for {
		key, ok := p.raw()
		if !ok || !p.byte(':') {
			return nil, false
		}
		var field *string
		switch string(key) {
		case "recipient":
			field = &a.Recipient
		case "locality":
			field = &a.Locality
		case "administrative_area":
			field = &a.AdministrativeArea
		case "postal_code":
			field = &a.PostalCode
		case "region_code":
			field = &a.RegionCode
		case "address_lines":
			if !p.byte('[') {
				return nil, false
			}
			lines := []string{}
			if !p.byte(']') {
				for {
					l, ok := p.str()
					if !ok {
						return nil, false
					}
					lines = append(lines, l)
					if p.byte(']') {
						break
					}
					if !p.byte(',') {
						return nil, false
					}
				}
			}
			a.AddressLines = lines
		default:
			return nil, false
		}
		if field != nil {
			if *field, ok = p.str(); !ok {
				return nil, false
			}
		}
		if p.byte('}') {
			return a, p.end()
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}

// jsonScan is parseAddress's cursor.
type jsonScan struct {
	b []byte
	i int
}

func (p *jsonScan) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// byte consumes c, after white space, if it is next.
func (p *jsonScan) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string without escapes or control characters.
func (p *jsonScan) str() (string, bool) {
	b, ok := p.raw()
	return string(b), ok
}

// raw is str without the copy: the string's bytes in b.
func (p *jsonScan) raw() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start, ascii := p.i, true
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// int reads an integer of bits bits written as JSON writes one.
func (p *jsonScan) int(bits int) (int64, bool) {
	p.space()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == digits || (p.b[digits] == '0' && p.i-digits > 1) {
		return 0, false // no digits, or a leading zero
	}
	n, err := strconv.ParseInt(string(p.b[start:p.i]), 10, bits)
	return n, err == nil
}

func (p *jsonScan) end() bool {
	p.space()
	return p.i == len(p.b)
}

// unknownColumn fails the scan of a column read.go does not know.
type unknownColumn string

func (c unknownColumn) Scan(any) error {
	return fmt.Errorf("orderstore: no destination for column %q", string(c))
}

// linesColumn is an order's line items, in order, as one JSON array of
// [sku, name, quantity, unit_price_minor] arrays (NULL for none): an order
// or a page of them and their lines is one statement and a row per order.
const linesColumn = `(SELECT json_agg(json_build_array(l.sku, l.name, l.quantity, l.unit_price_minor) ORDER BY l.line_no)
	FROM order_line_items AS l WHERE l.order_id = o.id) AS line_items`

// linesValue reads linesColumn; no lines is an empty list.
type linesValue struct{ p *[]order.LineItem }

func (d linesValue) Scan(v any) error {
	var b []byte
	switch v := v.(type) {
	case nil:
		*d.p = []order.LineItem{}
		return nil
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("cannot read %T as line items", v)
	}
	if lines, ok := parseLines(b); ok {
		*d.p = lines
		return nil
	}
	var arrays [][]json.RawMessage
	if err := json.Unmarshal(b, &arrays); err != nil {
		return fmt.Errorf("line items: %w", err)
	}
	lines := make([]order.LineItem, len(arrays))
	for i, a := range arrays {
		if len(a) != 4 {
			return fmt.Errorf("line items: %d values in a line", len(a))
		}
		l := &lines[i]
		for j, dst := range []any{&l.SKU, &l.Name, &l.Quantity, &l.UnitPriceMinor} {
			if err := json.Unmarshal(a[j], dst); err != nil {
				return fmt.Errorf("line items: %w", err)
			}
		}
	}
	*d.p = lines
	return nil
}

// parseLines reads [["sku", "name", 2, 1200], ...] when its strings have
// no escapes (linesValue falls back to encoding/json otherwise).
func parseLines(b []byte) ([]order.LineItem, bool) {
	p := jsonScan{b: b}
	if !p.byte('[') {
		return nil, false
	}
	lines := make([]order.LineItem, 0, 4)
	if p.byte(']') {
		return lines, p.end()
	}
	for {
		var l order.LineItem
		var ok bool
		if !p.byte('[') {
			return nil, false
		}
		if l.SKU, ok = p.str(); !ok || !p.byte(',') {
			return nil, false
		}
		if l.Name, ok = p.str(); !ok || !p.byte(',') {
			return nil, false
		}
		q, ok := p.int(32)
		if !ok || !p.byte(',') {
			return nil, false
		}
		l.Quantity = int32(q)
		if l.UnitPriceMinor, ok = p.int(64); !ok || !p.byte(']') {
			return nil, false
		}
		lines = append(lines, l)
		if p.byte(']') {
			return lines, p.end()
		}
		if !p.byte(',') {
			return nil, false
		}
	}
}
