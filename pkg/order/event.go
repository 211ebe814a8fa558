package order

import "time"

// EventType names an entry of an order's history.
type EventType string

const (
	EventCreated   EventType = "order.created"
	EventPaid      EventType = "order.paid"
	EventShipped   EventType = "order.shipped"
	EventDelivered EventType = "order.delivered"
	EventCancelled EventType = "order.cancelled"
	// EventOrderRejected: a create failed validation; the order is REJECTED.
	EventOrderRejected EventType = "order.rejected"
	// EventCommandRejected: a command was refused; the order is unchanged.
	EventCommandRejected EventType = "command.rejected"
)

// Event is one entry of an order's append-only history.
type Event struct {
	OrderID   string
	Seq       int64
	Type      EventType
	From, To  State
	CommandID string
	Command   Kind
	Reason    string
	// Payload is nil for events that record nothing more than their type
	// and states: order.delivered and the rejections.
	Payload      Payload
	OccurTime    time.Time
	OrderVersion int64
}

// Payload is what an applied change records beyond its type and states:
// CreatedPayload, PaidPayload, ShippedPayload or CancelledPayload. Money
// is int64 minor units, exact at any size.
type Payload interface {
	// EventType is the event that carries this payload.
	EventType() EventType
}

// CreatedPayload belongs to order.created.
type CreatedPayload struct {
	CurrencyCode string
	TotalMinor   int64
	LineItems    int
}

// PaidPayload belongs to order.paid.
type PaidPayload struct {
	PaymentReference string
	AmountMinor      int64
}

// ShippedPayload belongs to order.shipped.
type ShippedPayload struct {
	Carrier        string
	TrackingNumber string
}

// CancelledPayload belongs to order.cancelled.
type CancelledPayload struct {
	Reason string
	// RefundDue: the order was paid before it was cancelled.
	RefundDue bool
}

func (CreatedPayload) EventType() EventType   { return EventCreated }
func (PaidPayload) EventType() EventType      { return EventPaid }
func (ShippedPayload) EventType() EventType   { return EventShipped }
func (CancelledPayload) EventType() EventType { return EventCancelled }
