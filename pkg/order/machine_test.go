package order

import (
	"errors"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func validBody(k Kind) Body {
	switch k {
	case KindCreate:
		return CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []LineItem{{SKU: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200}}}
	case KindPay:
		return PayOrder{Reference: "pay-1", AmountMinor: 2400}
	case KindShip:
		return ShipOrder{Carrier: "UPS", TrackingNumber: "1Z999"}
	case KindDeliver:
		return DeliverOrder{}
	case KindCancel:
		return CancelOrder{Reason: "changed my mind"}
	}
	panic(k)
}

// orderIn builds an order that reached state s the legal way.
func orderIn(t *testing.T, s State) *Order {
	t.Helper()
	if s == StateUnspecified {
		return nil
	}
	if s == StateRejected {
		d := Decide(nil, Command{ID: "c0", OrderID: "o-1", Body: CreateOrder{}}, now)
		return d.Order
	}
	path := map[State][]Kind{
		StateCreated:   {KindCreate},
		StatePaid:      {KindCreate, KindPay},
		StateShipped:   {KindCreate, KindPay, KindShip},
		StateDelivered: {KindCreate, KindPay, KindShip, KindDeliver},
		StateCancelled: {KindCreate, KindCancel},
	}[s]
	var o *Order
	for i, k := range path {
		d := Decide(o, Command{ID: string(rune('a' + i)), OrderID: "o-1", Body: validBody(k)}, now)
		if d.Err != nil {
			t.Fatalf("building %s: %s: %v", s, k, d.Err)
		}
		o = d.Order
	}
	if o.State != s {
		t.Fatalf("built %s, want %s", o.State, s)
	}
	return o
}

// TestDecideEveryPair applies every command in every state and checks the
// result against the lifecycle written out by hand, independently of the
// transition table.
func TestDecideEveryPair(t *testing.T) {
	legal := map[State]map[Kind]State{
		StateUnspecified: {KindCreate: StateCreated},
		StateCreated:     {KindPay: StatePaid, KindCancel: StateCancelled},
		StatePaid:        {KindShip: StateShipped, KindCancel: StateCancelled},
		StateShipped:     {KindDeliver: StateDelivered},
		StateDelivered:   {},
		StateCancelled:   {},
		StateRejected:    {},
	}
	for _, s := range States() {
		for _, k := range Kinds() {
			t.Run(s.String()+"/"+string(k), func(t *testing.T) {
				t.Parallel()
				cur := orderIn(t, s)
				var before Order
				if cur != nil {
					before = *cur
				}
				cmd := Command{ID: "cmd-x", OrderID: "o-1", Body: validBody(k)}
				d := Decide(cur, cmd, now.Add(time.Hour))
				want, ok := legal[s][k]
				if Allowed(s, k) != ok {
					t.Fatalf("Allowed(%s, %s) = %v, want %v", s, k, !ok, ok)
				}
				if d.Event.CommandID != "cmd-x" || d.Event.Command != k {
					t.Errorf("event names command %q/%q", d.Event.CommandID, d.Event.Command)
				}
				if !ok {
					var te *TransitionError
					if !errors.As(d.Err, &te) || te.State != s || te.Command != k {
						t.Fatalf("err = %v, want TransitionError{%s, %s}", d.Err, s, k)
					}
					if !errors.Is(d.Err, ErrRejected) {
						t.Error("transition error does not match ErrRejected")
					}
					if d.Order != nil {
						t.Error("rejected command changed the order")
					}
					if d.Event.Type != EventCommandRejected || d.Event.Reason == "" {
						t.Errorf("event = %+v, want a command.rejected with a reason", d.Event)
					}
					if cur != nil && (cur.Version != before.Version || cur.State != before.State) {
						t.Error("Decide mutated the current order")
					}
					return
				}
				if d.Err != nil {
					t.Fatalf("err = %v, want applied", d.Err)
				}
				if d.Order.State != want {
					t.Errorf("state = %s, want %s", d.Order.State, want)
				}
				if d.Order.Version != before.Version+1 || d.Event.OrderVersion != d.Order.Version {
					t.Errorf("version %d -> %d (event %d)", before.Version, d.Order.Version, d.Event.OrderVersion)
				}
				if d.Event.From != s || d.Event.To != want {
					t.Errorf("event %s -> %s, want %s -> %s", d.Event.From, d.Event.To, s, want)
				}
				if !d.Order.UpdateTime.Equal(now.Add(time.Hour)) {
					t.Errorf("update time %v", d.Order.UpdateTime)
				}
				if cur != nil && cur.State != before.State {
					t.Error("Decide mutated the current order")
				}
			})
		}
	}
}

func TestCancelPaidOrderRecordsRefundDue(t *testing.T) {
	for _, tc := range []struct {
		from   State
		refund bool
	}{{StateCreated, false}, {StatePaid, true}} {
		d := Decide(orderIn(t, tc.from), Command{ID: "x", Body: CancelOrder{Reason: "r"}}, now)
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		if got := d.Order.Cancellation.RefundDue; got != tc.refund {
			t.Errorf("cancel from %s: refund due = %v, want %v", tc.from, got, tc.refund)
		}
		if want := (CancelledPayload{Reason: "r", RefundDue: tc.refund}); d.Event.Payload != want {
			t.Errorf("event payload %#v, want %#v", d.Event.Payload, want)
		}
	}
}

// Each applied change carries the payload of its own event type, with
// money exact; the others carry none.
func TestEventPayloads(t *testing.T) {
	const big = 1<<53 + 1 // not representable as a float64
	create := CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []LineItem{
		{SKU: "A", Name: "a", Quantity: 9007, UnitPriceMinor: 1_000_000_000_000},
		{SKU: "B", Name: "b", Quantity: 1, UnitPriceMinor: 199_254_740_993},
	}}
	steps := []struct {
		body Body
		want Payload
	}{
		{create, CreatedPayload{CurrencyCode: "USD", TotalMinor: big, LineItems: 2}},
		{PayOrder{Reference: "pay-1", AmountMinor: big}, PaidPayload{PaymentReference: "pay-1", AmountMinor: big}},
		{ShipOrder{Carrier: "UPS", TrackingNumber: "1Z"}, ShippedPayload{Carrier: "UPS", TrackingNumber: "1Z"}},
		{DeliverOrder{}, nil},
		{CancelOrder{Reason: "late"}, nil}, // rejected: delivered orders cannot be cancelled
	}
	var o *Order
	for i, s := range steps {
		d := Decide(o, Command{ID: string(rune('a' + i)), OrderID: "o-1", Body: s.body}, now)
		if d.Event.Payload != s.want {
			t.Errorf("%s: payload %#v, want %#v", s.body.Kind(), d.Event.Payload, s.want)
		}
		if p := d.Event.Payload; p != nil && p.EventType() != d.Event.Type {
			t.Errorf("%s: payload of %s on a %s event", s.body.Kind(), p.EventType(), d.Event.Type)
		}
		if d.Order != nil {
			o = d.Order
		}
	}
	if d := Decide(nil, Command{ID: "r", OrderID: "o-2", Body: CreateOrder{}}, now); d.Event.Payload != nil {
		t.Errorf("rejected create: payload %#v", d.Event.Payload)
	}
}

func TestPayMustMatchTotal(t *testing.T) {
	cur := orderIn(t, StateCreated)
	d := Decide(cur, Command{ID: "p", Body: PayOrder{Reference: "r", AmountMinor: 2399}}, now)
	var pe *PreconditionError
	if !errors.As(d.Err, &pe) || d.Order != nil {
		t.Fatalf("err = %v, order = %v; want a precondition rejection", d.Err, d.Order)
	}
	if d.Event.Type != EventCommandRejected || d.Event.From != StateCreated || d.Event.To != StateCreated {
		t.Errorf("event = %+v", d.Event)
	}
	d = Decide(cur, Command{ID: "p", Body: PayOrder{Reference: "r", AmountMinor: 2400}}, now)
	if d.Err != nil || d.Order.Payment.AmountMinor != 2400 || d.Order.Payment.Reference != "r" {
		t.Fatalf("pay exact total: %v %+v", d.Err, d.Order)
	}
}

func TestInvalidCreateIsRecordedAsRejectedOrder(t *testing.T) {
	d := Decide(nil, Command{ID: "c", OrderID: "o-9", Body: CreateOrder{CustomerID: "c-1", Currency: "XXX"}}, now)
	var ve *ValidationError
	if !errors.As(d.Err, &ve) || !errors.Is(d.Err, ErrRejected) {
		t.Fatalf("err = %v, want a validation error", d.Err)
	}
	if d.Order == nil || d.Order.State != StateRejected || d.Order.Version != 1 || d.Order.RejectionReason == "" {
		t.Fatalf("order = %+v, want REJECTED v1 with a reason", d.Order)
	}
	if d.Event.Type != EventOrderRejected || d.Event.To != StateRejected {
		t.Errorf("event = %+v", d.Event)
	}
}

func TestCreateComputesTotals(t *testing.T) {
	body := CreateOrder{CustomerID: "c", Currency: "EUR", Lines: []LineItem{
		{SKU: "a", Name: "A", Quantity: 3, UnitPriceMinor: 250},
		{SKU: "b", Name: "B", Quantity: 1, UnitPriceMinor: 99},
	}}
	d := Decide(nil, Command{ID: "c", OrderID: "o", Body: body}, now)
	if d.Err != nil {
		t.Fatal(d.Err)
	}
	if d.Order.SubtotalMinor != 849 || d.Order.TotalMinor != 849 {
		t.Errorf("totals %d/%d, want 849", d.Order.SubtotalMinor, d.Order.TotalMinor)
	}
	if d.Order.Version != 1 || !d.Order.CreateTime.Equal(now) {
		t.Errorf("order = %+v", d.Order)
	}
	body.Lines[0].Quantity = 100 // the order keeps its own copy
	if d.Order.Lines[0].Quantity != 3 {
		t.Error("order shares the command's line slice")
	}
}

func TestFingerprint(t *testing.T) {
	a := Command{ID: "1", OrderID: "o", CorrelationID: "x", Body: PayOrder{Reference: "r", AmountMinor: 1}}
	b := a
	b.ID, b.CorrelationID, b.IssueTime = "2", "y", now
	if string(a.Fingerprint()) != string(b.Fingerprint()) {
		t.Error("fingerprint depends on envelope fields")
	}
	b.Body = PayOrder{Reference: "r", AmountMinor: 2}
	if string(a.Fingerprint()) == string(b.Fingerprint()) {
		t.Error("fingerprint ignores the body")
	}
}
