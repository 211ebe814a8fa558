package orderstore

import (
	"context"
	"embed"
	"fmt"

	"github.com/uptrace/bun"
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
