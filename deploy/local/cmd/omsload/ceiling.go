package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/pgbench"
)

// ceiling is the raw database ceiling measured in the same run: pgbench
// running the store's create transaction with as many clients as the
// processor applies commands in parallel, in a scratch schema of the
// stack's database (dropped afterwards).
type ceiling struct {
	Clients int     `json:"clients"`
	TPS     float64 `json:"pgbench_tps"`
}

func measureCeiling(ctx context.Context, dbURL string, clients int) (ceiling, error) {
	b := make([]byte, 4)
	rand.Read(b)
	schema := "omsload_ceiling_" + hex.EncodeToString(b)
	admin := orderstore.Open(dbURL)
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		return ceiling{}, fmt.Errorf("scratch schema: %w", err)
	}
	defer admin.ExecContext(context.WithoutCancel(ctx), "DROP SCHEMA "+schema+" CASCADE")
	db := orderstore.Open(dbURL, pgdriver.WithConnParams(map[string]any{"search_path": schema}))
	defer db.Close()
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		return ceiling{}, err
	}
	tps, err := pgbench.Run(ctx, pgbench.Options{URL: dbURL, Schema: schema, Script: pgbench.CreateOrder, Clients: clients, Duration: 5 * time.Second})
	return ceiling{Clients: clients, TPS: tps}, err
}

func (c ceiling) print(w io.Writer, visiblePerSec float64) {
	if c.TPS == 0 {
		return
	}
	fmt.Fprintf(w, "ceiling     pgbench, the create transaction, %d client(s): %.0f tps; end to end = %.3f of it\n",
		c.Clients, c.TPS, visiblePerSec/c.TPS)
}
