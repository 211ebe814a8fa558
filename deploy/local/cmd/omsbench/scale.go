package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/devissuer"
)

// ListOrders as the table grows (-list-scale): the bench adds synthetic
// orders in steps and, at each size, measures the first page of the calls
// in scaleShapes through the real query service, with the plan of each
// one's SELECT.
//
// The synthetic orders are older than everything already there, so each
// step makes the table bigger without changing any first page: what moves
// between steps is the size alone. They belong mostly to scaleClient, a
// service that created none of the run's orders, so its first page is
// synthetic orders from the first step on.

// scaleClient is the service whose orders the phase lists.
const scaleClient = "marketplace"

// listCall makes one shape's call on a query service and returns the
// orders on the page.
type listCall func(ctx context.Context, c omsv1.OrderQueryServiceClient) (int, error)

// scaleShape is one ListOrders call the phase measures.
type scaleShape struct {
	Name   string // for the report
	Staff  bool   // as the staff console (every order), else as scaleClient
	Filter string
}

var scaleShapes = []scaleShape{
	{Name: "service (its own orders), no filter"},
	{Name: "service, `state = CANCELLED` (~3% of orders)", Filter: "state = CANCELLED"},
	{Name: "service, `customer_id = c-42` (1 customer in 20,000)", Filter: `customer_id = "c-42"`},
	{Name: "staff (every order), no filter", Staff: true},
}

// scaleStep is the table at one size.
type scaleStep struct {
	Orders int64         // rows in orders when measured
	Added  int64         // synthetic orders inserted for this step
	Grow   time.Duration // inserting them, and VACUUM ANALYZE
	Calls  []scaleCall
	Err    error
}

// scaleCall is one shape measured at one size.
type scaleCall struct {
	Shape scaleShape
	Read  readResult
	Rows  int // on the first page
	// The plans of its SELECT as the query service sent it: with its
	// parameters as literals (the custom plan PostgreSQL makes for the
	// first executions of a prepared statement), and generic (what a
	// prepared statement may switch to after five).
	Custom, Generic plan
	SQL             statement
}

// plan is one EXPLAIN (ANALYZE, BUFFERS).
type plan struct {
	Text    string
	Indexes []string // the indexes it scans
	Buffers int64    // shared buffers hit and read, at the top node
	Err     error
}

// scaleBatch is the most orders one INSERT adds: a statement stays well
// inside any timeout, and progress shows.
const scaleBatch = 250_000

// growSQL adds $1 orders, the newest $3 steps of 3 s before $2 and each
// older by 3 s: a spread of owners, customers, states and line items like
// a shop's (amounts are not the lines' sum; no read checks that).
const growSQL = `WITH src AS (
	SELECT $2::timestamptz - ($3::bigint + g) * interval '3 seconds' AS t, random() AS rs, random() AS rp,
		floor(random() * 20000)::int AS cust, (1 + floor(random() * 80))::bigint * 250 AS amount
	FROM generate_series(1, $1::bigint) g
), o AS (
	INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, shipping_address,
		payment_reference, payment_amount_minor, pay_time, carrier, tracking_number, ship_time, deliver_time,
		cancel_reason, cancel_time, refund_due, rejection_reason, created_by, version, last_event_seq, create_time, update_time)
	SELECT gen_random_uuid(), 'c-' || cust, st, 'USD', amount, amount + 499,
		CASE WHEN st <> 'REJECTED' THEN jsonb_build_object('recipient', 'Customer ' || cust, 'address_lines', jsonb_build_array(cust || ' Main Street'),
			'locality', 'Springfield', 'postal_code', lpad(cust::text, 5, '0'), 'region_code', 'US') END,
		CASE WHEN st IN ('PAID', 'SHIPPED', 'DELIVERED') OR (st = 'CANCELLED' AND rp < 0.3) THEN 'pay_' || md5(t::text) END,
		CASE WHEN st IN ('PAID', 'SHIPPED', 'DELIVERED') OR (st = 'CANCELLED' AND rp < 0.3) THEN amount + 499 END,
		CASE WHEN st IN ('PAID', 'SHIPPED', 'DELIVERED') OR (st = 'CANCELLED' AND rp < 0.3) THEN t + interval '2 minutes' END,
		CASE WHEN st IN ('SHIPPED', 'DELIVERED') THEN 'UPS' END,
		CASE WHEN st IN ('SHIPPED', 'DELIVERED') THEN '1Z' || upper(substr(md5(t::text), 1, 16)) END,
		CASE WHEN st IN ('SHIPPED', 'DELIVERED') THEN t + interval '1 day' END,
		CASE WHEN st = 'DELIVERED' THEN t + interval '3 days' END,
		CASE WHEN st = 'CANCELLED' THEN 'customer request' END,
		CASE WHEN st = 'CANCELLED' THEN t + interval '1 hour' END,
		st = 'CANCELLED' AND rp < 0.3,
		CASE WHEN st = 'REJECTED' THEN 'payment declined' END,
		CASE WHEN rp < 0.6 THEN 'service:` + scaleClient + `' WHEN rp < 0.9 THEN 'service:storefront' ELSE 'customer:c-' || cust END,
		CASE st WHEN 'CREATED' THEN 1 WHEN 'REJECTED' THEN 1 WHEN 'PAID' THEN 2 WHEN 'SHIPPED' THEN 3 WHEN 'DELIVERED' THEN 4 ELSE 2 END,
		CASE st WHEN 'CREATED' THEN 1 WHEN 'REJECTED' THEN 2 WHEN 'PAID' THEN 2 WHEN 'SHIPPED' THEN 3 WHEN 'DELIVERED' THEN 4 ELSE 2 END,
		t, t + interval '3 days'
	FROM (SELECT *, CASE WHEN rs < 0.04 THEN 'CREATED' WHEN rs < 0.08 THEN 'PAID' WHEN rs < 0.12 THEN 'SHIPPED'
		WHEN rs < 0.95 THEN 'DELIVERED' WHEN rs < 0.98 THEN 'CANCELLED' ELSE 'REJECTED' END AS st FROM src) x
	RETURNING id
)
INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
SELECT o.id, l, 'SKU-' || (abs(hashtext(o.id::text || l)) % 5000), 'Item ' || l, 1 + l % 3, 250 * l
FROM o, generate_series(1, 1 + abs(hashtext(o.id::text)) % 4) l`

// listScale grows the orders table to each of sizes in turn and measures
// ListOrders' first page at each.
func (s *stack) listScale(ctx context.Context, cfg config) ([]scaleStep, error) {
	tok, err := s.issuer.Mint(devissuer.TokenSpec{Subject: scaleClient, ClientID: scaleClient, Audience: audience,
		Scopes: []string{auth.ScopeRead}, TTL: devissuer.LocalTTL})
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(s.queryGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := omsv1.NewOrderQueryServiceClient(conn)
	calls := make([]listCall, len(scaleShapes))
	for i, sh := range scaleShapes {
		bearer := tok
		if sh.Staff {
			bearer = s.staffToken
		}
		calls[i] = func(ctx context.Context, c omsv1.OrderQueryServiceClient) (int, error) {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
			resp, err := c.ListOrders(ctx, &omsv1.ListOrdersRequest{PageSize: 50, Filter: sh.Filter})
			if err != nil {
				return 0, err
			}
			return len(resp.Orders), nil
		}
	}
	stmts, err := s.recordListSQL(ctx, calls)
	if err != nil {
		return nil, err
	}

	// Its own connection: adding a batch, or a VACUUM of millions of rows,
	// outlasts the driver's default 10 s read timeout.
	bulk := sql.OpenDB(pgdriver.NewConnector(pgdriver.WithDSN(s.dbURL), pgdriver.WithReadTimeout(time.Hour)))
	defer bulk.Close()
	bulk.SetMaxOpenConns(1)
	// The rows are made consistent: skip the foreign-key triggers, as a
	// restore does (the server's superuser runs the bench).
	if _, err := bulk.ExecContext(ctx, `SET session_replication_role = replica`); err != nil {
		s.say("list scale: foreign keys stay checked while adding orders: %v", err)
	}
	var have int64
	var oldest time.Time
	if err := bulk.QueryRowContext(ctx, `SELECT count(*), coalesce(min(create_time), now()) FROM orders`).Scan(&have, &oldest); err != nil {
		return nil, err
	}
	// The first step's orders are synthetic from here back.
	var added int64
	var steps []scaleStep
	for _, size := range cfg.ListScale {
		if int64(size) <= have {
			// Nothing to add: the run's own orders are there already, and a
			// first page of none of the service's would say nothing.
			s.say("list scale: skipping %d orders: the table has %d", size, have)
			continue
		}
		st := scaleStep{}
		began := time.Now()
		for n := int64(size) - have; n > 0; {
			k := min(n, scaleBatch)
			s.say("list scale: %d orders; adding %d", have, k)
			if _, err := bulk.ExecContext(ctx, growSQL, k, oldest, added); err != nil {
				st.Err = fmt.Errorf("add orders: %w", err)
				break
			}
			n, have, added, st.Added = n-k, have+k, added+k, st.Added+k
		}
		if st.Err == nil && st.Added > 0 {
			// What a settled table has: statistics and the visibility map.
			if _, err := bulk.ExecContext(ctx, `VACUUM ANALYZE orders, order_line_items`); err != nil {
				st.Err = fmt.Errorf("vacuum: %w", err)
			}
		}
		st.Grow, st.Orders = time.Since(began), have
		if st.Err != nil {
			steps = append(steps, st)
			return steps, st.Err
		}
		for i, sh := range scaleShapes {
			c := scaleCall{Shape: sh, SQL: stmts[i]}
			c.Custom = explain(ctx, bulk, stmts[i], false)
			c.Generic = explain(ctx, bulk, stmts[i], true)
			c.Rows, _ = calls[i](ctx, client)
			s.say("list scale: %d orders: %s, %d clients, %s", have, sh.Name, cfg.ListClients, cfg.ListDuration)
			c.Read = s.drive(ctx, cfg.ListClients, cfg.ListDuration, func(ctx context.Context, _ int) error {
				_, err := calls[i](ctx, client)
				return err
			})
			st.Calls = append(st.Calls, c)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// recordListSQL has a query service of its own, reached through a
// recorder, answer each call once, and returns the SELECT each sent: the
// statement the bench explains is the service's, not a copy kept in step.
func (s *stack) recordListSQL(ctx context.Context, calls []listCall) ([]statement, error) {
	u, err := url.Parse(s.dbURL)
	if err != nil {
		return nil, err
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	rec, err := newRecorder(target)
	if err != nil {
		return nil, err
	}
	defer rec.close()
	via := *u
	via.Host = rec.addr()
	const name = "query-capture"
	httpAddr, grpcAddr := freeAddr(), freeAddr()
	if err := s.spawnAs(name, nameQuery, nil, []string{"DATABASE_URL=" + via.String(), "HTTP_ADDR=" + httpAddr, "GRPC_ADDR=" + grpcAddr, "ADMIN_ADDR=" + freeAddr()}); err != nil {
		return nil, err
	}
	defer s.stop(name)
	if err := s.waitReady(ctx, name, httpAddr, true); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := omsv1.NewOrderQueryServiceClient(conn)
	out := make([]statement, len(calls))
	for i := range calls {
		before := len(rec.statements())
		if _, err := calls[i](ctx, client); err != nil {
			return nil, fmt.Errorf("%s: %w", scaleShapes[i].Name, err)
		}
		got := rec.statements()[before:]
		j := slices.IndexFunc(got, func(st statement) bool { return strings.Contains(st.text, "FROM orders") && st.query != "" })
		if j < 0 {
			return nil, fmt.Errorf("%s: no SELECT from orders recorded", scaleShapes[i].Name)
		}
		out[i] = got[j]
	}
	return out, nil
}

var (
	indexRE   = regexp.MustCompile(`(?:Index|Index Only|Bitmap Index) Scan(?: Backward)? (?:using|on) (\S+)`)
	buffersRE = regexp.MustCompile(`Buffers: shared (?:hit=([0-9]+))? ?(?:read=([0-9]+))?`)
)

// explain runs EXPLAIN (ANALYZE, BUFFERS) on a recorded statement: with its
// parameters as literals, or prepared and forced generic.
func explain(ctx context.Context, db *sql.DB, st statement, generic bool) (p plan) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return plan{Err: err}
	}
	defer conn.Close()
	query := "EXPLAIN (ANALYZE, BUFFERS) " + st.text
	if generic {
		if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = force_generic_plan; DEALLOCATE ALL; PREPARE omsbench_list AS "+st.query); err != nil {
			return plan{Err: fmt.Errorf("prepare: %w", err)}
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "DEALLOCATE ALL; RESET plan_cache_mode")
		query = "EXPLAIN (ANALYZE, BUFFERS) EXECUTE omsbench_list"
		if len(st.params) > 0 {
			query += "(" + strings.Join(st.params, ", ") + ")"
		}
	}
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return plan{Err: err}
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return plan{Err: err}
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return plan{Err: err}
	}
	p.Text = strings.Join(lines, "\n")
	for _, m := range indexRE.FindAllStringSubmatch(p.Text, -1) {
		if !slices.Contains(p.Indexes, m[1]) {
			p.Indexes = append(p.Indexes, m[1])
		}
	}
	if m := buffersRE.FindStringSubmatch(p.Text); m != nil {
		var hit, read int64
		fmt.Sscan(m[1], &hit)
		fmt.Sscan(m[2], &read)
		p.Buffers = hit + read
	}
	return p
}

// writeScale writes the -list-scale section.
func (r *results) writeScale(b io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("%s\n\n", sections[10])
	if len(r.Config.ListScale) == 0 {
		p("Not run: `-list-scale 100000,1000000,10000000` grows the orders table in steps and measures ListOrders' first page at each size.\n\n")
		return
	}
	if r.ScaleErr != nil {
		p("**Failed:** %s\n\n", oneLine(r.ScaleErr.Error()))
	}
	if len(r.Scale) < len(r.Config.ListScale) {
		p("Sizes up to the orders the run had already made were skipped: %d of %v measured.\n\n", len(r.Scale), r.Config.ListScale)
	}
	p("ListOrders' first page (page_size 50, every field) through the query service over gRPC, %d clients for %s per call and size. The orders added are synthetic, older than every order already there, so each call's first page is the same at every size and only the table grows. %d%% of them are the service `%s`'s, 30%% the storefront's, 10%% customers'; 20,000 customers; states 83%% DELIVERED, 4%% each CREATED, PAID, SHIPPED, 3%% CANCELLED, 2%% REJECTED; 1 to 4 line items. \"Buffers\" is the pages the plan touched (EXPLAIN ANALYZE, BUFFERS); the index is the one each plan scans, custom (parameters as literals, a prepared statement's first five runs) / generic (what it may switch to).\n\n",
		r.Config.ListClients, r.Config.ListDuration, 60, scaleClient)
	p("| Orders | Call | Rows | Calls/s | p50 | p99 | query CPU per call | PostgreSQL CPU per call: backends / all | Index: custom / generic | Buffers: custom / generic | Errors |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, st := range r.Scale {
		for _, c := range st.Calls {
			rr := c.Read
			ok := rr.Err == nil
			p("| %s | %s | %d | %s | %s ms | %s ms | %s | %s | %s / %s | %s / %s | %d |\n", num(float64(st.Orders)), c.Shape.Name, c.Rows,
				fig(ok, num(rr.PerSec)), dec(rr.P50), dec(rr.P99),
				fig(ok, usec(rr.CPU.per(nameQuery, float64(rr.Calls)))),
				fig(ok, usec(rr.CPU.per(namePGBackends, float64(rr.Calls)))+" / "+usec(rr.CPU.per(namePostgres, float64(rr.Calls)))),
				c.Custom.index(), c.Generic.index(), c.Custom.buffers(), c.Generic.buffers(), rr.Errors)
		}
	}
	p("\n")
	if len(r.Scale) > 1 {
		first, last := r.Scale[0], r.Scale[len(r.Scale)-1]
		p("From %s to %s orders, per call:\n\n", num(float64(first.Orders)), num(float64(last.Orders)))
		for i, c := range last.Calls {
			if i >= len(first.Calls) {
				break
			}
			a, z := first.Calls[i].Read, c.Read
			qa, qz := a.CPU.per(nameQuery, float64(a.Calls)), z.CPU.per(nameQuery, float64(z.Calls))
			pa, pz := a.CPU.per(namePGBackends, float64(a.Calls)), z.CPU.per(namePGBackends, float64(z.Calls))
			p("- %s: query CPU %s → %s, PostgreSQL backends' CPU %s → %s (×%s), buffers (generic plan) %s → %s.\n", c.Shape.Name, usec(qa), usec(qz), usec(pa), usec(pz),
				ratio(pa > 0, float64(pz), float64(pa)), first.Calls[i].Generic.buffers(), c.Generic.buffers())
		}
		p("\n")
	}
	for _, st := range r.Scale {
		if st.Added > 0 {
			p("- Adding %s orders (and their line items) to reach %s took %s, VACUUM ANALYZE included.\n", num(float64(st.Added)), num(float64(st.Orders)), st.Grow.Round(time.Second))
		}
	}
	p("\n")
	if n := len(r.Scale); n > 0 && len(r.Scale[n-1].Calls) > 0 {
		st := r.Scale[n-1]
		p("<details><summary>The plans at %s orders</summary>\n\n", num(float64(st.Orders)))
		for _, c := range st.Calls {
			p("%s: the query service's statement\n\n```sql\n%s\n```\n\nwith %s; custom plan:\n\n```text\n%s\n```\n\ngeneric plan:\n\n```text\n%s\n```\n\n",
				c.Shape.Name, c.SQL.query, strings.Join(c.SQL.params, ", "), c.Custom.text(), c.Generic.text())
		}
		p("</details>\n\n")
	}
}

func (p plan) index() string {
	switch {
	case p.Err != nil:
		return "failed"
	case len(p.Indexes) == 0:
		return "none (sequential scan)"
	}
	return "`" + strings.Join(p.Indexes, "`, `") + "`"
}

func (p plan) buffers() string {
	if p.Err != nil {
		return "failed"
	}
	return whole(p.Buffers)
}

func (p plan) text() string {
	if p.Err != nil {
		return "failed: " + p.Err.Error()
	}
	return p.Text
}
