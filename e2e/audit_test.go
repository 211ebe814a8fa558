package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
)

// A command SQS itself dead-letters (every receive ended in a crash, so
// no processor ever gave up on it) still gets its outcome: the audit
// records its operation done ABORTED, which its sender reads by the name
// its 202 carried, and the message stays on the dead-letter queue.
func TestSQSDeadLetteredCommandGetsAnOutcome(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, urls := ownQueues(t, "audit")
	ingestHTTP := freeAddr()
	ing, err := sys.start("ingest", sys.ingestEnv(q, ingestHTTP, freeAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer ing.stop(15 * time.Second)
	if err := waitReady(ingestHTTP); err != nil {
		t.Fatal(err)
	}
	r := do(t, "POST", "http://"+ingestHTTP+"/v1/orders", orderBody, "Idempotency-Key", uuid.NewString())
	opName, _ := r.body["operation"].(string)
	if r.status != http.StatusAccepted || opName == "" {
		t.Fatalf("%d %s", r.status, r.raw)
	}

	// A processor that dies holding the command, maxReceiveCount times:
	// SQS then moves it to the dead-letter queue.
	for receives := 0; ; receives++ {
		out, err := sys.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(urls.Command), WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			if receives < q.MaxReceiveCount {
				t.Fatalf("the command left the command queue after %d receives", receives)
			}
			break
		}
		sys.sqs.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(urls.Command), ReceiptHandle: out.Messages[0].ReceiptHandle, VisibilityTimeout: 0})
	}
	env := []string{"SQS_COMMAND_QUEUE=" + q.CommandQueue, "SQS_DEAD_LETTER_QUEUE=" + q.DeadLetterQueue, "SQS_NOTIFICATION_QUEUE=" + q.NotificationQueue}
	if rows := dlqList(t, env...); len(rows) != 1 || rows[0].Reason != "" {
		t.Fatalf("dead-letter queue lists %+v, want the command, moved by SQS", rows)
	}
	if r := do(t, "GET", query("/v1/"+opName), ""); r.status != http.StatusOK || r.body["done"] == true {
		t.Fatalf("before the audit: %d %s, want a pending operation", r.status, r.raw)
	}

	proc, err := sys.start("processor", append(sys.ingestEnv(q, freeAddr(), freeAddr()), "PROCESSOR_DLQ_AUDIT_INTERVAL=200ms",
		"PROCESSOR_RETRY_INITIAL_INTERVAL=200ms", "PROCESSOR_HANDLER_TIMEOUT=1s"))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.stop(15 * time.Second)
	var op map[string]any
	if err := waitFor(30*time.Second, func() error {
		r := do(t, "GET", query("/v1/"+opName), "")
		if r.status != http.StatusOK || r.body["done"] != true {
			return fmt.Errorf("%d %s", r.status, r.raw)
		}
		op = r.body
		return nil
	}); err != nil {
		t.Fatalf("no outcome: %v\n%s", err, tail(proc.out.String(), 20))
	}
	e, _ := op["error"].(map[string]any)
	if e == nil || e["code"] != float64(10) || !containsAll(fmt.Sprint(e["message"]), "dead-lettered by SQS after 5 receives", "redrive") {
		t.Errorf("operation %v, want done ABORTED saying why", op)
	}
	// The audit may be holding it for a moment.
	if err := waitFor(10*time.Second, func() error {
		if rows := dlqList(t, env...); len(rows) != 1 {
			return fmt.Errorf("dead-letter queue lists %+v after the audit, want the command still there", rows)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
