// Package pgbench runs PostgreSQL's pgbench to measure the raw ceiling that
// the store's own throughput is reported against.
package pgbench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"time"
)

// CreateOrder is, statement for statement, what the processor runs for a
// new create (orderstore.Store's Save; orderapp writes a create without
// reading first): one statement that claims the command id and inserts
// the order, its two lines, its first event and its notification. It
// skips what the processor adds on top: the domain decision, Bun's query
// building, the queue.
const CreateOrder = `SELECT gen_random_uuid() AS oid \gset
WITH claim AS (INSERT INTO processed_commands (principal, command_id, order_id, command, outcome, reason, fingerprint, processed_at)
    VALUES ('service:bench', ':oid', ':oid', 'create', 'applied', '', '\x00', now())),
  new_order AS (INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, created_by, version, last_event_seq, create_time, update_time)
    VALUES (':oid', 'c-1', 'CREATED', 'USD', 2950, 2950, 'service:bench', 1, 1, now(), now())),
  new_lines AS (INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
    VALUES (':oid', 1, 'SKU-1', 'Mug', 2, 1200), (':oid', 2, 'SKU-2', 'Tea', 1, 550)),
  event AS (INSERT INTO order_events (order_id, seq, type, from_state, to_state, command_id, command, reason, actor, payload, order_version, occur_time)
    VALUES (':oid', 1, 'order.created', 'STATE_UNSPECIFIED', 'CREATED', ':oid', 'create', '', 'service:bench', '{"currency_code":"USD","total_minor":2950,"line_items":2}', 1, now())),
  notification AS (INSERT INTO watermill_outbox (uuid, destination, group_id, body, metadata)
    VALUES (':oid', 'notifications', ':oid', '\x0a24', '{"oms_group_id":":oid"}'))
SELECT true;
`

// Options say what to run.
type Options struct {
	URL      string // a postgres:// URL
	Schema   string // search_path for the run; empty for the default
	Script   string
	Clients  int
	Duration time.Duration
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// Run runs pgbench and returns its transactions per second.
func Run(ctx context.Context, o Options) (float64, error) {
	f, err := os.CreateTemp("", "oms-pgbench-*.sql")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(o.Script); err != nil {
		return 0, err
	}
	f.Close()
	secs := max(int(o.Duration/time.Second), 1)
	cmd := exec.CommandContext(ctx, "pgbench", "-n", "-c", strconv.Itoa(o.Clients), "-j", strconv.Itoa(min(o.Clients, 4)),
		"-T", strconv.Itoa(secs), "-f", f.Name(), o.URL)
	cmd.Env = os.Environ()
	if o.Schema != "" {
		cmd.Env = append(cmd.Env, "PGOPTIONS=-c search_path="+o.Schema)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("pgbench: %v: %s", err, out.String())
	}
	m := tpsRE.FindStringSubmatch(out.String())
	if m == nil {
		return 0, fmt.Errorf("pgbench printed no tps: %s", out.String())
	}
	return strconv.ParseFloat(m[1], 64)
}
