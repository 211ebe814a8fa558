package order

import (
	"errors"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestValidateCreate(t *testing.T) {
	good := func() CreateOrder { return validBody(KindCreate).(CreateOrder) }
	manyLines := good()
	for len(manyLines.Lines) <= MaxLines {
		manyLines.Lines = append(manyLines.Lines, manyLines.Lines[0])
	}
	tests := []struct {
		name   string
		mutate func(*CreateOrder)
		fields []string // expected violation paths; none means valid
	}{
		{"valid", func(*CreateOrder) {}, nil},
		{"matching total", func(c *CreateOrder) { c.ExpectedTotalMinor = ptr(int64(2400)) }, nil},
		{"free item", func(c *CreateOrder) { c.Lines[0].UnitPriceMinor = 0 }, nil},
		{"max quantity", func(c *CreateOrder) { c.Lines[0].Quantity = MaxQuantity }, nil},
		{"no lines", func(c *CreateOrder) { c.Lines = nil }, []string{"line_items"}},
		{"too many lines", func(c *CreateOrder) { *c = manyLines }, []string{"line_items"}},
		{"zero quantity", func(c *CreateOrder) { c.Lines[0].Quantity = 0 }, []string{"line_items[0].quantity"}},
		{"quantity over max", func(c *CreateOrder) { c.Lines[0].Quantity = MaxQuantity + 1 }, []string{"line_items[0].quantity"}},
		{"negative price", func(c *CreateOrder) { c.Lines[0].UnitPriceMinor = -1 }, []string{"line_items[0].unit_price_minor"}},
		{"huge price", func(c *CreateOrder) { c.Lines[0].UnitPriceMinor = MaxUnitPriceMinor + 1 }, []string{"line_items[0].unit_price_minor"}},
		{"unknown currency", func(c *CreateOrder) { c.Currency = "XYZ" }, []string{"currency_code"}},
		{"lowercase currency", func(c *CreateOrder) { c.Currency = "usd" }, []string{"currency_code"}},
		{"missing customer", func(c *CreateOrder) { c.CustomerID = "  " }, []string{"customer_id"}},
		{"long customer", func(c *CreateOrder) { c.CustomerID = strings.Repeat("x", MaxIDLen+1) }, []string{"customer_id"}},
		{"control char", func(c *CreateOrder) { c.Lines[0].Name = "a\x00b" }, []string{"line_items[0].name"}},
		{"bad utf8", func(c *CreateOrder) { c.Lines[0].SKU = "\xff" }, []string{"line_items[0].sku"}},
		{"non-character", func(c *CreateOrder) { c.Lines[0].Name = "mug\uffff" }, []string{"line_items[0].name"}},
		{"total mismatch", func(c *CreateOrder) { c.ExpectedTotalMinor = ptr(int64(1)) }, []string{"total_minor"}},
		{"bad region", func(c *CreateOrder) { c.ShippingAddress = &Address{RegionCode: "usa"} }, []string{"shipping_address.region_code"}},
		{"several at once", func(c *CreateOrder) {
			c.Currency = ""
			c.Lines = append(c.Lines, LineItem{SKU: "", Name: "n", Quantity: -1})
		}, []string{"currency_code", "line_items[1].sku", "line_items[1].quantity"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			c.Lines = append([]LineItem(nil), c.Lines...)
			tc.mutate(&c)
			err := Validate(c)
			if tc.fields == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate = %v, want *ValidationError", err)
			}
			var got []string
			for _, v := range ve.Violations {
				got = append(got, v.Field)
				if v.Description == "" {
					t.Errorf("%s has no description", v.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
				t.Errorf("violations on %v, want %v", got, tc.fields)
			}
		})
	}
}

func TestValidateCommands(t *testing.T) {
	tests := []struct {
		body   Body
		fields []string
	}{
		{PayOrder{Reference: "r", AmountMinor: 0}, nil},
		{PayOrder{Reference: "", AmountMinor: -5}, []string{"payment_reference", "amount_minor"}},
		{ShipOrder{Carrier: "DHL"}, []string{"tracking_number"}},
		{ShipOrder{TrackingNumber: "t"}, []string{"carrier"}},
		{DeliverOrder{}, nil},
		{CancelOrder{}, nil},
		{CancelOrder{Reason: strings.Repeat("r", MaxReasonLen+1)}, []string{"reason"}},
		{nil, []string{"command"}},
	}
	for _, tc := range tests {
		err := Validate(tc.body)
		var got []string
		var ve *ValidationError
		if errors.As(err, &ve) {
			for _, v := range ve.Violations {
				got = append(got, v.Field)
			}
		} else if err != nil {
			t.Fatalf("%T: %v", tc.body, err)
		}
		if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
			t.Errorf("Validate(%#v) violations %v, want %v", tc.body, got, tc.fields)
		}
	}
}

func TestValidateRequestID(t *testing.T) {
	for id, ok := range map[string]bool{
		"req-1": true, "6f1c7a3e-90b1-4c1e-8f53-1b1f4f4b2a11": true, strings.Repeat("a", 128): true,
		"": false, strings.Repeat("a", 129): false, "has space": false, "tab\t": false, "é": false,
	} {
		if err := ValidateRequestID(id); (err == nil) != ok {
			t.Errorf("ValidateRequestID(%q) = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestParseID(t *testing.T) {
	got, err := ParseID("6F1C7A3E-90B1-4C1E-8F53-1B1F4F4B2A11")
	if err != nil || got != "6f1c7a3e-90b1-4c1e-8f53-1b1f4f4b2a11" {
		t.Errorf("ParseID upper = %q, %v", got, err)
	}
	for _, bad := range []string{"", "o-1", "{6f1c7a3e-90b1-4c1e-8f53-1b1f4f4b2a11}", "urn:uuid:6f1c7a3e-90b1-4c1e-8f53-1b1f4f4b2a11"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestStateRoundTrip(t *testing.T) {
	for _, s := range States() {
		got, err := ParseState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseState("SHIPPING"); err == nil {
		t.Error("ParseState accepted an unknown state")
	}
}
