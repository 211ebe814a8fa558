// Command processor applies order commands from the command queue to
// PostgreSQL. "processor migrate [up|down]" manages the schema.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/orderstore"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], log); err != nil {
		log.Error("processor failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	env := config.FromOS()
	dbURL := env.URL("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable", "postgres", "postgresql")
	if err := env.Err(); err != nil {
		return err
	}
	if len(args) > 0 && args[0] == "migrate" {
		return migrate(ctx, dbURL, args[1:], log)
	}
	return fmt.Errorf("the command pipeline is not built yet; only \"migrate\" is available")
}

func migrate(ctx context.Context, dbURL string, args []string, log *slog.Logger) error {
	db := orderstore.Open(dbURL)
	defer db.Close()
	dir := "up"
	if len(args) > 0 {
		dir = args[0]
	}
	var n int
	var err error
	switch dir {
	case "up":
		n, err = orderstore.Migrate(ctx, db)
	case "down":
		n, err = orderstore.Rollback(ctx, db)
	default:
		return fmt.Errorf("migrate %q: want up or down", dir)
	}
	if err != nil {
		return err
	}
	log.Info("migrations done", "direction", dir, "count", n, "database", config.Redact(dbURL))
	return nil
}
