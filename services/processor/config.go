package main

import (
	"math"
	"time"

	"github.com/omsdev/oms/pkg/config"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/serve"
)

type Config struct {
	DatabaseURL  string
	DBMaxConns   int
	Queue        queue.Config
	HTTPAddr     string
	HTTP         serve.HTTPSettings // the health server's HTTP_* timeouts
	DrainTimeout time.Duration
	LogLevel     string

	// Subscriptions is how many receive loops run; each holds up to
	// ReceiveBatch commands at once, applied in parallel across orders and
	// in order within one. SQS FIFO (and pkg/sqslocal) keeps each order's
	// commands in order across any number.
	Subscriptions int
	ReceiveBatch  int
	// ReceiveWait is the long poll. A drain waits for polls in progress
	// to return rather than cancel them, so it bounds shutdown.
	ReceiveWait time.Duration
	Retry       RetryConfig
	// HandlerTimeout bounds one attempt at applying a command.
	HandlerTimeout time.Duration
	// AcceptActorless (PROCESSOR_ACCEPT_ACTORLESS, default false) applies
	// commands queued before principals existed, which carry no actor,
	// with the rights every caller had then. Turn it on only while an
	// upgrade drains such commands; otherwise they are dead-lettered.
	AcceptActorless bool

	OutboxPollInterval time.Duration
	OutboxBatchSize    int

	// OperationRetention (OPERATION_RETENTION, default 720h, at least 1h)
	// is how long a done operation is kept after its last update; every
	// OperationPurgeInterval (OPERATION_PURGE_INTERVAL, default 10m) the
	// older ones are deleted.
	OperationRetention     time.Duration
	OperationPurgeInterval time.Duration

	// DeadLetterAuditInterval (PROCESSOR_DLQ_AUDIT_INTERVAL, default 1m, 0
	// off) is how often the processor looks for commands SQS dead-lettered
	// on its own and records their pending operations done ABORTED.
	DeadLetterAuditInterval time.Duration
}

// RetryConfig is the backoff for transient failures: the seed's Step
// Functions retry (5 s, rate 2, 5 attempts) by default.
type RetryConfig struct {
	InitialInterval time.Duration
	Multiplier      float64
	MaxAttempts     int
	MaxInterval     time.Duration
	Jitter          float64
}

// WorstCase is the longest a message can spend in retries: every wait at
// its largest jittered value plus every attempt timing out. The queue's
// visibility timeout must exceed it, or SQS hands the message to another
// consumer while it is still being retried.
//
// The arithmetic saturates at tooLong instead of overflowing into a
// negative duration, which every guard would pass.
func (r RetryConfig) WorstCase(attemptTimeout time.Duration) time.Duration {
	total := scale(attemptTimeout, float64(r.MaxAttempts))
	wait := r.InitialInterval
	for i := 1; i < r.MaxAttempts; i++ {
		total = add(total, scale(min(wait, r.MaxInterval), 1+r.Jitter))
		wait = scale(wait, r.Multiplier)
	}
	return total
}

// tooLong is where retry arithmetic saturates: a year, beyond any queue's
// visibility timeout (SQS allows at most 12 hours), and small enough that
// a caller may still multiply it by a receive batch without overflow.
const tooLong = 365 * 24 * time.Hour

// scale is d*f for non-negative d and f, at most tooLong.
func scale(d time.Duration, f float64) time.Duration {
	if x := float64(d) * f; x < float64(tooLong) {
		return time.Duration(x)
	}
	return tooLong
}

// add is a+b for non-negative a and b, at most tooLong.
func add(a, b time.Duration) time.Duration { return min(a+b, tooLong) }

// maxRetryInterval bounds PROCESSOR_RETRY_MAX_INTERVAL and its default.
const maxRetryInterval = 24 * time.Hour

// LoadConfig reads the environment; see the README's configuration table.
func LoadConfig(env *config.Env) (Config, error) {
	c := Config{
		DatabaseURL:   env.PostgresURL("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/oms?sslmode=disable"),
		DBMaxConns:    env.Int("DB_MAX_CONNS", 16, 1, 1000),
		Queue:         queue.Load(env),
		HTTPAddr:      env.Addr("HTTP_ADDR", "127.0.0.1:8082"),
		HTTP:          serve.LoadHTTPSettings(env),
		DrainTimeout:  env.Duration("DRAIN_TIMEOUT", 20*time.Second, 0, 10*time.Minute),
		LogLevel:      env.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		Subscriptions: env.Int("PROCESSOR_SUBSCRIPTIONS", 8, 1, 256),
		ReceiveBatch:  env.Int("PROCESSOR_RECEIVE_BATCH", 10, 1, 10),
		ReceiveWait:   env.Duration("PROCESSOR_RECEIVE_WAIT", 5*time.Second, 0, 20*time.Second),
		Retry: RetryConfig{
			InitialInterval: env.Duration("PROCESSOR_RETRY_INITIAL_INTERVAL", 5*time.Second, time.Millisecond, time.Hour),
			Multiplier:      env.Float("PROCESSOR_RETRY_MULTIPLIER", 2, 1, 10),
			MaxAttempts:     env.Int("PROCESSOR_RETRY_MAX_ATTEMPTS", 5, 1, 100),
			Jitter:          env.Float("PROCESSOR_RETRY_JITTER", 0.1, 0, 1),
		},
		HandlerTimeout:          env.Duration("PROCESSOR_HANDLER_TIMEOUT", 10*time.Second, 100*time.Millisecond, 10*time.Minute),
		AcceptActorless:         env.Bool("PROCESSOR_ACCEPT_ACTORLESS", false),
		OutboxPollInterval:      env.Duration("OUTBOX_POLL_INTERVAL", 100*time.Millisecond, time.Millisecond, time.Minute),
		OutboxBatchSize:         env.Int("OUTBOX_BATCH_SIZE", 50, 1, 1000),
		OperationRetention:      env.Duration("OPERATION_RETENTION", 720*time.Hour, time.Hour, 10*8760*time.Hour),
		OperationPurgeInterval:  env.Duration("OPERATION_PURGE_INTERVAL", 10*time.Minute, time.Second, 24*time.Hour),
		DeadLetterAuditInterval: env.Duration("PROCESSOR_DLQ_AUDIT_INTERVAL", time.Minute, 0, 24*time.Hour),
	}
	// Watermill's Retry ignores Multiplier unless MaxInterval is set; by
	// default let the last wait reach InitialInterval * Multiplier^(n-2).
	// That power overflows a Duration soon (5s x 2^38 at 40 attempts), so
	// it is computed saturated and capped at the variable's own maximum.
	r := c.Retry
	last := min(scale(r.InitialInterval, math.Pow(r.Multiplier, float64(max(r.MaxAttempts-2, 0)))), maxRetryInterval)
	c.Retry.MaxInterval = env.Duration("PROCESSOR_RETRY_MAX_INTERVAL", last, r.InitialInterval, maxRetryInterval)
	return c, env.Err()
}
