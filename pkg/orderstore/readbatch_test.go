package orderstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderstore"
)

// seedBatchOrders inserts orders of customers c-1 and c-2, and of a
// customer whose id needs quoting in an array; each order has one line
// item named after its customer.
func seedBatchOrders(t *testing.T, db *bun.DB) (c1, c2, odd string) {
	t.Helper()
	c1, c2, odd = uuid.NewString(), uuid.NewString(), uuid.NewString()
	_, err := db.ExecContext(context.Background(), `
INSERT INTO orders (id, customer_id, state, currency_code, version, create_time, update_time, created_by)
VALUES (?, 'c-1', 'CREATED', 'USD', 1, now(), now(), 'service:a'),
       (?, 'c-2', 'CREATED', 'USD', 1, now(), now(), 'service:b'),
       (?, 'c "3", \,{}', 'CREATED', 'USD', 1, now(), now(), 'service:a');
INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
VALUES (?, 1, 'S', 'c-1', 1, 1), (?, 1, 'S', 'c-2', 1, 1), (?, 1, 'S', 'c "3", \,{}', 1, 1);`,
		c1, c2, odd, c1, c2, odd)
	if err != nil {
		t.Fatal(err)
	}
	return c1, c2, odd
}

type batchCase struct {
	name  string
	id    string
	actor order.Actor
	want  string // the order's customer, or "" for ErrNotFound
}

func batchCases(c1, c2, odd string) []batchCase {
	cust := func(id string) order.Actor { return order.Actor{CustomerID: id} }
	return []batchCase{
		{"own order", c1, cust("c-1"), "c-1"},
		{"same key again", c1, cust("c-1"), "c-1"},
		{"another customer's order", c2, cust("c-1"), ""},
		{"the other customer's own", c2, cust("c-2"), "c-2"},
		{"quoted customer id", odd, cust(`c "3", \,{}`), `c "3", \,{}`},
		{"quoted id, other order", c1, cust(`c "3", \,{}`), ""},
		{"missing order", uuid.NewString(), cust("c-1"), ""},
		{"service client's own", odd, order.Actor{ID: "service:a"}, `c "3", \,{}`},
		{"service client, another's", c2, order.Actor{ID: "service:a"}, ""},
		{"staff", c2, order.Actor{ID: "staff:x", AllOrders: true}, "c-2"},
		{"not a uuid", "not-a-uuid", cust("c-1"), "error"},
	}
}

func checkBatchCase(c batchCase, o *order.Order, err error) error {
	switch {
	case c.want == "error":
		if err == nil || errors.Is(err, orderstore.ErrNotFound) {
			return fmt.Errorf("%s: got %v, want a database error", c.name, err)
		}
	case c.want == "":
		if !errors.Is(err, orderstore.ErrNotFound) {
			return fmt.Errorf("%s: got %v, %v; want ErrNotFound", c.name, o, err)
		}
	case err != nil:
		return fmt.Errorf("%s: %v", c.name, err)
	case o.ID != c.id || o.CustomerID != c.want || len(o.Lines) != 1 || o.Lines[0].Name != c.want:
		return fmt.Errorf("%s: got order %s of %q with lines %v, want %s of %q", c.name, o.ID, o.CustomerID, o.Lines, c.id, c.want)
	}
	return nil
}

// Gets queued behind busy statements are answered by shared statements,
// each with its own order, scoped to its own reader: another owner's order
// in the same statement stays NOT_FOUND to them.
func TestQueuedGetsShareStatementsAndStayScoped(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	s := orderstore.New(db)
	c1, c2, odd := seedBatchOrders(t, db)
	cases := batchCases(c1, c2, odd)

	// Every slot busy: each get below queues.
	orderstore.HoldGetSlots(db)
	errs := make(chan error, len(cases))
	for _, c := range cases {
		go func() {
			o, err := s.Get(context.Background(), c.id, nil, c.actor)
			errs <- checkBatchCase(c, o, err)
		}()
	}
	// The id that is not a uuid runs alone, at once; the rest queue.
	waitQueued(t, db, len(cases)-1)
	for range orderstore.GetSlots {
		orderstore.ReleaseGetSlot(db)
	}
	for range cases {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if queued, running := orderstore.GetQueue(db); queued != 0 || running != 0 {
		t.Errorf("after the gets: %d queued, %d slots taken", queued, running)
	}
}

func waitQueued(t *testing.T, db *bun.DB, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		q, _ := orderstore.GetQueue(db)
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d gets queued, want %d", q, n)
		}
	}
}

// A queued get whose caller goes away leaves the queue, and the slots
// still pass on: nothing waits for it.
func TestCancelledQueuedGetLeavesTheQueue(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	s := orderstore.New(db)
	c1, _, _ := seedBatchOrders(t, db)
	orderstore.HoldGetSlots(db)

	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		_, err := s.Get(ctx, c1, nil, order.Actor{CustomerID: "c-1"})
		gone <- err
	}()
	waitQueued(t, db, 1)
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled get: %v, want context.Canceled", err)
	}
	waitQueued(t, db, 0)
	for range orderstore.GetSlots {
		orderstore.ReleaseGetSlot(db)
	}
	if o, err := s.Get(context.Background(), c1, nil, order.Actor{CustomerID: "c-1"}); err != nil || o.ID != c1 {
		t.Fatalf("get after: %v, %v", o, err)
	}
	if _, running := orderstore.GetQueue(db); running != 0 {
		t.Errorf("%d slots still taken", running)
	}
}

// Many concurrent readers, each with its own cases (run under -race).
func TestConcurrentGetsEachGetTheirOwn(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	s := orderstore.New(db)
	c1, c2, odd := seedBatchOrders(t, db)
	cases := batchCases(c1, c2, odd)
	var wg sync.WaitGroup
	errs := make(chan error, 32*len(cases))
	for g := range 32 {
		wg.Go(func() {
			for i := range cases {
				c := cases[(g+i)%len(cases)]
				o, err := s.Get(context.Background(), c.id, nil, c.actor)
				if err := checkBatchCase(c, o, err); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
