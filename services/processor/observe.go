package main

import (
	"context"
	"database/sql"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/omsdev/oms/pkg/metrics"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
)

var (
	commandsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "oms_commands_total",
		Help: "Commands by outcome: applied, rejected (stored as history), duplicate, retried (a transient attempt failure), poisoned (dead-lettered), failed (retries exhausted, left to redelivery).",
	}, []string{"command", "outcome"})
	applyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "oms_command_apply_duration_seconds", Help: "Time to apply one command in its transaction.",
		Buckets: prometheus.DefBuckets,
	}, []string{"command"})
)

func init() { metrics.Register(commandsTotal, applyDuration) }

// commandKind is the command label of a message, from its metadata.
func commandKind(msg *message.Message) string {
	if k := msg.Metadata.Get("command"); k != "" {
		return k
	}
	return "unknown"
}

// countOutcomes is the outermost middleware: an error here means the
// message is nacked and left to SQS redelivery.
func countOutcomes(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		out, err := h(msg)
		if err != nil {
			commandsTotal.WithLabelValues(commandKind(msg), "failed").Inc()
		}
		return out, err
	}
}

// stateCollector samples, at scrape time, what only the database and SQS
// know: the outbox backlog and the queues' depth.
type stateCollector struct {
	db     *sql.DB
	sqs    *sqs.Client
	queues map[string]string // name -> URL

	backlog, oldest, depth *prometheus.Desc
}

func newStateCollector(db *sql.DB, client *sqs.Client, queues map[string]string) *stateCollector {
	return &stateCollector{
		db: db, sqs: client, queues: queues,
		backlog: prometheus.NewDesc("oms_outbox_backlog", "Notifications written but not yet relayed.", nil, nil),
		oldest:  prometheus.NewDesc("oms_outbox_oldest_age_seconds", "Age of the oldest unrelayed notification: the relay's lag.", nil, nil),
		depth:   prometheus.NewDesc("oms_sqs_queue_messages", "Approximate messages in a queue (goaws counts in-flight ones as visible too).", []string{"queue", "state"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.backlog
	ch <- c.oldest
	ch <- c.depth
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if n, age, err := outbox.Backlog(ctx, c.db); err == nil {
		ch <- prometheus.MustNewConstMetric(c.backlog, prometheus.GaugeValue, float64(n))
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age.Seconds())
	}
	for name, url := range c.queues {
		d, err := queue.QueueDepth(ctx, c.sqs, url)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(d.Visible), name, "visible")
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(d.InFlight), name, "in_flight")
	}
}
