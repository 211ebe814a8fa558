package orderstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderstore"
)

func newStore(t *testing.T) *app {
	t.Helper()
	return newApp(dbtest.New(t))
}

// storefront is the service client that sends the tests' commands; staff
// reads every order.
var (
	storefront = order.Actor{ID: "service:storefront"}
	staff      = order.Actor{ID: "service:staff", AllOrders: true}
)

func createCmd(orderID string) order.Command {
	return order.Command{
		ID: uuid.NewString(), OrderID: orderID, IssueTime: time.Now(), Actor: storefront,
		Body: order.CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []order.LineItem{
			{SKU: "SKU-1", Name: "Mug", Quantity: 2, UnitPriceMinor: 1200},
			{SKU: "SKU-2", Name: "Tea", Quantity: 1, UnitPriceMinor: 550},
		}},
	}
}

func cmd(orderID string, body order.Body) order.Command {
	return order.Command{ID: uuid.NewString(), OrderID: orderID, IssueTime: time.Now(), Actor: storefront, Body: body}
}

func mustApply(t *testing.T, s *app, c order.Command, want orderapp.Outcome) orderapp.Result {
	t.Helper()
	res, err := s.Apply(context.Background(), c)
	if err != nil {
		t.Fatalf("Apply(%s): %v", c.Kind(), err)
	}
	if res.Outcome != want {
		t.Fatalf("Apply(%s) outcome = %s (%s), want %s", c.Kind(), res.Outcome, res.Reason, want)
	}
	return res
}

func events(t *testing.T, s *app, id string) []order.Event {
	t.Helper()
	evs, err := s.Events(context.Background(), id, 0, 1000, staff)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestMigrationsUpDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := dbtest.NewUnmigrated(t)
	tables := func() int {
		n, err := db.NewSelect().TableExpr("information_schema.tables").
			Where("table_schema = current_schema()").
			Where("table_name IN (?)", bun.In([]string{"orders", "order_line_items", "order_events", "processed_commands", "watermill_outbox"})).
			Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	const migrations = 10
	if n, err := orderstore.Migrate(ctx, db); err != nil || n != migrations {
		t.Fatalf("up: %d migrations, %v", n, err)
	}
	if got := tables(); got != 5 {
		t.Fatalf("after up: %d tables, want 5", got)
	}
	if n, err := orderstore.Migrate(ctx, db); err != nil || n != 0 {
		t.Fatalf("second up: %d migrations, %v; want none", n, err)
	}
	if n, err := orderstore.Rollback(ctx, db); err != nil || n != migrations {
		t.Fatalf("down: %d migrations, %v", n, err)
	}
	if got := tables(); got != 0 {
		t.Fatalf("after down: %d tables, want 0", got)
	}
	if n, err := orderstore.Migrate(ctx, db); err != nil || n != migrations {
		t.Fatalf("up again: %d migrations, %v", n, err)
	}
	// The schema works after the round trip.
	mustApply(t, newApp(db), createCmd(uuid.NewString()), orderapp.Applied)
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()

	res := mustApply(t, s, createCmd(id), orderapp.Applied)
	if res.Order.Version != 1 || res.Order.TotalMinor != 2950 || res.Event.Seq != 1 {
		t.Fatalf("after create: %+v, event %+v", res.Order, res.Event)
	}
	mustApply(t, s, cmd(id, order.PayOrder{Reference: "ch_1", AmountMinor: 2950}), orderapp.Applied)
	mustApply(t, s, cmd(id, order.ShipOrder{Carrier: "UPS", TrackingNumber: "1Z"}), orderapp.Applied)
	res = mustApply(t, s, cmd(id, order.DeliverOrder{}), orderapp.Applied)
	if res.Order.State != order.StateDelivered || res.Order.Version != 4 {
		t.Fatalf("after deliver: %+v", res.Order)
	}

	got, err := s.Get(ctx, id, nil, staff)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != order.StateDelivered || got.Version != 4 || len(got.Lines) != 2 || got.Lines[1].SKU != "SKU-2" ||
		got.Payment == nil || got.Payment.Reference != "ch_1" || got.Payment.AmountMinor != 2950 ||
		got.Shipment == nil || got.Shipment.TrackingNumber != "1Z" || got.Shipment.DeliverTime.IsZero() ||
		got.Cancellation != nil || got.CustomerID != "c-1" || got.Currency != "USD" {
		t.Fatalf("stored order = %+v", got)
	}
	var types []order.EventType
	for i, e := range events(t, s, id) {
		types = append(types, e.Type)
		if e.Seq != int64(i+1) || e.OrderVersion != int64(i+1) {
			t.Errorf("event %d: seq %d version %d", i, e.Seq, e.OrderVersion)
		}
	}
	want := []order.EventType{order.EventCreated, order.EventPaid, order.EventShipped, order.EventDelivered}
	if fmt.Sprint(types) != fmt.Sprint(want) {
		t.Errorf("history %v, want %v", types, want)
	}
}

func TestGetSelectsOnlyMaskedFields(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)

	got, err := s.Get(context.Background(), id, []string{"id", "state"}, staff)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.State != order.StateCreated {
		t.Fatalf("masked get = %+v", got)
	}
	if got.CustomerID != "" || got.Lines != nil || got.TotalMinor != 0 || got.Version != 0 || !got.CreateTime.IsZero() {
		t.Errorf("masked get read unrequested columns: %+v", got)
	}
	got, err = s.Get(context.Background(), id, []string{"line_items"}, staff)
	if err != nil || len(got.Lines) != 2 {
		t.Fatalf("line_items only: %+v, %v", got, err)
	}
	if _, err := s.Get(context.Background(), id, []string{"password"}, staff); err == nil {
		t.Error("unknown field accepted")
	}
	if _, err := s.Get(context.Background(), uuid.NewString(), nil, staff); !errors.Is(err, orderstore.ErrNotFound) {
		t.Errorf("missing order: %v, want ErrNotFound", err)
	}
}

// Fifty deliveries of one command, all at once, have exactly one effect.
func TestSameCommandConcurrentlyHasOneEffect(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	pay := cmd(id, order.PayOrder{Reference: "ch_1", AmountMinor: 2950})

	const n = 50
	outcomes := make(chan orderapp.Outcome, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			res, err := s.Apply(context.Background(), pay)
			if err != nil {
				t.Error(err)
				return
			}
			outcomes <- res.Outcome
		})
	}
	wg.Wait()
	close(outcomes)
	count := map[orderapp.Outcome]int{}
	for o := range outcomes {
		count[o]++
	}
	if count[orderapp.Applied] != 1 || count[orderapp.Duplicate] != n-1 {
		t.Fatalf("outcomes %v, want 1 applied and %d duplicates", count, n-1)
	}
	got, _ := s.Get(context.Background(), id, nil, staff)
	if got.Version != 2 || got.State != order.StatePaid {
		t.Errorf("order after 50 deliveries: state %s version %d", got.State, got.Version)
	}
	if evs := events(t, s, id); len(evs) != 2 {
		t.Errorf("history has %d events, want 2", len(evs))
	}
}

// A command decided on a version that another command changed before it
// was written is not written: the version guard fails the whole write,
// and it is decided again on what the other committed. Pay is held
// between its read and its write while cancel applies; pay then finds the
// order cancelled and is rejected. Nothing is lost or written twice.
func TestRacingCommandsDoNotLoseUpdates(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	id := uuid.NewString()

	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hold := func(ctx context.Context, e order.Event) (*orderapp.Notification, error) {
		if e.Command == order.KindPay {
			once.Do(func() { // the first attempt only
				close(entered)
				<-release
			})
		}
		return nil, nil
	}
	s := newAppNotifying(db, hold)
	mustApply(t, s, createCmd(id), orderapp.Applied)

	payDone := make(chan orderapp.Result, 1)
	go func() {
		res, err := s.Apply(ctx, cmd(id, order.PayOrder{Reference: "ch", AmountMinor: 2950}))
		if err != nil {
			t.Error(err)
		}
		payDone <- res
	}()
	<-entered // pay has read version 1 and decided to apply
	cancel := mustApply(t, s, cmd(id, order.CancelOrder{Reason: "changed my mind"}), orderapp.Applied)
	if cancel.Order.Version != 2 || cancel.Order.Cancellation.RefundDue {
		t.Fatalf("cancel: %+v", cancel.Order)
	}
	close(release)
	pay := <-payDone
	if pay.Outcome != orderapp.Rejected || pay.Event.Seq != 3 {
		t.Fatalf("pay after cancel: %s (%s), event %+v; want rejected, decided again on version 2", pay.Outcome, pay.Reason, pay.Event)
	}
	got, _ := s.Get(ctx, id, nil, staff)
	if got.Payment != nil || got.Cancellation == nil || got.Version != 2 {
		t.Errorf("lost or doubled update: %+v", got)
	}
	if evs := events(t, s, id); eventTypes(evs) != "order.created,order.cancelled,command.rejected" {
		t.Errorf("history %s", eventTypes(evs))
	}
}

// Unsynchronised races on many orders: every outcome must be explainable by
// one of the two serial orders.
func TestRacingCommandsAreSerializable(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	const orders = 20
	var wg sync.WaitGroup
	for range orders {
		id := uuid.NewString()
		mustApply(t, s, createCmd(id), orderapp.Applied)
		wg.Go(func() {
			var pay, cancel orderapp.Result
			var inner sync.WaitGroup
			inner.Go(func() { pay = applyRetrying(t, s, cmd(id, order.PayOrder{Reference: "r", AmountMinor: 2950})) })
			inner.Go(func() { cancel = applyRetrying(t, s, cmd(id, order.CancelOrder{})) })
			inner.Wait()
			got, err := s.Get(ctx, id, nil, staff)
			if err != nil {
				t.Error(err)
				return
			}
			switch {
			case pay.Outcome == orderapp.Applied && cancel.Outcome == orderapp.Applied:
				if got.Version != 3 || !got.Cancellation.RefundDue || got.Payment == nil {
					t.Errorf("pay then cancel left %+v", got)
				}
			case cancel.Outcome == orderapp.Applied && pay.Outcome == orderapp.Rejected:
				if got.Version != 2 || got.Cancellation.RefundDue || got.Payment != nil {
					t.Errorf("cancel then pay left %+v", got)
				}
			default:
				t.Errorf("not serializable: pay %s, cancel %s, order %+v", pay.Outcome, cancel.Outcome, got)
			}
			if evs := events(t, s, id); len(evs) != 3 {
				t.Errorf("history has %d events, want 3", len(evs))
			}
		})
	}
	wg.Wait()
}

func applyRetrying(t *testing.T, s *app, c order.Command) orderapp.Result {
	for attempt := 0; ; attempt++ {
		res, err := s.Apply(context.Background(), c)
		if err == nil {
			return res
		}
		if !orderstore.Transient(err) || attempt == 10 {
			t.Errorf("Apply: %v", err)
			return res
		}
	}
}

func TestConcurrentCreatesOfOneOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	results := make([]orderapp.Result, 2)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() { results[i] = applyRetrying(t, s, createCmd(id)) })
	}
	wg.Wait()
	if results[0].Outcome == results[1].Outcome {
		t.Fatalf("outcomes %s and %s, want one applied and one rejected", results[0].Outcome, results[1].Outcome)
	}
	for _, r := range results {
		if r.Outcome == orderapp.Rejected && r.Event.Type != order.EventCommandRejected {
			t.Errorf("second create recorded as %+v", r.Event)
		}
	}
}

func TestRejectedTransitionIsRecorded(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := context.Background()
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	mustApply(t, s, cmd(id, order.CancelOrder{Reason: "oops"}), orderapp.Applied)

	ship := cmd(id, order.ShipOrder{Carrier: "UPS", TrackingNumber: "1Z"})
	res := mustApply(t, s, ship, orderapp.Rejected)
	if res.Reason != "cannot ship an order in state CANCELLED" {
		t.Errorf("reason = %q", res.Reason)
	}
	got, _ := s.Get(ctx, id, nil, staff)
	if got.State != order.StateCancelled || got.Version != 2 || got.Shipment != nil {
		t.Errorf("rejected command changed the order: %+v", got)
	}
	evs := events(t, s, id)
	last := evs[len(evs)-1]
	if len(evs) != 3 || last.Type != order.EventCommandRejected || last.Reason != res.Reason ||
		last.CommandID != ship.ID || last.From != order.StateCancelled || last.To != order.StateCancelled {
		t.Errorf("history = %+v", evs)
	}
	var outcome, reason string
	err := s.DB().NewSelect().Table("processed_commands").Column("outcome", "reason").
		Where("command_id = ?", ship.ID).Scan(ctx, &outcome, &reason)
	if err != nil || outcome != "rejected" || reason != res.Reason {
		t.Errorf("processed_commands row: %q %q %v", outcome, reason, err)
	}
	// Redelivery of the rejected command is a duplicate carrying the reason.
	dup := mustApply(t, s, ship, orderapp.Duplicate)
	if dup.Reason != res.Reason || dup.Mismatch {
		t.Errorf("duplicate = %+v", dup)
	}
	if n := len(events(t, s, id)); n != 3 {
		t.Errorf("duplicate appended history: %d events", n)
	}
}

func TestInvalidCreateBecomesRejectedOrder(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	c := createCmd(id)
	c.Body = order.CreateOrder{CustomerID: "c", Currency: "USD"} // no lines
	res := mustApply(t, s, c, orderapp.Rejected)
	got, err := s.Get(context.Background(), id, nil, staff)
	if err != nil || got.State != order.StateRejected || got.RejectionReason != res.Reason || len(got.Lines) != 0 {
		t.Fatalf("stored %+v, %v", got, err)
	}
}

// A reused idempotency key with a different request is not applied, and
// the order's history says so, once however often it is delivered.
func TestReusedKeyWithDifferentRequest(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	pay := cmd(id, order.PayOrder{Reference: "a", AmountMinor: 2950})
	mustApply(t, s, pay, orderapp.Applied)
	pay.Body = order.PayOrder{Reference: "b", AmountMinor: 2950}
	for range 3 {
		if res := mustApply(t, s, pay, orderapp.Duplicate); !res.Mismatch {
			t.Error("a reused key with another request was not flagged")
		}
	}
	evs := events(t, s, id)
	if len(evs) != 3 || evs[2].Type != order.EventCommandRejected || !strings.Contains(evs[2].Reason, "already used") {
		t.Fatalf("history %+v, want one recorded refusal", evs)
	}
	got, _ := s.Get(context.Background(), id, nil, staff)
	if got.Payment.Reference != "a" || got.Version != 2 {
		t.Errorf("the reused key changed the order: %+v", got)
	}
	// A plain redelivery of the original records nothing.
	pay.Body = order.PayOrder{Reference: "a", AmountMinor: 2950}
	if res := mustApply(t, s, pay, orderapp.Duplicate); res.Mismatch {
		t.Error("redelivery flagged as a mismatch")
	}
	if n := len(events(t, s, id)); n != 3 {
		t.Errorf("redelivery appended history: %d events", n)
	}

	// The same key on a create of a new order: that order exists, REJECTED,
	// and says why, instead of being a 404 forever.
	other := createCmd(uuid.NewString())
	other.ID = pay.ID
	for range 2 {
		if res := mustApply(t, s, other, orderapp.Duplicate); !res.Mismatch {
			t.Error("not flagged")
		}
	}
	o, err := s.Get(context.Background(), other.OrderID, nil, staff)
	if err != nil || o.State != order.StateRejected || !strings.Contains(o.RejectionReason, "already used") {
		t.Fatalf("order created with a reused key: %+v, %v", o, err)
	}
	if n := len(events(t, s, other.OrderID)); n != 1 {
		t.Errorf("its history has %d entries, want 1", n)
	}
}

func TestCommandOnMissingOrderChangesNothing(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	pay := cmd(id, order.PayOrder{Reference: "a", AmountMinor: 1})
	if _, err := s.Apply(context.Background(), pay); !errors.Is(err, orderstore.ErrNotFound) {
		t.Fatalf("pay of a missing order: %v, want ErrNotFound", err)
	}
	// The claim rolled back, so the command can still apply once the create arrives.
	mustApply(t, s, createCmd(id), orderapp.Applied)
	mustApply(t, s, order.Command{ID: pay.ID, OrderID: id, Actor: storefront, Body: order.PayOrder{Reference: "a", AmountMinor: 2950}}, orderapp.Applied)
}

// A command's write is one statement: when any row of it fails (here the
// outbox refuses its row, through a trigger), none of it is written, and
// the command can be applied later.
func TestFailedWriteLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	for _, q := range []string{
		`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$`,
		`CREATE TRIGGER refuse BEFORE INSERT ON watermill_outbox FOR EACH ROW EXECUTE FUNCTION refuse()`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	notify := func(ctx context.Context, e order.Event) (*orderapp.Notification, error) {
		return &orderapp.Notification{ID: uuid.NewString(), Destination: "notes", GroupID: e.OrderID, Body: []byte("{}")}, nil
	}
	s := newAppNotifying(db, notify)
	c := createCmd(uuid.NewString())
	if _, err := s.Apply(ctx, c); err == nil || !strings.Contains(err.Error(), "outbox refused") {
		t.Fatalf("Apply = %v, want the outbox's refusal", err)
	}
	for _, table := range []string{"orders", "order_line_items", "order_events", "processed_commands", "watermill_outbox", "operations"} {
		if n, err := db.NewSelect().Table(table).Count(ctx); err != nil || n != 0 {
			t.Errorf("%s has %d rows after the failed write (%v)", table, n, err)
		}
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse ON watermill_outbox`); err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, c, orderapp.Applied)
}

// Each command costs at most two statements (round trips): a read and one
// write. A create is first written on the assumption that it is new (one
// statement); only when that fails on a key does it cost a read and, if
// something is left to record, a write.
func TestCommandsTakeTwoStatements(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	counter := &statementCounter{}
	db.AddQueryHook(counter)
	notify := func(ctx context.Context, e order.Event) (*orderapp.Notification, error) {
		return &orderapp.Notification{ID: uuid.NewString(), Destination: "notes", GroupID: e.OrderID, Body: []byte("{}")}, nil
	}
	s := newAppNotifying(db, notify)
	id := uuid.NewString()
	create := createCmd(id)
	// A request id used again for other requests: each writes its
	// operation in the one statement (the second only that).
	reused, reusedAgain := create, create
	reused.Body = order.CancelOrder{Reason: "a"}
	reusedAgain.Body = order.CancelOrder{Reason: "b"}
	for _, step := range []struct {
		name string
		cmd  order.Command
		want orderapp.Outcome
		max  int64
	}{
		{"create", create, orderapp.Applied, 1},
		{"pay", cmd(id, order.PayOrder{Reference: "r", AmountMinor: 2950}), orderapp.Applied, 2},
		{"redelivered create", create, orderapp.Duplicate, 2},
		{"second create of the order", createCmd(id), orderapp.Rejected, 3},
		{"rejected deliver", cmd(id, order.DeliverOrder{}), orderapp.Rejected, 2},
		{"ship", cmd(id, order.ShipOrder{Carrier: "ups", TrackingNumber: "1Z"}), orderapp.Applied, 2},
		{"refused", as(order.Actor{ID: "service:other"}, cmd(id, order.CancelOrder{})), orderapp.Refused, 2},
		{"reused request id", reused, orderapp.Duplicate, 2},
		{"reused again, recorded only as its operation", reusedAgain, orderapp.Duplicate, 2},
	} {
		before := counter.n.Load()
		mustApply(t, s, step.cmd, step.want)
		if n := counter.n.Load() - before; n > step.max {
			t.Errorf("%s: %d statements, want at most %d", step.name, n, step.max)
		}
	}
}

type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) BeforeQuery(ctx context.Context, _ *bun.QueryEvent) context.Context {
	return ctx
}
func (c *statementCounter) AfterQuery(_ context.Context, _ *bun.QueryEvent) { c.n.Add(1) }

func TestEventsAreAppendOnly(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	id := uuid.NewString()
	mustApply(t, s, createCmd(id), orderapp.Applied)
	_, err := s.DB().NewUpdate().Table("order_events").Set("reason = 'x'").Where("order_id = ?", id).Exec(context.Background())
	if err == nil {
		t.Fatal("updating history succeeded")
	}
	if _, err := s.Events(context.Background(), uuid.NewString(), 0, 10, staff); !errors.Is(err, orderstore.ErrNotFound) {
		t.Errorf("events of a missing order: %v", err)
	}
}

// app is the application service over the store, as the processor runs
// it, with the store's reads.
type app struct {
	*orderstore.Store
	*orderapp.Service
}

func newApp(db *bun.DB) *app { return newAppNotifying(db, nil) }

func newAppNotifying(db *bun.DB, n orderapp.Notifier) *app {
	s := orderstore.New(db)
	return &app{s, orderapp.New(s, n)}
}
