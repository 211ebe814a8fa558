package orderstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"github.com/omsdev/oms/pkg/order"
)

// fieldColumns maps each top-level field of the Order resource to the
// columns it is read from, so a partial read selects only those. line_items
// lives in its own table and is loaded only when asked for.
var fieldColumns = map[string][]string{
	"name":             {"id"},
	"id":               {"id"},
	"customer_id":      {"customer_id"},
	"state":            {"state"},
	"line_items":       {},
	"currency_code":    {"currency_code"},
	"subtotal_minor":   {"subtotal_minor"},
	"total_minor":      {"total_minor"},
	"shipping_address": {"shipping_address"},
	"payment":          {"payment_reference", "payment_amount_minor", "pay_time"},
	"shipment":         {"carrier", "tracking_number", "ship_time", "deliver_time"},
	"cancellation":     {"cancel_reason", "cancel_time", "refund_due"},
	"version":          {"version"},
	"create_time":      {"create_time"},
	"update_time":      {"update_time"},
	"rejection_reason": {"rejection_reason"},
}

// KnownField reports whether field is a top-level Order field a read can
// select.
func KnownField(field string) bool {
	_, ok := fieldColumns[field]
	return ok
}

// columns returns the columns for fields (all when empty), plus extra, and
// whether line items are wanted.
func columns(fields []string, extra ...string) ([]string, bool, error) {
	if len(fields) == 0 {
		return nil, true, nil // bun selects every column of the model
	}
	cols := slices.Clone(extra)
	lines := false
	for _, f := range fields {
		cs, ok := fieldColumns[f]
		if !ok {
			return nil, false, fmt.Errorf("unknown order field %q", f)
		}
		lines = lines || f == "line_items"
		cols = append(cols, cs...)
	}
	slices.Sort(cols)
	return slices.Compact(cols), lines, nil
}

// visibleTo restricts q to the orders actor may read (order.Actor.CanAccess
// in SQL): another owner's order is simply not there.
func visibleTo(q *bun.SelectQuery, a order.Actor) *bun.SelectQuery {
	switch {
	case a.AllOrders:
		return q
	case a.CustomerID != "":
		return q.Where("customer_id = ?", a.CustomerID)
	case a.ID != "":
		return q.Where("created_by = ?", a.ID)
	default:
		return q.Where("false")
	}
}

// reread runs a read again, once, when it failed on a broken pooled
// connection (the server restarted since the connection was opened), after
// dropping the idle connections that are likely broken too. Reads are
// idempotent, so the retry is safe; the caller sees an error only if a
// fresh connection fails as well.
func (s *Store) reread(ctx context.Context, read func() error) error {
	err := read()
	if err == nil || ctx.Err() != nil || !brokenConn(err) {
		return err
	}
	maxIdle := s.db.Stats().MaxOpenConnections
	if maxIdle <= 0 {
		maxIdle = 2 // database/sql's default
	}
	s.db.SetMaxIdleConns(0) // closes every idle connection
	s.db.SetMaxIdleConns(maxIdle)
	return read()
}

// Get reads one order that actor may see, selecting only the columns that
// fields need (every field when fields is empty). Another owner's order is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string, fields []string, actor order.Actor) (o *order.Order, err error) {
	err = s.reread(ctx, func() error {
		o, err = s.get(ctx, id, fields, actor)
		return err
	})
	return o, err
}

func (s *Store) get(ctx context.Context, id string, fields []string, actor order.Actor) (*order.Order, error) {
	// id always: it keys the line items and proves the order exists.
	cols, wantLines, err := columns(fields, "id")
	if err != nil {
		return nil, err
	}
	var row orderRow
	q := visibleTo(s.db.NewSelect().Model(&row).Where("id = ?", id), actor)
	if cols != nil {
		q = q.Column(cols...)
	}
	if err := q.Scan(ctx); errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get order %s: %w", id, err)
	}
	o := row.toOrder()
	if wantLines {
		if err := s.loadLines(ctx, []*order.Order{&o}); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

func (s *Store) loadLines(ctx context.Context, orders []*order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	byID := make(map[string]*order.Order, len(orders))
	ids := make([]string, len(orders))
	for i, o := range orders {
		byID[o.ID], ids[i] = o, o.ID
		o.Lines = []order.LineItem{}
	}
	var rows []lineRow
	err := s.db.NewSelect().Model(&rows).Where("order_id IN (?)", bun.In(ids)).
		Order("order_id", "line_no").Scan(ctx)
	if err != nil {
		return fmt.Errorf("load line items: %w", err)
	}
	for _, r := range rows {
		o := byID[r.OrderID]
		o.Lines = append(o.Lines, order.LineItem{SKU: r.SKU, Name: r.Name, Quantity: r.Quantity, UnitPriceMinor: r.UnitPriceMinor})
	}
	return nil
}

// Cursor is a keyset position: the last order of the previous page.
type Cursor struct {
	CreateTime time.Time
	ID         string
}

// TimeBound is one comparison on create_time: Op is <, <=, > or >=.
type TimeBound struct {
	Op   string
	Time time.Time
}

// ListQuery selects a page of orders, newest first unless Ascending.
type ListQuery struct {
	Actor      order.Actor // only orders it may see, whatever else is asked
	State      order.State // StateUnspecified: any
	CustomerID string      // empty: any
	CreateTime []TimeBound
	After      *Cursor
	Ascending  bool
	Limit      int
	Fields     []string // as for Get
}

// List returns up to q.Limit orders ordered by (create_time, id), after
// q.After. Keyset pagination: a page never repeats or skips an order that
// existed when the first page was read, however many are inserted since.
func (s *Store) List(ctx context.Context, q ListQuery) (out []*order.Order, err error) {
	err = s.reread(ctx, func() error {
		out, err = s.list(ctx, q)
		return err
	})
	return out, err
}

func (s *Store) list(ctx context.Context, q ListQuery) ([]*order.Order, error) {
	cols, wantLines, err := columns(q.Fields, "id", "create_time")
	if err != nil {
		return nil, err
	}
	var rows []orderRow
	sel := visibleTo(s.db.NewSelect().Model(&rows), q.Actor)
	if cols != nil {
		sel = sel.Column(cols...)
	}
	if q.State != order.StateUnspecified {
		sel = sel.Where("state = ?", q.State.String())
	}
	if q.CustomerID != "" {
		sel = sel.Where("customer_id = ?", q.CustomerID)
	}
	for _, b := range q.CreateTime {
		switch b.Op {
		case "<", "<=", ">", ">=":
			sel = sel.Where("create_time "+b.Op+" ?", b.Time)
		default:
			return nil, fmt.Errorf("bad create_time operator %q", b.Op)
		}
	}
	dir, cmp := "DESC", "<"
	if q.Ascending {
		dir, cmp = "ASC", ">"
	}
	if q.After != nil {
		sel = sel.Where("(create_time, id) "+cmp+" (?, ?)", q.After.CreateTime, q.After.ID)
	}
	sel = sel.OrderExpr("create_time " + dir + ", id " + dir).Limit(int64(q.Limit))
	if err := sel.Scan(ctx); err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	out := make([]*order.Order, len(rows))
	for i := range rows {
		o := rows[i].toOrder()
		out[i] = &o
	}
	if wantLines {
		if err := s.loadLines(ctx, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Events returns up to limit entries of the history of an order actor may
// see, with sequence numbers above afterSeq, oldest first.
func (s *Store) Events(ctx context.Context, orderID string, afterSeq int64, limit int, actor order.Actor) (out []order.Event, err error) {
	err = s.reread(ctx, func() error {
		out, err = s.events(ctx, orderID, afterSeq, limit, actor)
		return err
	})
	return out, err
}

func (s *Store) events(ctx context.Context, orderID string, afterSeq int64, limit int, actor order.Actor) ([]order.Event, error) {
	owned := visibleTo(s.db.NewSelect().Model((*orderRow)(nil)).Column("id").Where("id = ?", orderID), actor)
	var rows []eventRow
	err := s.db.NewSelect().Model(&rows).Where("order_id = ?", orderID).Where("seq > ?", afterSeq).
		Where("EXISTS (?)", owned).Order("seq").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("list events of %s: %w", orderID, err)
	}
	if len(rows) == 0 {
		exists, err := owned.Exists(ctx)
		if err != nil {
			return nil, fmt.Errorf("list events of %s: %w", orderID, err)
		}
		if !exists {
			return nil, ErrNotFound
		}
	}
	out := make([]order.Event, len(rows))
	for i := range rows {
		out[i] = rows[i].toEvent()
	}
	return out, nil
}
