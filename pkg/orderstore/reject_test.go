package orderstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
)

// A raw create from the queue carrying NUL or invalid UTF-8 (which no API
// lets through, but the queue is a trust boundary) becomes the documented
// REJECTED order, written and readable, rather than an SQL error that
// dead-letters the command.
func TestCreateWithUnstorableTextBecomesRejectedOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		customer string
		currency string
		want     string
	}{
		{"NUL in customer_id", "c\x00-1", "USD", "c\uFFFD-1"},
		{"invalid UTF-8 in customer_id", "c-\xff\xfe", "USD", "c-\uFFFD"},
		{"NUL in currency", "c-2", "U\x00S", "c-2"},
		{"long customer_id of NULs", strings.Repeat("\x00", 3*order.MaxIDLen), "USD", strings.Repeat("\uFFFD", order.MaxIDLen)},
	} {
		id := uuid.NewString()
		c := createCmd(id)
		create := c.Body.(order.CreateOrder)
		create.CustomerID, create.Currency = tc.customer, tc.currency
		c.Body = create
		res := mustApply(t, s, c, orderapp.Rejected)
		if res.Reason == "" {
			t.Errorf("%s: rejected without a reason", tc.name)
		}
		o, err := s.Get(ctx, id, nil, staff)
		if err != nil {
			t.Fatalf("%s: read back: %v", tc.name, err)
		}
		if o.State != order.StateRejected || o.CustomerID != tc.want || o.RejectionReason == "" {
			t.Errorf("%s: stored %s order for %q (%q), want REJECTED for %q", tc.name, o.State, o.CustomerID, o.RejectionReason, tc.want)
		}
		if evs := events(t, s, id); len(evs) != 1 || evs[0].Type != order.EventOrderRejected {
			t.Errorf("%s: history %+v, want one rejection", tc.name, evs)
		}
		// The same command again is a duplicate, not a second order.
		mustApply(t, s, c, orderapp.Duplicate)
	}
}
