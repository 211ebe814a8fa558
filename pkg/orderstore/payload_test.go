package orderstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
)

// big is 2^53+1, the first integer a float64 cannot hold: read through a
// map[string]any it came back as 9007199254740992.
const big = 1<<53 + 1

// Money in history is exact at any size: written, stored and read back.
func TestEventPayloadsKeepExactMoney(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	create := cmd(id, order.CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []order.LineItem{
		{SKU: "SKU-1", Name: "Ingot", Quantity: 9007, UnitPriceMinor: 1_000_000_000_000},
		{SKU: "SKU-2", Name: "Crate", Quantity: 1, UnitPriceMinor: 199_254_740_993},
	}})
	if res := mustApply(t, s, create, orderapp.Applied); res.Order.TotalMinor != big {
		t.Fatalf("total %d, want %d", res.Order.TotalMinor, int64(big))
	}
	mustApply(t, s, cmd(id, order.PayOrder{Reference: "ch_big", AmountMinor: big}), orderapp.Applied)
	mustApply(t, s, cmd(id, order.CancelOrder{Reason: "too much"}), orderapp.Applied)
	mustApply(t, s, cmd(id, order.PayOrder{Reference: "again", AmountMinor: big}), orderapp.Rejected)

	want := []order.Payload{
		order.CreatedPayload{CurrencyCode: "USD", TotalMinor: big, LineItems: 2},
		order.PaidPayload{PaymentReference: "ch_big", AmountMinor: big},
		order.CancelledPayload{Reason: "too much", RefundDue: true},
		nil, // command.rejected
	}
	evs := events(t, s, id)
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, e := range evs {
		if e.Payload != want[i] {
			t.Errorf("event %d (%s): payload %#v, want %#v", e.Seq, e.Type, e.Payload, want[i])
		}
	}

	// The column holds the integer itself, for anyone querying it.
	var total, amount string
	err := s.DB().NewRaw("SELECT (SELECT payload->>'total_minor' FROM order_events WHERE order_id = ? AND seq = 1), "+
		"(SELECT payload->>'amount_minor' FROM order_events WHERE order_id = ? AND seq = 2)", id, id).Scan(ctx, &total, &amount)
	if err != nil {
		t.Fatal(err)
	}
	if total != "9007199254740993" || amount != "9007199254740993" {
		t.Errorf("stored total_minor %s, amount_minor %s", total, amount)
	}
}

// Rows written while payloads were maps (the same keys, and {} for events
// without one) read as typed payloads with no migration.
func TestEventPayloadsReadRowsWrittenAsMaps(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied) // seq 1, for the order row

	// What json.Marshal(map[string]any{...}) wrote: sorted keys.
	old := []struct {
		typ     order.EventType
		command order.Kind
		payload string
		want    order.Payload
	}{
		{order.EventCreated, order.KindCreate, `{"currency_code":"USD","line_items":2,"total_minor":9007199254740993}`,
			order.CreatedPayload{CurrencyCode: "USD", TotalMinor: big, LineItems: 2}},
		{order.EventPaid, order.KindPay, `{"amount_minor":9007199254740993,"payment_reference":"ch_1"}`,
			order.PaidPayload{PaymentReference: "ch_1", AmountMinor: big}},
		{order.EventShipped, order.KindShip, `{"carrier":"UPS","tracking_number":"1Z"}`,
			order.ShippedPayload{Carrier: "UPS", TrackingNumber: "1Z"}},
		{order.EventDelivered, order.KindDeliver, `{}`, nil},
		{order.EventCancelled, order.KindCancel, `{"reason":"late","refund_due":true}`,
			order.CancelledPayload{Reason: "late", RefundDue: true}},
		{order.EventCommandRejected, order.KindPay, `{}`, nil},
	}
	for i, o := range old {
		_, err := s.DB().NewRaw(`INSERT INTO order_events
			(order_id, seq, type, from_state, to_state, command_id, command, actor, payload, order_version, occur_time)
			VALUES (?, ?, ?, 'CREATED', 'CREATED', ?, ?, ?, ?::jsonb, 1, ?)`,
			id, i+2, string(o.typ), uuid.NewString(), string(o.command), storefront.ID, o.payload, time.Now()).Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
	}
	evs := events(t, s, id)
	if len(evs) != 1+len(old) {
		t.Fatalf("%d events, want %d", len(evs), 1+len(old))
	}
	for i, o := range old {
		if got := evs[i+1].Payload; got != o.want {
			t.Errorf("old %s row: payload %#v, want %#v", o.typ, got, o.want)
		}
	}
}
