package orderstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderstore"
)

var (
	customerA = order.Actor{ID: "customer:c-1", CustomerID: "c-1"}
	customerB = order.Actor{ID: "customer:c-2", CustomerID: "c-2"}
)

func as(a order.Actor, c order.Command) order.Command { c.Actor = a; return c }

// The same idempotency key from two principals names two commands.
func TestKeysAreScopedToThePrincipal(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	a, b := createCmd(uuid.NewString()), createCmd(uuid.NewString())
	b.ID = a.ID
	b = as(customerB, b)
	body := b.Body.(order.CreateOrder)
	body.CustomerID = "c-2"
	b.Body = body
	mustApply(t, s, a, orderapp.Applied)
	mustApply(t, s, b, orderapp.Applied)
	for _, c := range []order.Command{a, b} {
		o, err := s.Get(context.Background(), c.OrderID, nil, staff)
		if err != nil || o.State != order.StateCreated || o.CreatedBy != c.Actor.ID {
			t.Fatalf("order of %s: %+v, %v", c.Actor.ID, o, err)
		}
	}
}

// A command from a principal that may not touch the order has no effect on
// it and writes nothing into its history, however often it is sent.
func TestCommandOnAnotherOwnersOrderIsRefused(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, as(customerA, createCmd(id)), orderapp.Applied)
	before := events(t, s, id)

	for _, body := range []order.Body{
		order.PayOrder{Reference: "x", AmountMinor: 2950}, order.CancelOrder{Reason: "mine now"}, order.DeliverOrder{},
	} {
		res := mustApply(t, s, as(customerB, cmd(id, body)), orderapp.Refused)
		if res.Order != nil || res.Event.Seq != 0 {
			t.Errorf("a refusal reports the victim's order: %+v", res)
		}
	}
	// A create naming the victim's order id.
	c := as(customerB, createCmd(id))
	cb := c.Body.(order.CreateOrder)
	cb.CustomerID = "c-2"
	c.Body = cb
	mustApply(t, s, c, orderapp.Refused)
	// A service client that did not create it, without the staff scope.
	mustApply(t, s, as(order.Actor{ID: "service:other"}, cmd(id, order.ShipOrder{Carrier: "UPS", TrackingNumber: "1"})), orderapp.Refused)

	if after := events(t, s, id); len(after) != len(before) {
		t.Fatalf("the victim's history grew from %d to %d entries", len(before), len(after))
	}
	o, _ := s.Get(context.Background(), id, nil, staff)
	if o.State != order.StateCreated || o.Version != 1 {
		t.Fatalf("the victim's order changed: %+v", o)
	}
	// The owner still acts on it.
	mustApply(t, s, as(customerA, cmd(id, order.CancelOrder{Reason: "changed my mind"})), orderapp.Applied)
}

func TestCustomerCreatesOnlyForItself(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	c := as(customerA, createCmd(uuid.NewString()))
	cb := c.Body.(order.CreateOrder)
	cb.CustomerID = "c-2"
	c.Body = cb
	mustApply(t, s, c, orderapp.Refused)
	if _, err := s.Get(context.Background(), c.OrderID, nil, staff); !errors.Is(err, orderstore.ErrNotFound) {
		t.Fatalf("refused create left an order: %v", err)
	}
}

// Repeated rejections from the owner are bounded: one per command kind and
// order version.
func TestRepeatedRejectionsAreBounded(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, as(customerA, createCmd(id)), orderapp.Applied)
	for range 50 {
		res := mustApply(t, s, as(customerA, cmd(id, order.DeliverOrder{})), orderapp.Rejected)
		if res.Reason == "" {
			t.Fatal("a rejection without its reason")
		}
	}
	mustApply(t, s, as(customerA, cmd(id, order.ShipOrder{Carrier: "UPS", TrackingNumber: "1"})), orderapp.Rejected)
	if got := eventTypes(events(t, s, id)); got != "order.created,command.rejected,command.rejected" {
		t.Fatalf("history %s, want the create and one rejection per kind", got)
	}
	// A new version may record the kind again.
	mustApply(t, s, as(customerA, cmd(id, order.PayOrder{Reference: "p", AmountMinor: 2950})), orderapp.Applied)
	mustApply(t, s, as(customerA, cmd(id, order.DeliverOrder{})), orderapp.Rejected)
	if n := len(events(t, s, id)); n != 5 {
		t.Fatalf("%d entries after a rejection at a new version, want 5", n)
	}
}

// A reused key with a different request aimed at someone else's order is
// refused without a trace on that order.
func TestReusedKeyNeverTouchesAnotherOwnersOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	victim, own := uuid.NewString(), uuid.NewString()
	mustApply(t, s, as(customerA, createCmd(victim)), orderapp.Applied)
	ownCreate := as(customerB, createCmd(own))
	cb := ownCreate.Body.(order.CreateOrder)
	cb.CustomerID = "c-2"
	ownCreate.Body = cb
	mustApply(t, s, ownCreate, orderapp.Applied)
	before := len(events(t, s, victim))
	reuse := as(customerB, cmd(victim, order.CancelOrder{Reason: "x"}))
	reuse.ID = ownCreate.ID
	if res := mustApply(t, s, reuse, orderapp.Duplicate); !res.Mismatch {
		t.Fatal("not flagged as a reused key")
	}
	if after := len(events(t, s, victim)); after != before {
		t.Fatalf("the victim's history grew from %d to %d", before, after)
	}
}

func eventTypes(evs []order.Event) string {
	var s string
	for i, e := range evs {
		if i > 0 {
			s += ","
		}
		s += string(e.Type)
	}
	return s
}

// Another owner's order reads exactly like a missing one.
func TestReadsAreOwnerScoped(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	mustApply(t, s, as(customerA, createCmd(id)), orderapp.Applied)
	for _, a := range []order.Actor{customerB, storefront, {}} {
		if _, err := s.Get(ctx, id, nil, a); !errors.Is(err, orderstore.ErrNotFound) {
			t.Errorf("Get as %q: %v, want ErrNotFound", a.ID, err)
		}
		if _, err := s.Events(ctx, id, 0, 10, a); !errors.Is(err, orderstore.ErrNotFound) {
			t.Errorf("Events as %q: %v, want ErrNotFound", a.ID, err)
		}
	}
	for _, a := range []order.Actor{customerA, staff} {
		if _, err := s.Get(ctx, id, []string{"state"}, a); err != nil {
			t.Errorf("Get as %q: %v", a.ID, err)
		}
		if evs, err := s.Events(ctx, id, 0, 10, a); err != nil || len(evs) != 1 {
			t.Errorf("Events as %q: %d, %v", a.ID, len(evs), err)
		}
	}
}
