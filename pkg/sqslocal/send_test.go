package sqslocal

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/Admiral-Piett/goaws/app/models"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// The SDK reads every entry of a SendMessageBatch answer: goaws's own
// answer left Successful and Failed empty.
func TestSendMessageBatchAnswersEveryEntry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, qurl := newQueue(t, ".fifo", nil)
	var entries []types.SendMessageBatchRequestEntry
	for i := range 10 {
		entries = append(entries, types.SendMessageBatchRequestEntry{
			Id: aws.String("e" + strconv.Itoa(i)), MessageBody: aws.String("m" + strconv.Itoa(i)),
			MessageGroupId: aws.String(strconv.Itoa(i % 3)), MessageDeduplicationId: aws.String("d" + strconv.Itoa(i)),
			MessageAttributes: map[string]types.MessageAttributeValue{"k": {DataType: aws.String("String"), StringValue: aws.String("v")}},
		})
	}
	out, err := client().SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qurl), Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Successful) != 10 || len(out.Failed) != 0 {
		t.Fatalf("%d successful, %d failed; want 10, 0", len(out.Successful), len(out.Failed))
	}
	first := map[string]string{}
	for i, s := range out.Successful {
		if aws.ToString(s.Id) != "e"+strconv.Itoa(i) || aws.ToString(s.MessageId) == "" || aws.ToString(s.MD5OfMessageAttributes) == "" ||
			(i > 0 && aws.ToString(s.SequenceNumber) <= aws.ToString(out.Successful[i-1].SequenceNumber)) {
			t.Errorf("entry %d: %+v", i, s)
		}
		first[aws.ToString(s.Id)] = aws.ToString(s.MessageId)
	}

	// A duplicate is accepted and answered as its first copy; an entry SQS
	// refuses is in Failed.
	out, err = client().SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: aws.String(qurl), Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("dup"), MessageBody: aws.String("m0 again"), MessageGroupId: aws.String("0"), MessageDeduplicationId: aws.String("d0")},
		{Id: aws.String("nogroup"), MessageBody: aws.String("x"), MessageDeduplicationId: aws.String("x")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Successful) != 1 || aws.ToString(out.Successful[0].MessageId) != first["e0"] {
		t.Errorf("duplicate answered %+v, want message id %s", out.Successful, first["e0"])
	}
	if len(out.Failed) != 1 || aws.ToString(out.Failed[0].Id) != "nogroup" || aws.ToString(out.Failed[0].Code) != "MissingParameter" || !out.Failed[0].SenderFault {
		t.Errorf("failed %+v, want nogroup refused", out.Failed)
	}

	var got []types.Message
	for range 10 {
		msgs := receive(t, qurl)
		deleteAll(t, qurl, msgs)
		if got = append(got, msgs...); len(msgs) == 0 {
			break
		}
	}
	if len(got) != 10 {
		t.Errorf("received %d messages (%s), want 10", len(got), bodies(got))
	}
}

// Standard queues: every entry answered, without sequence numbers, and
// goaws's own receive delivers them. Not parallel: goaws's receive reads
// its queue map unlocked, racing with queue creation.
func TestSendMessageBatchOnStandardQueue(t *testing.T) {
	_, std := newQueue(t, "", nil)
	out, err := client().SendMessageBatch(context.Background(), &sqs.SendMessageBatchInput{QueueUrl: aws.String(std), Entries: []types.SendMessageBatchRequestEntry{
		{Id: aws.String("a"), MessageBody: aws.String("a")}, {Id: aws.String("b"), MessageBody: aws.String("b")},
	}})
	if err != nil || len(out.Successful) != 2 || out.Successful[0].SequenceNumber != nil {
		t.Fatalf("standard queue batch: %v, %+v", err, out)
	}
	if msgs := receive(t, std, wait(5)); bodies(msgs) != "a,b" {
		t.Errorf("received %q from the standard queue, want a,b", bodies(msgs))
	}
}

// Deduplication lasts its window (5 minutes), not until the first copy is
// deleted as in goaws, and then ends. Not parallel: it shortens the window.
func TestDeduplicationWindow(t *testing.T) {
	setWindow := func(d time.Duration) {
		models.SyncQueues.Lock()
		emu.st.dedupWindow = d
		models.SyncQueues.Unlock()
	}
	defer setWindow(models.DeduplicationPeriod)
	_, qurl := newQueue(t, ".fifo", nil)
	sendDedup := func(body string) {
		t.Helper()
		if _, err := client().SendMessage(context.Background(), &sqs.SendMessageInput{
			QueueUrl: aws.String(qurl), MessageBody: aws.String(body), MessageGroupId: aws.String("g"), MessageDeduplicationId: aws.String("same"),
		}); err != nil {
			t.Fatal(err)
		}
	}
	sendDedup("first")
	deleteAll(t, qurl, receive(t, qurl))
	sendDedup("after delete")
	if got := receive(t, qurl); len(got) != 0 {
		t.Fatalf("a duplicate sent after the first copy was deleted was delivered: %s", bodies(got))
	}

	setWindow(200 * time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	sendDedup("after the window")
	if b := bodies(receive(t, qurl, wait(5))); b != "after the window" {
		t.Errorf("after the window received %q", b)
	}
}
