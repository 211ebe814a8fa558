package order

import (
	"errors"
	"testing"
)

func TestAuthorize(t *testing.T) {
	t.Parallel()
	own := &Order{ID: "o", CustomerID: "c-1", CreatedBy: "service:storefront"}
	customer := Actor{ID: "customer:c-1", CustomerID: "c-1"}
	otherCustomer := Actor{ID: "customer:c-2", CustomerID: "c-2"}
	creator := Actor{ID: "service:storefront"}
	otherService := Actor{ID: "service:warehouse"}
	staff := Actor{ID: "service:staff", AllOrders: true}
	create := func(customerID string) Body { return CreateOrder{CustomerID: customerID} }

	tests := []struct {
		name    string
		current *Order
		actor   Actor
		body    Body
		allowed bool
	}{
		{"customer pays its own order", own, customer, PayOrder{}, true},
		{"customer cancels another customer's order", own, otherCustomer, CancelOrder{}, false},
		{"service that created the order ships it", own, creator, ShipOrder{}, true},
		{"another service without staff", own, otherService, ShipOrder{}, false},
		{"staff acts on any order", own, staff, DeliverOrder{}, true},
		{"legacy command without an actor on a new-style order", own, Actor{}, PayOrder{}, false},
		{"legacy command on a legacy order is not matched by empty ids", &Order{CustomerID: "c-1"}, Actor{}, PayOrder{}, false},
		{"customer creates for itself", nil, customer, create("c-1"), true},
		{"customer creates for another customer", nil, customer, create("c-2"), false},
		{"service creates for any customer", nil, creator, create("c-9"), true},
		{"create on an existing order of another customer", own, otherCustomer, create("c-2"), false},
		{"non-create for a missing order is the store's business", nil, otherCustomer, PayOrder{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Authorize(tt.current, Command{Actor: tt.actor, Body: tt.body})
			if tt.allowed && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.allowed && !errors.Is(err, ErrNotPermitted) {
				t.Fatalf("err = %v, want ErrNotPermitted", err)
			}
		})
	}
}

func TestNewOrderRecordsItsCreator(t *testing.T) {
	t.Parallel()
	c := Command{ID: "k", OrderID: "o", Actor: Actor{ID: "service:storefront"}, Body: validBody(KindCreate)}
	d := Decide(nil, c, now)
	if d.Order == nil || d.Order.CreatedBy != "service:storefront" {
		t.Fatalf("created order = %+v", d.Order)
	}
}
