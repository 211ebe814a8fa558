// Command ingest accepts order commands over gRPC and HTTP/JSON, validates
// them and enqueues them on the SQS FIFO command queue. It answers 202 only
// for commands SQS has durably accepted.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	omsv1 "github.com/omsdev/oms/proto/oms/v1"

	"github.com/omsdev/oms/pkg/auth"
	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/operation"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/serve"
	"github.com/omsdev/oms/pkg/tracing"
)

type Config struct {
	// serve.Settings: HTTP_ADDR, GRPC_ADDR, ADMIN_ADDR, TLS_*, HTTP_*,
	// GRPC_* and ALLOW_PLAINTEXT.
	serve.Settings
	// Guard: AUTH_* (issuer, audience, JWKS) and RATE_LIMIT_*.
	Guard auth.Guard
	// OrderIDSecret (ORDER_ID_SECRET, at least 32 characters, the same on
	// every replica) keys the derivation of order ids from request ids.
	OrderIDSecret []byte
	// OperationSecret (OPERATION_SECRET, at least 32 characters, the same
	// on every ingest and query replica) signs the operation names a 202
	// carries, so that only the caller can look its operation up.
	OperationSecret []byte
	// OperationsURL (INGEST_OPERATIONS_URL) is where clients reach the
	// query service's HTTP API, e.g. https://query.shop.example: a 202's
	// Location header then points at the command's operation there. Empty:
	// no Location (operations are served by query, not here, so a path
	// relative to ingest would lead nowhere).
	OperationsURL string
	Queue         queue.Config
	Batch         queue.BatchConfig
	// CommandEncoding (INGEST_COMMAND_ENCODING, protobuf or json) is the
	// command bodies' encoding. Processors read both; json is for a
	// rolling upgrade while processors older than the protobuf bodies
	// still run.
	CommandEncoding string
	EnqueueTimeout  time.Duration
	MaxBodyBytes    int64
	DrainTimeout    time.Duration
	LogLevel        string
}

// LoadConfig reads the environment; see the README's configuration table.
func LoadConfig(env *config.Env) (Config, error) {
	c := Config{
		Settings: serve.LoadSettings(env, serve.Defaults{
			HTTPAddr: "127.0.0.1:8080", GRPCAddr: "127.0.0.1:9090", AdminAddr: "127.0.0.1:9180",
		}),
		Guard: auth.LoadGuard(env),
		Queue: queue.Load(env),
		Batch: queue.BatchConfig{
			MaxEntries:  env.Int("INGEST_BATCH_MAX_ENTRIES", 10, 1, 10),
			Linger:      env.Duration("INGEST_BATCH_LINGER", 5*time.Millisecond, 0, time.Second),
			MaxInFlight: env.Int("INGEST_BATCH_MAX_IN_FLIGHT", 16, 1, 256),
		},
		CommandEncoding: encodings[env.OneOf("INGEST_COMMAND_ENCODING", "protobuf", "protobuf", "json")],
		OperationsURL:   strings.TrimRight(env.URL("INGEST_OPERATIONS_URL", "", "http", "https"), "/"),
		EnqueueTimeout:  env.Duration("INGEST_ENQUEUE_TIMEOUT", 5*time.Second, 100*time.Millisecond, time.Minute),
		MaxBodyBytes:    int64(env.Int("MAX_BODY_BYTES", 1<<20, 1024, 64<<20)),
		DrainTimeout:    env.Duration("DRAIN_TIMEOUT", 20*time.Second, 0, 10*time.Minute),
		LogLevel:        env.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
	}
	secret := env.Secret("ORDER_ID_SECRET", 32)
	switch {
	case secret == "" && c.Guard.Auth.InsecureDevMode:
		secret = insecureDevSecret
	case secret == "":
		env.Errorf("ORDER_ID_SECRET is required: a random value of at least 32 characters, the same on every ingest replica (for example `openssl rand -hex 32`)")
	}
	c.OrderIDSecret = []byte(secret)
	c.OperationSecret = operation.LoadSecret(env, c.Guard.Auth.InsecureDevMode)
	return c, env.Err()
}

// encodings maps INGEST_COMMAND_ENCODING to a command body content type.
var encodings = map[string]string{"protobuf": orderpb.ContentTypeProtobuf, "json": orderpb.ContentTypeJSON}

// insecureDevSecret stands in for ORDER_ID_SECRET in insecure dev mode
// only, where every caller is trusted anyway.
const insecureDevSecret = "insecure-dev-mode-order-id-secret-not-for-production"

// methods is every method of the command API: its scope and rate class.
var methods = map[string]auth.Method{
	omsv1.OrderCommandService_CreateOrder_FullMethodName:  {Scope: auth.ScopeCreate, Class: auth.ClassCommand},
	omsv1.OrderCommandService_PayOrder_FullMethodName:     {Scope: auth.ScopePay, Class: auth.ClassCommand},
	omsv1.OrderCommandService_ShipOrder_FullMethodName:    {Scope: auth.ScopeFulfil, Class: auth.ClassCommand},
	omsv1.OrderCommandService_DeliverOrder_FullMethodName: {Scope: auth.ScopeFulfil, Class: auth.ClassCommand},
	omsv1.OrderCommandService_CancelOrder_FullMethodName:  {Scope: auth.ScopeCancel, Class: auth.ClassCommand},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The health check needs only the address, not the whole configuration.
	serve.HealthCheckCommand(os.Args, "ingest", config.FromOS().Addr("HTTP_ADDR", "127.0.0.1:8080"))
	cfg, err := LoadConfig(config.FromOS())
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(2)
	}
	log := logging.New(os.Stdout, "ingest", cfg.LogLevel)
	if err := run(ctx, cfg, log); err != nil {
		log.Error("ingest failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	stopTracing, err := tracing.Setup(ctx, "ingest")
	if err != nil {
		return err
	}
	defer stopTracing(context.Background())
	client, err := queue.NewClient(ctx, cfg.Queue)
	if err != nil {
		return err
	}
	urls, err := queue.EnsureQueues(ctx, client, cfg.Queue)
	if err != nil {
		return err
	}
	pub, err := queue.NewBatchPublisher(client, cfg.Queue.CommandQueue, urls.Command, cfg.Batch)
	if err != nil {
		return err
	}
	defer pub.Close() // after the server has drained: requests in flight still publish

	// Queues lost by the endpoint (an emulator restarted) come back by
	// themselves, and readiness with them.
	keeper := queue.NewKeeper(client, cfg.Queue, urls, log)
	go keeper.Run(ctx, 2*time.Second)

	unary, stream, err := cfg.Guard.Interceptors(ctx, log, methods)
	if err != nil {
		return err
	}
	svc := &commandService{pub: pub, queue: cfg.Queue.CommandQueue, encoding: cfg.CommandEncoding,
		timeout: cfg.EnqueueTimeout, idSecret: cfg.OrderIDSecret, opSecret: cfg.OperationSecret, log: log}
	srv, err := serve.Listen(serve.API{
		Name:               "ingest",
		Settings:           cfg.Settings,
		UnaryInterceptors:  unary,
		StreamInterceptors: stream,
		RequireBearer:      !cfg.Guard.Auth.InsecureDevMode,
		HTTPMiddleware:     checkIdempotencyKey,
		Register:           func(s grpc.ServiceRegistrar) { omsv1.RegisterOrderCommandServiceServer(s, svc) },
		Gateway: func(ctx context.Context, mux *runtime.ServeMux, conn grpc.ClientConnInterface) error {
			return omsv1.RegisterOrderCommandServiceHandlerClient(ctx, mux, omsv1.NewOrderCommandServiceClient(conn))
		},
		GatewayOptions: []runtime.ServeMuxOption{runtime.WithForwardResponseOption(acceptedStatus(cfg.OperationsURL))},
		Ready:          keeper.Check,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		DrainTimeout:   cfg.DrainTimeout,
		Log:            log,
	})
	if err != nil {
		return err
	}
	return srv.Serve(ctx)
}
