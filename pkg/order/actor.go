package order

import "errors"

// Actor is who sent a command, as far as orders are concerned. Ingest
// derives it from the authenticated principal; it travels with the command
// so the processor can check it where ownership is known, in the command's
// own transaction.
type Actor struct {
	// ID scopes idempotency keys and records who created an order, such as
	// "customer:c-1" or "service:storefront". Empty only for commands
	// queued before principals existed.
	ID string
	// CustomerID is set for customers: the only customer whose orders the
	// actor may read or change, and the only one it may create orders for.
	CustomerID string
	// AllOrders lifts owner scoping (staff).
	AllOrders bool
}

// ErrNotPermitted: the actor may not touch that order. Edges report it
// exactly like a missing order, so existence does not leak.
var ErrNotPermitted = errors.New("order not found")

// CanAccess reports whether the actor may read or change o: staff may touch
// every order, a customer its own, and a service client the orders it
// created.
func (a Actor) CanAccess(o *Order) bool {
	switch {
	case a.AllOrders:
		return true
	case a.CustomerID != "":
		return o.CustomerID == a.CustomerID
	default:
		return a.ID != "" && o.CreatedBy == a.ID
	}
}

// Authorize decides whether cmd from its actor may be applied to current
// (nil when the order does not exist). A refused command has no effect on
// the order and is not written into its history.
func Authorize(current *Order, cmd Command) error {
	if current != nil {
		if !cmd.Actor.CanAccess(current) {
			return ErrNotPermitted
		}
		return nil
	}
	if c, ok := cmd.Body.(CreateOrder); ok && cmd.Actor.CustomerID != "" && !cmd.Actor.AllOrders && c.CustomerID != cmd.Actor.CustomerID {
		return ErrNotPermitted // a customer creates orders only for itself
	}
	return nil
}
