package queue_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/sqslocal"
)

var emulator *sqslocal.Emulator

func TestMain(m *testing.M) {
	var err error
	emulator, err = sqslocal.Start("127.0.0.1:0", 100*time.Millisecond)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	emulator.Close()
	os.Exit(code)
}

// testQueues creates a fresh set of queues on the emulator.
func testQueues(t testing.TB) (queue.Config, *sqs.Client, queue.URLs) {
	t.Helper()
	prefix := "t" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	c := queue.Config{
		Endpoint: emulator.URL, Region: "us-east-1", CreateQueues: true,
		CommandQueue: prefix + "-commands.fifo", DeadLetterQueue: prefix + "-dlq.fifo", NotificationQueue: prefix + "-notes.fifo",
		VisibilityTimeout: 30 * time.Second, MaxReceiveCount: 5,
	}
	ctx := context.Background()
	client, err := queue.NewClient(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	urls, err := queue.EnsureQueues(ctx, client, c)
	if err != nil {
		t.Fatal(err)
	}
	return c, client, urls
}

func fifoMessage(id, group string) *message.Message {
	m := message.NewMessage(id, []byte(`{"n":"`+id+`"}`))
	m.Metadata.Set(queue.MetaGroupID, group)
	m.Metadata.Set("correlation_id", "corr-"+id)
	return m
}

func drain(t *testing.T, client *sqs.Client, url string, want int) map[string]types.Message {
	t.Helper()
	got := map[string]types.Message{}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out, err := client.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			body := aws.ToString(m.Body)
			if _, dup := got[body]; dup {
				t.Errorf("message %s delivered twice", body)
			}
			got[body] = m
			client.DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(url), ReceiptHandle: m.ReceiptHandle})
		}
		if len(out.Messages) == 0 && len(got) >= want {
			break
		}
	}
	return got
}

func TestBatchPublisherDeliversEachMessageOnce(t *testing.T) {
	c, client, urls := testQueues(t)
	p, err := queue.NewBatchPublisher(client, c.CommandQueue, urls.Command, queue.BatchConfig{MaxEntries: 10, Linger: 5 * time.Millisecond, MaxInFlight: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("m-%03d", i)
			if err := p.Publish(c.CommandQueue, fifoMessage(id, fmt.Sprintf("g-%d", i%7))); err != nil {
				t.Errorf("publish %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	// Publishing the same ids again is deduplicated by SQS FIFO.
	for i := range 20 {
		id := fmt.Sprintf("m-%03d", i)
		if err := p.Publish(c.CommandQueue, fifoMessage(id, "g-x")); err != nil {
			t.Fatal(err)
		}
	}
	got := drain(t, client, urls.Command, n)
	if len(got) != n {
		t.Fatalf("received %d distinct messages, want %d", len(got), n)
	}
	for body, m := range got {
		if aws.ToString(m.MessageAttributes["correlation_id"].StringValue) == "" {
			t.Errorf("%s lost its correlation_id attribute", body)
		}
		if _, leaked := m.MessageAttributes[queue.MetaGroupID]; leaked {
			t.Errorf("%s carries the group id as an attribute", body)
		}
	}
}

func TestBatchPublisherRejectsMessageWithoutGroup(t *testing.T) {
	c, client, urls := testQueues(t)
	p, _ := queue.NewBatchPublisher(client, c.CommandQueue, urls.Command, queue.BatchConfig{MaxEntries: 10, Linger: time.Millisecond})
	defer p.Close()
	err := p.Publish(c.CommandQueue, message.NewMessage("x", []byte("{}")))
	if !errors.Is(err, queue.ErrNoGroupID) {
		t.Fatalf("Publish without group = %v, want ErrNoGroupID", err)
	}
}

func TestBatchPublisherUnreachableQueueFails(t *testing.T) {
	c := queue.Config{Endpoint: "http://127.0.0.1:1", Region: "us-east-1"}
	client, _ := queue.NewClient(context.Background(), c)
	p, _ := queue.NewBatchPublisher(client, "q.fifo", "http://127.0.0.1:1/000000000000/q.fifo", queue.BatchConfig{MaxEntries: 10, Linger: time.Millisecond})
	defer p.Close()
	if err := p.Publish("q.fifo", fifoMessage("a", "g")); err == nil {
		t.Fatal("publish to an unreachable endpoint succeeded")
	}
}

// fakeSQS answers batch calls with a scripted mix of results, to check the
// publisher's handling of each entry at the SDK interface. (goaws cannot
// produce entry-level failures.)
type fakeSQS struct {
	mu      sync.Mutex
	batches [][]types.SendMessageBatchRequestEntry
	singles []string
	answer  func(e types.SendMessageBatchRequestEntry) string // "ok", "fail", "silent"
}

func (f *fakeSQS) SendMessageBatch(_ context.Context, in *sqs.SendMessageBatchInput, _ ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.batches = append(f.batches, in.Entries)
	out := &sqs.SendMessageBatchOutput{}
	for _, e := range in.Entries {
		switch f.answer(e) {
		case "ok":
			out.Successful = append(out.Successful, types.SendMessageBatchResultEntry{Id: e.Id})
		case "fail":
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InvalidParameterValue"), Message: aws.String("bad"), SenderFault: true})
		}
	}
	return out, nil
}

func (f *fakeSQS) SendMessage(_ context.Context, in *sqs.SendMessageInput, _ ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.singles = append(f.singles, aws.ToString(in.MessageDeduplicationId))
	return &sqs.SendMessageOutput{}, nil
}

func TestBatchPublisherEntryResults(t *testing.T) {
	f := &fakeSQS{answer: func(e types.SendMessageBatchRequestEntry) string {
		kind, _, _ := strings.Cut(strings.TrimPrefix(aws.ToString(e.MessageDeduplicationId), "dedup-"), "-")
		return kind
	}}
	// A long linger gathers all nine into one batch (a batch of one would
	// go out as a single SendMessage).
	p, _ := queue.NewBatchPublisher(f, "q.fifo", "url", queue.BatchConfig{MaxEntries: 10, Linger: time.Second})
	defer p.Close()

	results := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, kind := range []string{"ok", "fail", "silent"} {
		for i := range 3 {
			wg.Go(func() {
				id := fmt.Sprintf("%s-%d", kind, i)
				m := fifoMessage(id, "g")
				m.Metadata.Set(queue.MetaDedupID, "dedup-"+id)
				err := p.Publish("q.fifo", m)
				mu.Lock()
				results[id] = err
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for id, err := range results {
		switch {
		case strings.HasPrefix(id, "ok"), strings.HasPrefix(id, "silent"):
			if err != nil {
				t.Errorf("%s: %v, want success", id, err)
			}
		case strings.HasPrefix(id, "fail"):
			var se *queue.SendError
			if !errors.As(err, &se) || !se.SenderFault {
				t.Errorf("%s: %v, want a sender-fault SendError", id, err)
			}
		}
	}
	if len(f.batches) != 1 || len(f.batches[0]) != 9 {
		t.Errorf("9 concurrent messages took %d batch calls; want them coalesced into one", len(f.batches))
	}
	if len(f.singles) != 3 {
		t.Errorf("resent %v individually, want exactly the 3 unconfirmed entries", f.singles)
	}
	for _, d := range f.singles {
		if !strings.HasPrefix(d, "dedup-silent-") {
			t.Errorf("resent %s, which SQS had answered", d)
		}
	}
}

// refusingSQS refuses every single send the way SQS refuses a body with
// characters it does not accept.
type refusingSQS struct{ fakeSQS }

func (f *refusingSQS) SendMessage(context.Context, *sqs.SendMessageInput, ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	return nil, &smithy.GenericAPIError{Code: "InvalidMessageContents", Message: "Invalid binary character", Fault: smithy.FaultClient}
}

func TestBatchPublisherRefusedMessageIsTheSendersFault(t *testing.T) {
	p, _ := queue.NewBatchPublisher(&refusingSQS{}, "q.fifo", "url", queue.BatchConfig{MaxEntries: 1})
	defer p.Close()
	err := p.Publish("q.fifo", fifoMessage("a", "g"))
	var se *queue.SendError
	if !errors.As(err, &se) || !se.SenderFault || se.Code != "InvalidMessageContents" {
		t.Fatalf("Publish = %v, want a sender-fault SendError", err)
	}
}

// A message whose caller already gave up is not sent behind its back.
func TestBatchPublisherSkipsAbandonedMessages(t *testing.T) {
	f := &fakeSQS{answer: func(types.SendMessageBatchRequestEntry) string { return "ok" }}
	p, _ := queue.NewBatchPublisher(f, "q.fifo", "url", queue.BatchConfig{MaxEntries: 10, Linger: 300 * time.Millisecond})
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	m := fifoMessage("late", "g")
	m.SetContext(ctx)
	if err := p.Publish("q.fifo", m); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish = %v, want the caller's deadline", err)
	}
	time.Sleep(400 * time.Millisecond) // past the linger: the batch would have gone
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.batches) != 0 || len(f.singles) != 0 {
		t.Errorf("sent after the caller gave up: %d batches, %v singles", len(f.batches), f.singles)
	}
}

// A call with one bad message sends none of them: the error never comes
// after earlier messages of the same call went out.
func TestBatchPublisherSendsNothingWhenOneMessageIsBad(t *testing.T) {
	c, client, urls := testQueues(t)
	p, _ := queue.NewBatchPublisher(client, c.CommandQueue, urls.Command, queue.BatchConfig{MaxEntries: 10, Linger: time.Millisecond})
	defer p.Close()
	err := p.Publish(c.CommandQueue, fifoMessage("good-1", "g"), fifoMessage("good-2", "g"), message.NewMessage("bad", []byte("{}")))
	if !errors.Is(err, queue.ErrNoGroupID) {
		t.Fatalf("Publish = %v, want ErrNoGroupID", err)
	}
	d, err := queue.QueueDepth(context.Background(), client, urls.Command)
	if err != nil {
		t.Fatal(err)
	}
	if d.Visible+d.InFlight != 0 {
		t.Fatalf("%d messages sent by a call that failed", d.Visible+d.InFlight)
	}
}
