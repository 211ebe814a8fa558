package order

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on what a command may carry. They bound storage and keep every
// total below 2^63: MaxLines * MaxQuantity * MaxUnitPriceMinor = 1e18.
const (
	MaxLines          = 100
	MaxQuantity       = 10_000
	MaxUnitPriceMinor = 1_000_000_000_000
	MaxIDLen          = 128
	MaxSKULen         = 64
	MaxNameLen        = 200
	MaxAddressLines   = 5
	MaxAddressLineLen = 200
	MaxReferenceLen   = 128
	MaxCarrierLen     = 64
	MaxTrackingLen    = 128
	MaxReasonLen      = 500
)

// FieldViolation names one invalid field by its path in the request, such
// as "line_items[2].quantity".
type FieldViolation struct {
	Field       string
	Description string
}

func (v FieldViolation) String() string { return v.Field + ": " + v.Description }

// ValidationError lists every problem found, not just the first.
type ValidationError struct{ Violations []FieldViolation }

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return "invalid command: " + strings.Join(parts, "; ")
}

func (e *ValidationError) Is(target error) bool { return target == ErrRejected }

// Prefixed returns a copy whose field paths start with prefix, for an edge
// whose request nests the domain fields (such as "order.").
func (e *ValidationError) Prefixed(prefix string) *ValidationError {
	out := &ValidationError{Violations: make([]FieldViolation, len(e.Violations))}
	for i, v := range e.Violations {
		out.Violations[i] = FieldViolation{prefix + v.Field, v.Description}
	}
	return out
}

type violations []FieldViolation

func (vs *violations) add(field, format string, a ...any) {
	*vs = append(*vs, FieldViolation{field, fmt.Sprintf(format, a...)})
}

func (vs violations) err() error {
	if len(vs) == 0 {
		return nil
	}
	return &ValidationError{Violations: vs}
}

// text checks a free-text field: valid UTF-8, no control characters, at
// most max characters, and present when required.
func (vs *violations) text(field, s string, required bool, max int) {
	switch {
	case !utf8.ValidString(s):
		vs.add(field, "must be valid UTF-8")
	case required && strings.TrimSpace(s) == "":
		vs.add(field, "is required")
	case utf8.RuneCountInString(s) > max:
		vs.add(field, "must be at most %d characters", max)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		vs.add(field, "must not contain control characters")
	case strings.ContainsAny(s, "\uFFFE\uFFFF"):
		// Unicode non-characters: SQS refuses message bodies holding them.
		vs.add(field, "must not contain the non-characters U+FFFE or U+FFFF")
	}
}

// Validate checks a command body on its own, without the order it applies
// to. Ingest calls it before enqueueing; Decide calls it again because the
// queue is a trust boundary.
func Validate(b Body) error {
	var vs violations
	switch b := b.(type) {
	case CreateOrder:
		validateCreate(&vs, b)
	case PayOrder:
		vs.text("payment_reference", b.Reference, true, MaxReferenceLen)
		if b.AmountMinor < 0 {
			vs.add("amount_minor", "must not be negative")
		}
	case ShipOrder:
		vs.text("carrier", b.Carrier, true, MaxCarrierLen)
		vs.text("tracking_number", b.TrackingNumber, true, MaxTrackingLen)
	case DeliverOrder:
	case CancelOrder:
		vs.text("reason", b.Reason, false, MaxReasonLen)
	case nil:
		vs.add("command", "is required")
	default:
		vs.add("command", "unknown command %T", b)
	}
	return vs.err()
}

func validateCreate(vs *violations, c CreateOrder) {
	vs.text("customer_id", c.CustomerID, true, MaxIDLen)
	if !KnownCurrency(c.Currency) {
		vs.add("currency_code", "must be an ISO 4217 currency code, got %q", c.Currency)
	}
	switch {
	case len(c.Lines) == 0:
		vs.add("line_items", "at least one line item is required")
	case len(c.Lines) > MaxLines:
		vs.add("line_items", "at most %d line items are allowed", MaxLines)
	}
	for i, l := range c.Lines {
		if i >= MaxLines {
			break
		}
		p := fmt.Sprintf("line_items[%d].", i)
		vs.text(p+"sku", l.SKU, true, MaxSKULen)
		vs.text(p+"name", l.Name, true, MaxNameLen)
		if l.Quantity < 1 || l.Quantity > MaxQuantity {
			vs.add(p+"quantity", "must be between 1 and %d, got %d", MaxQuantity, l.Quantity)
		}
		if l.UnitPriceMinor < 0 || l.UnitPriceMinor > MaxUnitPriceMinor {
			vs.add(p+"unit_price_minor", "must be between 0 and %d, got %d", int64(MaxUnitPriceMinor), l.UnitPriceMinor)
		}
	}
	if a := c.ShippingAddress; a != nil {
		vs.text("shipping_address.recipient", a.Recipient, false, MaxNameLen)
		if len(a.AddressLines) > MaxAddressLines {
			vs.add("shipping_address.address_lines", "at most %d lines are allowed", MaxAddressLines)
		}
		for i, l := range a.AddressLines {
			vs.text(fmt.Sprintf("shipping_address.address_lines[%d]", i), l, false, MaxAddressLineLen)
		}
		vs.text("shipping_address.locality", a.Locality, false, MaxNameLen)
		vs.text("shipping_address.administrative_area", a.AdministrativeArea, false, MaxNameLen)
		vs.text("shipping_address.postal_code", a.PostalCode, false, 32)
		if !isRegionCode(a.RegionCode) {
			vs.add("shipping_address.region_code", "must be an ISO 3166-1 alpha-2 code, got %q", a.RegionCode)
		}
	}
	// Only a valid set of lines has a meaningful total to compare with.
	if c.ExpectedTotalMinor != nil && len(*vs) == 0 {
		if got := Subtotal(c.Lines); got != *c.ExpectedTotalMinor {
			vs.add("total_minor", "is %d but the line items add up to %d", *c.ExpectedTotalMinor, got)
		}
	}
}

// Subtotal sums the lines. Validated lines cannot overflow.
func Subtotal(lines []LineItem) int64 {
	var sum int64
	for _, l := range lines {
		sum += int64(l.Quantity) * l.UnitPriceMinor
	}
	return sum
}

func isRegionCode(s string) bool {
	return len(s) == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z'
}

// KnownCurrency reports whether code is an active ISO 4217 currency.
func KnownCurrency(code string) bool {
	return len(code) == 3 && strings.Contains(iso4217, " "+code+" ")
}

// Active ISO 4217 codes (2025 list).
const iso4217 = " AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL" +
	" BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN" +
	" ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR" +
	" ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL" +
	" MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN" +
	" PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP" +
	" STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV" +
	" WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG "
