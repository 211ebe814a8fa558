package sqslocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/aws/smithy-go"
)

// groupLog is what the consumers saw of one message group, in the order
// they saw it. A delete is logged before it is sent, so a delivery the
// delete made possible is always logged after it.
type groupLog struct {
	mu     sync.Mutex
	events []*groupEvent
}

type groupEvent struct {
	delivered []int // indexes of one receive's messages of the group, in order
	deleted   int   // index of a delete, if delivered is nil
	ok        bool  // the delete succeeded
}

func (l *groupLog) add(e *groupEvent) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// N consumers race over many groups, abandon messages at random (left to
// their 1 s visibility timeout, or handed back at once) and delete the
// rest. SQS FIFO's promise must hold throughout: a group's message is
// delivered only once every earlier one is deleted, several in one receive
// come in order, deletions per group follow send order, and every message
// is deleted exactly once.
func TestFIFOOrderHoldsWithConcurrentConsumers(t *testing.T) {
	t.Parallel()
	const groups, perGroup, consumers = 40, 25, 8
	const total = groups * perGroup
	_, qurl := newQueue(t, ".fifo", map[string]string{"VisibilityTimeout": "1"})
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// Interleave the groups, ten to a batch.
	var entries []types.SendMessageBatchRequestEntry
	for k := range perGroup {
		for g := range groups {
			body := fmt.Sprintf("%d/%d", g, k)
			entries = append(entries, types.SendMessageBatchRequestEntry{
				Id: aws.String(strconv.Itoa(len(entries) % 10)), MessageBody: aws.String(body),
				MessageGroupId: aws.String(strconv.Itoa(g)), MessageDeduplicationId: aws.String(body),
			})
			if len(entries) == 10 {
				out, err := client().SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries})
				if err != nil || len(out.Successful) != 10 {
					t.Fatalf("send batch: %v, %d successful", err, len(out.Successful))
				}
				entries = nil
			}
		}
	}

	logs := make([]groupLog, groups)
	var deletes atomic.Int64
	var receives, abandoned atomic.Int64
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var wg sync.WaitGroup
	for c := range consumers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(c)))
			sqsc := client()
			receiveCounts := map[string]map[string]bool{}
			for ctx.Err() == nil && deletes.Load() < total {
				out, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
					QueueUrl: aws.String(qurl), MaxNumberOfMessages: 1 + rnd.Int32N(10), WaitTimeSeconds: 1,
					MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
				})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("receive: %v", err)
					}
					return
				}
				receives.Add(1)
				// This receive's messages per group, in the order given.
				byGroup := map[int][]types.Message{}
				var order []int
				for _, m := range out.Messages {
					var g, k int
					fmt.Sscanf(aws.ToString(m.Body), "%d/%d", &g, &k)
					if m.Attributes["MessageGroupId"] != strconv.Itoa(g) {
						t.Errorf("message %s has group attribute %q", aws.ToString(m.Body), m.Attributes["MessageGroupId"])
					}
					id, count := aws.ToString(m.MessageId), m.Attributes["ApproximateReceiveCount"]
					if receiveCounts[id] == nil {
						receiveCounts[id] = map[string]bool{}
					}
					if receiveCounts[id][count] {
						t.Errorf("message %s received twice with ApproximateReceiveCount %s", aws.ToString(m.Body), count)
					}
					receiveCounts[id][count] = true
					if _, ok := byGroup[g]; !ok {
						order = append(order, g)
					}
					byGroup[g] = append(byGroup[g], m)
				}
				for _, g := range order {
					msgs := byGroup[g]
					idx := make([]int, len(msgs))
					for i, m := range msgs {
						fmt.Sscanf(aws.ToString(m.Body), "%d/%d", new(int), &idx[i])
					}
					for i := 1; i < len(msgs); i++ {
						if idx[i] != idx[i-1]+1 || msgs[i].Attributes["SequenceNumber"] <= msgs[i-1].Attributes["SequenceNumber"] {
							t.Errorf("group %d: one receive gave %v", g, idx)
						}
					}
					logs[g].add(&groupEvent{delivered: idx})
				}
				for _, g := range order {
					for i, m := range byGroup[g] {
						if rnd.IntN(10) == 0 {
							// Abandon this one and the rest of the group's:
							// hand them back now, or leave them to time out.
							abandoned.Add(1)
							if rnd.IntN(2) == 0 {
								for _, a := range byGroup[g][i:] {
									sqsc.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(qurl), ReceiptHandle: a.ReceiptHandle, VisibilityTimeout: 0})
								}
							}
							break
						}
						if rnd.IntN(4) == 0 {
							time.Sleep(time.Duration(rnd.IntN(3)) * time.Millisecond)
						}
						var k int
						fmt.Sscanf(aws.ToString(m.Body), "%d/%d", new(int), &k)
						e := &groupEvent{deleted: k}
						logs[g].add(e)
						_, err := sqsc.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(qurl), ReceiptHandle: m.ReceiptHandle})
						if err != nil {
							// Its visibility ran out and someone else has it:
							// stop, as a consumer of a FIFO batch would.
							break
						}
						logs[g].mu.Lock()
						e.ok = true
						logs[g].mu.Unlock()
						deletes.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d receives, %d abandoned, %d deletes", receives.Load(), abandoned.Load(), deletes.Load())

	for g := range logs {
		next := 0 // every message before next is deleted
		for _, e := range logs[g].events {
			switch {
			case e.delivered != nil && e.delivered[0] != next:
				t.Errorf("group %d: %v delivered while message %d was not deleted", g, e.delivered, next)
			case e.delivered == nil && e.ok && e.deleted != next:
				t.Errorf("group %d: message %d deleted while message %d was not", g, e.deleted, next)
			case e.delivered == nil && e.ok:
				next++
			}
		}
		if next != perGroup {
			t.Errorf("group %d: %d of %d messages deleted", g, next, perGroup)
		}
	}
	if n := deletes.Load(); n != total {
		t.Errorf("%d deletes succeeded, want %d", n, total)
	}
	if abandoned.Load() == 0 {
		t.Error("no message was abandoned: the test did not test redelivery")
	}
}

// One receive returns several messages of a group, in order, the oldest
// group's first; what is in flight holds its group back.
func TestReceiveReturnsAGroupInOrder(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", nil)
	before := time.Now().Add(-time.Second).UnixMilli()
	var seqs []string
	for _, m := range []struct{ group, body string }{{"a", "a0"}, {"b", "b0"}, {"a", "a1"}, {"b", "b1"}, {"a", "a2"}} {
		seqs = append(seqs, aws.ToString(send(t, qurl, m.group, m.body).SequenceNumber))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("sequence numbers %v do not increase", seqs)
		}
	}
	got := receive(t, qurl)
	if b := bodies(got); b != "a0,a1,a2,b0,b1" {
		t.Fatalf("received %s, want a0,a1,a2,b0,b1", b)
	}
	sent := map[string]string{"a0": seqs[0], "b0": seqs[1], "a1": seqs[2], "b1": seqs[3], "a2": seqs[4]}
	for _, m := range got {
		a, body := m.Attributes, aws.ToString(m.Body)
		ts, _ := strconv.ParseInt(a["SentTimestamp"], 10, 64)
		if a["MessageGroupId"] != body[:1] || a["SequenceNumber"] != sent[body] || a["ApproximateReceiveCount"] != "1" ||
			a["MessageDeduplicationId"] == "" || ts < before || a["ApproximateFirstReceiveTimestamp"] == "" {
			t.Errorf("%s: attributes %v", body, a)
		}
	}
	if more := receive(t, qurl); len(more) != 0 {
		t.Errorf("received %s while both groups were in flight", bodies(more))
	}
	send(t, qurl, "c", "c0")
	if b := bodies(receive(t, qurl)); b != "c0" {
		t.Errorf("received %s, want c0: other groups go on", b)
	}

	// goaws's DeleteMessageBatch finds these receipts and frees the groups.
	var entries []types.DeleteMessageBatchRequestEntry
	for i, m := range got {
		entries = append(entries, types.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle})
	}
	out, err := client().DeleteMessageBatch(context.Background(), &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries})
	if err != nil || len(out.Successful) != len(got) {
		t.Fatalf("delete batch: %v, %+v", err, out)
	}
	send(t, qurl, "a", "a3")
	if b := bodies(receive(t, qurl)); b != "a3" {
		t.Errorf("after the batch delete received %s, want a3", b)
	}
}

// A message whose visibility timeout runs out comes back before the rest of
// its group, whatever other groups do meanwhile (goaws forgot the lock of
// a group as soon as another group was received). One handed back with
// ChangeMessageVisibility comes back at once.
func TestAbandonedMessageComesBackFirst(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", map[string]string{"VisibilityTimeout": "30"})
	for _, b := range []string{"m0", "m1", "m2"} {
		send(t, qurl, "g", b)
	}
	send(t, qurl, "h", "n0")
	first := receive(t, qurl, maxMessages(1), visibility(1))
	if b := bodies(first); b != "m0" {
		t.Fatalf("received %s, want m0", b)
	}
	other := receive(t, qurl)
	if b := bodies(other); b != "n0" {
		t.Fatalf("received %s while m0 was in flight, want n0 alone", b)
	}
	deleteAll(t, qurl, other)
	if more := receive(t, qurl); len(more) != 0 {
		t.Fatalf("received %s while m0 was in flight", bodies(more))
	}

	start := time.Now()
	again := receive(t, qurl, wait(10))
	if b := bodies(again); b != "m0,m1,m2" {
		t.Fatalf("after m0's visibility timeout received %s, want m0,m1,m2", b)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("m0 came back after %v; its visibility timeout was 1 s", d)
	}
	if c := again[0].Attributes["ApproximateReceiveCount"]; c != "2" {
		t.Errorf("m0's ApproximateReceiveCount %s, want 2", c)
	}
	_, err := client().DeleteMessage(context.Background(), &sqs.DeleteMessageInput{QueueUrl: aws.String(qurl), ReceiptHandle: first[0].ReceiptHandle})
	if err == nil {
		t.Error("a receipt handle from before the redelivery deleted the message")
	}

	for _, m := range again {
		if _, err := client().ChangeMessageVisibility(context.Background(), &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(qurl), ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: 0,
		}); err != nil {
			t.Fatal(err)
		}
	}
	back := receive(t, qurl, maxMessages(2))
	if b := bodies(back); b != "m0,m1" {
		t.Fatalf("after handing the messages back received %s, want m0,m1", b)
	}
	if c := back[0].Attributes["ApproximateReceiveCount"]; c != "3" {
		t.Errorf("m0's ApproximateReceiveCount %s, want 3", c)
	}
	deleteAll(t, qurl, back)
	if b := bodies(receive(t, qurl)); b != "m2" {
		t.Errorf("received %s, want m2", b)
	}
}

// After maxReceiveCount receives a message moves to the dead-letter queue,
// whether its visibility ran out or it was handed back, and the rest of its
// group goes on.
func TestRedriveToDeadLetterQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dlq := newQueue(t, ".fifo", nil)
	attrs, err := client().GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(dlq), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	redrive, _ := json.Marshal(map[string]string{"deadLetterTargetArn": attrs.Attributes["QueueArn"], "maxReceiveCount": "2"})
	_, qurl := newQueue(t, ".fifo", map[string]string{"VisibilityTimeout": "30", "RedrivePolicy": string(redrive)})
	for _, b := range []string{"m0", "m1", "m2"} {
		send(t, qurl, "g", b)
	}

	// m0: two receives whose visibility runs out.
	for i := 1; i <= 2; i++ {
		got := receive(t, qurl, maxMessages(1), visibility(1), wait(10))
		if b := bodies(got); b != "m0" || got[0].Attributes["ApproximateReceiveCount"] != strconv.Itoa(i) {
			t.Fatalf("receive %d: %s (%v), want m0 with count %d", i, b, got, i)
		}
	}
	// m1: two receives handed back at once.
	for i := 1; i <= 2; i++ {
		got := receive(t, qurl, maxMessages(1), wait(10))
		if b := bodies(got); b != "m1" {
			t.Fatalf("receive %d: %s, want m1", i, b)
		}
		if _, err := client().ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(qurl), ReceiptHandle: got[0].ReceiptHandle}); err != nil {
			t.Fatal(err)
		}
	}
	if b := bodies(receive(t, qurl, wait(10))); b != "m2" {
		t.Fatalf("received %s, want m2 once m0 and m1 were dead-lettered", b)
	}
	dead := receive(t, dlq, wait(5))
	if b := bodies(dead); b != "m0,m1" {
		t.Fatalf("dead-letter queue gave %s, want m0,m1", b)
	}
	if g := dead[0].Attributes["MessageGroupId"]; g != "g" {
		t.Errorf("dead-lettered message's group %q", g)
	}
}

// A long poll answers as soon as a message arrives, not at the next tick.
func TestLongPollAnswersWhenAMessageArrives(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", nil)
	type result struct {
		msgs []types.Message
		at   time.Time
	}
	done := make(chan result)
	go func() {
		out, err := client().ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(qurl), WaitTimeSeconds: 10})
		if err != nil {
			t.Error(err)
		}
		done <- result{out.Messages, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond)
	sentAt := time.Now()
	send(t, qurl, "g", "hello")
	r := <-done
	if bodies(r.msgs) != "hello" {
		t.Fatalf("long poll returned %q", bodies(r.msgs))
	}
	latency := r.at.Sub(sentAt)
	t.Logf("send to long-poll answer: %v", latency)
	if latency > 2*time.Second {
		t.Errorf("long poll answered %v after the send", latency)
	}

	// An empty long poll lasts its wait.
	start := time.Now()
	if got := receive(t, qurl, wait(1)); len(got) != 0 {
		t.Errorf("received %s while hello was in flight", bodies(got))
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("an empty 1 s long poll took %v", d)
	}
}

// Message attributes come only as asked for, as in SQS.
func TestReceiveSelectsMessageAttributes(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", nil)
	str := func(s string) types.MessageAttributeValue {
		return types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(s)}
	}
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{nil, ""},
		{[]string{"All"}, "oms.a,oms.b,other"},
		{[]string{"oms.*"}, "oms.a,oms.b"},
		{[]string{"other", "missing"}, "other"},
	} {
		_, err := client().SendMessage(context.Background(), &sqs.SendMessageInput{
			QueueUrl: aws.String(qurl), MessageBody: aws.String("x"), MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String(fmt.Sprint(tc.names)),
			MessageAttributes: map[string]types.MessageAttributeValue{"oms.a": str("1"), "oms.b": str("2"), "other": str("3")},
		})
		if err != nil {
			t.Fatal(err)
		}
		out, err := client().ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(qurl), MessageAttributeNames: tc.names, WaitTimeSeconds: 5})
		if err != nil || len(out.Messages) != 1 {
			t.Fatalf("%v: %v, %d messages", tc.names, err, len(out.Messages))
		}
		m := out.Messages[0]
		var got []string
		for _, k := range []string{"oms.a", "oms.b", "other"} {
			if _, ok := m.MessageAttributes[k]; ok {
				got = append(got, k)
			}
		}
		if strings.Join(got, ",") != tc.want || (tc.want == "") != (m.MD5OfMessageAttributes == nil) || len(m.Attributes) != 0 {
			t.Errorf("%v: attributes %v (md5 %v), system attributes %v; want %s", tc.names, got, aws.ToString(m.MD5OfMessageAttributes), m.Attributes, tc.want)
		}
		deleteAll(t, qurl, out.Messages)
	}
}

// Out-of-range parameters are refused as SQS refuses them.
func TestReceiveRefusesBadParameters(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", nil)
	_, err := client().ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(qurl), MaxNumberOfMessages: 11})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "InvalidParameterValue" {
		t.Errorf("MaxNumberOfMessages 11: %v", err)
	}
	_, err = client().ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(emu.URL + "/" + AccountID + "/missing.fifo")})
	if err == nil {
		t.Error("receive from a missing queue succeeded")
	}
}

// The older query protocol gets the same FIFO behaviour, answered in XML.
func TestQueryProtocol(t *testing.T) {
	t.Parallel()
	_, qurl := newQueue(t, ".fifo", nil)
	post := func(v url.Values) string {
		t.Helper()
		v.Set("QueueUrl", qurl)
		resp, err := http.PostForm(emu.URL, v)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", v.Get("Action"), resp.StatusCode, b)
		}
		return string(b)
	}
	for _, b := range []string{"q0", "q1"} {
		out := post(url.Values{"Action": {"SendMessage"}, "MessageBody": {b}, "MessageGroupId": {"g"}, "MessageDeduplicationId": {b}})
		if !strings.Contains(out, "<SequenceNumber>") {
			t.Errorf("SendMessage answered %s", out)
		}
	}
	out := post(url.Values{"Action": {"ReceiveMessage"}, "MaxNumberOfMessages": {"1"}, "AttributeName.1": {"SequenceNumber"}})
	if !strings.Contains(out, "<Body>q0</Body>") || !strings.Contains(out, "<Name>SequenceNumber</Name>") {
		t.Errorf("ReceiveMessage answered %s", out)
	}
	if out := post(url.Values{"Action": {"ReceiveMessage"}}); strings.Contains(out, "<Body>") {
		t.Errorf("received %s while q0 was in flight", out)
	}
}
