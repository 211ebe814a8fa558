// Command query serves orders and their history over gRPC and HTTP/JSON.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/uptrace/bun"
	"google.golang.org/grpc"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/changefeed"
	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/serve"
	"github.com/omsdev/oms/pkg/tracing"
)

type Config struct {
	// serve.Settings: HTTP_ADDR, GRPC_ADDR, ADMIN_ADDR, TLS_*, HTTP_*,
	// GRPC_* and ALLOW_PLAINTEXT.
	serve.Settings
	// Guard: AUTH_* (issuer, audience, JWKS) and RATE_LIMIT_*.
	Guard auth.Guard
	// MaxPageBytes (QUERY_MAX_PAGE_BYTES) bounds a list response's size;
	// it must stay below GRPC_MAX_SEND_BYTES.
	MaxPageBytes int
	// OperationSecret (OPERATION_SECRET, at least 32 characters, the same
	// as ingest's) verifies the operation names ingest issued.
	OperationSecret []byte
	// PageTokenSecret (QUERY_PAGE_TOKEN_SECRET, at least 32 characters)
	// signs page tokens; unset, a key derived from OPERATION_SECRET does
	// (pagetoken.go). Every replica must have the same.
	PageTokenSecret []byte
	// MaxWatchers (QUERY_MAX_WATCHERS) and MaxWatchersPerPrincipal
	// (QUERY_MAX_WATCHERS_PER_PRINCIPAL) bound the WatchOrder streams open
	// on this process; MaxWait (QUERY_MAX_WAIT) bounds GetOrder's wait for
	// min_version, a watch's for its order to appear, and WaitOperation's
	// (its default timeout too).
	MaxWatchers             int
	MaxWatchersPerPrincipal int
	MaxWait                 time.Duration
	DatabaseURL             string
	DBMaxConns              int
	DrainTimeout            time.Duration
	LogLevel                string
}

// LoadConfig reads the environment; see the README's configuration table.
func LoadConfig(env *config.Env) (Config, error) {
	c := Config{
		Settings: serve.LoadSettings(env, serve.Defaults{
			HTTPAddr: "127.0.0.1:8081", GRPCAddr: "127.0.0.1:9091", AdminAddr: "127.0.0.1:9181",
		}),
		Guard:                   auth.LoadGuard(env),
		MaxPageBytes:            env.Int("QUERY_MAX_PAGE_BYTES", 1<<20, 16<<10, 64<<20),
		MaxWatchers:             env.Int("QUERY_MAX_WATCHERS", 1000, 1, 1_000_000),
		MaxWatchersPerPrincipal: env.Int("QUERY_MAX_WATCHERS_PER_PRINCIPAL", 100, 1, 1_000_000),
		MaxWait:                 env.Duration("QUERY_MAX_WAIT", 10*time.Second, 10*time.Millisecond, time.Minute),
		DatabaseURL:             env.PostgresURL("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable"),
		DBMaxConns:              env.Int("DB_MAX_CONNS", 16, 1, 1000),
		DrainTimeout:            env.Duration("DRAIN_TIMEOUT", 20*time.Second, 0, 10*time.Minute),
		LogLevel:                env.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
	}
	// Room for the response's own fields and one order over the bound: a
	// page is cut before the order that passes it.
	env.Check(c.MaxPageBytes+256<<10 <= c.GRPCMaxSendBytes, "QUERY_MAX_PAGE_BYTES",
		"must be at least 256 KiB below GRPC_MAX_SEND_BYTES (%d)", c.GRPCMaxSendBytes)
	// An HTTP wait (GetOrder min_version, an operation's :wait) must end
	// before the server's own timeouts cut its answer off; only :watch
	// streams lift them.
	httpLimit := min(c.HTTP.ReadTimeout, c.HTTP.WriteTimeout)
	env.Check(c.MaxWait < httpLimit, "QUERY_MAX_WAIT",
		"must be below HTTP_READ_TIMEOUT and HTTP_WRITE_TIMEOUT (%s), or an HTTP wait is cut off", httpLimit)
	c.OperationSecret = operation.LoadSecret(env, c.Guard.Auth.InsecureDevMode)
	c.PageTokenSecret = []byte(env.Secret("QUERY_PAGE_TOKEN_SECRET", 32))
	return c, env.Err()
}

// methods is every method of the query API: all need orders:read.
var methods = map[string]auth.Method{
	omsv1.OrderQueryService_GetOrder_FullMethodName:        {Scope: auth.ScopeRead, Class: auth.ClassRead},
	omsv1.OrderQueryService_ListOrders_FullMethodName:      {Scope: auth.ScopeRead, Class: auth.ClassRead},
	omsv1.OrderQueryService_ListOrderEvents_FullMethodName: {Scope: auth.ScopeRead, Class: auth.ClassRead},
	omsv1.OrderQueryService_WatchOrder_FullMethodName:      {Scope: auth.ScopeRead, Class: auth.ClassRead},
	// Command outcomes (AIP-151). Cancel and Delete answer UNIMPLEMENTED.
	longrunningpb.Operations_GetOperation_FullMethodName:    {Scope: auth.ScopeRead, Class: auth.ClassRead},
	longrunningpb.Operations_WaitOperation_FullMethodName:   {Scope: auth.ScopeRead, Class: auth.ClassRead},
	longrunningpb.Operations_ListOperations_FullMethodName:  {Scope: auth.ScopeRead, Class: auth.ClassRead},
	longrunningpb.Operations_CancelOperation_FullMethodName: {Scope: auth.ScopeRead, Class: auth.ClassRead},
	longrunningpb.Operations_DeleteOperation_FullMethodName: {Scope: auth.ScopeRead, Class: auth.ClassRead},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The health check needs only the address, not the whole configuration.
	serve.HealthCheckCommand(os.Args, "query", config.FromOS().Addr("HTTP_ADDR", "127.0.0.1:8081"))
	cfg, err := LoadConfig(config.FromOS())
	if err != nil {
		fmt.Fprintln(os.Stderr, "query:", err)
		os.Exit(2)
	}
	log := logging.New(os.Stdout, "query", cfg.LogLevel)
	config.TuneGC(os.Getenv, defaultGCPercent, defaultMemoryLimit)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("query failed", "err", err)
		os.Exit(1)
	}
}

// The garbage collector's defaults, unless GOGC or GOMEMLIMIT set them.
// The live heap is a few MiB, so at GOGC=100 the collector ran every few
// hundred reads and took about a fifth of the CPU (BenchmarkGetOrder);
// at 400 it runs a quarter as often, and the heap stays far below the
// memory limit, which bounds it however many large pages are in flight.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 48 << 20
)

// genericPlans asks PostgreSQL to plan query's prepared statements once,
// for any parameters, unless the URL sets plan_cache_mode itself. Planned
// with its parameters (a prepared statement's first five runs, and later
// ones whenever the planner prefers), a service client's unfiltered list
// walked the create_time index past every other client's newer orders:
// 4,421 buffers a page, against 219 for the generic plan through
// orders_created_by_create_time_idx, and 1.2 → 3.1 ms of PostgreSQL CPU
// from 100k to 1M orders (make bench -list-scale). Every read's generic
// plan is an index range read, and planning is not repeated per call.
func genericPlans(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // LoadConfig has checked it; Open reports it
	}
	q := u.Query()
	if !q.Has("plan_cache_mode") {
		q.Set("plan_cache_mode", "force_generic_plan")
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	stopTracing, err := tracing.Setup(ctx, "query")
	if err != nil {
		return err
	}
	defer stopTracing(context.Background())
	db := orderstore.OpenPool(genericPlans(cfg.DatabaseURL), cfg.DBMaxConns)
	defer db.Close()
	metrics.Register(collectors.NewDBStatsCollector(db.DB, "oms"))
	srv, err := listen(ctx, cfg, log, db)
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
}

// listen wires the service over db and binds its ports; the benchmark
// starts the server the same way.
func listen(ctx context.Context, cfg Config, log *slog.Logger, db *bun.DB) (*serve.Server, error) {
	unary, stream, err := cfg.Guard.Interceptors(ctx, log, methods)
	if err != nil {
		return nil, err
	}
	svc := &queryService{store: orderstore.New(db), maxPageBytes: cfg.MaxPageBytes,
		tokens: newPageTokens(pageTokenKey(cfg.PageTokenSecret, cfg.OperationSecret, log))}
	// One LISTEN connection for the process: waiters subscribe to it, and
	// register their watches so that their orders' changes are announced
	// (follow.go); expired watches are purged every minute.
	feed := changefeed.New(db, log, operationDoneChannel, orderChangedChannel)
	go feed.Run(ctx)
	follow := newFollower(feed, svc.store, log, cfg.MaxWait)
	go purgeWatches(ctx, svc.store, log)
	// Watches end, with OK, when ctx does: Serve's drain starts then, and
	// waits for every stream.
	svc.changes = newChanges(follow, ctx.Done(), cfg)
	ops := &operationsService{store: svc.store, secret: cfg.OperationSecret, tokens: svc.tokens, follow: follow, maxWait: cfg.MaxWait, shutdown: ctx.Done(), slots: svc.changes}
	return serve.Listen(serve.API{
		Name:               "query",
		Settings:           cfg.Settings,
		UnaryInterceptors:  unary,
		StreamInterceptors: stream,
		RequireBearer:      !cfg.Guard.Auth.InsecureDevMode,
		Register: func(s grpc.ServiceRegistrar) {
			omsv1.RegisterOrderQueryServiceServer(s, svc)
			longrunningpb.RegisterOperationsServer(s, ops)
		},
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
			if err := omsv1.RegisterOrderQueryServiceHandlerClient(ctx, mux, omsv1.NewOrderQueryServiceClient(conn)); err != nil {
				return err
			}
			return registerOperationRoutes(mux, longrunningpb.NewOperationsClient(conn))
		},
		GatewayOptions: []runtime.ServeMuxOption{
			runtime.WithMarshalerOption(runtime.MIMEWildcard, orderJSON{serve.JSONMarshaler()}),
			runtime.WithMiddlewares(streamDeadlines(cfg.HTTP.WriteTimeout)),
		},
		// Ready once the schema is what this binary reads.
		Ready:        func(ctx context.Context) error { return orderstore.CheckSchema(ctx, db) },
		DrainTimeout: cfg.DrainTimeout,
		MaxBodyBytes: 1 << 20,
		Log:          log,
	})
}
