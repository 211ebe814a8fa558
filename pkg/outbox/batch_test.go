package outbox_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/outbox"
	"github.com/omsdev/oms/pkg/queue"
)

// calls counts the SQS API calls that reach the endpoint, by action.
type calls struct {
	next aws.HTTPClient
	mu   sync.Mutex
	n    map[string]int
}

func (c *calls) Do(r *http.Request) (*http.Response, error) {
	_, action, _ := strings.Cut(r.Header.Get("X-Amz-Target"), ".")
	c.mu.Lock()
	c.n[action]++
	c.mu.Unlock()
	return c.next.Do(r)
}

func (c *calls) count(action string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[action]
}

// countedClient is an SQS client for f's endpoint whose calls are counted,
// and its configuration, for a Watermill publisher.
func (f fifo) countedClient(t *testing.T) (*sqs.Client, *calls, aws.Config, []func(*sqs.Options)) {
	t.Helper()
	cfg, opts, err := f.cfg.AWS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := &calls{next: cfg.HTTPClient, n: map[string]int{}}
	cfg.HTTPClient = c
	return sqs.NewFromConfig(cfg, opts...), c, cfg, opts
}

// received is what a FIFO queue delivered, in order, read with one
// consumer: each id's deliveries, and each group's ids in delivery order.
type received struct {
	count map[string]int
	order map[string][]string
}

// receiveAll reads and deletes until want distinct notifications (bodies
// {"id":"<group>-<n>"}) have arrived and the queue has nothing more.
func (f fifo) receiveAll(t *testing.T, want int) received {
	t.Helper()
	ctx := context.Background()
	got := received{count: map[string]int{}, order: map[string][]string{}}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		r, err := f.client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(f.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Messages) == 0 && len(got.count) >= want {
			return got
		}
		var del []types.DeleteMessageBatchRequestEntry
		for i, m := range r.Messages {
			var body struct{ ID string }
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &body); err != nil {
				t.Fatalf("body %q: %v", aws.ToString(m.Body), err)
			}
			got.count[body.ID]++
			g, _, _ := strings.Cut(body.ID, "-")
			got.order[g] = append(got.order[g], body.ID)
			del = append(del, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
		}
		if len(del) > 0 {
			if _, err := f.client.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(f.url), Entries: del}); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Fatalf("the queue delivered %d distinct notifications, want %d", len(got.count), want)
	return got
}

// A round of 25 notifications, to 25 groups, costs 3 SendMessageBatch calls
// through an SQSSender; through watermill-aws's publisher it cost one
// SendMessage each.
func TestRoundOf25CostsThreeBatchCalls(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		publisher             func(fifo, *sqs.Client, aws.Config, []func(*sqs.Options)) message.Publisher
		wantBatches, wantSend int
	}{
		{"SQSSender", func(f fifo, c *sqs.Client, _ aws.Config, _ []func(*sqs.Options)) message.Publisher {
			return outbox.NewSQSSender(c, map[string]string{f.name: f.url})
		}, 3, 0},
		{"watermill-aws publisher", func(_ fifo, _ *sqs.Client, cfg aws.Config, opts []func(*sqs.Options)) message.Publisher {
			p, err := wsqs.NewPublisher(wsqs.PublisherConfig{
				AWSConfig: cfg, OptFns: opts, DoNotCreateQueueIfNotExists: true, GenerateSendMessageInput: queue.FIFOSendInput,
			}, watermill.NopLogger{})
			if err != nil {
				panic(err)
			}
			return p
		}, 0, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db := dbtest.New(t)
			q := newFIFO(t)
			const n = 25
			var msgs []*message.Message
			for i := range n {
				msgs = append(msgs, note(fmt.Sprintf("g%02d-0", i), fmt.Sprintf("g%02d", i)))
			}
			write(t, db, q.name, msgs...) // all there before the first claim
			client, counted, cfg, opts := q.countedClient(t)
			relay := start(t, db.DB, tc.publisher(q, client, cfg, opts), outbox.RelayConfig{PollInterval: 10 * time.Millisecond, BatchSize: 50})
			eventually(t, "the outbox to empty", func() (bool, error) {
				s, err := outbox.ReadStats(ctx, db.DB)
				return s.Pending == 0 && s.Parked == 0, err
			})
			relay.Close()

			batches, sends := counted.count("SendMessageBatch"), counted.count("SendMessage")
			t.Logf("%d notifications: %d SendMessageBatch, %d SendMessage, %d GetQueueUrl calls: %.2f calls per notification",
				n, batches, sends, counted.count("GetQueueUrl"), float64(batches+sends)/n)
			if batches != tc.wantBatches || sends != tc.wantSend {
				t.Errorf("%d SendMessageBatch and %d SendMessage calls, want %d and %d", batches, sends, tc.wantBatches, tc.wantSend)
			}
			got := q.receiveAll(t, n)
			for id, c := range got.count {
				if c != 1 {
					t.Errorf("%s arrived %d times", id, c)
				}
			}
		})
	}
}

// interfering is the SQS client with answers changed per deduplication id,
// at the SDK's interface: a message to fail is not sent, and comes back in
// Failed (or as the call's error) as a transient error; an entry to leave
// unconfirmed is sent but left out of the batch's answer, as goaws's own
// batch reply leaves every entry.
type interfering struct {
	*sqs.Client
	mu          sync.Mutex
	fail        map[string]int // times left
	unconfirmed map[string]int
}

func takeOne(m map[string]int, id string) bool {
	if m[id] > 0 {
		m[id]--
		return true
	}
	return false
}

func (c *interfering) SendMessage(ctx context.Context, in *sqs.SendMessageInput, opts ...func(*sqs.Options)) (*sqs.SendMessageOutput, error) {
	c.mu.Lock()
	fail := takeOne(c.fail, aws.ToString(in.MessageDeduplicationId))
	c.mu.Unlock()
	if fail {
		return nil, &smithy.GenericAPIError{Code: "InternalError", Message: "injected", Fault: smithy.FaultServer}
	}
	return c.Client.SendMessage(ctx, in, opts...)
}

func (c *interfering) SendMessageBatch(ctx context.Context, in *sqs.SendMessageBatchInput, opts ...func(*sqs.Options)) (*sqs.SendMessageBatchOutput, error) {
	c.mu.Lock()
	var send []types.SendMessageBatchRequestEntry
	out := &sqs.SendMessageBatchOutput{}
	hide := map[string]bool{}
	for _, e := range in.Entries {
		id := aws.ToString(e.MessageDeduplicationId)
		switch {
		case takeOne(c.fail, id):
			out.Failed = append(out.Failed, types.BatchResultErrorEntry{Id: e.Id, Code: aws.String("InternalError"), Message: aws.String("injected"), SenderFault: false})
		case takeOne(c.unconfirmed, id):
			hide[aws.ToString(e.Id)] = true
			send = append(send, e)
		default:
			send = append(send, e)
		}
	}
	c.mu.Unlock()
	if len(send) == 0 {
		return out, nil
	}
	real, err := c.Client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: in.QueueUrl, Entries: send}, opts...)
	if err != nil {
		return nil, err
	}
	for _, s := range real.Successful {
		if !hide[aws.ToString(s.Id)] {
			out.Successful = append(out.Successful, s)
		}
	}
	out.Failed = append(out.Failed, real.Failed...)
	return out, nil
}

// One batch, three kinds of trouble: an entry SQS refuses (too big for the
// queue) is parked at once; an entry that fails transiently is retried
// after its backoff; an entry left unconfirmed is sent again alone, and
// deduplicated. The other entries of their batches are sent, and every
// group is delivered in order, the refused one without its parked row.
func TestPartialBatchFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFOWith(t, map[string]string{"MaximumMessageSize": "1024"})
	const groups, perGroup = 10, 3
	var msgs []*message.Message
	for k := range perGroup {
		for g := range groups {
			id := fmt.Sprintf("g%d-%d", g, k)
			m := note(id, fmt.Sprintf("g%d", g))
			if id == "g2-1" {
				m.Payload = []byte(`{"id":"g2-1","pad":"` + strings.Repeat("x", 2000) + `"}`)
			}
			msgs = append(msgs, m)
		}
	}
	write(t, db, q.name, msgs...)

	client, counted, _, _ := q.countedClient(t)
	api := &interfering{Client: client, fail: map[string]int{"dedup-g4-1": 2}, unconfirmed: map[string]int{"dedup-g6-1": 1}}
	start(t, db.DB, outbox.NewSQSSender(api, map[string]string{q.name: q.url}), outbox.RelayConfig{
		PollInterval: 10 * time.Millisecond, MaxAttempts: 5, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	eventually(t, "all but the refused notification to be relayed", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0 && s.Parked == 1, err
	})

	got := q.receiveAll(t, groups*perGroup-1)
	for g := range groups {
		want := []string{fmt.Sprintf("g%d-0", g), fmt.Sprintf("g%d-1", g), fmt.Sprintf("g%d-2", g)}
		if g == 2 {
			want = slices.Delete(want, 1, 2)
		}
		if o := got.order[fmt.Sprintf("g%d", g)]; !slices.Equal(o, want) {
			t.Errorf("group g%d delivered %v, want %v", g, o, want)
		}
	}
	for id, c := range got.count {
		if c != 1 {
			t.Errorf("%s arrived %d times", id, c)
		}
	}
	parked, err := outbox.Parked(ctx, db.DB, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(parked) != 1 || parked[0].UUID != "g2-1" || parked[0].Attempts != 1 || !strings.Contains(parked[0].LastError, "InvalidParameterValue") {
		t.Errorf("parked %+v, want g2-1 refused at its first attempt", parked)
	}
	api.mu.Lock()
	if api.fail["dedup-g4-1"] != 0 || api.unconfirmed["dedup-g6-1"] != 0 {
		t.Errorf("the troubles were not all met: %v %v", api.fail, api.unconfirmed)
	}
	api.mu.Unlock()
	t.Logf("%d notifications relayed with %d SendMessageBatch and %d SendMessage calls",
		groups*perGroup-1, counted.count("SendMessageBatch"), counted.count("SendMessage"))
}

// Two relays sending in batches share the outbox: every notification
// arrives once, each group's in the order written.
func TestTwoBatchingRelaysKeepGroupOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	q := newFIFO(t)
	var counters []*calls
	for i := range 2 {
		client, counted, _, _ := q.countedClient(t)
		counters = append(counters, counted)
		start(t, db.DB, outbox.NewSQSSender(client, map[string]string{q.name: q.url}), outbox.RelayConfig{
			PollInterval: 5 * time.Millisecond, BatchSize: 20, Name: fmt.Sprintf("relay-%d", i),
		})
	}
	writeAll(t, db, q.name)
	eventually(t, "every notification to be relayed", func() (bool, error) {
		s, err := outbox.ReadStats(ctx, db.DB)
		return s.Pending == 0, err
	})

	got := q.receiveAll(t, groups*perGroup)
	for g := range groups {
		want := make([]string, perGroup)
		for i := range want {
			want[i] = noteID(g, i)
		}
		if o := got.order[fmt.Sprintf("g%02d", g)]; !slices.Equal(o, want) {
			t.Errorf("group g%02d delivered in the order %v", g, o)
		}
	}
	var batches, sends int
	for _, c := range counters {
		batches, sends = batches+c.count("SendMessageBatch"), sends+c.count("SendMessage")
	}
	t.Logf("%d notifications, written one per transaction while relayed: %d SendMessageBatch and %d SendMessage calls",
		groups*perGroup, batches, sends)
}
