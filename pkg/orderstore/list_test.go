package orderstore_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderstore"
)

// Paging through every order while new ones are being created returns each
// order that existed at the start exactly once, and never any order twice.
func TestListPagesEveryOrderOnceWhileInserting(t *testing.T) {
	t.Parallel()
	for _, asc := range []bool{false, true} {
		t.Run(map[bool]string{false: "newest first", true: "oldest first"}[asc], func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			ctx := context.Background()
			const initial = 120
			existing := map[string]bool{}
			for range initial {
				id := uuid.NewString()
				mustApply(t, s, createCmd(id), orderapp.Applied)
				existing[id] = true
			}

			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						if _, err := s.Apply(ctx, createCmd(uuid.NewString())); err != nil {
							t.Error(err)
							return
						}
					}
				}
			})

			seen := map[string]int{}
			var cursor *orderstore.Cursor
			var prev *order.Order
			for page := 0; ; page++ {
				if page > 1000 {
					t.Fatal("pagination does not end")
				}
				got, err := s.List(ctx, orderstore.ListQuery{Actor: staff, After: cursor, Ascending: asc, Limit: 7, Fields: []string{"id"}})
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range got {
					seen[o.ID]++
					if prev != nil {
						before := prev.CreateTime.Before(o.CreateTime) || (prev.CreateTime.Equal(o.CreateTime) && prev.ID < o.ID)
						if before != asc {
							t.Fatalf("order %s out of order after %s", o.ID, prev.ID)
						}
					}
					prev = o
				}
				if len(got) < 7 {
					break
				}
				last := got[len(got)-1]
				cursor = &orderstore.Cursor{CreateTime: last.CreateTime, ID: last.ID}
				time.Sleep(time.Millisecond) // let the writer interleave
			}
			close(stop)
			wg.Wait()

			for id := range existing {
				if seen[id] != 1 {
					t.Errorf("order %s seen %d times", id, seen[id])
				}
			}
			for id, n := range seen {
				if n > 1 {
					t.Errorf("order %s seen %d times", id, n)
				}
			}
		})
	}
}

func TestListFilters(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	var ids []string
	for i := range 6 {
		id := uuid.NewString()
		c := createCmd(id)
		if i%2 == 1 {
			b := c.Body.(order.CreateOrder)
			b.CustomerID = "c-2"
			c.Body = b
		}
		mustApply(t, s, c, orderapp.Applied)
		if i < 2 {
			mustApply(t, s, cmd(id, order.PayOrder{Reference: "r", AmountMinor: 2950}), orderapp.Applied)
		}
		ids = append(ids, id)
	}
	c2 := order.Actor{ID: "customer:c-2", CustomerID: "c-2"}
	mid, err := s.Get(ctx, ids[3], []string{"create_time"}, staff)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		q    orderstore.ListQuery
		want []string // newest first
	}{
		{"all", orderstore.ListQuery{}, []string{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"state", orderstore.ListQuery{State: order.StatePaid}, []string{ids[1], ids[0]}},
		{"customer", orderstore.ListQuery{CustomerID: "c-2"}, []string{ids[5], ids[3], ids[1]}},
		{"state and customer", orderstore.ListQuery{State: order.StatePaid, CustomerID: "c-2"}, []string{ids[1]}},
		{"created since", orderstore.ListQuery{CreateTime: []orderstore.TimeBound{{">=", mid.CreateTime}}}, []string{ids[5], ids[4], ids[3]}},
		{"created before", orderstore.ListQuery{CreateTime: []orderstore.TimeBound{{"<", mid.CreateTime}}}, []string{ids[2], ids[1], ids[0]}},
		{"range", orderstore.ListQuery{CreateTime: []orderstore.TimeBound{{">", mid.CreateTime}, {"<=", mid.CreateTime.Add(time.Hour)}}}, []string{ids[5], ids[4]}},
		{"where: or", orderstore.ListQuery{Where: orderstore.Or{
			orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid},
			orderstore.Compare{Field: "customer_id", Op: "=", Value: "c-2"},
		}}, []string{ids[5], ids[3], ids[1], ids[0]}},
		{"where: not", orderstore.ListQuery{Where: orderstore.Not{Cond: orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid}}},
			[]string{ids[5], ids[4], ids[3], ids[2]}},
		{"where: !=", orderstore.ListQuery{Where: orderstore.Compare{Field: "customer_id", Op: "!=", Value: "c-2"}},
			[]string{ids[4], ids[2], ids[0]}},
		{"where: (or) and not, with a field", orderstore.ListQuery{CustomerID: "c-2", Where: orderstore.And{
			orderstore.Or{
				orderstore.Compare{Field: "create_time", Op: ">=", Value: mid.CreateTime},
				orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid},
			},
			orderstore.Not{Cond: orderstore.Compare{Field: "create_time", Op: ">", Value: mid.CreateTime}},
		}}, []string{ids[3], ids[1]}},
		{"where: empty or", orderstore.ListQuery{Where: orderstore.Or{}}, nil},
		{"where: empty and", orderstore.ListQuery{Where: orderstore.And{}}, []string{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"a customer sees its own", orderstore.ListQuery{Actor: c2}, []string{ids[5], ids[3], ids[1]}},
		{"a customer's or cannot reach another's orders", orderstore.ListQuery{Actor: c2, Where: orderstore.Or{
			orderstore.Compare{Field: "customer_id", Op: "=", Value: "c-1"},
			orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid},
		}}, []string{ids[1]}},
		{"a customer filtering on another customer sees nothing", orderstore.ListQuery{Actor: c2, CustomerID: "c-1"}, nil},
		{"a service client sees what it created", orderstore.ListQuery{Actor: storefront}, []string{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"another service client sees nothing", orderstore.ListQuery{Actor: order.Actor{ID: "service:other"}}, nil},
		{"an actor without an id sees nothing", orderstore.ListQuery{Actor: order.Actor{}}, nil},
	}
	for _, tc := range tests {
		tc.q.Limit = 100
		if tc.q.Actor == (order.Actor{}) && !strings.HasPrefix(tc.name, "an actor without") {
			tc.q.Actor = staff
		}
		got, err := s.List(ctx, tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var gotIDs []string
		for _, o := range got {
			gotIDs = append(gotIDs, o.ID)
			if len(o.Lines) != 2 {
				t.Errorf("%s: order %s has %d lines", tc.name, o.ID, len(o.Lines))
			}
		}
		if len(gotIDs) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, gotIDs, tc.want)
			continue
		}
		for i := range gotIDs {
			if gotIDs[i] != tc.want[i] {
				t.Errorf("%s: got %v, want %v", tc.name, gotIDs, tc.want)
				break
			}
		}
	}
}

// A plain conjunction in Where is the statement the ListQuery fields give,
// which is the one the store has always run for them (so the same
// prepared statement and the same indexes), whatever order the filter
// named them in. Values are parameters, never part of the text.
func TestListWhereConjunctionIsTheFieldsStatement(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	evil := "c-1' OR true --"
	fields := orderstore.ListQuery{Actor: storefront, State: order.StatePaid, CustomerID: evil,
		CreateTime: []orderstore.TimeBound{{Op: ">=", Time: at}, {Op: "<", Time: at.Add(time.Hour)}}, Limit: 51, Fields: []string{"id"}}
	where := orderstore.ListQuery{Actor: storefront, Where: orderstore.And{
		orderstore.Compare{Field: "create_time", Op: ">=", Value: at},
		orderstore.And{orderstore.Compare{Field: "customer_id", Op: "=", Value: evil}},
		orderstore.Compare{Field: "create_time", Op: "<", Value: at.Add(time.Hour)},
		orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid},
	}, Limit: 51, Fields: []string{"id"}}
	const want = "SELECT o.create_time::text, o.id::text FROM orders AS o WHERE true AND o.created_by = $1" +
		" AND o.state = $2 AND o.customer_id = $3 AND o.create_time >= $4::timestamptz AND o.create_time < $5::timestamptz" +
		" ORDER BY o.create_time DESC, o.id DESC LIMIT 51"
	for name, q := range map[string]orderstore.ListQuery{"fields": fields, "where": where} {
		got, args, err := orderstore.ListSQL(q)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		if len(args) != 5 || args[2] != evil || strings.Contains(got, "OR true") {
			t.Errorf("%s: args %v", name, args)
		}
	}
	or, _, err := orderstore.ListSQL(orderstore.ListQuery{Actor: staff, Limit: 1, Fields: []string{"id"}, Where: orderstore.And{
		orderstore.Not{Cond: orderstore.Or{
			orderstore.Compare{Field: "state", Op: "=", Value: order.StatePaid},
			orderstore.Compare{Field: "customer_id", Op: "!=", Value: "c"},
		}},
		orderstore.Compare{Field: "create_time", Op: "<=", Value: at},
	}})
	if err != nil || !strings.Contains(or, " WHERE true AND o.create_time <= $1::timestamptz AND NOT ((o.state = $2 OR o.customer_id != $3)) ORDER BY") {
		t.Errorf("or/not: %s %v", or, err)
	}
	for _, bad := range []orderstore.Cond{
		orderstore.Compare{Field: "state", Op: "<", Value: order.StatePaid},
		orderstore.Compare{Field: "customer_id", Op: "=", Value: 5},
		orderstore.Compare{Field: "create_time", Op: "=", Value: at},
		orderstore.Compare{Field: "total_minor", Op: ">", Value: at},
		orderstore.Compare{Field: "create_time", Op: "; DROP TABLE orders; --", Value: at},
		orderstore.Not{},
	} {
		if _, _, err := orderstore.ListSQL(orderstore.ListQuery{Actor: staff, Where: bad}); err == nil {
			t.Errorf("condition %#v accepted", bad)
		}
	}
}
