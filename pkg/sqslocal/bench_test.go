package sqslocal

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// BenchmarkFIFODrain drains a backlog of b.N messages in 100 groups with
// 4 consumers, each receiving up to 10 and deleting them in one batch.
// Receives and deletes each look through the backlog, so the rate falls
// as it grows.
func BenchmarkFIFODrain(b *testing.B) {
	ctx := context.Background()
	_, qurl := newQueue(b, ".fifo", nil)
	for i := 0; i < b.N; i += 10 {
		var entries []types.SendMessageBatchRequestEntry
		for j := i; j < min(i+10, b.N); j++ {
			entries = append(entries, types.SendMessageBatchRequestEntry{
				Id: aws.String(strconv.Itoa(j)), MessageBody: aws.String(strconv.Itoa(j)),
				MessageGroupId: aws.String(strconv.Itoa(j % 100)), MessageDeduplicationId: aws.String(strconv.Itoa(j)),
			})
		}
		if _, err := client().SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client()
			for left.Load() > 0 {
				out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(qurl), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err != nil {
					b.Error(err)
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				var del []types.DeleteMessageBatchRequestEntry
				for i, m := range out.Messages {
					del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
				}
				if _, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(qurl), Entries: del}); err != nil {
					b.Error(err)
					return
				}
				left.Add(-int64(len(out.Messages)))
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
