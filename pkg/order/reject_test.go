package order

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Every free-text field of every command refuses what PostgreSQL (NUL,
// invalid UTF-8) or SQS (control characters) cannot carry.
func TestValidateRefusesUnstorableText(t *testing.T) {
	t.Parallel()
	valid := func() CreateOrder {
		return CreateOrder{CustomerID: "c-1", Currency: "USD",
			Lines:           []LineItem{{SKU: "S", Name: "N", Quantity: 1, UnitPriceMinor: 1}},
			ShippingAddress: &Address{Recipient: "R", AddressLines: []string{"A"}, Locality: "L", AdministrativeArea: "AA", PostalCode: "P", RegionCode: "DE"},
		}
	}
	set := map[string]func(string) Body{
		"customer_id":                       func(s string) Body { c := valid(); c.CustomerID = s; return c },
		"currency_code":                     func(s string) Body { c := valid(); c.Currency = s; return c },
		"line_items[0].sku":                 func(s string) Body { c := valid(); c.Lines[0].SKU = s; return c },
		"line_items[0].name":                func(s string) Body { c := valid(); c.Lines[0].Name = s; return c },
		"shipping_address.recipient":        func(s string) Body { c := valid(); c.ShippingAddress.Recipient = s; return c },
		"shipping_address.address_lines[0]": func(s string) Body { c := valid(); c.ShippingAddress.AddressLines[0] = s; return c },
		"shipping_address.locality":         func(s string) Body { c := valid(); c.ShippingAddress.Locality = s; return c },
		"shipping_address.administrative_area": func(s string) Body {
			c := valid()
			c.ShippingAddress.AdministrativeArea = s
			return c
		},
		"shipping_address.postal_code": func(s string) Body { c := valid(); c.ShippingAddress.PostalCode = s; return c },
		"shipping_address.region_code": func(s string) Body { c := valid(); c.ShippingAddress.RegionCode = s; return c },
		"payment_reference":            func(s string) Body { return PayOrder{Reference: s, AmountMinor: 1} },
		"carrier":                      func(s string) Body { return ShipOrder{Carrier: s, TrackingNumber: "T"} },
		"tracking_number":              func(s string) Body { return ShipOrder{Carrier: "C", TrackingNumber: s} },
		"reason":                       func(s string) Body { return CancelOrder{Reason: s} },
	}
	if err := Validate(valid()); err != nil {
		t.Fatalf("the valid create: %v", err)
	}
	for field, body := range set {
		for _, bad := range []string{"D\x00", "D\xff", "D\x1b"} {
			if err := Validate(body(bad)); err == nil || !strings.Contains(err.Error(), field+":") {
				t.Errorf("%s = %q: %v, want a violation on %s", field, bad, err, field)
			}
		}
	}
}

// A create carrying NUL or invalid UTF-8 becomes a REJECTED order whose
// text PostgreSQL will store: each offending byte is U+FFFD, then the
// text is cut to the column's length.
func TestRejectCreateStoresSafeText(t *testing.T) {
	t.Parallel()
	create := CreateOrder{
		CustomerID: "cust\x00omer-\xff\xfe-1",
		Currency:   "\x00\xffUSD",
		Lines:      []LineItem{{SKU: "S", Name: "N", Quantity: 1, UnitPriceMinor: 1}},
	}
	d := Decide(nil, Command{ID: "cmd-1", OrderID: "o-1", Actor: Actor{ID: "service:storefront"}, Body: create}, now)
	if d.Order == nil || d.Order.State != StateRejected || d.Err == nil {
		t.Fatalf("decision %+v, want a REJECTED order", d)
	}
	if got, want := d.Order.CustomerID, "cust\uFFFDomer-\uFFFD-1"; got != want {
		t.Errorf("customer id %q, want %q", got, want)
	}
	if got, want := d.Order.Currency, "\uFFFD\uFFFDU"; got != want {
		t.Errorf("currency %q, want %q", got, want)
	}
	for name, s := range map[string]string{"rejection reason": d.Order.RejectionReason, "event reason": d.Event.Reason} {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 0) || !strings.Contains(s, "customer_id") {
			t.Errorf("%s %q: want valid UTF-8 without NUL, naming customer_id", name, s)
		}
	}

	// Replacing before cutting: the cut never splits a character, and
	// counts characters, not bytes.
	long := strings.Repeat("\xff", MaxIDLen+10)
	d = RejectCreate(Command{ID: "cmd-2", OrderID: "o-2"}, CreateOrder{CustomerID: long}, now, &PreconditionError{Reason: "x\x00y"})
	if got := d.Order.CustomerID; got != "\uFFFD" {
		t.Errorf("a run of invalid bytes became %q, want one U+FFFD", got)
	}
	long = strings.Repeat("a\x00", MaxIDLen)
	d = RejectCreate(Command{ID: "cmd-3", OrderID: "o-3"}, CreateOrder{CustomerID: long}, now, &PreconditionError{Reason: "x\x00y"})
	if got := d.Order.CustomerID; utf8.RuneCountInString(got) != MaxIDLen || strings.ContainsRune(got, 0) || !utf8.ValidString(got) {
		t.Errorf("long customer id became %q", got)
	}
	if d.Order.RejectionReason != "x\uFFFDy" || d.Event.Reason != "x\uFFFDy" {
		t.Errorf("reason %q / %q", d.Order.RejectionReason, d.Event.Reason)
	}
}
