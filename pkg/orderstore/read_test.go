package orderstore_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderstore"
)

// The hand-written scan reads every column as Bun did: set and NULL
// columns, jsonb, times, line items in order, and an order without lines.
func TestReadsEveryColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	full, bare := uuid.NewString(), uuid.NewString()
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	if _, err := db.ExecContext(ctx, `
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, shipping_address,
    payment_reference, payment_amount_minor, pay_time, carrier, tracking_number, ship_time, deliver_time,
    cancel_reason, cancel_time, refund_due, rejection_reason, created_by, version, last_event_seq, create_time, update_time)
VALUES (?, 'c-1', 'CANCELLED', 'EUR', 3000, 3100, '{"recipient":"Ada","address_lines":["1 Main St","Flat 2"],"region_code":"GB"}',
    'pay-1', 3100, ?, 'UPS', '1Z', ?, ?, 'changed mind', ?, true, '', 'service:storefront', 5, 7, ?, ?),
       (?, 'c-2', 'CREATED', 'USD', 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, false, NULL, '', 1, 1, ?, ?);
INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
VALUES (?, 2, 'SKU-2', 'Tea "Earl Grey" \\ 1', 1, 550), (?, 1, 'SKU-1', 'Mug ''Deluxe''', 2, 1225), (?, 3, 'SKU-3', 'Spoon', 10000, 0);`,
		full, at.Add(time.Minute), at.Add(2*time.Minute), at.Add(3*time.Minute), at.Add(4*time.Minute), at, at.Add(5*time.Minute),
		bare, at.Add(time.Hour), at.Add(time.Hour),
		full, full, full); err != nil {
		t.Fatal(err)
	}
	want := map[string]order.Order{
		full: {
			ID: full, CustomerID: "c-1", State: order.StateCancelled, Currency: "EUR", SubtotalMinor: 3000, TotalMinor: 3100,
			ShippingAddress: &order.Address{Recipient: "Ada", AddressLines: []string{"1 Main St", "Flat 2"}, RegionCode: "GB"},
			Payment:         &order.Payment{Reference: "pay-1", AmountMinor: 3100, PayTime: at.Add(time.Minute)},
			Shipment:        &order.Shipment{Carrier: "UPS", TrackingNumber: "1Z", ShipTime: at.Add(2 * time.Minute), DeliverTime: at.Add(3 * time.Minute)},
			Cancellation:    &order.Cancellation{Reason: "changed mind", CancelTime: at.Add(4 * time.Minute), RefundDue: true},
			CreatedBy:       "service:storefront", Version: 5, CreateTime: at, UpdateTime: at.Add(5 * time.Minute),
			Lines: []order.LineItem{
				{SKU: "SKU-1", Name: "Mug 'Deluxe'", Quantity: 2, UnitPriceMinor: 1225},
				{SKU: "SKU-2", Name: `Tea "Earl Grey" \\ 1`, Quantity: 1, UnitPriceMinor: 550},
				{SKU: "SKU-3", Name: "Spoon", Quantity: 10000, UnitPriceMinor: 0},
			},
		},
		bare: {ID: bare, CustomerID: "c-2", State: order.StateCreated, Currency: "USD", Version: 1,
			CreateTime: at.Add(time.Hour), UpdateTime: at.Add(time.Hour), Lines: []order.LineItem{}},
	}
	same := func(what string, got *order.Order, w order.Order) {
		t.Helper()
		if !got.CreateTime.Equal(w.CreateTime) || !got.UpdateTime.Equal(w.UpdateTime) {
			t.Errorf("%s: times %v %v, want %v %v", what, got.CreateTime, got.UpdateTime, w.CreateTime, w.UpdateTime)
		}
		g := *got
		g.CreateTime, g.UpdateTime, w.CreateTime, w.UpdateTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		for _, p := range []*order.Order{&g, &w} {
			if p.Payment != nil {
				c := *p.Payment
				c.PayTime = c.PayTime.UTC()
				p.Payment = &c
			}
			if p.Shipment != nil {
				c := *p.Shipment
				c.ShipTime, c.DeliverTime = c.ShipTime.UTC(), c.DeliverTime.UTC()
				p.Shipment = &c
			}
			if p.Cancellation != nil {
				c := *p.Cancellation
				c.CancelTime = c.CancelTime.UTC()
				p.Cancellation = &c
			}
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
		}
	}
	for id, w := range want {
		got, err := s.Get(ctx, id, nil, staff)
		if err != nil {
			t.Fatal(err)
		}
		same("Get", got, w)
	}
	list, err := s.List(ctx, orderstore.ListQuery{Actor: staff, Limit: 10, Ascending: true,
		CreateTime: []orderstore.TimeBound{{Op: ">=", Time: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != full || list[1].ID != bare {
		t.Fatalf("List from year 1: %v", list)
	}
	for _, o := range list {
		same("List", o, want[o.ID])
	}

	// A partial read: only the columns asked for, no lines.
	got, err := s.Get(ctx, full, []string{"payment", "state"}, staff)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != full || got.State != order.StateCancelled || got.Payment == nil || got.Payment.Reference != "pay-1" ||
		got.Shipment != nil || got.CustomerID != "" || got.Lines != nil {
		t.Errorf("partial read: %+v", got)
	}
	// The owner sees it, another customer does not.
	if _, err := s.Get(ctx, full, nil, order.Actor{ID: "customer:c-1", CustomerID: "c-1"}); err != nil {
		t.Errorf("owner: %v", err)
	}
	if _, err := s.Get(ctx, full, nil, order.Actor{ID: "customer:c-2", CustomerID: "c-2"}); err != orderstore.ErrNotFound {
		t.Errorf("another customer: %v, want ErrNotFound", err)
	}
}

// Past the bound on prepared statements (each page size is a statement of
// its own), reads run unprepared and answer the same.
func TestReadsPastThePreparedStatementBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	if _, err := db.ExecContext(ctx, `INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time)
SELECT gen_random_uuid(), 'c-1', 'CREATED', 'USD', 1, now() - n * interval '1 second', now() FROM generate_series(1, 5) n`); err != nil {
		t.Fatal(err)
	}
	for limit := 1; limit <= 300; limit++ {
		got, err := s.List(ctx, orderstore.ListQuery{Actor: staff, Limit: limit, Fields: []string{"id"}})
		if err != nil || len(got) != min(limit, 5) {
			t.Fatalf("List with limit %d: %d orders, %v", limit, len(got), err)
		}
	}
}
