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

// CreateOrder is, statement for statement, the transaction
// orderstore.Store.Apply runs for a create: claim the command id, lock the
// (absent) order, insert the order, its two lines and its first event.
// It skips what the store adds on top: the domain decision, Bun's query
// building, the outbox row.
const CreateOrder = `SELECT gen_random_uuid() AS oid \gset
BEGIN;
INSERT INTO processed_commands (command_id, order_id, command, outcome, reason, fingerprint, processed_at)
  VALUES (':oid', ':oid', 'create', 'applied', '', '\x00', now()) ON CONFLICT (command_id) DO NOTHING;
SELECT * FROM orders WHERE id = ':oid' FOR UPDATE;
INSERT INTO orders (id, customer_id, state, currency_code, subtotal_minor, total_minor, version, last_event_seq, create_time, update_time)
  VALUES (':oid', 'c-1', 'CREATED', 'USD', 2950, 2950, 1, 1, now(), now()) ON CONFLICT (id) DO NOTHING;
INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor)
  VALUES (':oid', 1, 'SKU-1', 'Mug', 2, 1200), (':oid', 2, 'SKU-2', 'Tea', 1, 550);
INSERT INTO order_events (order_id, seq, type, from_state, to_state, command_id, command, reason, payload, order_version, occur_time)
  VALUES (':oid', 1, 'order.created', 'STATE_UNSPECIFIED', 'CREATED', ':oid', 'create', '', '{}', 1, now());
COMMIT;
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
