package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// Keeper watches the service's queues and, where the service may create
// queues, re-creates them when the endpoint has lost them (an emulator
// restarted), so a service heals without a restart. Readiness calls Check.
type Keeper struct {
	client *sqs.Client
	cfg    Config
	log    *slog.Logger

	mu   sync.Mutex
	urls URLs
}

// NewKeeper watches the queues at urls, as EnsureQueues returned them.
func NewKeeper(client *sqs.Client, cfg Config, urls URLs, log *slog.Logger) *Keeper {
	return &Keeper{client: client, cfg: cfg, urls: urls, log: log}
}

// URLs are the queues' current URLs.
func (k *Keeper) URLs() URLs {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.urls
}

// Check reports whether the queues answer. A queue the endpoint says does
// not exist is re-created when that is allowed, and Check then succeeds.
func (k *Keeper) Check(ctx context.Context) error {
	var missing error
	for _, name := range []string{k.cfg.CommandQueue, k.cfg.DeadLetterQueue, k.cfg.NotificationQueue} {
		// By name: endpoints answer a lost queue's URL inconsistently.
		_, err := k.client.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: aws.String(name)})
		if err == nil {
			continue
		}
		if !QueueMissing(err) {
			return fmt.Errorf("sqs: %w", err)
		}
		missing = err
	}
	if missing == nil {
		return nil
	}
	if !k.cfg.CreateQueues {
		return fmt.Errorf("sqs: a queue is missing and SQS_CREATE_QUEUES is off: %w", missing)
	}
	urls, err := EnsureQueues(ctx, k.client, k.cfg)
	if err != nil {
		return fmt.Errorf("sqs: re-create lost queues: %w", err)
	}
	k.mu.Lock()
	k.urls = urls
	k.mu.Unlock()
	k.log.Warn("the SQS endpoint had lost the queues; re-created them", "command_queue", urls.Command)
	return nil
}

// Run checks every interval until ctx ends, so queues come back even when
// nothing probes readiness.
func (k *Keeper) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, every)
			if err := k.Check(cctx); err != nil && ctx.Err() == nil {
				k.log.Warn("queues not available", "err", err)
			}
			cancel()
		}
	}
}

// QueueMissing reports whether err says the queue does not exist. (goaws
// answers with a code the SDK does not map to types.QueueDoesNotExist.)
func QueueMissing(err error) bool {
	var qdne *types.QueueDoesNotExist
	if errors.As(err, &qdne) {
		return true
	}
	var api smithy.APIError
	return errors.As(err, &api) && (strings.Contains(api.ErrorCode(), "NonExistentQueue") || strings.Contains(api.ErrorCode(), "QueueDoesNotExist"))
}
