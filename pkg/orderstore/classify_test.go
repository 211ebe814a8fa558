package orderstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderstore"
)

// Errors from real PostgreSQL land in the class that decides their fate.
func TestClassifyRealErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	s := newApp(db)
	exec := func(q string) error { _, err := db.ExecContext(ctx, q); return err }

	_, notFound := s.Apply(ctx, cmd(uuid.NewString(), order.PayOrder{Reference: "r", AmountMinor: 1}))
	cases := []struct {
		name string
		err  error
		want orderstore.Class
	}{
		{"a command for an order not created yet", notFound, orderstore.ClassPending},
		{"undefined table: not migrated", exec("SELECT * FROM no_such_table"), orderstore.ClassOperational},
		{"undefined column", exec("SELECT no_such_column FROM orders"), orderstore.ClassOperational},
		{"bad data", exec("SELECT 'x'::int"), orderstore.ClassPermanent},
		{"integrity", exec("INSERT INTO order_line_items (order_id, line_no, sku, name, quantity, unit_price_minor) VALUES (gen_random_uuid(), 1, 's', 'n', 1, 1)"), orderstore.ClassPermanent},
		{"schema behind", fmt.Errorf("wrapped: %w", orderstore.ErrSchemaBehind), orderstore.ClassOperational},
		{"a conflict", orderstore.ErrConflict, orderstore.ClassTransient},
		{"anything unknown", errors.New("who knows"), orderstore.ClassTransient},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		if got := orderstore.Classify(c.err); got != c.want {
			t.Errorf("%s (%v): %s, want %s", c.name, c.err, got, c.want)
		}
	}
}

func TestCheckSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, _ := dbtest.NewUnmigrated(t)
	if err := orderstore.CheckSchema(ctx, db); !errors.Is(err, orderstore.ErrSchemaBehind) {
		t.Fatalf("never migrated: %v, want ErrSchemaBehind", err)
	}
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := orderstore.CheckSchema(ctx, db); err != nil {
		t.Fatalf("migrated: %v", err)
	}
	if _, err := orderstore.Rollback(ctx, db); err != nil {
		t.Fatal(err)
	}
	if err := orderstore.CheckSchema(ctx, db); !errors.Is(err, orderstore.ErrSchemaBehind) {
		t.Fatalf("rolled back: %v, want ErrSchemaBehind", err)
	}
}

// A role that can read but not write the tables is not ready either.
func TestCheckWritable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, schema := dbtest.NewUnmigrated(t)
	if _, err := orderstore.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	role := "ro_" + schema
	for _, q := range []string{
		"CREATE ROLE " + role + " LOGIN",
		"GRANT USAGE ON SCHEMA " + schema + " TO " + role,
		"GRANT SELECT ON ALL TABLES IN SCHEMA " + schema + " TO " + role,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		db.ExecContext(context.Background(), "DROP OWNED BY "+role)
		db.ExecContext(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	ro := orderstore.Open(strings.Replace(dbtest.URL(), "postgres@", role+"@", 1), pgdriver.WithConnParams(map[string]any{"search_path": schema}))
	defer ro.Close()
	if err := orderstore.CheckSchema(ctx, ro); err != nil {
		t.Fatalf("the schema is current: %v", err)
	}
	err := orderstore.CheckWritable(ctx, ro)
	if !errors.Is(err, orderstore.ErrSchemaBehind) || !strings.Contains(err.Error(), "may not read and write") {
		t.Fatalf("read-only role: %v", err)
	}
}
