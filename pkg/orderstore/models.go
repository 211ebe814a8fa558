package orderstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
)

type orderRow struct {
	bun.BaseModel `bun:"table:orders"`

	ID                 string         `bun:"id,pk,type:uuid"`
	CustomerID         string         `bun:"customer_id"`
	State              string         `bun:"state"`
	CurrencyCode       string         `bun:"currency_code"`
	SubtotalMinor      int64          `bun:"subtotal_minor"`
	TotalMinor         int64          `bun:"total_minor"`
	ShippingAddress    *order.Address `bun:"shipping_address,type:jsonb"`
	PaymentReference   string         `bun:"payment_reference,nullzero"`
	PaymentAmountMinor *int64         `bun:"payment_amount_minor"`
	PayTime            time.Time      `bun:"pay_time,nullzero"`
	Carrier            string         `bun:"carrier,nullzero"`
	TrackingNumber     string         `bun:"tracking_number,nullzero"`
	ShipTime           time.Time      `bun:"ship_time,nullzero"`
	DeliverTime        time.Time      `bun:"deliver_time,nullzero"`
	CancelReason       *string        `bun:"cancel_reason"`
	CancelTime         time.Time      `bun:"cancel_time,nullzero"`
	RefundDue          bool           `bun:"refund_due"`
	RejectionReason    string         `bun:"rejection_reason,nullzero"`
	CreatedBy          string         `bun:"created_by"`
	Version            int64          `bun:"version"`
	LastEventSeq       int64          `bun:"last_event_seq"`
	CreateTime         time.Time      `bun:"create_time"`
	UpdateTime         time.Time      `bun:"update_time"`
}

type lineRow struct {
	bun.BaseModel `bun:"table:order_line_items"`

	OrderID        string `bun:"order_id,pk,type:uuid"`
	LineNo         int    `bun:"line_no,pk"`
	SKU            string `bun:"sku"`
	Name           string `bun:"name"`
	Quantity       int32  `bun:"quantity"`
	UnitPriceMinor int64  `bun:"unit_price_minor"`
}

type eventRow struct {
	bun.BaseModel `bun:"table:order_events"`

	OrderID      string       `bun:"order_id,pk,type:uuid"`
	Seq          int64        `bun:"seq,pk"`
	Type         string       `bun:"type"`
	FromState    string       `bun:"from_state"`
	ToState      string       `bun:"to_state"`
	CommandID    string       `bun:"command_id"`
	Command      string       `bun:"command"`
	Reason       string       `bun:"reason"`
	Actor        string       `bun:"actor"`
	Payload      eventPayload `bun:"payload,type:jsonb"`
	OrderVersion int64        `bun:"order_version"`
	OccurTime    time.Time    `bun:"occur_time"`
}

type commandRow struct {
	bun.BaseModel `bun:"table:processed_commands"`

	Principal   string    `bun:"principal,pk"`
	CommandID   string    `bun:"command_id,pk"`
	OrderID     string    `bun:"order_id,type:uuid"`
	Command     string    `bun:"command"`
	Outcome     string    `bun:"outcome"`
	Reason      string    `bun:"reason"`
	Fingerprint []byte    `bun:"fingerprint"`
	ProcessedAt time.Time `bun:"processed_at"`
}

// outboxRow is a row of the outbox that pkg/outbox relays: the table is
// the contract between the two, as watermill-sql's is.
type outboxRow struct {
	bun.BaseModel `bun:"table:watermill_outbox"`

	UUID        string  `bun:"uuid"`
	Destination string  `bun:"destination"`
	GroupID     *string `bun:"group_id"` // NULL: no order to keep
	Body        []byte  `bun:"body"`
	// Metadata is JSON text: bun writes arguments into the SQL, and a
	// string becomes a literal PostgreSQL casts to json.
	Metadata string `bun:"metadata"`
}

func toOutboxRow(n *orderapp.Notification) (*outboxRow, error) {
	if n.Destination == "" {
		return nil, fmt.Errorf("notification %s: no destination", n.ID)
	}
	meta := n.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("notification %s: metadata: %w", n.ID, err)
	}
	r := &outboxRow{UUID: n.ID, Destination: n.Destination, Body: n.Body, Metadata: string(metaJSON)}
	if n.GroupID != "" {
		r.GroupID = &n.GroupID
	}
	if r.Body == nil {
		r.Body = []byte{}
	}
	return r, nil
}

func toRow(o *order.Order, lastSeq int64) *orderRow {
	r := &orderRow{
		ID: o.ID, CustomerID: o.CustomerID, State: o.State.String(), CurrencyCode: o.Currency,
		SubtotalMinor: o.SubtotalMinor, TotalMinor: o.TotalMinor, ShippingAddress: o.ShippingAddress,
		RejectionReason: o.RejectionReason, CreatedBy: o.CreatedBy, Version: o.Version, LastEventSeq: lastSeq,
		CreateTime: o.CreateTime, UpdateTime: o.UpdateTime,
	}
	if p := o.Payment; p != nil {
		r.PaymentReference, r.PaymentAmountMinor, r.PayTime = p.Reference, &p.AmountMinor, p.PayTime
	}
	if s := o.Shipment; s != nil {
		r.Carrier, r.TrackingNumber, r.ShipTime, r.DeliverTime = s.Carrier, s.TrackingNumber, s.ShipTime, s.DeliverTime
	}
	if c := o.Cancellation; c != nil {
		r.CancelReason, r.CancelTime, r.RefundDue = &c.Reason, c.CancelTime, c.RefundDue
	}
	return r
}

// toOrder rebuilds an order from whatever columns were selected; it does
// not validate, since stored orders were valid when they were written.
func (r *orderRow) toOrder() order.Order {
	st, _ := order.ParseState(r.State)
	o := order.Order{
		ID: r.ID, CustomerID: r.CustomerID, State: st, Currency: r.CurrencyCode,
		SubtotalMinor: r.SubtotalMinor, TotalMinor: r.TotalMinor, ShippingAddress: r.ShippingAddress,
		RejectionReason: r.RejectionReason, CreatedBy: r.CreatedBy, Version: r.Version,
		CreateTime: r.CreateTime, UpdateTime: r.UpdateTime,
	}
	if r.PaymentReference != "" || r.PaymentAmountMinor != nil {
		o.Payment = &order.Payment{Reference: r.PaymentReference, PayTime: r.PayTime}
		if r.PaymentAmountMinor != nil {
			o.Payment.AmountMinor = *r.PaymentAmountMinor
		}
	}
	if r.Carrier != "" || r.TrackingNumber != "" || !r.ShipTime.IsZero() {
		o.Shipment = &order.Shipment{Carrier: r.Carrier, TrackingNumber: r.TrackingNumber, ShipTime: r.ShipTime, DeliverTime: r.DeliverTime}
	}
	if r.CancelReason != nil || !r.CancelTime.IsZero() {
		o.Cancellation = &order.Cancellation{CancelTime: r.CancelTime, RefundDue: r.RefundDue}
		if r.CancelReason != nil {
			o.Cancellation.Reason = *r.CancelReason
		}
	}
	return o
}

func toEventRow(e order.Event, actor string) *eventRow {
	return &eventRow{
		Actor: actor, OrderID: e.OrderID, Seq: e.Seq, Type: string(e.Type), FromState: e.From.String(), ToState: e.To.String(),
		CommandID: e.CommandID, Command: string(e.Command), Reason: e.Reason, Payload: payloadRow(e.Payload),
		OrderVersion: e.OrderVersion, OccurTime: e.OccurTime,
	}
}

func (r *eventRow) toEvent() order.Event {
	from, _ := order.ParseState(r.FromState)
	to, _ := order.ParseState(r.ToState)
	return order.Event{
		OrderID: r.OrderID, Seq: r.Seq, Type: order.EventType(r.Type), From: from, To: to,
		CommandID: r.CommandID, Command: order.Kind(r.Command), Reason: r.Reason, Payload: r.Payload.toPayload(order.EventType(r.Type)),
		OrderVersion: r.OrderVersion, OccurTime: r.OccurTime,
	}
}

// eventPayload is the stored form of every event payload: one JSON object
// with the keys payloads have always had, so rows written when payloads
// were maps read the same. Its integers decode into int64, exactly; a
// map[string]any would turn them into float64 and round amounts above
// 2^53. Only the fields of the event's own payload are set.
type eventPayload struct {
	CurrencyCode     *string `json:"currency_code,omitempty"`
	TotalMinor       *int64  `json:"total_minor,omitempty"`
	LineItems        *int    `json:"line_items,omitempty"`
	PaymentReference *string `json:"payment_reference,omitempty"`
	AmountMinor      *int64  `json:"amount_minor,omitempty"`
	Carrier          *string `json:"carrier,omitempty"`
	TrackingNumber   *string `json:"tracking_number,omitempty"`
	Reason           *string `json:"reason,omitempty"`
	RefundDue        *bool   `json:"refund_due,omitempty"`
}

func payloadRow(p order.Payload) eventPayload {
	switch p := p.(type) {
	case order.CreatedPayload:
		return eventPayload{CurrencyCode: new(p.CurrencyCode), TotalMinor: new(p.TotalMinor), LineItems: new(p.LineItems)}
	case order.PaidPayload:
		return eventPayload{PaymentReference: new(p.PaymentReference), AmountMinor: new(p.AmountMinor)}
	case order.ShippedPayload:
		return eventPayload{Carrier: new(p.Carrier), TrackingNumber: new(p.TrackingNumber)}
	case order.CancelledPayload:
		return eventPayload{Reason: new(p.Reason), RefundDue: new(p.RefundDue)}
	}
	return eventPayload{} // stored as {}
}

// toPayload picks the payload of an event of type t.
func (r eventPayload) toPayload(t order.EventType) order.Payload {
	switch t {
	case order.EventCreated:
		return order.CreatedPayload{CurrencyCode: val(r.CurrencyCode), TotalMinor: val(r.TotalMinor), LineItems: val(r.LineItems)}
	case order.EventPaid:
		return order.PaidPayload{PaymentReference: val(r.PaymentReference), AmountMinor: val(r.AmountMinor)}
	case order.EventShipped:
		return order.ShippedPayload{Carrier: val(r.Carrier), TrackingNumber: val(r.TrackingNumber)}
	case order.EventCancelled:
		return order.CancelledPayload{Reason: val(r.Reason), RefundDue: val(r.RefundDue)}
	}
	return nil
}

func val[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
