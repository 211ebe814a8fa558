// Package queue connects the services to SQS FIFO queues: client setup,
// queue creation, FIFO message ids and a batching publisher.
package queue

import (
	"strings"
	"time"

	"github.com/omsdev/oms/pkg/config"
)

// Config says where the queues are.
type Config struct {
	// Endpoint is an SQS-compatible endpoint such as the local emulator;
	// empty means real SQS through the default AWS credential chain.
	Endpoint string
	Region   string
	// Queue names. FIFO queue names end in ".fifo".
	CommandQueue      string
	DeadLetterQueue   string
	NotificationQueue string
	// CreateQueues makes the services create missing queues at start-up.
	CreateQueues bool
	// VisibilityTimeout and MaxReceiveCount are applied to queues this
	// project creates.
	VisibilityTimeout time.Duration
	MaxReceiveCount   int
}

// Load reads the queue settings:
//
//	SQS_ENDPOINT             "" (real AWS)   e.g. http://127.0.0.1:4100
//	AWS_REGION               us-east-1
//	SQS_COMMAND_QUEUE        oms-commands.fifo
//	SQS_DEAD_LETTER_QUEUE    oms-commands-dlq.fifo
//	SQS_NOTIFICATION_QUEUE   oms-notifications.fifo
//	SQS_CREATE_QUEUES        true with SQS_ENDPOINT, false otherwise
//	SQS_VISIBILITY_TIMEOUT   5m
//	SQS_MAX_RECEIVE_COUNT    5
func Load(env *config.Env) Config {
	c := Config{
		Endpoint:          env.URL("SQS_ENDPOINT", "", "http", "https"),
		Region:            env.String("AWS_REGION", "us-east-1"),
		CommandQueue:      env.String("SQS_COMMAND_QUEUE", "oms-commands.fifo"),
		DeadLetterQueue:   env.String("SQS_DEAD_LETTER_QUEUE", "oms-commands-dlq.fifo"),
		NotificationQueue: env.String("SQS_NOTIFICATION_QUEUE", "oms-notifications.fifo"),
		VisibilityTimeout: env.Duration("SQS_VISIBILITY_TIMEOUT", 5*time.Minute, time.Second, 12*time.Hour),
		MaxReceiveCount:   env.Int("SQS_MAX_RECEIVE_COUNT", 5, 1, 1000),
	}
	c.CreateQueues = env.Bool("SQS_CREATE_QUEUES", c.Endpoint != "")
	for name, q := range map[string]string{
		"SQS_COMMAND_QUEUE": c.CommandQueue, "SQS_DEAD_LETTER_QUEUE": c.DeadLetterQueue, "SQS_NOTIFICATION_QUEUE": c.NotificationQueue,
	} {
		env.Check(strings.HasSuffix(q, ".fifo") && len(q) <= 80, name, "must be a FIFO queue name ending in .fifo, at most 80 characters")
	}
	return c
}
