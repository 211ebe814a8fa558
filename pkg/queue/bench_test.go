package queue_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/queue"
)

const (
	senders     = 16
	rawMessages = 20000 // make bench: -benchtime 20000x
)

// rawCeiling measures, once per run, what the endpoint takes from 16
// goroutines with the bare SDK client and no project code: SendMessage, or
// SendMessageBatch with 10 entries.
var rawCeiling = sync.OnceValues(func() (map[int]float64, error) {
	out := map[int]float64{}
	for _, batch := range []int{1, 10} {
		rate, err := measureRaw(batch)
		if err != nil {
			return nil, err
		}
		out[batch] = rate
	}
	return out, nil
})

func measureRaw(batch int) (float64, error) {
	ctx := context.Background()
	prefix := "raw" + uuid.NewString()[:8]
	c := queue.Config{Endpoint: emulator.URL, Region: "us-east-1", CreateQueues: true,
		CommandQueue: prefix + "-c.fifo", DeadLetterQueue: prefix + "-d.fifo", NotificationQueue: prefix + "-n.fifo",
		VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5}
	client, err := queue.NewClient(ctx, c)
	if err != nil {
		return 0, err
	}
	urls, err := queue.EnsureQueues(ctx, client, c)
	if err != nil {
		return 0, err
	}
	// A fixed count, the same as `make bench` publishes: goaws slows down as
	// a queue grows, so equal backlogs make a fair comparison.
	var sent atomic.Int64
	var firstErr atomic.Value
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	// The same message shape as the publisher sends: a small JSON body,
	// Watermill's uuid and a correlation id as attributes.
	attrs := map[string]types.MessageAttributeValue{
		"_watermill_message_uuid": {DataType: aws.String("String"), StringValue: aws.String(uuid.NewString())},
		"correlation_id":          {DataType: aws.String("String"), StringValue: aws.String("corr-" + uuid.NewString())},
	}
	for g := range senders {
		wg.Go(func() {
			for i := 0; rctx.Err() == nil && sent.Load() < rawMessages; i++ {
				var err error
				if batch == 1 {
					id := fmt.Sprintf("%d-%d", g, i)
					_, err = client.SendMessage(rctx, &sqs.SendMessageInput{QueueUrl: aws.String(urls.Command), MessageBody: aws.String(`{"n":"` + id + `"}`),
						MessageAttributes: attrs, MessageGroupId: aws.String(fmt.Sprint(g)), MessageDeduplicationId: aws.String(id)})
				} else {
					entries := make([]types.SendMessageBatchRequestEntry, batch)
					for j := range entries {
						id := fmt.Sprintf("%d-%d-%d", g, i, j)
						entries[j] = types.SendMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(j)), MessageBody: aws.String(`{"n":"` + id + `"}`),
							MessageAttributes: attrs, MessageGroupId: aws.String(fmt.Sprint(g)), MessageDeduplicationId: aws.String(id)}
					}
					_, err = client.SendMessageBatch(rctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(urls.Command), Entries: entries})
				}
				if err != nil {
					if rctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					return
				}
				sent.Add(int64(batch))
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(sent.Load()) / time.Since(start).Seconds(), nil
}

// BenchmarkBatchPublisher publishes from 16 goroutines, one message per
// Publish call as ingest does, and reports messages/s as a fraction of the
// raw ceiling for the same API measured in the same run. With batches of
// 10 against goaws the fraction is low by construction: goaws's batch reply
// is unreadable, so every entry is confirmed by a second, single send
// (docs/sqs.md); against real SQS that second send does not happen.
//
//	make bench
func BenchmarkBatchPublisher(b *testing.B) {
	ceilings, err := rawCeiling()
	if err != nil {
		b.Fatal(err)
	}
	for _, max := range []int{1, 10} {
		b.Run(fmt.Sprintf("entries=%d", max), func(b *testing.B) {
			c, client, urls := testQueues(b)
			p, err := queue.NewBatchPublisher(client, c.CommandQueue, urls.Command, queue.BatchConfig{MaxEntries: max, Linger: 2 * time.Millisecond, MaxInFlight: senders})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.SetParallelism(senders / 2)
			b.ResetTimer()
			var goroutine atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				group := fmt.Sprint(goroutine.Add(1)) // 16 groups, as in the raw run
				for pb.Next() {
					if err := p.Publish(c.CommandQueue, fifoMessage(uuid.NewString(), group)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "msgs/s")
			b.ReportMetric(ceilings[max], "raw_msgs/s")
			b.ReportMetric(rate/ceilings[max], "x_raw")
		})
	}
}
