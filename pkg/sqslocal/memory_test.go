package sqslocal

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// retained is what the emulator holds for one queue, in objects.
type retained struct {
	messages   int // in goaws's slice
	stale      int // slots past the slice's length still holding a message
	capacity   int // of goaws's slice
	records    int // sqslocal's per-message records
	dedupIDs   int // sqslocal's deduplication ids
	dedupLog   int // and their expiry log (capacity)
	goawsDedup int // goaws's own deduplication ids and FIFO maps
	queues     int // sqslocal's queue states for this name
}

func retainedBy(name string) retained {
	models.SyncQueues.Lock()
	defer models.SyncQueues.Unlock()
	var r retained
	for q, qs := range emu.st.queues {
		if q.Name == name {
			r.queues++
			r.records += len(qs.messages)
			r.dedupIDs += len(qs.dedup)
			r.dedupLog += cap(qs.dedupLog)
		}
	}
	q, ok := models.SyncQueues.Queues[name]
	if !ok {
		return r
	}
	r.messages, r.capacity = len(q.Messages), cap(q.Messages)
	for _, m := range q.Messages[len(q.Messages):cap(q.Messages)] {
		if m.Uuid != "" || m.MessageBody != "" || m.MessageAttributes != nil {
			r.stale++
		}
	}
	r.goawsDedup = len(q.Duplicates) + len(q.FIFOMessages) + len(q.FIFOSequenceNumbers)
	return r
}

// heapMiB is the live heap after a full collection.
func heapMiB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// sweepAt runs a sweep as if at t. Not for parallel tests: a sweep in the
// future ends other queues' deduplication windows too.
func sweepAt(t time.Time) { emu.st.sweep(t) }

// noteAttributes are what a Watermill notification carries.
func noteAttributes(i int) map[string]types.MessageAttributeValue {
	s := func(v string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	return map[string]types.MessageAttributeValue{
		"_watermill_message_uuid": s(fmt.Sprintf("0198c1a2-7f3e-7b6a-9c1d-%012d", i)),
		"correlation_id":          s(fmt.Sprintf("corr-%032d", i)),
		"event_type":              s("order.created"),
	}
}

// 50,000 messages sent and deleted in batches of 10, while they flow, leave
// nothing behind but their deduplication ids, and those go when their
// window ends. Not parallel: it sweeps in the future.
func TestMemoryIsReleased(t *testing.T) {
	n := 50_000
	if testing.Short() {
		n = 5_000
	}
	const senders, consumers = 4, 4
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	name, qurl := newQueue(t, ".fifo", map[string]string{"VisibilityTimeout": "30"})
	body := strings.Repeat("b", 400)
	before := heapMiB()

	// The backlog stays under 2,000 messages, as a load test keeps it: a
	// FIFO receive looks through the whole queue.
	backlog := make(chan struct{}, 2000)
	var wg sync.WaitGroup
	var next, deleted atomic.Int64
	var peak float64
	var peakMu sync.Mutex
	for range senders {
		wg.Go(func() {
			c := client()
			for {
				i := int(next.Add(10)) - 10
				if i >= n || ctx.Err() != nil {
					return
				}
				var entries []types.SendMessageBatchRequestEntry
				for j := i; j < i+10; j++ {
					select {
					case backlog <- struct{}{}:
					case <-ctx.Done():
						return
					}
					entries = append(entries, types.SendMessageBatchRequestEntry{
						Id: aws.String(strconv.Itoa(j - i)), MessageBody: aws.String(body), MessageAttributes: noteAttributes(j),
						MessageGroupId: aws.String("order-" + strconv.Itoa(j%5000)), MessageDeduplicationId: aws.String(fmt.Sprintf("note-%032d", j)),
					})
				}
				out, err := c.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries})
				if err != nil || len(out.Successful) != 10 {
					t.Errorf("send batch: %v, %+v", err, out)
					cancel()
					return
				}
				if i%(n/5) == 0 {
					// Sampled while messages are queued: not a collection
					// per batch.
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					peakMu.Lock()
					peak = max(peak, float64(ms.HeapAlloc)/(1<<20))
					peakMu.Unlock()
				}
			}
		})
	}
	for range consumers {
		wg.Go(func() {
			c := client()
			for deleted.Load() < int64(n) && ctx.Err() == nil {
				out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(qurl), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("receive: %v", err)
					}
					return
				}
				if len(out.Messages) == 0 {
					continue
				}
				var entries []types.DeleteMessageBatchRequestEntry
				for i, m := range out.Messages {
					entries = append(entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
				}
				r, err := c.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries})
				if err != nil || len(r.Successful) != len(entries) {
					t.Errorf("delete batch: %v, %+v", err, r)
					cancel()
					return
				}
				deleted.Add(int64(len(entries)))
				for range entries {
					<-backlog
				}
			}
		})
	}
	wg.Wait()
	if d := deleted.Load(); d != int64(n) {
		t.Fatalf("%d of %d messages deleted", d, n)
	}

	now := time.Now()
	sweepAt(now)
	afterDeletes := heapMiB()
	r := retainedBy(name)
	t.Logf("after %d sends and deletes: %+v", n, r)
	if r.messages != 0 || r.stale != 0 || r.capacity > 64 || r.records != 0 || r.goawsDedup != 0 {
		t.Errorf("deleted messages are still held: %+v", r)
	}
	if r.dedupIDs != n {
		t.Errorf("%d deduplication ids held, want %d: their window is still open", r.dedupIDs, n)
	}

	sweepAt(now.Add(models.DeduplicationPeriod + time.Second))
	after := heapMiB()
	if r := retainedBy(name); r.dedupIDs != 0 || r.dedupLog != 0 {
		t.Errorf("after the deduplication window: %+v", r)
	}
	t.Logf("heap: %.1f MiB before, %.1f MiB sampled while sending, %.1f MiB after the deletes (deduplication ids held), %.1f MiB after their window",
		before, peak, afterDeletes, after)

	if _, err := client().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(qurl)}); err != nil {
		t.Fatal(err)
	}
	sweepAt(time.Now())
	if r := retainedBy(name); r.queues != 0 {
		t.Error("a deleted queue's state was kept")
	}
}

// A message older than its queue's retention period is dropped, in flight
// or not, and its group goes on; Options.MaxRetention caps every queue's.
// Not parallel: it sweeps in the future.
func TestRetentionPeriod(t *testing.T) {
	defer func(d time.Duration) {
		models.SyncQueues.Lock()
		emu.st.maxRetention = d
		models.SyncQueues.Unlock()
	}(emu.st.maxRetention)

	name, qurl := newQueue(t, ".fifo", map[string]string{"MessageRetentionPeriod": "60"})
	send(t, qurl, "g", "old")
	if got := receive(t, qurl, maxMessages(1)); bodies(got) != "old" {
		t.Fatalf("received %q", bodies(got))
	}
	time.Sleep(10 * time.Millisecond)
	sentAt := time.Now()
	send(t, qurl, "g", "new")
	sweepAt(sentAt.Add(59 * time.Second))
	if r := retainedBy(name); r.messages != 2 {
		t.Fatalf("within the retention period: %+v", r)
	}
	sweepAt(sentAt.Add(-5 * time.Millisecond).Add(time.Minute))
	if r := retainedBy(name); r.messages != 1 || r.records != 1 {
		t.Fatalf("after the first message's retention period: %+v", r)
	}
	if got := receive(t, qurl, wait(5)); bodies(got) != "new" {
		t.Errorf("received %q once the message in flight expired, want new", bodies(got))
	}

	// The cap: a queue that keeps messages 4 days keeps them a minute.
	std, stdURL := newQueue(t, "", nil)
	if _, err := client().SendMessage(context.Background(), &sqs.SendMessageInput{QueueUrl: aws.String(stdURL), MessageBody: aws.String("x")}); err != nil {
		t.Fatal(err)
	}
	sweepAt(time.Now().Add(time.Hour))
	if r := retainedBy(std); r.messages != 1 {
		t.Fatalf("the default retention dropped a message after an hour: %+v", r)
	}
	models.SyncQueues.Lock()
	emu.st.maxRetention = time.Minute
	models.SyncQueues.Unlock()
	sweepAt(time.Now().Add(time.Minute + time.Second))
	if r := retainedBy(std); r.messages != 0 {
		t.Errorf("past MaxRetention: %+v", r)
	}
}

// Deletes answer as goaws's did: every entry in Successful or Failed, an
// unknown receipt handle failed, the rest of the queue intact and in
// order; the query protocol too.
func TestDeleteAnswersEveryEntry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, qurl := newQueue(t, ".fifo", nil)
	for i := range 6 {
		send(t, qurl, strconv.Itoa(i%3), "m"+strconv.Itoa(i))
	}
	got := receive(t, qurl, maxMessages(2)) // m0 and m3, both of group 0
	if bodies(got) != "m0,m3" {
		t.Fatalf("received %s", bodies(got))
	}
	out, err := client().DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(qurl), Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("a"), ReceiptHandle: got[1].ReceiptHandle},
		{Id: aws.String("bogus"), ReceiptHandle: aws.String("no-such-handle")},
		{Id: aws.String("b"), ReceiptHandle: got[0].ReceiptHandle},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Successful) != 2 || aws.ToString(out.Successful[0].Id) != "a" || aws.ToString(out.Successful[1].Id) != "b" ||
		len(out.Failed) != 1 || aws.ToString(out.Failed[0].Id) != "bogus" || !out.Failed[0].SenderFault {
		t.Errorf("delete batch answered %+v", out)
	}
	_, err = client().DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(qurl), Entries: []types.DeleteMessageBatchRequestEntry{
		{Id: aws.String("x"), ReceiptHandle: aws.String("h1")}, {Id: aws.String("x"), ReceiptHandle: aws.String("h2")},
	}})
	if err == nil || !strings.Contains(err.Error(), "BatchEntryIdsNotDistinct") {
		t.Errorf("repeated entry ids: %v", err)
	}
	if _, err := client().DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(qurl), ReceiptHandle: got[0].ReceiptHandle}); err == nil {
		t.Error("deleting a deleted message succeeded")
	}

	// The query protocol.
	rest := receive(t, qurl)
	if bodies(rest) != "m1,m4,m2,m5" {
		t.Fatalf("after the deletes received %s", bodies(rest))
	}
	v := url.Values{"Action": {"DeleteMessage"}, "QueueUrl": {qurl}, "ReceiptHandle": {aws.ToString(rest[0].ReceiptHandle)}}
	resp, err := http.PostForm(emu.URL, v)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "DeleteMessageResponse") {
		t.Errorf("query-protocol DeleteMessage answered %d %s", resp.StatusCode, b)
	}
	deleteAll(t, qurl, rest[1:])
	if got := receive(t, qurl); len(got) != 0 {
		t.Errorf("received %s from an emptied queue", bodies(got))
	}
}
