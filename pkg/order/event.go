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
	OrderID      string
	Seq          int64
	Type         EventType
	From, To     State
	CommandID    string
	Command      Kind
	Reason       string
	Payload      map[string]any
	OccurTime    time.Time
	OrderVersion int64
}
