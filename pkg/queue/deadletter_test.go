package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	wsqs "github.com/ThreeDotsLabs/watermill-aws/sqs"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/queue"
)

func TestDeadLetterDedupIDIsPerFailedMessage(t *testing.T) {
	a := queue.DeadLetterDedupID("msg-1", "order not found")
	if a != queue.DeadLetterDedupID("msg-1", "order not found") {
		t.Error("same message and reason: ids differ")
	}
	for name, other := range map[string]string{
		"another message": queue.DeadLetterDedupID("msg-2", "order not found"),
		"another reason":  queue.DeadLetterDedupID("msg-1", "panic"),
		"no message id":   queue.DeadLetterDedupID("", "order not found"),
	} {
		if other == a {
			t.Errorf("%s: same id %s", name, a)
		}
	}
	if queue.DeadLetterDedupID("", "x") == queue.DeadLetterDedupID("", "x") {
		t.Error("without a message id the id must be fresh each time")
	}
	r := queue.RedriveDedupID("dlq-1")
	if r != queue.RedriveDedupID("dlq-1") || r == queue.RedriveDedupID("dlq-2") || r == queue.DeadLetterDedupID("dlq-1", "") {
		t.Error("redrive ids must be stable per dead-letter message and distinct from others")
	}
	for _, id := range []string{a, r} {
		if len(id) > 128 {
			t.Errorf("%s: longer than SQS's 128", id)
		}
	}
}

func strAttr(v string) types.MessageAttributeValue {
	return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
}

func TestRedriveInputDropsTheDeadLetteringAttributes(t *testing.T) {
	m := types.Message{
		MessageId: aws.String("dlq-1"), Body: aws.String(`{"commandId":"c"}`),
		MessageAttributes: map[string]types.MessageAttributeValue{
			middleware.ReasonForPoisonedKey: strAttr("boom"), middleware.PoisonedTopicKey: strAttr("cmds"),
			middleware.PoisonedHandlerKey: strAttr("h"), middleware.PoisonedSubscriberKey: strAttr("s"),
			queue.AttrPoisonedAt: strAttr(time.Now().Format(time.RFC3339Nano)),
			"command":            strAttr("pay"), "correlation_id": strAttr("corr"), wsqs.UUIDAttribute: strAttr("c"),
		},
	}
	in := queue.RedriveInput("http://q/cmds.fifo", m, "order-1")
	if aws.ToString(in.MessageGroupId) != "order-1" || aws.ToString(in.MessageDeduplicationId) != queue.RedriveDedupID("dlq-1") ||
		aws.ToString(in.MessageBody) != `{"commandId":"c"}` || aws.ToString(in.QueueUrl) != "http://q/cmds.fifo" {
		t.Errorf("input %+v", in)
	}
	var keys []string
	for k := range in.MessageAttributes {
		keys = append(keys, k)
	}
	if len(keys) != 3 || in.MessageAttributes["command"].StringValue == nil || in.MessageAttributes[wsqs.UUIDAttribute].StringValue == nil ||
		in.MessageAttributes["correlation_id"].StringValue == nil {
		t.Errorf("attributes %v", keys)
	}
	if len(m.MessageAttributes) != 8 {
		t.Error("the dead-letter message's attributes were changed")
	}
}

func TestReceivedMessageIDIsNeverSent(t *testing.T) {
	in, err := queue.FIFOSendInput(context.Background(), "http://q/x.fifo", &types.Message{
		Body: aws.String("b"),
		MessageAttributes: map[string]types.MessageAttributeValue{
			queue.MetaGroupID: strAttr("g"), queue.MetaMessageID: strAttr("m-1"), queue.MetaReceiptHandle: strAttr("r"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.MessageAttributes) != 0 {
		t.Errorf("sent attributes %v", in.MessageAttributes)
	}
}

func TestPoisonedAt(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 123e6, time.UTC)
	for name, tc := range map[string]struct {
		m    types.Message
		want time.Time
	}{
		"stamped": {types.Message{MessageAttributes: map[string]types.MessageAttributeValue{queue.AttrPoisonedAt: strAttr(at.Format(time.RFC3339Nano))},
			Attributes: map[string]string{"SentTimestamp": "1"}}, at},
		"moved by SQS": {types.Message{Attributes: map[string]string{"SentTimestamp": "1795687200123"}}, time.UnixMilli(1795687200123)},
		"unknown":      {types.Message{}, time.Time{}},
	} {
		if got := queue.PoisonedAt(tc.m); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

// sendDLQ puts a message on the dead-letter queue as the processor would.
func sendDLQ(t *testing.T, client *sqs.Client, url, group, body string) {
	t.Helper()
	_, err := client.SendMessage(context.Background(), &sqs.SendMessageInput{
		QueueUrl: aws.String(url), MessageBody: aws.String(body),
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(uuid.NewString()),
		MessageAttributes: map[string]types.MessageAttributeValue{
			middleware.ReasonForPoisonedKey: strAttr("boom"), "command": strAttr("pay"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPeekRedriveAndRelease(t *testing.T) {
	ctx := context.Background()
	_, client, urls := testQueues(t)
	for _, g := range []string{"a", "b", "c"} {
		sendDLQ(t, client, urls.DeadLetter, g, "body-"+g)
	}
	msgs, err := queue.Peek(ctx, client, urls.DeadLetter, 30*time.Second, 100)
	if err != nil || len(msgs) != 3 {
		t.Fatalf("peek: %d messages, %v", len(msgs), err)
	}
	var rest []types.Message
	for _, m := range msgs {
		if aws.ToString(m.Body) == "body-b" {
			if err := queue.Redrive(ctx, client, urls.DeadLetter, urls.Command, m, "b"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		rest = append(rest, m)
	}
	if err := queue.ReleaseAll(ctx, client, urls.DeadLetter, rest); err != nil {
		t.Fatal(err)
	}
	got := drain(t, client, urls.Command, 1)
	m, ok := got["body-b"]
	if !ok || len(got) != 1 {
		t.Fatalf("command queue: %v", got)
	}
	if _, ok := m.MessageAttributes[middleware.ReasonForPoisonedKey]; ok || aws.ToString(m.MessageAttributes["command"].StringValue) != "pay" {
		t.Errorf("redriven attributes %v", m.MessageAttributes)
	}
	// The others are visible again at once, not after 30 s.
	again, err := queue.Peek(ctx, client, urls.DeadLetter, 5*time.Second, 100)
	if err != nil || len(again) != 2 {
		t.Fatalf("after release: %d messages, %v", len(again), err)
	}
}

// failingDelete is a client that loses its way between send and delete.
type failingDelete struct{ queue.DeadLetterAPI }

func (failingDelete) DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	return nil, errors.New("connection reset")
}

// A redrive interrupted after its send and run again enqueues once.
func TestRedriveTwiceEnqueuesOnce(t *testing.T) {
	ctx := context.Background()
	_, client, urls := testQueues(t)
	sendDLQ(t, client, urls.DeadLetter, "order-1", "body-1")
	msgs, err := queue.Peek(ctx, client, urls.DeadLetter, 30*time.Second, 10)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("peek: %d, %v", len(msgs), err)
	}
	err = queue.Redrive(ctx, failingDelete{client}, urls.DeadLetter, urls.Command, msgs[0], "order-1")
	if err == nil || !strings.Contains(err.Error(), "could not delete") {
		t.Fatalf("redrive with a failing delete: %v", err)
	}
	if err := queue.ReleaseAll(ctx, client, urls.DeadLetter, msgs); err != nil {
		t.Fatal(err)
	}
	again, err := queue.Peek(ctx, client, urls.DeadLetter, 30*time.Second, 10)
	if err != nil || len(again) != 1 || aws.ToString(again[0].MessageId) != aws.ToString(msgs[0].MessageId) {
		t.Fatalf("still on the dead-letter queue: %d, %v", len(again), err)
	}
	if err := queue.Redrive(ctx, client, urls.DeadLetter, urls.Command, again[0], "order-1"); err != nil {
		t.Fatal(err)
	}
	out, err := client.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(urls.Command), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Messages) != 1 {
		t.Errorf("command queue holds %d messages, want 1", len(out.Messages))
	}
	if left, _ := queue.Peek(ctx, client, urls.DeadLetter, time.Second, 10); len(left) != 0 {
		t.Errorf("dead-letter queue still holds %d", len(left))
	}
}

func TestRedriveNeedsAGroup(t *testing.T) {
	err := queue.Redrive(context.Background(), nil, "d", "c", types.Message{}, "")
	if !errors.Is(err, queue.ErrNoGroupID) {
		t.Errorf("err = %v", err)
	}
}

// The command queue's redrive policy is read from the queue itself: the
// count EnsureQueues wrote, whatever form it takes; none on a queue
// without one.
func TestMaxReceiveCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, client, urls := testQueues(t)
	if n, err := queue.MaxReceiveCount(ctx, client, urls.Command); err != nil || n != c.MaxReceiveCount {
		t.Errorf("command queue: %d, %v; want %d", n, err, c.MaxReceiveCount)
	}
	if n, err := queue.MaxReceiveCount(ctx, client, urls.DeadLetter); err != nil || n != 0 {
		t.Errorf("dead-letter queue: %d, %v; want 0", n, err)
	}
	for policy, want := range map[string]int{
		`{"deadLetterTargetArn":"arn:x","maxReceiveCount":7}`:   7,
		`{"deadLetterTargetArn":"arn:x","maxReceiveCount":"3"}`: 3,
		`{"deadLetterTargetArn":"arn:x"}`:                       -1,
		`not json`:                                              -1,
	} {
		n, err := queue.MaxReceiveCount(ctx, policyAttr(policy), "u")
		if want < 0 && err == nil || want >= 0 && (err != nil || n != want) {
			t.Errorf("%s: %d, %v; want %d", policy, n, err, want)
		}
	}
}

// policyAttr answers every GetQueueAttributes with a RedrivePolicy.
type policyAttr string

func (p policyAttr) GetQueueAttributes(context.Context, *sqs.GetQueueAttributesInput, ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error) {
	return &sqs.GetQueueAttributesOutput{Attributes: map[string]string{"RedrivePolicy": string(p)}}, nil
}
