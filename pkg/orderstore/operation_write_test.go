package orderstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
)

// opRecord is an operations row as the query service will read it.
type opRecord struct {
	principal, commandID, orderID, command string
	done                                   bool
	code                                   codes.Code
	message, errorClass                    string
	attempts                               int32
	orderVersion                           int64
	acceptTime, updateTime                 time.Time
}

// opOf reads c's operation; ok is false when there is none.
func opOf(t *testing.T, s *app, c order.Command) (r opRecord, ok bool) {
	t.Helper()
	key := operation.KeyOf(c)
	rows, err := s.DB().QueryContext(context.Background(), `SELECT principal, command_id, order_id::text, command, done, code,
		message, error_class, attempts, order_version, accept_time, update_time FROM operations WHERE id = ?`, key[:])
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		return r, false
	}
	if err := rows.Scan(&r.principal, &r.commandID, &r.orderID, &r.command, &r.done, &r.code, &r.message, &r.errorClass,
		&r.attempts, &r.orderVersion, &r.acceptTime, &r.updateTime); err != nil {
		t.Fatal(err)
	}
	return r, true
}

func mustOp(t *testing.T, s *app, c order.Command) opRecord {
	t.Helper()
	r, ok := opOf(t, s, c)
	if !ok {
		t.Fatalf("%s %s: no operation recorded", c.Kind(), c.ID)
	}
	return r
}

// wantDone checks that c's operation is done with code, message (when not
// empty) and order version.
func wantDone(t *testing.T, s *app, c order.Command, code codes.Code, message string, version int64) opRecord {
	t.Helper()
	r := mustOp(t, s, c)
	if !r.done || r.code != code || (message != "" && r.message != message) || r.orderVersion != version {
		t.Errorf("%s %s: operation done=%v %s %q version %d; want done %s %q version %d",
			c.Kind(), c.ID, r.done, r.code, r.message, r.orderVersion, code, message, version)
	}
	if r.principal != c.Actor.ID || r.commandID != c.ID || r.orderID != c.OrderID || r.command != string(c.Kind()) {
		t.Errorf("%s %s: operation of %s/%s/%s/%s", c.Kind(), c.ID, r.principal, r.commandID, r.orderID, r.command)
	}
	if !r.acceptTime.Equal(c.IssueTime.UTC().Truncate(time.Microsecond)) {
		t.Errorf("%s %s: accept time %v, want the command's issue time %v", c.Kind(), c.ID, r.acceptTime, c.IssueTime)
	}
	return r
}

// Every way a command ends is its operation's outcome, written in the
// command's own statement.
func TestOperationOutcomes(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	create := createCmd(id)
	res := mustApply(t, s, create, orderapp.Applied)
	r := wantDone(t, s, create, codes.OK, "", res.Order.Version)
	if r.attempts != 1 || r.message != "" {
		t.Errorf("create: attempts %d, message %q", r.attempts, r.message)
	}

	pay := cmd(id, order.PayOrder{Reference: "p", AmountMinor: 2950})
	res = mustApply(t, s, pay, orderapp.Applied)
	wantDone(t, s, pay, codes.OK, "", res.Order.Version)

	// Rejected by the domain: the reason, and the version it was decided on.
	deliver := cmd(id, order.DeliverOrder{})
	res = mustApply(t, s, deliver, orderapp.Rejected)
	wantDone(t, s, deliver, codes.FailedPrecondition, res.Reason, res.Order.Version)
	// Repeated with a new key, the history records nothing more; the
	// operation still says why.
	again := cmd(id, order.DeliverOrder{})
	res = mustApply(t, s, again, orderapp.Rejected)
	if res.Event.Seq != 0 {
		t.Fatalf("second rejection recorded in the history: %+v", res.Event)
	}
	wantDone(t, s, again, codes.FailedPrecondition, res.Reason, res.Order.Version)

	// Refused: another principal hears what a read would tell it.
	other := as(order.Actor{ID: "service:other"}, cmd(id, order.CancelOrder{Reason: "x"}))
	mustApply(t, s, other, orderapp.Refused)
	wantDone(t, s, other, codes.NotFound, fmt.Sprintf("order orders/%s not found", id), 0)

	// A redelivery writes nothing new.
	before := mustOp(t, s, pay)
	mustApply(t, s, pay, orderapp.Duplicate)
	if after := mustOp(t, s, pay); after != before {
		t.Errorf("redelivery changed the operation: %+v, was %+v", after, before)
	}
}

// A wrong amount is the domain's rejection, with its reason.
func TestOperationOfWrongAmount(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	pay := cmd(id, order.PayOrder{Reference: "p", AmountMinor: 1})
	res := mustApply(t, s, pay, orderapp.Rejected)
	r := wantDone(t, s, pay, codes.FailedPrecondition, res.Reason, 1)
	if r.message == "" {
		t.Error("no reason")
	}
}

// A request id reused for a different request gets its own operation,
// ALREADY_EXISTS, whether or not the order's history records it; the
// first request's operation stays as it was.
func TestOperationOfReusedKey(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	first := cmd(id, order.PayOrder{Reference: "p", AmountMinor: 2950})
	mustApply(t, s, first, orderapp.Applied)
	firstOp := mustOp(t, s, first)
	msg := fmt.Sprintf("request id %s was already used for a different request; this one was not applied", first.ID)

	reused := first
	reused.Body = order.PayOrder{Reference: "p", AmountMinor: 1}
	reused.IssueTime = time.Now()
	res := mustApply(t, s, reused, orderapp.Duplicate)
	if !res.Mismatch || res.Event.Seq == 0 {
		t.Fatalf("first reuse: %+v, want a mismatch recorded in the history", res)
	}
	wantDone(t, s, reused, codes.AlreadyExists, msg, 0)

	// Reused once more, for yet another request: the history has it
	// already and records nothing; the operation is written all the same.
	third := first
	third.Body = order.PayOrder{Reference: "q", AmountMinor: 2950}
	third.IssueTime = time.Now()
	res = mustApply(t, s, third, orderapp.Duplicate)
	if !res.Mismatch || res.Event.Seq != 0 {
		t.Fatalf("second reuse: %+v, want a mismatch not recorded in the history", res)
	}
	r := wantDone(t, s, third, codes.AlreadyExists, msg, 0)
	// Its redelivery changes nothing.
	mustApply(t, s, third, orderapp.Duplicate)
	if again := mustOp(t, s, third); again != r {
		t.Errorf("redelivered reuse changed the operation: %+v, was %+v", again, r)
	}
	if got := mustOp(t, s, first); got != firstOp {
		t.Errorf("the first request's operation changed: %+v, was %+v", got, firstOp)
	}

	// A key reused on an order that does not exist, for a command other
	// than create: no history to record it on, the operation still is.
	missing := uuid.NewString()
	cancel := cmd(missing, order.CancelOrder{Reason: "a"})
	cancel.ID = first.ID
	res = mustApply(t, s, cancel, orderapp.Duplicate)
	if !res.Mismatch {
		t.Fatalf("reuse on a missing order: %+v", res)
	}
	wantDone(t, s, cancel, codes.AlreadyExists, msg, 0)
	// Nor may the reuse tell anything of an order its sender may not see:
	// same answer, nothing in that order's history.
	foreign := uuid.NewString()
	mustApply(t, s, as(staff, createCmd(foreign)), orderapp.Applied)
	into := cmd(foreign, order.CancelOrder{Reason: "b"})
	into.ID = first.ID
	res = mustApply(t, s, into, orderapp.Duplicate)
	if !res.Mismatch || res.Event.Seq != 0 || res.Order != nil {
		t.Fatalf("reuse on another's order: %+v", res)
	}
	wantDone(t, s, into, codes.AlreadyExists, msg, 0)
	if evs := events(t, s, foreign); len(evs) != 1 {
		t.Errorf("another's order has %d events, want its create only", len(evs))
	}
}

// A pay for an order that does not exist yet: each failed attempt is
// counted on a pending operation with its error class; given up, it is
// done with NOT_FOUND, worded as GetOrder words it; redriven once the
// order exists, it is applied and its operation says so.
func TestOperationOfMissingOrderAndRedrive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	id := uuid.NewString()
	pay := cmd(id, order.PayOrder{Reference: "p", AmountMinor: 2950})
	for i := range 2 {
		_, err := s.Apply(ctx, pay)
		if !errors.Is(err, orderapp.ErrNotFound) {
			t.Fatalf("pay of a missing order: %v", err)
		}
		if err := s.Failed(ctx, pay, "not_found"); err != nil {
			t.Fatal(err)
		}
		r := mustOp(t, s, pay)
		if r.done || r.code != codes.OK || r.attempts != int32(i+1) || r.errorClass != "not_found" {
			t.Fatalf("after attempt %d: %+v", i+1, r)
		}
	}
	_, err := s.Apply(ctx, pay)
	if err := s.GiveUp(ctx, pay, err); err != nil {
		t.Fatal(err)
	}
	r := wantDone(t, s, pay, codes.NotFound, fmt.Sprintf("order orders/%s not found", id), 0)
	if r.attempts != 2 || r.errorClass != "not_found" {
		t.Errorf("given up: attempts %d, class %q; want the two failed attempts and their class", r.attempts, r.errorClass)
	}
	// A failed attempt does not reopen a done operation.
	if err := s.Failed(ctx, pay, "transient"); err != nil {
		t.Fatal(err)
	}
	if got := mustOp(t, s, pay); got != r {
		t.Errorf("a failed attempt changed a done operation: %+v, was %+v", got, r)
	}

	mustApply(t, s, createCmd(id), orderapp.Applied)
	res := mustApply(t, s, pay, orderapp.Applied)
	r = wantDone(t, s, pay, codes.OK, "", res.Order.Version)
	if r.attempts != 3 || r.message != "" {
		t.Errorf("redriven: attempts %d, message %q; want 3 and none", r.attempts, r.message)
	}
}

// A dead letter's ABORTED is replaced by the real outcome when it is
// redriven and applied; a real outcome is never replaced by a dead
// letter's.
func TestOperationAbortedThenRedriven(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	ship := cmd(id, order.ShipOrder{Carrier: "ups", TrackingNumber: "1Z"})
	if err := s.GiveUp(ctx, ship, errors.New("apply command: the database refused it")); err != nil {
		t.Fatal(err)
	}
	r := wantDone(t, s, ship, codes.Aborted, "apply command: the database refused it", 0)
	if r.attempts != 0 {
		t.Errorf("giving up counted as an attempt: %d", r.attempts)
	}
	// Redriven: the ship is rejected (the order is not paid), and that is
	// what its operation now says.
	res := mustApply(t, s, ship, orderapp.Rejected)
	r = wantDone(t, s, ship, codes.FailedPrecondition, res.Reason, res.Order.Version)
	if r.attempts != 1 {
		t.Errorf("attempts %d, want 1", r.attempts)
	}
	if err := s.GiveUp(ctx, ship, errors.New("late dead letter")); err != nil {
		t.Fatal(err)
	}
	if got := mustOp(t, s, ship); got != r {
		t.Errorf("a dead letter replaced a real outcome: %+v, was %+v", got, r)
	}
}

// The purge deletes done operations older than the retention, in batches,
// and nothing else.
func TestPurgeOperations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := newApp(db)
	id := uuid.NewString()
	create := createCmd(id)
	mustApply(t, s, create, orderapp.Applied)
	var old []order.Command
	for range 3 {
		c := cmd(id, order.DeliverOrder{})
		mustApply(t, s, c, orderapp.Rejected)
		old = append(old, c)
	}
	pending := cmd(uuid.NewString(), order.PayOrder{Reference: "p", AmountMinor: 1})
	if err := s.Failed(ctx, pending, "not_found"); err != nil {
		t.Fatal(err)
	}
	// Age all but the create's; the pending one is old too, but not done.
	for _, c := range append(old, pending) {
		key := operation.KeyOf(c)
		if _, err := db.ExecContext(ctx, `UPDATE operations SET update_time = now() - interval '2 hours' WHERE id = ?`, key[:]); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PurgeOperations(ctx, time.Hour, 2)
	if err != nil || n != 2 {
		t.Fatalf("first batch: %d, %v; want 2", n, err)
	}
	if n, err = s.PurgeOperations(ctx, time.Hour, 2); err != nil || n != 1 {
		t.Fatalf("second batch: %d, %v; want 1", n, err)
	}
	if n, err = s.PurgeOperations(ctx, time.Hour, 2); err != nil || n != 0 {
		t.Fatalf("third batch: %d, %v; want 0", n, err)
	}
	for _, c := range old {
		if _, ok := opOf(t, s, c); ok {
			t.Errorf("old done operation %s kept", c.ID)
		}
	}
	mustOp(t, s, create)
	mustOp(t, s, pending)
}
