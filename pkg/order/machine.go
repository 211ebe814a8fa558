package order

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// transition is one legal move of the state machine.
type transition struct {
	to    State
	event EventType
}

// machine is the whole lifecycle as data: for each command, the states it
// may be applied in and where it leads. Anything missing is illegal.
var machine = map[Kind]map[State]transition{
	KindCreate:  {StateUnspecified: {StateCreated, EventCreated}},
	KindPay:     {StateCreated: {StatePaid, EventPaid}},
	KindShip:    {StatePaid: {StateShipped, EventShipped}},
	KindDeliver: {StateShipped: {StateDelivered, EventDelivered}},
	KindCancel: {
		StateCreated: {StateCancelled, EventCancelled},
		StatePaid:    {StateCancelled, EventCancelled}, // refund due
	},
}

// Allowed reports whether cmd may be applied to an order in state s.
func Allowed(s State, cmd Kind) bool {
	_, ok := machine[cmd][s]
	return ok
}

// ErrRejected matches (with errors.Is) every error that rejects a command
// for a business reason. Such a command is recorded, never retried.
var ErrRejected = errors.New("command rejected")

// TransitionError says a command is illegal in the order's current state.
type TransitionError struct {
	State   State
	Command Kind
}

func (e *TransitionError) Error() string {
	if e.State == StateUnspecified {
		return fmt.Sprintf("cannot %s an order that does not exist", e.Command)
	}
	return fmt.Sprintf("cannot %s an order in state %s", e.Command, e.State)
}

func (e *TransitionError) Is(target error) bool { return target == ErrRejected }

// PreconditionError says a legal transition's business precondition failed,
// such as a payment that does not match the order's total.
type PreconditionError struct{ Reason string }

func (e *PreconditionError) Error() string        { return e.Reason }
func (e *PreconditionError) Is(target error) bool { return target == ErrRejected }

func precondition(format string, a ...any) error {
	return &PreconditionError{fmt.Sprintf(format, a...)}
}

// Decision is the outcome of applying a command.
type Decision struct {
	// Order is the order to store, or nil when the command changes nothing.
	Order *Order
	// Event is the history entry to append, for applied and rejected
	// commands alike. The store assigns its sequence number.
	Event Event
	// Err is nil when the command was applied; otherwise it matches
	// ErrRejected and says why.
	Err error
}

// Decide applies cmd to current, which is nil when the order does not exist.
// Every command goes through here; none is ever a silent no-op: it either
// yields a new order version or a rejection.
func Decide(current *Order, cmd Command, now time.Time) Decision {
	from := StateUnspecified
	if current != nil {
		from = current.State
	}
	t, ok := machine[cmd.Kind()][from]
	if !ok {
		return reject(current, cmd, now, &TransitionError{State: from, Command: cmd.Kind()})
	}
	if err := Validate(cmd.Body); err != nil {
		if create, ok := cmd.Body.(CreateOrder); ok {
			return RejectCreate(cmd, create, now, err)
		}
		return reject(current, cmd, now, err)
	}

	var next Order
	if current != nil {
		next = *current
	}
	var payload Payload
	switch b := cmd.Body.(type) {
	case CreateOrder:
		next = newOrder(cmd.OrderID, b, now)
		next.CreatedBy = cmd.Actor.ID
		payload = CreatedPayload{CurrencyCode: next.Currency, TotalMinor: next.TotalMinor, LineItems: len(next.Lines)}
	case PayOrder:
		if b.AmountMinor != next.TotalMinor {
			return reject(current, cmd, now, precondition(
				"payment amount %d does not match order total %d %s", b.AmountMinor, next.TotalMinor, next.Currency))
		}
		next.Payment = &Payment{Reference: b.Reference, AmountMinor: b.AmountMinor, PayTime: now}
		payload = PaidPayload{PaymentReference: b.Reference, AmountMinor: b.AmountMinor}
	case ShipOrder:
		next.Shipment = &Shipment{Carrier: b.Carrier, TrackingNumber: b.TrackingNumber, ShipTime: now}
		payload = ShippedPayload{Carrier: b.Carrier, TrackingNumber: b.TrackingNumber}
	case DeliverOrder:
		var s Shipment
		if next.Shipment != nil {
			s = *next.Shipment
		}
		s.DeliverTime = now
		next.Shipment = &s
	case CancelOrder:
		next.Cancellation = &Cancellation{Reason: b.Reason, CancelTime: now, RefundDue: from == StatePaid}
		payload = CancelledPayload{Reason: b.Reason, RefundDue: next.Cancellation.RefundDue}
	}
	next.State = t.to
	next.Version++
	next.UpdateTime = now
	return Decision{
		Order: &next,
		Event: Event{
			Type: t.event, From: from, To: t.to,
			CommandID: cmd.ID, Command: cmd.Kind(),
			Payload: payload, OccurTime: now, OrderVersion: next.Version,
		},
	}
}

func newOrder(id string, c CreateOrder, now time.Time) Order {
	o := Order{
		ID:              id,
		CustomerID:      c.CustomerID,
		Currency:        c.Currency,
		Lines:           append([]LineItem(nil), c.Lines...),
		ShippingAddress: c.ShippingAddress,
		CreateTime:      now,
	}
	o.SubtotalMinor = Subtotal(c.Lines)
	o.TotalMinor = o.SubtotalMinor
	return o
}

// reject leaves the order as it is and records why.
func reject(current *Order, cmd Command, now time.Time, err error) Decision {
	e := Event{
		Type: EventCommandRejected, CommandID: cmd.ID, Command: cmd.Kind(),
		Reason: err.Error(), OccurTime: now,
	}
	if current != nil {
		e.From, e.To, e.OrderVersion = current.State, current.State, current.Version
	}
	return Decision{Event: e, Err: err}
}

// RejectCreate records a create that cannot be applied as an order in state
// REJECTED, so the client that was told "accepted" can read why it failed.
func RejectCreate(cmd Command, c CreateOrder, now time.Time, err error) Decision {
	o := Order{
		ID:              cmd.OrderID,
		CustomerID:      truncate(storable(c.CustomerID), MaxIDLen),
		Currency:        truncate(storable(c.Currency), 3),
		State:           StateRejected,
		RejectionReason: storable(err.Error()),
		CreatedBy:       cmd.Actor.ID,
		Version:         1,
		CreateTime:      now,
		UpdateTime:      now,
	}
	return Decision{
		Order: &o,
		Event: Event{
			Type: EventOrderRejected, From: StateUnspecified, To: StateRejected,
			CommandID: cmd.ID, Command: KindCreate, Reason: o.RejectionReason,
			OccurTime: now, OrderVersion: 1,
		},
		Err: err,
	}
}

// storable is s as text PostgreSQL will store: the create being rejected
// may carry anything (that is why it is rejected), but PostgreSQL refuses
// NUL and invalid UTF-8 in text, so each becomes U+FFFD and the REJECTED
// order can always be written.
func storable(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}
