package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderstore"
)

func TestParseFilter(t *testing.T) {
	t.Parallel()
	jan, feb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	state := func(op string, s order.State) orderstore.Cond {
		return orderstore.Compare{Field: "state", Op: op, Value: s}
	}
	customer := func(op, id string) orderstore.Cond {
		return orderstore.Compare{Field: "customer_id", Op: op, Value: id}
	}
	created := func(op string, t time.Time) orderstore.Cond {
		return orderstore.Compare{Field: "create_time", Op: op, Value: t}
	}
	for _, tc := range []struct {
		filter string
		want   orderstore.Cond
	}{
		{"", nil},
		// The old filter's syntax: a lower-case and, unquoted one-word
		// values (a time, though AIP-160 would split it at each "-").
		{`state = PAID AND customer_id = "c 1" and create_time >= "2026-01-01T00:00:00Z" AND create_time<2026-02-01T00:00:00Z`,
			orderstore.And{state("=", order.StatePaid), customer("=", "c 1"), created(">=", jan), created("<", feb)}},
		{`customer_id = "Smith AND Sons" AND state = CREATED`, orderstore.And{customer("=", "Smith AND Sons"), state("=", order.StateCreated)}},
		{`customer_id = c-1`, customer("=", "c-1")},
		{`customer_id = 123`, customer("=", "123")},
		{`state = "PAID"`, state("=", order.StatePaid)},
		{`create_time > timestamp("2026-01-01T00:00:00Z")`, created(">", jan)},
		// AIP-160 beyond conjunctions: OR binds tighter than AND,
		// parentheses group, NOT and - negate.
		{`state = PAID OR state = SHIPPED AND customer_id = "c-1"`,
			orderstore.And{orderstore.Or{state("=", order.StatePaid), state("=", order.StateShipped)}, customer("=", "c-1")}},
		{`(state = PAID OR state = SHIPPED) AND NOT customer_id = c-1`,
			orderstore.And{orderstore.Or{state("=", order.StatePaid), state("=", order.StateShipped)}, orderstore.Not{Cond: customer("=", "c-1")}}},
		{`-state = PAID`, orderstore.Not{Cond: state("=", order.StatePaid)}},
		{`customer_id = "a" OR (customer_id = "b" OR state = PAID)`, orderstore.Or{customer("=", "a"), customer("=", "b"), state("=", order.StatePaid)}},
		// Refused by the old filter for want of NOT, now what they say.
		{"state != PAID", state("!=", order.StatePaid)},
		{"state = PAID AND state = CREATED", orderstore.And{state("=", order.StatePaid), state("=", order.StateCreated)}},
	} {
		got, err := parseFilter(tc.filter)
		if err != nil {
			t.Errorf("parseFilter(%q): %v", tc.filter, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseFilter(%q) =\n %#v, want\n %#v", tc.filter, got, tc.want)
		}
	}
}

// What a filter cannot say is refused with a message naming the problem.
func TestParseFilterErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ filter, want string }{
		{"total_minor > 5", `cannot filter on "total_minor"; use state, customer_id or create_time`},
		{`payment.reference = "r"`, `cannot filter on "payment.reference"`},
		{"PAID = state", `cannot filter on "PAID"`},
		{"state", "state is a field, not a condition"},
		{"state = SHIPPING", `state: unknown state "SHIPPING"`},
		{"state = STATE_UNSPECIFIED", `unknown state "STATE_UNSPECIFIED"`},
		{"state = 5", "state takes a state name"},
		{`customer_id > "a"`, "customer_id supports only = and !="},
		{"create_time = 2026-01-01T00:00:00Z", "create_time supports <, <=, > and >="},
		{"create_time > yesterday", `create_time: "yesterday" is not an RFC 3339 time`},
		{"customer_id = a b", "join conditions with AND or OR"},
		{`state = PAID customer_id = "c"`, "join conditions with AND or OR"},
		{`customer_id:"c"`, `the ":" (has) operator is not supported`},
		{"foo(1)", `unknown function "foo"`},
		{`NOT "x"`, "must be a condition"},
		{`customer_id = "unterminated`, "cannot parse at column 15: unterminated string"},
		{"state = PAID AND (", "cannot parse at column 19: the filter ends too soon"},
		{"state = PAID)", "cannot parse at column 13"},
	} {
		_, err := parseFilter(tc.filter)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseFilter(%q) = %v, want an error with %q", tc.filter, err, tc.want)
		}
	}
}

// A filter is bounded before it is parsed: the parser recurses per level
// of nesting, and 400,000 parentheses (800 KB) overflowed the stack and
// killed the process. Within the bound, the deepest nesting parses.
func TestFilterSizeIsBoundedBeforeParsing(t *testing.T) {
	t.Parallel()
	term := `state = PAID`
	depth := (maxFilterBytes - len(term)) / 2
	deepest := strings.Repeat("(", depth) + term + strings.Repeat(")", depth)
	if c, err := parseFilter(deepest); err != nil || c == nil {
		t.Errorf("%d nested levels (%d bytes): %v, %v", depth, len(deepest), c, err)
	}
	for _, f := range []string{
		strings.Repeat("(", 400000) + term + strings.Repeat(")", 400000),
		deepest + " ",
		strings.Repeat(`customer_id = "c" OR `, maxFilterBytes/20) + term,
	} {
		_, err := parseFilter(f)
		if want := fmt.Sprintf("is %d bytes; at most %d are accepted", len(f), maxFilterBytes); err == nil || err.Error() != want {
			t.Errorf("a filter of %d bytes: %v, want %q", len(f), err, want)
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
	t.Parallel()
	tokens := newPageTokens([]byte(strings.Repeat("k", 32)))
	req := &omsv1.ListOrdersRequest{Filter: "state = PAID", PageSize: 5}
	pos := listPosition{ID: "0b9e7a52-6f7e-4c1a-9a57-2f7f3c1e8d40", CreateTime: time.UnixMicro(5_000_001).UTC()}
	tok := tokens.seal(tokenListOrders, req, "service:a", pos.encode())

	// The same query, another page size: the position comes back.
	b, err := tokens.open(tokenListOrders, &omsv1.ListOrdersRequest{Filter: "state = PAID", PageSize: 50, PageToken: tok}, "service:a")
	if got, ok := decodeListPosition(b); err != nil || !ok || got != pos {
		t.Fatalf("round trip: %+v %v %v", got, ok, err)
	}
	altered := alterToken(t, tok)
	other := newPageTokens([]byte(strings.Repeat("x", 32))).seal(tokenListOrders, req, "service:a", pos.encode())
	for _, tc := range []struct {
		name, token, filter, principal string
		kind                           byte
		want                           error
	}{
		{"another filter", tok, "state = CREATED", "service:a", tokenListOrders, errTokenOtherQuery},
		{"another principal", tok, "state = PAID", "service:b", tokenListOrders, errTokenNotIssued},
		{"altered", altered, "state = PAID", "service:a", tokenListOrders, errTokenNotIssued},
		{"signed with another key", other, "state = PAID", "service:a", tokenListOrders, errTokenNotIssued},
		{"another list's", tok, "state = PAID", "service:a", tokenListOrderEvents, errTokenNotIssued},
		{"garbage", "!!!", "", "service:a", tokenListOrders, errTokenNotIssued},
		{"truncated", tok[:len(tok)-4], "state = PAID", "service:a", tokenListOrders, errTokenNotIssued},
		{"unsigned, as tokens used to be", "eyJxIjoiIiwicCI6eyJ0IjoiMjAyNi0wMS0wMVQwMDowMDowMFoiLCJpZCI6ImEifX0",
			"", "service:a", tokenListOrders, errTokenNotIssued},
	} {
		_, err := tokens.open(tc.kind, &omsv1.ListOrdersRequest{Filter: tc.filter, PageToken: tc.token}, tc.principal)
		if err != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// The key: configured, else derived from OPERATION_SECRET (and unlike
// it), else random for this process.
func TestPageTokenKey(t *testing.T) {
	t.Parallel()
	configured := []byte(strings.Repeat("p", 32))
	op := []byte(strings.Repeat("o", 32))
	if k := pageTokenKey(configured, op, nil); !bytes.Equal(k, configured) {
		t.Errorf("configured key not used: %x", k)
	}
	derived := pageTokenKey(nil, op, nil)
	if len(derived) != 32 || bytes.Equal(derived, op) || !bytes.Equal(derived, pageTokenKey(nil, op, nil)) {
		t.Errorf("derived key %x", derived)
	}
	var logged bytes.Buffer
	random := pageTokenKey(nil, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	if len(random) != 32 || bytes.Equal(random, derived) || !strings.Contains(logged.String(), "random key") {
		t.Errorf("random key %x, log %q", random, logged.String())
	}
}

// alterToken moves a token's position by one microsecond, keeping its
// signature: what a client editing a token would try.
func alterToken(t *testing.T, tok string) string {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 14 {
		t.Fatalf("token %q: %v", tok, err)
	}
	b[13] ^= 1 // the last byte of the position's time
	return base64.RawURLEncoding.EncodeToString(b)
}
