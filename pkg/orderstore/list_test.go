package orderstore_test

import (
	"context"
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
		{"a customer sees its own", orderstore.ListQuery{Actor: c2}, []string{ids[5], ids[3], ids[1]}},
		{"a customer filtering on another customer sees nothing", orderstore.ListQuery{Actor: c2, CustomerID: "c-1"}, nil},
		{"a service client sees what it created", orderstore.ListQuery{Actor: storefront}, []string{ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"another service client sees nothing", orderstore.ListQuery{Actor: order.Actor{ID: "service:other"}}, nil},
		{"an actor without an id sees nothing", orderstore.ListQuery{Actor: order.Actor{}}, nil},
	}
	for _, tc := range tests {
		tc.q.Limit = 100
		if tc.q.Actor == (order.Actor{}) && tc.want != nil {
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
