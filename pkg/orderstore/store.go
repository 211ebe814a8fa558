// Package orderstore keeps orders, their history and the idempotency
// record in PostgreSQL through Bun.
package orderstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/order"
)

var (
	// ErrNotFound: no order has that id.
	ErrNotFound = errors.New("order not found")
	// ErrConflict: another transaction changed the order first (the version
	// guard failed, or a concurrent create won). Retrying is safe.
	ErrConflict = errors.New("order changed concurrently")
)

// Open connects to PostgreSQL. Options after the DSN override it, e.g.
// pgdriver.WithConnParams for a search_path.
func Open(dsn string, opts ...pgdriver.Option) *bun.DB {
	opts = append([]pgdriver.Option{pgdriver.WithDSN(dsn)}, opts...)
	sqldb := sql.OpenDB(pgdriver.NewConnector(opts...))
	return bun.NewDB(sqldb, pgdialect.New())
}

// OpenPool is Open with a connection budget: at most maxConns, all kept
// idle between bursts (see docs/operations.md, capacity planning).
func OpenPool(dsn string, maxConns int) *bun.DB {
	db := Open(dsn)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	return db
}

// TxHook runs inside a command's transaction after the order and its event
// are written; returning an error rolls everything back. The processor uses
// it to write notifications to the outbox.
type TxHook func(ctx context.Context, tx bun.Tx, r Result) error

// Store reads and writes orders.
type Store struct {
	db   *bun.DB
	hook TxHook
	now  func() time.Time
}

// New returns a Store. hook may be nil.
func New(db *bun.DB, hook TxHook) *Store {
	return &Store{db: db, hook: hook, now: func() time.Time {
		// PostgreSQL keeps microseconds; keyset cursors must compare equal.
		return time.Now().UTC().Truncate(time.Microsecond)
	}}
}

// DB exposes the handle for health checks and the outbox relay.
func (s *Store) DB() *bun.DB { return s.db }

// Outcome says what processing a command did.
type Outcome string

const (
	Applied  Outcome = "applied"
	Rejected Outcome = "rejected"
	// Refused: the command's actor may not touch the order. Nothing was
	// written to the order or its history; only the command's own record
	// (scoped to its actor) says so.
	Refused Outcome = "refused"
	// Duplicate: the command id was processed before; nothing changed.
	Duplicate Outcome = "duplicate"
)

// Result describes a processed command.
type Result struct {
	Outcome Outcome
	// Order is the order after the command; nil for duplicates, refusals
	// and rejections of commands on orders that do not exist.
	Order *order.Order
	// Event is the history entry written; zero (Seq 0) when none was: for
	// duplicates, refusals, and a rejection already recorded for the
	// order's version (see recordable).
	Event order.Event
	// Reason is why the command was rejected or refused: for duplicates,
	// the original reason.
	Reason string
	// Mismatch is set on a duplicate whose request differs from the one
	// first processed under that id: a reused idempotency key.
	Mismatch bool
}

// errDuplicate rolls back the transaction of a command already processed.
var errDuplicate = errors.New("duplicate command")

// Apply processes cmd exactly once, in one transaction: it claims the
// command id, locks the order, runs the domain decision, writes the order
// under a version guard, appends the history event and runs the hook.
//
// A business rejection is not an error: it is stored and reported as
// Outcome Rejected. Errors are infrastructure failures, ErrConflict, or
// ErrNotFound for a non-create command on an order that does not exist.
func (s *Store) Apply(ctx context.Context, cmd order.Command) (res Result, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("apply command %s (%s) to order %s: %w", cmd.ID, cmd.Kind(), cmd.OrderID, err)
		}
	}()
	err = s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		res, err = s.apply(ctx, tx, cmd)
		return err
	})
	if errors.Is(err, errDuplicate) {
		return res, nil
	}
	return res, err
}

func (s *Store) apply(ctx context.Context, tx bun.Tx, cmd order.Command) (Result, error) {
	now := s.now()
	fp := cmd.Fingerprint()

	// Claim the id first: a concurrent duplicate blocks here on the unique
	// index until this transaction ends, then sees the row and stops. Ids
	// are per actor: the same key from two callers never collides.
	claim := &commandRow{
		Principal: cmd.Actor.ID, CommandID: cmd.ID, OrderID: cmd.OrderID, Command: string(cmd.Kind()),
		Outcome: string(Applied), Fingerprint: fp, ProcessedAt: now,
	}
	r, err := tx.NewInsert().Model(claim).On("CONFLICT (principal, command_id) DO NOTHING").Exec(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("claim command: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return s.duplicate(ctx, tx, cmd, fp, now)
	}

	cur, lastSeq, err := lockOrder(ctx, tx, cmd.OrderID)
	if err != nil {
		return Result{}, err
	}
	if cur == nil && cmd.Kind() != order.KindCreate {
		return Result{}, ErrNotFound
	}
	if err := order.Authorize(cur, cmd); err != nil {
		return Result{Outcome: Refused, Reason: err.Error()}, setOutcome(ctx, tx, cmd, Refused, err.Error())
	}

	d := order.Decide(cur, cmd, now)
	res := Result{Outcome: Applied, Order: d.Order}
	if res.Order == nil {
		res.Order = cur
	}
	if d.Err != nil {
		res.Outcome, res.Reason = Rejected, d.Err.Error()
		if err := setOutcome(ctx, tx, cmd, Rejected, res.Reason); err != nil {
			return Result{}, err
		}
		if ok, err := recordable(ctx, tx, cur, cmd); err != nil || !ok {
			return res, err
		}
	}

	seq := lastSeq + 1
	switch {
	case d.Order != nil && cur == nil:
		err = insertOrder(ctx, tx, d.Order, seq)
	case d.Order != nil:
		err = updateOrder(ctx, tx, d.Order, cur.Version, seq)
	default:
		_, err = tx.NewUpdate().Table("orders").Set("last_event_seq = ?", seq).
			Where("id = ?", cmd.OrderID).Exec(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	res.Event = d.Event
	return res, s.record(ctx, tx, cmd, &res, seq)
}

// record appends res.Event to the order's history as entry seq and runs the
// hook.
func (s *Store) record(ctx context.Context, tx bun.Tx, cmd order.Command, res *Result, seq int64) error {
	res.Event.OrderID, res.Event.Seq = cmd.OrderID, seq
	if _, err := tx.NewInsert().Model(toEventRow(res.Event, cmd.Actor.ID)).Exec(ctx); err != nil {
		return fmt.Errorf("append event: %w", err)
	}
	if s.hook != nil {
		if err := s.hook(ctx, tx, *res); err != nil {
			return fmt.Errorf("tx hook: %w", err)
		}
	}
	return nil
}

func setOutcome(ctx context.Context, tx bun.Tx, cmd order.Command, o Outcome, reason string) error {
	_, err := tx.NewUpdate().Model((*commandRow)(nil)).
		Set("outcome = ?", string(o)).Set("reason = ?", reason).
		Where("principal = ?", cmd.Actor.ID).Where("command_id = ?", cmd.ID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("record %s command: %w", o, err)
	}
	return nil
}

// recordable bounds what rejections can add to an order's history: a
// command's refusal is recorded at most once, and at most one rejection per command
// kind for each version of the order. An owner repeating a refused command
// (with new keys each time) adds nothing more; its outcome stays in the
// command's own record. With five kinds and at most five versions, a
// history has a fixed upper size.
func recordable(ctx context.Context, tx bun.Tx, cur *order.Order, cmd order.Command) (bool, error) {
	if cur == nil {
		return true, nil // a rejected create is a new REJECTED order
	}
	seen, err := tx.NewSelect().Model((*eventRow)(nil)).
		Where("order_id = ?", cur.ID).
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return q.Where("order_version = ?", cur.Version).
					Where("type = ?", string(order.EventCommandRejected)).Where("command = ?", string(cmd.Kind()))
			}).WhereGroup(" OR ", func(q *bun.SelectQuery) *bun.SelectQuery {
				return q.Where("actor = ?", cmd.Actor.ID).Where("command_id = ?", cmd.ID).
					Where("type IN (?)", bun.In([]string{string(order.EventCommandRejected), string(order.EventOrderRejected)}))
			})
		}).Exists(ctx)
	if err != nil {
		return false, fmt.Errorf("look for a recorded rejection: %w", err)
	}
	return !seen, nil
}

// duplicate handles a command id seen before. A plain redelivery changes
// nothing. A reused id carrying a different request is not applied either,
// but the client was told "accepted", so the order's history records the
// refusal, once.
func (s *Store) duplicate(ctx context.Context, tx bun.Tx, cmd order.Command, fp []byte, now time.Time) (Result, error) {
	var prev commandRow
	err := tx.NewSelect().Model(&prev).Where("principal = ?", cmd.Actor.ID).Where("command_id = ?", cmd.ID).Scan(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("load processed command: %w", err)
	}
	res := Result{Outcome: Duplicate, Reason: prev.Reason, Mismatch: !bytes.Equal(prev.Fingerprint, fp)}
	if !res.Mismatch {
		return res, errDuplicate
	}
	cur, lastSeq, err := lockOrder(ctx, tx, cmd.OrderID)
	if err != nil {
		return Result{}, err
	}
	// Only the actor's own orders hear about its reused key.
	if order.Authorize(cur, cmd) != nil {
		return res, errDuplicate
	}
	refusal := &order.PreconditionError{Reason: fmt.Sprintf(
		"request id %s was already used for a different request; this one was not applied", cmd.ID)}
	if cur != nil {
		if ok, err := recordable(ctx, tx, cur, cmd); err != nil || !ok {
			if err != nil {
				return Result{}, err
			}
			return res, errDuplicate
		}
		res.Order = cur
		res.Event = order.Event{
			Type: order.EventCommandRejected, From: cur.State, To: cur.State, CommandID: cmd.ID, Command: cmd.Kind(),
			Reason: refusal.Reason, OccurTime: now, OrderVersion: cur.Version,
		}
		_, err = tx.NewUpdate().Table("orders").Set("last_event_seq = ?", lastSeq+1).Where("id = ?", cmd.OrderID).Exec(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("record reused request id: %w", err)
		}
	} else {
		// A create naming a new order: without a record the order would be
		// a 404 forever. It becomes a REJECTED order saying why.
		create, ok := cmd.Body.(order.CreateOrder)
		if !ok {
			return res, errDuplicate // no order to record it on
		}
		d := order.RejectCreate(cmd, create, now, refusal)
		res.Order, res.Event = d.Order, d.Event
		if err := insertOrder(ctx, tx, d.Order, 1); err != nil {
			return Result{}, err
		}
	}
	return res, s.record(ctx, tx, cmd, &res, lastSeq+1)
}

// lockOrder loads the order FOR UPDATE; it returns nil when there is none.
// Line items are not loaded: no transition changes them.
func lockOrder(ctx context.Context, tx bun.Tx, id string) (*order.Order, int64, error) {
	var row orderRow
	err := tx.NewSelect().Model(&row).Where("id = ?", id).For("UPDATE").Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("lock order: %w", err)
	}
	o := row.toOrder()
	return &o, row.LastEventSeq, nil
}

func insertOrder(ctx context.Context, tx bun.Tx, o *order.Order, seq int64) error {
	r, err := tx.NewInsert().Model(toRow(o, seq)).On("CONFLICT (id) DO NOTHING").Exec(ctx)
	if err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return ErrConflict // a concurrent create of the same id committed first
	}
	if len(o.Lines) == 0 {
		return nil
	}
	lines := make([]lineRow, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = lineRow{OrderID: o.ID, LineNo: i + 1, SKU: l.SKU, Name: l.Name, Quantity: l.Quantity, UnitPriceMinor: l.UnitPriceMinor}
	}
	if _, err := tx.NewInsert().Model(&lines).Exec(ctx); err != nil {
		return fmt.Errorf("insert line items: %w", err)
	}
	return nil
}

// updateOrder writes the order only if it still has the version it was read
// at. Lines and create_time never change after create.
func updateOrder(ctx context.Context, tx bun.Tx, o *order.Order, fromVersion, seq int64) error {
	r, err := tx.NewUpdate().Model(toRow(o, seq)).
		ExcludeColumn("id", "customer_id", "currency_code", "subtotal_minor", "total_minor", "shipping_address", "create_time").
		WherePK().Where("version = ?", fromVersion).Exec(ctx)
	if err != nil {
		return fmt.Errorf("update order: %w", err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return ErrConflict
	}
	return nil
}
