package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/google/uuid"
	"github.com/uptrace/bun"
	"google.golang.org/grpc/codes"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/operation"
	oms "github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
)

// pipeline is the processor's middleware around the handler, as main
// builds it, with quick retries, over a real database, dead-lettering into
// a capture.
func pipeline(t *testing.T, db *bun.DB, attempts int) (message.HandlerFunc, *capture, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	log := logging.New(&logs, "processor", "info")
	dlq := &capture{}
	poison, err := middleware.PoisonQueueWithFilter(deadLetterPublisher{dlq, log}, "dlq.fifo", permanent)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{app: orderapp.New(orderstore.New(db), nil), log: log}
	h := func(m *message.Message) ([]*message.Message, error) { return nil, a.handle(m) }
	for _, mw := range []message.HandlerMiddleware{
		middleware.Timeout(5 * time.Second),
		stopRetrying,
		middleware.Retry{MaxRetries: attempts - 1, InitialInterval: time.Millisecond, ResetContextOnRetry: true}.Middleware,
		a.recordDeadLetters,
		poison,
	} {
		h = mw(h)
	}
	return h, dlq, &logs
}

func commandMessage(t *testing.T, c oms.Command) *message.Message {
	t.Helper()
	body, err := orderpb.EncodeCommandAs(c, orderpb.ContentTypeProtobuf)
	if err != nil {
		t.Fatal(err)
	}
	m := message.NewMessage(c.ID, body)
	m.Metadata.Set(orderpb.ContentTypeKey, orderpb.ContentTypeProtobuf)
	m.Metadata.Set(queue.MetaMessageID, "sqs-"+c.ID)
	return m
}

type opRow struct {
	Done       bool   `bun:"done"`
	Code       int32  `bun:"code"`
	Message    string `bun:"message"`
	ErrorClass string `bun:"error_class"`
	Attempts   int32  `bun:"attempts"`
}

func readOp(t *testing.T, db *bun.DB, c oms.Command) (opRow, bool) {
	t.Helper()
	key := operation.KeyOf(c)
	var rows []opRow
	if err := db.NewSelect().Table("operations").Column("done", "code", "message", "error_class", "attempts").
		Where("id = ?", key[:]).Scan(context.Background(), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		return opRow{}, false
	}
	return rows[0], true
}

// refuse makes the database raise an exception, with raise as the RAISE
// statement's arguments, for each row a trigger of timing selects (e.g.
// "BEFORE UPDATE ON orders FOR EACH ROW").
func refuse(t *testing.T, db *bun.DB, timing, raise string) {
	t.Helper()
	for _, q := range []string{
		`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION ` + raise + `; END $$`,
		`CREATE TRIGGER refuse ` + timing + ` EXECUTE FUNCTION refuse()`,
	} {
		if _, err := db.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}

// A pay for an order that never appears: each attempt is counted on its
// pending operation, and when it is dead-lettered the operation is done
// with NOT_FOUND, as GetOrder would answer.
func TestPayForMissingOrderEndsNotFound(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	h, dlq, logs := pipeline(t, db, 3)
	id := uuid.NewString()
	pay := oms.Command{ID: uuid.NewString(), OrderID: id, IssueTime: time.Now(), Actor: oms.Actor{ID: "service:storefront"},
		Body: oms.PayOrder{Reference: "p", AmountMinor: 100}}
	if _, err := h(commandMessage(t, pay)); err != nil {
		t.Fatalf("dead-lettered message not acked: %v\n%s", err, logs)
	}
	if len(dlq.msgs) != 1 {
		t.Fatalf("dead-lettered %d messages, want 1", len(dlq.msgs))
	}
	op, ok := readOp(t, db, pay)
	want := opRow{Done: true, Code: int32(codes.NotFound), Message: fmt.Sprintf("order orders/%s not found", id), ErrorClass: "not_found", Attempts: 3}
	if !ok || op != want {
		t.Errorf("operation %+v (%v), want %+v", op, ok, want)
	}
}

// A command that fails the same way every time is dead-lettered at once,
// ABORTED with the dead-letter reason.
func TestPermanentFailureEndsAborted(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	// The order's row refuses every update: an integrity error, permanent.
	refuse(t, db, `BEFORE UPDATE ON orders FOR EACH ROW`, `'refused' USING ERRCODE = '23514'`)
	id := uuid.NewString()
	actor := oms.Actor{ID: "service:storefront"}
	create := oms.Command{ID: uuid.NewString(), OrderID: id, IssueTime: time.Now(), Actor: actor,
		Body: oms.CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []oms.LineItem{{SKU: "S", Name: "n", Quantity: 1, UnitPriceMinor: 100}}}}
	h, dlq, logs := pipeline(t, db, 3)
	if _, err := h(commandMessage(t, create)); err != nil || len(dlq.msgs) != 0 {
		t.Fatalf("create: %v, %d dead-lettered\n%s", err, len(dlq.msgs), logs)
	}
	cancel := oms.Command{ID: uuid.NewString(), OrderID: id, IssueTime: time.Now(), Actor: actor, Body: oms.CancelOrder{Reason: "r"}}
	if _, err := h(commandMessage(t, cancel)); err != nil || len(dlq.msgs) != 1 {
		t.Fatalf("cancel: %v, %d dead-lettered\n%s", err, len(dlq.msgs), logs)
	}
	reason := dlq.msgs[0].Metadata.Get(middleware.ReasonForPoisonedKey)
	op, ok := readOp(t, db, cancel)
	// The sender learns the class and where its command is, not the
	// database's error text (it stays on the dead letter, for operators).
	wantMsg := "the command failed (permanent) and was set aside in the dead-letter queue (command id " + cancel.ID + "); an operator can redrive it"
	want := opRow{Done: true, Code: int32(codes.Aborted), Message: wantMsg, ErrorClass: "permanent", Attempts: 1}
	if !ok || op != want || !strings.Contains(reason, "refused") {
		t.Errorf("operation %+v (%v), want %+v; dead-letter reason %q", op, ok, want, reason)
	}
	if strings.Contains(op.Message, "refused") || strings.Contains(op.Message, "23514") {
		t.Errorf("the operation shows the database's error to the sender: %q", op.Message)
	}
}

// When the outcome cannot be written, the command is not dead-lettered:
// the message fails, and SQS redelivers it. A message that is no command
// has no operation and is dead-lettered as before.
func TestDeadLetterWaitsForItsOperation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	refuse(t, db, `BEFORE INSERT OR UPDATE ON operations FOR EACH ROW WHEN (NEW.done)`, `'operations refused'`)
	h, dlq, logs := pipeline(t, db, 2)
	pay := oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: oms.Actor{ID: "service:storefront"},
		Body: oms.PayOrder{Reference: "p", AmountMinor: 100}}
	_, err := h(commandMessage(t, pay))
	if err == nil || len(dlq.msgs) != 0 {
		t.Fatalf("dead-lettered without its outcome: %v, %d messages", err, len(dlq.msgs))
	}
	var pending pendingError
	var perm permanentError
	if errors.As(err, &pending) || errors.As(err, &perm) {
		t.Errorf("the failure would be dead-lettered by an outer poison queue: %v", err)
	}
	if !bytes.Contains(logs.Bytes(), []byte("could not record a dead-lettered command's outcome")) {
		t.Errorf("not logged:\n%s", logs)
	}
	// The attempts were counted; the operation is still pending.
	if op, ok := readOp(t, db, pay); !ok || op.Done || op.Attempts != 2 || op.ErrorClass != "not_found" {
		t.Errorf("operation %+v (%v), want pending after 2 attempts", op, ok)
	}

	garbage := message.NewMessage("g", []byte("not a command"))
	if _, err := h(garbage); err != nil || len(dlq.msgs) != 1 {
		t.Errorf("undecodable message: %v, %d dead-lettered", err, len(dlq.msgs))
	}
	if n, err := db.NewSelect().Table("operations").Count(ctx); err != nil || n != 1 {
		t.Errorf("%d operations, %v; want only the pay's", n, err)
	}
}

func TestErrorClass(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("apply: %w", orderapp.ErrNotFound), "not_found"},
		{fmt.Errorf("apply: %w", orderapp.ErrConflict), "conflict"},
		{fmt.Errorf("apply: %w", orderapp.ErrClaimed), "conflict"},
		{errors.New("connection reset"), "transient"},
	} {
		if got := errorClass(tc.err); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}

// The purger deletes old done operations at start and then every
// interval, and stops with its context.
func TestOperationPurgerRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	app := orderapp.New(orderstore.New(db), nil)
	actor := oms.Actor{ID: "service:storefront"}
	var old []oms.Command
	for range 3 {
		c := oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: actor, Body: oms.DeliverOrder{}}
		if err := app.GiveUp(ctx, c, errors.New("gone")); err != nil {
			t.Fatal(err)
		}
		old = append(old, c)
	}
	fresh := old[2]
	for _, c := range old[:2] {
		key := operation.KeyOf(c)
		if _, err := db.NewUpdate().Table("operations").Set("update_time = now() - interval '2 hours'").Where("id = ?", key[:]).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var logs bytes.Buffer
	rctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		operationPurger{store: orderstore.New(db), retention: time.Hour, every: 10 * time.Millisecond, log: logging.New(&logs, "processor", "info")}.Run(rctx)
		close(stopped)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := db.NewSelect().Table("operations").Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d operations left, want the fresh one", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-stopped
	if _, ok := readOp(t, db, fresh); !ok {
		t.Error("the fresh operation was purged")
	}
	if !bytes.Contains(logs.Bytes(), []byte("purged done operations")) {
		t.Errorf("no log line:\n%s", logs.String())
	}
}
