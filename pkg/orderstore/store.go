// Package orderstore keeps orders, their history and the commands' records
// in PostgreSQL through Bun: the orderapp Repository (each command read in
// one statement and written in one) and the reads the query service
// serves.
package orderstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
)

var (
	// ErrNotFound: no order has that id (or none the reader may see).
	ErrNotFound = orderapp.ErrNotFound
	// ErrConflict: another writer changed the order first (the version
	// guard failed, or a concurrent create won). Retrying is safe.
	ErrConflict = orderapp.ErrConflict
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

// Store reads and writes orders.
type Store struct {
	db *bun.DB
}

// New returns a Store.
func New(db *bun.DB) *Store { return &Store{db: db} }

// DB exposes the handle for health checks and the outbox relay.
func (s *Store) DB() *bun.DB { return s.db }

var _ orderapp.Repository = (*Store)(nil)

// snapshotRow is Load's one row: the order's columns prefixed o_ (all NULL
// when there is none), the command's record prefixed c_, and whether a
// rejection is recorded already.
type snapshotRow struct {
	Order             orderRow   `bun:"embed:o_"`
	Prior             commandRow `bun:"embed:c_"`
	RejectionRecorded bool       `bun:"rejection_recorded"`
}

// loadColumns selects orderRow and commandRow as snapshotRow's embeds.
var loadColumns = func() string {
	var b strings.Builder
	for _, t := range []struct {
		alias string
		model any
	}{{"o", (*orderRow)(nil)}, {"c", (*commandRow)(nil)}} {
		for _, f := range bun.NewDB(nil, pgdialect.New()).Table(reflect.TypeOf(t.model).Elem()).Fields {
			fmt.Fprintf(&b, "%s.%s AS %s_%s, ", t.alias, f.SQLName, t.alias, f.Name)
		}
	}
	return b.String()
}()

// Load reads, in one statement, the order cmd names, the command's record
// if it was processed before, and whether its rejection would be
// recorded already.
func (s *Store) Load(ctx context.Context, cmd order.Command) (orderapp.Snapshot, error) {
	var row snapshotRow
	// The command's first statement: a pool of connections the server
	// dropped (it restarted) is replaced here, not one per attempt.
	err := s.retryBrokenConn(ctx, func() error {
		row = snapshotRow{}
		return s.db.NewRaw(`SELECT `+loadColumns+`
	EXISTS (SELECT 1 FROM order_events AS e WHERE e.order_id = o.id AND (
		(e.order_version = o.version AND e.type = ? AND e.command = ?) OR
		(e.actor = ? AND e.command_id = ? AND e.type IN (?, ?)))) AS rejection_recorded
FROM (VALUES (1)) AS one (x)
LEFT JOIN orders AS o ON o.id = ?
LEFT JOIN processed_commands AS c ON c.principal = ? AND c.command_id = ?`,
			string(order.EventCommandRejected), string(cmd.Kind()),
			cmd.Actor.ID, cmd.ID, string(order.EventCommandRejected), string(order.EventOrderRejected),
			cmd.OrderID, cmd.Actor.ID, cmd.ID).Scan(ctx, &row)
	})
	if err != nil {
		return orderapp.Snapshot{}, fmt.Errorf("load order and command record: %w", err)
	}
	snap := orderapp.Snapshot{RejectionRecorded: row.RejectionRecorded}
	if row.Order.ID != "" {
		o := row.Order.toOrder()
		snap.Order = &o
		snap.Version = orderapp.Version{Version: o.Version, LastSeq: row.Order.LastEventSeq}
	}
	if p := row.Prior; p.CommandID != "" {
		snap.Prior = &orderapp.Record{
			Principal: p.Principal, CommandID: p.CommandID, OrderID: p.OrderID, Command: order.Kind(p.Command),
			Outcome: orderapp.Outcome(p.Outcome), Reason: p.Reason, Fingerprint: p.Fingerprint, ProcessedAt: p.ProcessedAt,
		}
	}
	return snap, nil
}

// Save writes c as one statement: each row is a data-modifying WITH
// query, so they commit together or not at all. An existing order's write
// is guarded: oms_expect fails the whole statement when the order is no
// longer at c.Expect. A second claim of the command, a second create of
// the order or a second event at the same seq fail it on their keys.
func (s *Store) Save(ctx context.Context, c orderapp.Change) error {
	q := s.db.NewSelect()
	if r := c.Claim; r != nil {
		q = q.With("claim", s.db.NewInsert().Model(&commandRow{
			Principal: r.Principal, CommandID: r.CommandID, OrderID: r.OrderID, Command: string(r.Command),
			Outcome: string(r.Outcome), Reason: r.Reason, Fingerprint: r.Fingerprint, ProcessedAt: r.ProcessedAt,
		}))
	}
	seq := int64(0)
	if c.Event != nil {
		seq = c.Event.Seq
	}
	switch {
	case c.Create != nil:
		q = q.With("new_order", s.db.NewInsert().Model(toRow(c.Create, seq)))
		if lines := lineRows(c.Create); len(lines) > 0 {
			q = q.With("new_lines", s.db.NewInsert().Model(&lines))
		}
	case c.Expect != nil:
		upd := s.db.NewUpdate()
		switch {
		case c.Update != nil:
			// Lines and create_time never change after create.
			upd = upd.Model(toRow(c.Update, seq)).
				ExcludeColumn("id", "customer_id", "currency_code", "subtotal_minor", "total_minor", "shipping_address", "create_time", "created_by").
				WherePK()
		case c.Event != nil:
			upd = upd.Table("orders").Set("last_event_seq = ?", seq).Where("id = ?", c.OrderID)
		default:
			// Nothing changes, but the decision was made on this version.
			upd = upd.Table("orders").Set("version = version").Where("id = ?", c.OrderID)
		}
		q = q.With("guarded", upd.Where("version = ?", c.Expect.Version).Where("last_event_seq = ?", c.Expect.LastSeq).Returning("1"))
	}
	if c.Event != nil {
		q = q.With("event", s.db.NewInsert().Model(toEventRow(*c.Event, c.Actor)))
	}
	if n := c.Notification; n != nil {
		row, err := toOutboxRow(n)
		if err != nil {
			return err
		}
		q = q.With("notification", s.db.NewInsert().Model(row))
	}
	if op := c.Operation; op != nil {
		q = q.With("operation", s.saveOperation(op))
	}
	if c.Expect != nil && c.Create == nil {
		q = q.ColumnExpr("oms_expect(EXISTS (SELECT 1 FROM guarded), 'order changed concurrently')")
	} else {
		q = q.ColumnExpr("true")
	}
	// Like a read, run again once on a broken pooled connection (the
	// server restarted): a create's first statement is this one. That is
	// safe for a write too: if the first run committed and only its answer
	// was lost, the second fails on the claim's key or the version guard,
	// and the command is decided again on what committed.
	err := s.retryBrokenConn(ctx, func() error {
		_, err := q.Exec(ctx)
		return err
	})
	if err != nil {
		return saveError(err)
	}
	return nil
}

// operationRow is a row of operations (migration 9).
type operationRow struct {
	bun.BaseModel `bun:"table:operations,alias:op"`

	ID           []byte    `bun:"id,pk"`
	Principal    string    `bun:"principal"`
	CommandID    string    `bun:"command_id"`
	OrderID      string    `bun:"order_id,type:uuid"`
	Command      string    `bun:"command"`
	Done         bool      `bun:"done"`
	Code         int32     `bun:"code"`
	Message      string    `bun:"message"`
	ErrorClass   string    `bun:"error_class"`
	Attempts     int32     `bun:"attempts"`
	OrderVersion int64     `bun:"order_version"`
	AcceptTime   time.Time `bun:"accept_time"`
	UpdateTime   time.Time `bun:"update_time"`
}

func toOperationRow(op *orderapp.Operation) *operationRow {
	return &operationRow{
		ID: op.ID[:], Principal: op.Principal, CommandID: op.CommandID, OrderID: op.OrderID, Command: string(op.Command),
		Done: op.Done, Code: int32(op.Code), Message: op.Message, ErrorClass: op.ErrorClass, Attempts: op.Attempts,
		OrderVersion: op.OrderVersion, AcceptTime: op.AcceptTime, UpdateTime: op.UpdateTime,
	}
}

// saveOperation writes op over a pending record of it, or over one that
// orderapp.Provisional lets a later attempt replace; any other done record
// stays. The attempts add up; an error class is kept until another
// replaces it, and the accept time is the first record's.
func (s *Store) saveOperation(op *orderapp.Operation) *bun.InsertQuery {
	return s.db.NewInsert().Model(toOperationRow(op)).
		On("CONFLICT (id) DO UPDATE").
		Set("done = EXCLUDED.done, code = EXCLUDED.code, message = EXCLUDED.message").
		Set("error_class = COALESCE(NULLIF(EXCLUDED.error_class, ''), op.error_class)").
		Set("attempts = op.attempts + EXCLUDED.attempts").
		Set("order_version = EXCLUDED.order_version, update_time = EXCLUDED.update_time").
		Where("NOT op.done OR op.code IN (?)", bun.In(provisionalCodes()))
}

func provisionalCodes() []int32 {
	out := make([]int32, len(orderapp.Provisional))
	for i, c := range orderapp.Provisional {
		out[i] = int32(c)
	}
	return out
}

// SaveAttempt counts a failed attempt on op's pending record (made if
// there is none yet), with its error class; a done record is left as it
// is. It is one small statement, on the failure path only.
func (s *Store) SaveAttempt(ctx context.Context, op orderapp.Operation) error {
	op.Done, op.Code, op.Message, op.OrderVersion = false, 0, "", 0
	q := s.db.NewInsert().Model(toOperationRow(&op)).
		On("CONFLICT (id) DO UPDATE").
		Set("attempts = op.attempts + EXCLUDED.attempts").
		Set("error_class = EXCLUDED.error_class, update_time = EXCLUDED.update_time").
		Where("NOT op.done")
	err := s.retryBrokenConn(ctx, func() error {
		_, err := q.Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("save attempt at command %s: %w", op.CommandID, err)
	}
	return nil
}

// PurgeOperations deletes up to limit done operations last updated longer
// than retention ago (by the database's clock: the processors' agree with
// it far better than the hour retention is at least), and says how many it
// deleted. Each call is one bounded statement, so a
// purge of a large backlog never holds many locks at once; the caller
// repeats it while it deletes a full batch.
func (s *Store) PurgeOperations(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	res, err := s.db.NewDelete().Table("operations").
		// Rows another processor is purging, or a redrive is rewriting,
		// are skipped rather than waited for.
		Where("id IN (SELECT id FROM operations WHERE done AND update_time < now() - make_interval(secs => ?) LIMIT ? FOR UPDATE SKIP LOCKED)",
			retention.Seconds(), limit).
		Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("purge operations: %w", err)
	}
	return res.RowsAffected()
}

// saveError turns the statement's key and guard failures into orderapp's
// errors. They must not wrap the driver's error: a unique violation is an
// integrity error, which Classify counts as permanent.
func saveError(err error) error {
	var pgErr pgdriver.Error
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("save command: %w", err)
	}
	switch code, constraint := pgErr.Field('C'), pgErr.Field('n'); {
	case code == sqlstateExpect:
		return orderapp.ErrConflict
	case code == "23505" && constraint == "processed_commands_pkey":
		return orderapp.ErrClaimed
	case code == "23505" && (constraint == "orders_pkey" || constraint == "order_events_pkey"):
		return orderapp.ErrConflict
	}
	return fmt.Errorf("save command: %w", err)
}

// sqlstateExpect is oms_expect's failure (migration 5).
const sqlstateExpect = "OMS01"

func lineRows(o *order.Order) []lineRow {
	lines := make([]lineRow, len(o.Lines))
	for i, l := range o.Lines {
		lines[i] = lineRow{OrderID: o.ID, LineNo: i + 1, SKU: l.SKU, Name: l.Name, Quantity: l.Quantity, UnitPriceMinor: l.UnitPriceMinor}
	}
	return lines
}
