package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
)

func TestParseFilter(t *testing.T) {
	q, err := parseFilter(`state = PAID AND customer_id = "c 1" and create_time >= "2026-01-01T00:00:00Z" AND create_time<2026-02-01T00:00:00Z`)
	if err != nil {
		t.Fatal(err)
	}
	if q.State != order.StatePaid || q.CustomerID != "c 1" || len(q.CreateTime) != 2 ||
		q.CreateTime[0].Op != ">=" || q.CreateTime[1].Op != "<" ||
		!q.CreateTime[1].Time.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("parsed %+v", q)
	}
	q, err = parseFilter(`customer_id = "Smith AND Sons" AND state = CREATED`)
	if err != nil || q.CustomerID != "Smith AND Sons" || q.State != order.StateCreated {
		t.Errorf("AND inside quotes: %+v, %v", q, err)
	}
	for _, bad := range []string{
		"state = SHIPPING", "state != PAID", "state = PAID AND state = CREATED", "total_minor > 5",
		"create_time = 2026-01-01T00:00:00Z", "create_time > yesterday", "customer_id = a b", `customer_id = "unterminated`,
		"state", "state = STATE_UNSPECIFIED",
	} {
		if _, err := parseFilter(bad); err == nil {
			t.Errorf("parseFilter(%q) accepted", bad)
		}
	}
}

func TestMask(t *testing.T) {
	full := &omsv1.Order{
		Name: "orders/x", Id: "x", CustomerId: "c", State: omsv1.Order_PAID, Version: 3,
		Payment:   &omsv1.Payment{Reference: "r", AmountMinor: 5, PayTime: timestamppb.Now()},
		LineItems: []*omsv1.LineItem{{Sku: "s", Name: "n", Quantity: 1}},
	}
	m, err := parseMask(&fieldmaskpb.FieldMask{Paths: []string{"id", "state", "payment.reference", "lineItems"}})
	if err != nil {
		t.Fatal(err)
	}
	m.apply(full)
	if full.Name != "" || full.CustomerId != "" || full.Version != 0 {
		t.Errorf("unmasked fields kept: %v", full)
	}
	if full.Id != "x" || full.State != omsv1.Order_PAID || full.Payment.Reference != "r" || full.Payment.AmountMinor != 0 ||
		full.Payment.PayTime != nil || full.LineItems[0].Sku != "s" || full.LineItems[0].Name != "n" {
		t.Errorf("masked result %v", full)
	}
	cols := map[string]bool{}
	for _, c := range m.columns() {
		cols[c] = true
	}
	if len(cols) != 4 || !cols["payment"] || !cols["line_items"] {
		t.Errorf("columns %v", m.columns())
	}
	for _, bad := range []string{"password", "line_items.sku", "payment.nope"} {
		if _, err := parseMask(&fieldmaskpb.FieldMask{Paths: []string{bad}}); err == nil {
			t.Errorf("read mask %q accepted", bad)
		}
	}
	if m, err := parseMask(&fieldmaskpb.FieldMask{Paths: []string{"*"}}); err != nil || m.columns() != nil {
		t.Error("* is not the full mask")
	}
}

func TestPageTokens(t *testing.T) {
	tok := encodeToken("state = PAID", listToken{ID: "a", CreateTime: time.Unix(5, 0).UTC()})
	var got listToken
	if err := decodeToken(tok, "state = PAID", &got); err != nil || got.ID != "a" || got.CreateTime.Unix() != 5 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if err := decodeToken(tok, "state = CREATED", &got); err == nil {
		t.Error("token accepted for another filter")
	}
	if err := decodeToken("!!!", "", &got); err == nil {
		t.Error("garbage token accepted")
	}
}
