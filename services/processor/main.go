// Command processor applies order commands from the SQS FIFO command queue
// to PostgreSQL, one transaction per command, and relays notifications from
// the outbox. "processor migrate [up|down]" manages the schema;
// "processor dlq list|show|redrive" works the dead-letter queue.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmetrics "github.com/ThreeDotsLabs/watermill/components/metrics"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/logging"
	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/serve"
	"github.com/omsdev/oms/pkg/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := LoadConfig(config.FromOS())
	if err != nil {
		fmt.Fprintln(os.Stderr, "processor:", err)
		os.Exit(2)
	}
	log := logging.New(os.Stdout, "processor", cfg.LogLevel)
	config.TuneGC(os.Getenv, defaultGCPercent, defaultMemoryLimit)
	serve.HealthCheckCommand(os.Args, "processor", cfg.HTTPAddr)
	if len(os.Args) > 1 && os.Args[1] == "dlq" {
		os.Exit(deadLetterMain(ctx, cfg.Queue, os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "migrate" {
		err = migrate(ctx, cfg.DatabaseURL, os.Args[2:], log)
	} else {
		err = run(ctx, cfg, log)
	}
	if err != nil {
		log.Error("processor failed", "err", err)
		os.Exit(1)
	}
}

// The garbage collector's defaults, unless GOGC or GOMEMLIMIT set them.
// The live heap is about 4 MiB and a command allocates about 40 KiB (most
// of it in the SQS client): at GOGC=100 the collector's workers alone took
// a tenth of the processor's CPU in a drain. At 200 they take half that
// for about 8 MiB more resident memory (400 took RSS past 60 MiB of the
// 64 allowed); the limit bounds the heap should the live heap grow.
const (
	defaultGCPercent   = 200
	defaultMemoryLimit = 24 << 20
)

func run(ctx context.Context, cfg Config, log *slog.Logger) error {
	stopTracing, err := tracing.Setup(ctx, "processor")
	if err != nil {
		return err
	}
	defer stopTracing(context.Background())
	db := orderstore.OpenPool(cfg.DatabaseURL, cfg.DBMaxConns)
	defer db.Close()
	metrics.Register(collectors.NewDBStatsCollector(db.DB, "oms"))

	client, err := queue.NewClient(ctx, cfg.Queue)
	if err != nil {
		return err
	}
	urls, err := queue.EnsureQueues(ctx, client, cfg.Queue)
	if err != nil {
		return err
	}
	vt, err := queue.VisibilityTimeout(ctx, client, urls.Command)
	if err != nil {
		return fmt.Errorf("command queue: %w", err)
	}

	wlog := watermill.NewSlogLogger(log.With("component", "watermill"))
	pub, err := queue.NewPublisher(ctx, cfg.Queue, wlog)
	if err != nil {
		return err
	}
	commands, err := queue.NewConsumer(client, queue.ConsumerConfig{
		MaxMessages: cfg.ReceiveBatch, WaitTime: cfg.ReceiveWait,
		Visibility: vt, Budget: cfg.Retry.WorstCase(cfg.HandlerTimeout),
	}, log.With("component", "consumer"))
	if err != nil {
		return fmt.Errorf("%w: lower PROCESSOR_RETRY_* or PROCESSOR_HANDLER_TIMEOUT, or raise the queue's VisibilityTimeout", err)
	}
	// Commands wait on the queue while the database is not ready for this
	// binary (not migrated, privileges missing), instead of failing.
	guard := &schemaGuard{db: db, gate: commands, every: 2 * time.Second, log: log}
	guard.Start(ctx)
	store := orderstore.New(db)
	a := &applier{
		app:             orderapp.New(store, notifier{queue: cfg.Queue.NotificationQueue}.entry),
		acceptActorless: cfg.AcceptActorless,
		operational:     func(err error) { guard.Trip(ctx, err) },
		log:             log,
	}
	// Queues lost by the endpoint (an emulator restarted) come back by
	// themselves, and readiness with them.
	keeper := queue.NewKeeper(client, cfg.Queue, urls, log)
	go keeper.Run(ctx, 2*time.Second)

	// Closing comes after the drain, with nothing left in flight.
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, wlog)
	if err != nil {
		return err
	}
	metrics.Register(newStateCollector(db.DB, client, map[string]string{
		cfg.Queue.CommandQueue: urls.Command, cfg.Queue.DeadLetterQueue: urls.DeadLetter, cfg.Queue.NotificationQueue: urls.Notification,
	}))
	wmetrics.NewPrometheusMetricsBuilder(metrics.Registry, "", "").AddPrometheusRouterMetrics(router)
	poison, err := middleware.PoisonQueueWithFilter(deadLetterPublisher{pub, log}, cfg.Queue.DeadLetterQueue, permanent)
	if err != nil {
		return err
	}
	// Outermost first. Poison sees the final error; Recoverer turns a panic
	// into an error (permanent) that the rest see.
	router.AddMiddleware(
		countOutcomes,
		middleware.CorrelationID,
		poison,
		a.recordDeadLetters,
		middleware.Retry{
			MaxRetries:          cfg.Retry.MaxAttempts - 1,
			InitialInterval:     cfg.Retry.InitialInterval,
			Multiplier:          cfg.Retry.Multiplier,
			MaxInterval:         cfg.Retry.MaxInterval,
			RandomizationFactor: cfg.Retry.Jitter,
			ResetContextOnRetry: true,
			Logger:              wlog,
		}.Middleware,
		stopRetrying,
		middleware.Timeout(cfg.HandlerTimeout),
		middleware.Recoverer,
	)
	for i := range cfg.Subscriptions {
		router.AddConsumerHandler(fmt.Sprintf("apply_command_%d", i), cfg.Queue.CommandQueue, commands, a.handle)
	}

	// Notifications go out ten to a SendMessageBatch call.
	notifications := outbox.NewSQSSender(client, map[string]string{cfg.Queue.NotificationQueue: urls.Notification})
	defer notifications.Close()
	relay, err := outbox.NewRelay(db.DB, notifications, outbox.RelayConfig{PollInterval: cfg.OutboxPollInterval, BatchSize: cfg.OutboxBatchSize}, wlog)
	if err != nil {
		return err
	}

	var draining atomic.Bool
	ready := func(ctx context.Context) error {
		if draining.Load() {
			return errors.New("draining")
		}
		if err := db.PingContext(ctx); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		if err := guard.Err(); err != nil {
			return err
		}
		return keeper.Check(ctx)
	}
	health, err := listenHealth(cfg.HTTPAddr, cfg.HTTP, ready, log)
	if err != nil {
		return err
	}
	defer health.Close()

	// The router and relay run under their own context: a signal must not
	// cancel commands in flight, the drain below decides when they stop.
	rctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- router.Run(rctx) }()
	go func() { errc <- relay.Run(rctx) }()
	purger := operationPurger{store: store, retention: cfg.OperationRetention, every: cfg.OperationPurgeInterval, log: log}
	go purger.Run(rctx)
	if cfg.DeadLetterAuditInterval > 0 {
		audit := &deadLetterAudit{sqs: client, dlq: urls.DeadLetter, commands: urls.Command, app: a.app, ops: store,
			every: cfg.DeadLetterAuditInterval, log: log}
		go audit.Run(rctx)
	}
	log.Info("processing", "queue", cfg.Queue.CommandQueue, "subscriptions", cfg.Subscriptions,
		"visibility_timeout", vt, "retry_worst_case", cfg.Retry.WorstCase(cfg.HandlerTimeout))

	select {
	case err := <-errc:
		router.Close()
		relay.Close()
		return fmt.Errorf("router stopped: %w", err)
	case <-ctx.Done():
	}

	// The drain: no more receives; polls in progress return (at most
	// PROCESSOR_RECEIVE_WAIT) and what they bring is given back; commands
	// in flight finish and their deletes are sent. Only then does closing
	// the router cancel anything.
	log.Info("draining", "timeout", cfg.DrainTimeout)
	draining.Store(true)
	commands.Stop()
	dctx, dcancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer dcancel()
	if err := commands.Wait(dctx); err != nil {
		log.Warn("drain deadline passed with commands in flight; they will be redelivered", "err", err)
	}
	rerr := router.Close()
	ferr := relay.Close()
	log.Info("stopped")
	return errors.Join(rerr, ferr)
}

// listenHealth serves /healthz and /readyz for Kubernetes probes,
// /metrics, and CPU and heap profiles under /debug/pprof/.
func listenHealth(addr string, hs serve.HTTPSettings, ready func(context.Context) error, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("GET /metrics", metrics.Handler())
	// Profiles for make bench and for incidents; like /metrics, this port
	// is for the cluster, not the internet.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			log.Warn("not ready", "err", err)
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	srv := serve.NewHTTPServer(mux, hs)
	go srv.Serve(ln)
	return srv, nil
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
