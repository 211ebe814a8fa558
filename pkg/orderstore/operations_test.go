package orderstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/orderstore"
)

// insertOperation records op as the processor would.
func insertOperation(t *testing.T, db *bun.DB, op orderstore.Operation) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `
INSERT INTO operations (id, principal, command_id, order_id, command, done, code, message, error_class, attempts,
    order_version, accept_time, update_time)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		op.ID[:], op.Principal, op.CommandID, op.OrderID, op.Command, op.Done, op.Code, op.Message, op.ErrorClass, op.Attempts,
		op.OrderVersion, op.AcceptTime, op.UpdateTime); err != nil {
		t.Fatal(err)
	}
}

func opKey(b byte) operation.Key {
	var k operation.Key
	k[0], k[15] = b, b
	return k
}

func TestGetOperationReadsEveryColumn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	at := time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC)
	want := orderstore.Operation{
		ID: opKey(1), Principal: "service:shop", CommandID: "req-1", OrderID: uuid.NewString(), Command: "pay",
		Done: true, Code: 9, Message: "amount 100 does not match the total 2400", ErrorClass: "pending", Attempts: 3,
		OrderVersion: 4, AcceptTime: at, UpdateTime: at.Add(time.Second),
	}
	insertOperation(t, db, want)
	got, err := s.GetOperation(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.AcceptTime.Equal(want.AcceptTime) || !got.UpdateTime.Equal(want.UpdateTime) {
		t.Errorf("times %v %v, want %v %v", got.AcceptTime, got.UpdateTime, want.AcceptTime, want.UpdateTime)
	}
	got.AcceptTime, got.UpdateTime = want.AcceptTime, want.UpdateTime
	if *got != want {
		t.Errorf("got %+v\nwant %+v", *got, want)
	}
	if _, err := s.GetOperation(ctx, opKey(2)); !errors.Is(err, orderstore.ErrNoOperation) {
		t.Errorf("an unrecorded operation: %v, want ErrNoOperation", err)
	}
}

// An order's operations come oldest first, in keyset pages that neither
// repeat nor skip one (two share an accept time), confined to a principal
// unless none is given, and never another order's.
func TestListOperationsPagesAnOrdersOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := orderstore.New(db)
	orderID, other := uuid.NewString(), uuid.NewString()
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	ops := []orderstore.Operation{ // in the expected order
		{ID: opKey(5), Principal: "service:shop", OrderID: orderID, Command: "create", AcceptTime: at},
		{ID: opKey(2), Principal: "service:shop", OrderID: orderID, Command: "pay", AcceptTime: at.Add(time.Second)},
		{ID: opKey(3), Principal: "service:ops", OrderID: orderID, Command: "ship", AcceptTime: at.Add(time.Second)},
		{ID: opKey(1), Principal: "service:shop", OrderID: orderID, Command: "cancel", AcceptTime: at.Add(2 * time.Second)},
	}
	for i, op := range ops {
		op.CommandID, op.UpdateTime = "req-"+op.Command, op.AcceptTime
		ops[i] = op
		insertOperation(t, db, op)
	}
	insertOperation(t, db, orderstore.Operation{ID: opKey(9), Principal: "service:shop", CommandID: "x", OrderID: other,
		Command: "create", AcceptTime: at, UpdateTime: at})

	list := func(principal string, limit int) []operation.Key {
		t.Helper()
		var keys []operation.Key
		q := orderstore.OperationQuery{OrderID: orderID, Principal: principal, Limit: limit}
		for range 10 {
			page, err := s.ListOperations(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range page {
				keys = append(keys, op.ID)
			}
			if len(page) < limit {
				return keys
			}
			last := page[len(page)-1]
			q.After = &orderstore.OperationCursor{AcceptTime: last.AcceptTime, ID: last.ID}
		}
		t.Fatal("paging did not end")
		return nil
	}
	keysOf := func(ops ...orderstore.Operation) []operation.Key {
		var k []operation.Key
		for _, op := range ops {
			k = append(k, op.ID)
		}
		return k
	}
	for _, tc := range []struct {
		principal string
		limit     int
		want      []operation.Key
	}{
		{"", 10, keysOf(ops...)},
		{"", 1, keysOf(ops...)},
		{"", 3, keysOf(ops...)},
		{"service:shop", 2, keysOf(ops[0], ops[1], ops[3])},
		{"service:ops", 1, keysOf(ops[2])},
		{"service:nobody", 5, nil},
	} {
		if got := list(tc.principal, tc.limit); !equalKeys(got, tc.want) {
			t.Errorf("principal %q, pages of %d: %x, want %x", tc.principal, tc.limit, got, tc.want)
		}
	}
}

func equalKeys(a, b []operation.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
