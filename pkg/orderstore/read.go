package orderstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

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
		return nil, true, nil // every column (allColumns)
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

// retryBrokenConn runs a statement again, once, when it failed on a
// broken pooled connection (the server restarted since the connection was
// opened), after dropping the idle connections that are likely broken too.
// Reads are idempotent; a command's write is too (see Save). The caller
// sees an error only if a fresh connection fails as well.
func (s *Store) retryBrokenConn(ctx context.Context, run func() error) error {
	err := run()
	if err == nil || ctx.Err() != nil || !brokenConn(err) {
		return err
	}
	maxIdle := s.db.Stats().MaxOpenConnections
	if maxIdle <= 0 {
		maxIdle = 2 // database/sql's default
	}
	s.db.SetMaxIdleConns(0) // closes every idle connection
	s.db.SetMaxIdleConns(maxIdle)
	return run()
}

// Get reads one order that actor may see, selecting only the columns that
// fields need (every field when fields is empty). Another owner's order is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string, fields []string, actor order.Actor) (o *order.Order, err error) {
	err = s.retryBrokenConn(ctx, func() error {
		o, err = s.get(ctx, id, fields, actor)
		return err
	})
	return o, err
}

// get is one prepared statement and one row: the order's columns, and
// its line items as one JSON value when they are wanted (PostgreSQL spends
// less on that than on a join's row per line, and so does the scan).
// Concurrent gets share statements (getBatches).
func (s *Store) get(ctx context.Context, id string, fields []string, actor order.Actor) (*order.Order, error) {
	vis, who := visibility(actor)
	if vis == seesNone {
		return nil, ErrNotFound
	}
	gq, err := getQueryFor(fields, vis)
	if err != nil {
		return nil, err
	}
	o, err := statements(s.db.DB).get(ctx, gq, getKey{id, who})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, err
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
	// Where is any further condition, such as a filter with OR or NOT; nil
	// for none. A conjunction of comparisons is read exactly as the fields
	// above are (the same statement, the same indexes).
	Where     Cond
	After     *Cursor
	Ascending bool
	Limit     int
	Fields    []string // as for Get
}

// Cond is a condition on orders: a filter's expression in the store's
// terms, which the store renders to SQL with every value a bound
// parameter. It is And, Or, Not or Compare.
type Cond interface {
	render(w *sqlWriter) error
}

// And holds when every one of its conditions does (and when it has none).
type And []Cond

// Or holds when any one of its conditions does (and never when it has none).
type Or []Cond

// Not holds when its condition does not.
type Not struct{ Cond Cond }

// Compare is one comparison of a filterable field with a value:
//
//	state        = or !=          an order.State
//	customer_id  = or !=          a string
//	create_time  <, <=, > or >=   a time.Time
//
// These are the fields the list indexes lead with.
type Compare struct {
	Field string
	Op    string
	Value any
}

// sqlWriter accumulates a statement and its positional parameters.
type sqlWriter struct {
	sb   strings.Builder
	args []any
}

func (w *sqlWriter) param(v any, cast string) {
	w.args = append(w.args, v)
	w.sb.WriteString("$" + strconv.Itoa(len(w.args)) + cast)
}

// where appends c to a WHERE clause as " AND ..." terms. A conjunction's
// comparisons come first, as state, customer_id and create_time in that
// order, so that a plain conjunction is one statement text however the
// filter ordered it (prepared statements are kept by their text), and the
// same text the ListQuery fields give.
func (w *sqlWriter) where(c Cond) error {
	var terms []Cond
	var flatten func(Cond)
	flatten = func(c Cond) {
		if a, ok := c.(And); ok {
			for _, t := range a {
				flatten(t)
			}
			return
		}
		if c != nil {
			terms = append(terms, c)
		}
	}
	flatten(c)
	slices.SortStableFunc(terms, func(a, b Cond) int { return condRank(a) - condRank(b) })
	for _, t := range terms {
		w.sb.WriteString(" AND ")
		if err := t.render(w); err != nil {
			return err
		}
	}
	return nil
}

func condRank(c Cond) int {
	if cmp, ok := c.(Compare); ok {
		switch cmp.Field {
		case "state":
			return 0
		case "customer_id":
			return 1
		case "create_time":
			return 2
		}
	}
	return 3
}

func (a And) render(w *sqlWriter) error { return w.join(a, " AND ", "true") }

func (o Or) render(w *sqlWriter) error { return w.join(o, " OR ", "false") }

func (w *sqlWriter) join(cs []Cond, op, empty string) error {
	if len(cs) == 0 {
		w.sb.WriteString(empty)
		return nil
	}
	w.sb.WriteString("(")
	for i, c := range cs {
		if i > 0 {
			w.sb.WriteString(op)
		}
		if err := c.render(w); err != nil {
			return err
		}
	}
	w.sb.WriteString(")")
	return nil
}

// Every column a filter names is NOT NULL, so NOT is the complement: no
// order escapes both a condition and its negation.
func (n Not) render(w *sqlWriter) error {
	if n.Cond == nil {
		return errors.New("orderstore: NOT of nothing")
	}
	w.sb.WriteString("NOT (")
	if err := n.Cond.render(w); err != nil {
		return err
	}
	w.sb.WriteString(")")
	return nil
}

func (c Compare) render(w *sqlWriter) error {
	bad := func() error { return fmt.Errorf("orderstore: cannot compare %s %s %T", c.Field, c.Op, c.Value) }
	equality := c.Op == "=" || c.Op == "!="
	switch v := c.Value.(type) {
	case order.State:
		if c.Field != "state" || !equality {
			return bad()
		}
		w.sb.WriteString("o.state " + c.Op + " ")
		w.param(v.String(), "")
	case string:
		if c.Field != "customer_id" || !equality {
			return bad()
		}
		w.sb.WriteString("o.customer_id " + c.Op + " ")
		w.param(v, "")
	case time.Time:
		switch c.Op {
		case "<", "<=", ">", ">=":
		default:
			return bad()
		}
		if c.Field != "create_time" {
			return bad()
		}
		w.sb.WriteString("o.create_time " + c.Op + " ")
		w.param(pgTime(v), "::timestamptz")
	default:
		return bad()
	}
	return nil
}

// cond is q's selection as one condition: its fields, then Where.
func (q *ListQuery) cond() Cond {
	var and And
	if q.State != order.StateUnspecified {
		and = append(and, Compare{"state", "=", q.State})
	}
	if q.CustomerID != "" {
		and = append(and, Compare{"customer_id", "=", q.CustomerID})
	}
	for _, b := range q.CreateTime {
		and = append(and, Compare{"create_time", b.Op, b.Time})
	}
	if q.Where != nil {
		and = append(and, q.Where)
	}
	return and
}

// List returns up to q.Limit orders ordered by (create_time, id), after
// q.After. Keyset pagination: a page never repeats or skips an order that
// existed when the first page was read, however many are inserted since.
func (s *Store) List(ctx context.Context, q ListQuery) (out []*order.Order, err error) {
	err = s.retryBrokenConn(ctx, func() error {
		out, err = s.list(ctx, q)
		return err
	})
	return out, err
}

// listSQL is q's statement and its parameters, with the columns it
// selects; ok is false when the actor may see no order at all.
func listSQL(q ListQuery) (query string, args []any, cols []string, wantLines, ok bool, err error) {
	cols, wantLines, err = columns(q.Fields, "id", "create_time")
	if err != nil {
		return "", nil, nil, false, false, err
	}
	if cols == nil {
		cols = allColumns
	}
	var w sqlWriter
	w.sb.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			w.sb.WriteString(", ")
		}
		w.sb.WriteString(selectColumn(c))
	}
	if wantLines {
		w.sb.WriteString(", " + linesColumn)
	}
	w.sb.WriteString(" FROM orders AS o WHERE true")
	if !visibleSQL(&w.sb, q.Actor, &w.args) {
		return "", nil, nil, false, false, nil
	}
	if err := w.where(q.cond()); err != nil {
		return "", nil, nil, false, false, err
	}
	dir, cmp := "DESC", "<"
	if q.Ascending {
		dir, cmp = "ASC", ">"
	}
	if q.After != nil {
		w.sb.WriteString(" AND (o.create_time, o.id) " + cmp + " (")
		w.param(pgTime(q.After.CreateTime), "::timestamptz")
		w.sb.WriteString(", ")
		w.param(q.After.ID, "::uuid")
		w.sb.WriteString(")")
	}
	// The limit is part of the statement, not a parameter, so that the
	// plan is made for it.
	w.sb.WriteString(" ORDER BY o.create_time " + dir + ", o.id " + dir + " LIMIT " + strconv.Itoa(max(q.Limit, 0)))
	return w.sb.String(), w.args, cols, wantLines, true, nil
}

// list is one prepared statement: the page, with each order's line items
// when they are wanted.
func (s *Store) list(ctx context.Context, q ListQuery) ([]*order.Order, error) {
	query, args, cols, wantLines, ok, err := listSQL(q)
	if err != nil || !ok {
		return nil, err
	}
	rows, err := statements(s.db.DB).query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	out := make([]*order.Order, 0, max(q.Limit, 0))
	dest := make([]any, len(cols), len(cols)+1)
	for rows.Next() {
		var row orderRow
		var lines []order.LineItem
		for i, c := range cols {
			dest[i] = row.dest(c)
		}
		if wantLines {
			dest = append(dest[:len(cols)], linesValue{&lines})
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		o := row.toOrder()
		if wantLines {
			o.Lines = lines
		}
		out = append(out, &o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// Events returns up to limit entries of the history of an order actor may
// see, with sequence numbers above afterSeq, oldest first.
func (s *Store) Events(ctx context.Context, orderID string, afterSeq int64, limit int, actor order.Actor) (out []order.Event, err error) {
	err = s.retryBrokenConn(ctx, func() error {
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

// allColumns is every column of orderRow, what a read of every field
// selects (as bun did for the whole model).
var allColumns = func() []string {
	var cols []string
	for _, f := range bun.NewDB(nil, pgdialect.New()).Table(reflect.TypeFor[orderRow]()).Fields {
		cols = append(cols, f.Name)
	}
	return cols
}()

// textColumns are orderRow's columns read as text: timestamptz, whose ISO
// form the scan parses several times faster than the driver parses a
// timestamptz (readscan.go, nullTime), and uuid, which the driver would
// return as bytes to be copied into a string again.
var textColumns = func() map[string]bool {
	m := map[string]bool{}
	for _, f := range bun.NewDB(nil, pgdialect.New()).Table(reflect.TypeFor[orderRow]()).Fields {
		if f.IndirectType == reflect.TypeFor[time.Time]() || f.UserSQLType == "uuid" {
			m[f.Name] = true
		}
	}
	return m
}()

// selectColumn is how a read selects column c of orders AS o.
func selectColumn(c string) string {
	if textColumns[c] {
		return "o." + c + "::text"
	}
	return "o." + c
}

// Whose orders an actor sees (order.Actor.CanAccess in SQL).
type seen int

const (
	seesNone     seen = iota
	seesAll           // staff: every order
	seesCustomer      // a customer: customer_id = who
	seesCreated       // a service client: created_by = who
)

func visibility(a order.Actor) (seen, string) {
	switch {
	case a.AllOrders:
		return seesAll, ""
	case a.CustomerID != "":
		return seesCustomer, a.CustomerID
	case a.ID != "":
		return seesCreated, a.ID
	}
	return seesNone, ""
}

// visibleSQL appends to q the condition confining a read to the orders a
// may see, and false when a may see none.
func visibleSQL(q *strings.Builder, a order.Actor, args *[]any) bool {
	vis, who := visibility(a)
	switch vis {
	case seesAll:
		return true
	case seesNone:
		return false
	}
	*args = append(*args, who)
	q.WriteString(visibleCond(vis, len(*args)))
	return true
}

func visibleCond(vis seen, param int) string {
	return " AND o." + visibleColumn(vis) + " = $" + strconv.Itoa(param)
}

func visibleColumn(vis seen) string {
	if vis == seesCreated {
		return "created_by"
	}
	return "customer_id"
}

// getQuery is Get's statement for one set of fields and one kind of
// reader; they are few, so each is built once.
type getQuery struct {
	sql   string // one order: $1 the id, $2 who (unless vis is seesAll)
	batch string // several: $1 the ids, $2 who for each, as arrays
	cols  []string
	lines bool
}

type getShape struct {
	fields string
	vis    seen
}

const maxGetQueries = 1024

var getQueries struct {
	sync.RWMutex
	m map[getShape]*getQuery
}

func getQueryFor(fields []string, vis seen) (*getQuery, error) {
	shape := getShape{strings.Join(fields, ","), vis}
	getQueries.RLock()
	gq := getQueries.m[shape]
	getQueries.RUnlock()
	if gq != nil {
		return gq, nil
	}
	// id always: it keys the line items and proves the order exists.
	cols, lines, err := columns(fields, "id")
	if err != nil {
		return nil, err
	}
	if cols == nil {
		cols = allColumns
	}
	var q strings.Builder
	q.WriteString("SELECT ")
	for i, c := range cols {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(selectColumn(c))
	}
	if lines {
		q.WriteString(", " + linesColumn)
	}
	sel := q.String()
	q.WriteString(" FROM orders AS o WHERE o.id = $1")
	if vis != seesAll {
		q.WriteString(visibleCond(vis, 2))
	}
	// Each key's row says which key it answers (i). The lateral
	// subquery, kept apart by OFFSET 0, is an index lookup per key
	// whatever the plan thinks of the arrays' length.
	var b strings.Builder
	b.WriteString("SELECT k.i, " + strings.TrimPrefix(sel, "SELECT "))
	b.WriteString(" FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS k(id, who, i)")
	b.WriteString(" CROSS JOIN LATERAL (SELECT * FROM orders AS o WHERE o.id = k.id")
	if vis != seesAll {
		b.WriteString(" AND o." + visibleColumn(vis) + " = k.who")
	}
	b.WriteString(" OFFSET 0) AS o")
	gq = &getQuery{sql: q.String(), batch: b.String(), cols: cols, lines: lines}
	getQueries.Lock()
	if getQueries.m == nil {
		getQueries.m = map[getShape]*getQuery{}
	}
	if len(getQueries.m) < maxGetQueries {
		getQueries.m[shape] = gq
	}
	getQueries.Unlock()
	return gq, nil
}

// pgTime is t as a timestamptz literal, to the microsecond PostgreSQL
// keeps. Year 1 is a time like any other (a zero time.Time would be sent
// as NULL).
func pgTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.999999-07:00") }

// Prepared statements. database/sql prepares a statement on each pooled
// connection the first time it runs there, and again on a new connection
// after one is dropped. Each database handle's statements are kept by
// their text; a read whose text is not among them once the bound is
// reached runs unprepared.
const (
	maxStmtsPerDB = 256
	maxStmtDBs    = 8 // handles with statements kept (tests open many)
)

type readStmts struct {
	db *sql.DB
	mu sync.RWMutex
	m  map[string]*sql.Stmt

	gets getBatches
}

var stmtDBs struct {
	mu   sync.Mutex
	head atomic.Pointer[readStmts] // the most recently used, without the lock
	list []*readStmts              // most recently used first
}

// statements returns db's statements.
func statements(db *sql.DB) *readStmts {
	if h := stmtDBs.head.Load(); h != nil && h.db == db {
		return h
	}
	stmtDBs.mu.Lock()
	defer stmtDBs.mu.Unlock()
	l := stmtDBs.list
	i := slices.IndexFunc(l, func(r *readStmts) bool { return r.db == db })
	var r *readStmts
	if i >= 0 {
		r = l[i]
		l = slices.Delete(l, i, i+1)
	} else {
		r = &readStmts{db: db, m: map[string]*sql.Stmt{}}
		if len(l) >= maxStmtDBs {
			go l[len(l)-1].close()
			l = l[:len(l)-1]
		}
	}
	stmtDBs.list = slices.Insert(l, 0, r)
	stmtDBs.head.Store(r)
	return r
}

func (r *readStmts) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for q, st := range r.m {
		st.Close()
		delete(r.m, q)
	}
}

// query runs query with args through its prepared statement.
func (r *readStmts) query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	r.mu.RLock()
	st := r.m[query]
	r.mu.RUnlock()
	if st == nil {
		var err error
		if st, err = r.prepare(ctx, query); err != nil {
			return nil, err
		}
		if st == nil {
			return r.db.QueryContext(ctx, query, args...)
		}
	}
	return st.QueryContext(ctx, args...)
}

// prepare returns query's statement, preparing it if there is room; nil
// when there is none. The round trip is made without the lock, so reads of
// other statements never wait for it.
func (r *readStmts) prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	r.mu.RLock()
	full := len(r.m) >= maxStmtsPerDB
	r.mu.RUnlock()
	if full {
		return nil, nil
	}
	st, err := r.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.m[query]; old != nil || len(r.m) >= maxStmtsPerDB {
		st.Close() // prepared meanwhile, or no room after all
		return old, nil
	}
	r.m[query] = st
	return st, nil
}
