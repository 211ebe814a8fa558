// Command query serves orders and their history over gRPC and HTTP/JSON.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/serve"
	"github.com/omsdev/oms/pkg/tracing"
)

type Config struct {
	HTTPAddr, GRPCAddr string
	DatabaseURL        string
	DBMaxConns         int
	DrainTimeout       time.Duration
	LogLevel           string
}

// LoadConfig reads the environment; see the README's configuration table.
func LoadConfig(env *config.Env) (Config, error) {
	c := Config{
		HTTPAddr:     env.Addr("HTTP_ADDR", "127.0.0.1:8081"),
		GRPCAddr:     env.Addr("GRPC_ADDR", "127.0.0.1:9091"),
		DatabaseURL:  env.URL("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable", "postgres", "postgresql"),
		DBMaxConns:   env.Int("DB_MAX_CONNS", 16, 1, 1000),
		DrainTimeout: env.Duration("DRAIN_TIMEOUT", 20*time.Second, 0, 10*time.Minute),
		LogLevel:     env.String("LOG_LEVEL", "info"),
	}
	return c, env.Err()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := LoadConfig(config.FromOS())
	if err != nil {
		fmt.Fprintln(os.Stderr, "query:", err)
		os.Exit(2)
	}
	serve.HealthCheckCommand(os.Args, "query", cfg.HTTPAddr)
	log := logging.New(os.Stdout, "query", cfg.LogLevel)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("query failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	stopTracing, err := tracing.Setup(ctx, "query")
	if err != nil {
		return err
	}
	defer stopTracing(context.Background())
	db := orderstore.OpenPool(cfg.DatabaseURL, cfg.DBMaxConns)
	defer db.Close()
	metrics.Register(collectors.NewDBStatsCollector(db.DB, "oms"))
	svc := &queryService{store: orderstore.New(db, nil)}
	srv, err := serve.Listen(serve.API{
		Name:     "query",
		GRPCAddr: cfg.GRPCAddr,
		HTTPAddr: cfg.HTTPAddr,
		Register: func(s *grpc.Server) { omsv1.RegisterOrderQueryServiceServer(s, svc) },
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn *grpc.ClientConn) error {
			return omsv1.RegisterOrderQueryServiceHandler(ctx, mux, conn)
		},
		Ready:        db.PingContext,
		DrainTimeout: cfg.DrainTimeout,
		MaxBodyBytes: 1 << 20,
		Log:          log,
	})
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
}
