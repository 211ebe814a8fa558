package orderstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrationLockKey is the pg_advisory_lock key that serialises migrators:
// several replicas or a Kubernetes Job may start at once.
const migrationLockKey = 0x6f6d73 // "oms"

func migrator(db *bun.DB) (*migrate.Migrator, error) {
	ms := migrate.NewMigrations()
	if err := ms.Discover(migrationFiles); err != nil {
		return nil, fmt.Errorf("discover migrations: %w", err)
	}
	return migrate.NewMigrator(db, ms, migrate.WithMarkAppliedOnSuccess(true)), nil
}

// Migrate applies every pending migration and reports how many ran.
func Migrate(ctx context.Context, db *bun.DB) (int, error) {
	return withMigrator(ctx, db, func(m *migrate.Migrator) (*migrate.MigrationGroup, error) {
		return m.Migrate(ctx)
	})
}

// Rollback undoes the last group of migrations and reports how many ran.
func Rollback(ctx context.Context, db *bun.DB) (int, error) {
	return withMigrator(ctx, db, func(m *migrate.Migrator) (*migrate.MigrationGroup, error) {
		return m.Rollback(ctx)
	})
}

func withMigrator(ctx context.Context, db *bun.DB, run func(*migrate.Migrator) (*migrate.MigrationGroup, error)) (int, error) {
	m, err := migrator(db)
	if err != nil {
		return 0, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", migrationLockKey); err != nil {
		return 0, fmt.Errorf("migrate: lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(?)", migrationLockKey)

	if err := m.Init(ctx); err != nil {
		return 0, fmt.Errorf("migrate: init: %w", err)
	}
	g, err := run(m)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	return len(g.Migrations), nil
}

// ErrSchemaBehind: the database lacks migrations this binary needs, or the
// role lacks the privileges to use them.
var ErrSchemaBehind = errors.New("the database schema is behind this binary")

// CheckSchema returns nil when every migration this binary embeds has been
// applied (a newer schema is fine: migrations come before a rollout), or an
// error wrapping ErrSchemaBehind that names what is missing.
func CheckSchema(ctx context.Context, db *bun.DB) error {
	m, err := migrator(db)
	if err != nil {
		return err
	}
	ms, err := m.MigrationsWithStatus(ctx)
	if err != nil {
		if Classify(err) == ClassOperational { // no bun_migrations table: never migrated
			return fmt.Errorf("%w: not migrated (%v)", ErrSchemaBehind, err)
		}
		return fmt.Errorf("read the schema version: %w", err)
	}
	if missing := ms.Unapplied(); len(missing) > 0 {
		return fmt.Errorf("%w: %d migrations not applied, the first %s; run `processor migrate up`", ErrSchemaBehind, len(missing), missing[0].Name)
	}
	return nil
}

// CheckWritable returns an error wrapping ErrSchemaBehind when the role
// may not read and write every table the processor writes.
func CheckWritable(ctx context.Context, db *bun.DB) error {
	var denied []string
	err := db.NewRaw(`SELECT t FROM unnest(?::text[]) AS t WHERE NOT (has_table_privilege(current_user, t, 'SELECT')
			AND has_table_privilege(current_user, t, 'INSERT') AND has_table_privilege(current_user, t, 'UPDATE'))`,
		pgdialect.Array([]string{"orders", "order_line_items", "order_events", "processed_commands", "watermill_outbox"})).Scan(ctx, &denied)
	if err != nil {
		if Classify(err) == ClassOperational {
			return fmt.Errorf("%w: %v", ErrSchemaBehind, err)
		}
		return fmt.Errorf("check table privileges: %w", err)
	}
	if len(denied) > 0 {
		return fmt.Errorf("%w: the database role may not read and write %s", ErrSchemaBehind, strings.Join(denied, ", "))
	}
	return nil
}
