// Package order is the order domain: the state machine, the validation of new
// orders and the events each command produces. It does no I/O.
package order

import (
	"fmt"
	"time"
)

// State is where an order is in its lifecycle. The zero value means "no
// order yet": the only command it accepts is create.
type State uint8

const (
	StateUnspecified State = iota
	StateCreated
	StatePaid
	StateShipped
	StateDelivered
	StateCancelled
	StateRejected
)

var stateNames = [...]string{
	StateUnspecified: "STATE_UNSPECIFIED",
	StateCreated:     "CREATED",
	StatePaid:        "PAID",
	StateShipped:     "SHIPPED",
	StateDelivered:   "DELIVERED",
	StateCancelled:   "CANCELLED",
	StateRejected:    "REJECTED",
}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", s)
}

// ParseState is the inverse of String.
func ParseState(s string) (State, error) {
	for i, n := range stateNames {
		if n == s {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown order state %q", s)
}

// States lists every state, in declaration order.
func States() []State {
	out := make([]State, len(stateNames))
	for i := range stateNames {
		out[i] = State(i)
	}
	return out
}

// Order is the aggregate. Money is in minor units of Currency.
type Order struct {
	ID              string
	CustomerID      string
	State           State
	Currency        string
	Lines           []LineItem
	SubtotalMinor   int64
	TotalMinor      int64
	ShippingAddress *Address
	Payment         *Payment
	Shipment        *Shipment
	Cancellation    *Cancellation
	RejectionReason string
	// CreatedBy is the Actor.ID that created the order: a service client
	// owns the orders it created.
	CreatedBy string
	// Version counts applied commands; 0 means the order does not exist.
	Version    int64
	CreateTime time.Time
	UpdateTime time.Time
}

type LineItem struct {
	SKU            string
	Name           string
	Quantity       int32
	UnitPriceMinor int64
}

type Address struct {
	Recipient          string   `json:"recipient,omitempty"`
	AddressLines       []string `json:"address_lines,omitempty"`
	Locality           string   `json:"locality,omitempty"`
	AdministrativeArea string   `json:"administrative_area,omitempty"`
	PostalCode         string   `json:"postal_code,omitempty"`
	RegionCode         string   `json:"region_code,omitempty"`
}

type Payment struct {
	Reference   string
	AmountMinor int64
	PayTime     time.Time
}

type Shipment struct {
	Carrier        string
	TrackingNumber string
	ShipTime       time.Time
	DeliverTime    time.Time
}

type Cancellation struct {
	Reason     string
	CancelTime time.Time
	RefundDue  bool
}
