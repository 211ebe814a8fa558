package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"

	"github.com/omsdev/oms/pkg/queue"
)

// dlqRow is one line of "processor dlq list --output json".
type dlqRow struct {
	MessageID      string            `json:"message_id"`
	OrderID        string            `json:"order_id"`
	Command        string            `json:"command"`
	CommandID      string            `json:"command_id"`
	Reason         string            `json:"reason"`
	CorrelationID  string            `json:"correlation_id"`
	DeadLetteredAt string            `json:"dead_lettered_at"`
	AgeSeconds     float64           `json:"age_seconds"`
	Body           string            `json:"body"`
	Attributes     map[string]string `json:"attributes"`
}

// dlqCLI runs "processor dlq ARGS" with the stack's environment plus env.
func dlqCLI(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(sys.bin, "processor"), append([]string{"dlq"}, args...)...)
	cmd.Env = sys.env(env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { <-ctx.Done(); cmd.Process.Kill() }() // never hang a test
	err = cmd.Run()
	return o.String(), e.String(), err
}

// dlqList returns the rows of "processor dlq list --output json".
func dlqList(t *testing.T, env ...string) []dlqRow {
	t.Helper()
	out, errOut, err := dlqCLI(t, env, "list", "--output", "json")
	if err != nil {
		t.Fatalf("dlq list: %v\n%s", err, errOut)
	}
	var rows []dlqRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("dlq list output is not JSON: %v\n%s", err, out)
	}
	return rows
}

// waitListed polls the shared dead-letter queue until match finds a row:
// other tests' readers hold messages in flight now and then.
func waitListed(t *testing.T, match func(dlqRow) bool) dlqRow {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range dlqList(t) {
			if match(r) {
				return r
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no matching message listed on the dead-letter queue\n%s", sys.logs())
	return dlqRow{}
}

// sendRaw puts a command on the command queue as something other than
// ingest would, with no actor: the processor dead-letters it at once.
func sendRaw(t *testing.T, body, group string, attrs map[string]string) {
	t.Helper()
	in := &sqs.SendMessageInput{
		QueueUrl: aws.String(sys.urls.Command), MessageBody: aws.String(body),
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(uuid.NewString()),
		MessageAttributes: map[string]types.MessageAttributeValue{},
	}
	for k, v := range attrs {
		in.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	if _, err := sys.sqs.SendMessage(context.Background(), in); err != nil {
		t.Fatal(err)
	}
}

func actorlessCommand(commandID, orderID, correlationID string) string {
	return `{"commandId":"` + commandID + `","orderId":"` + orderID + `","correlationId":"` + correlationID +
		`","cancel":{"reason":"no actor"}}`
}

// A dead-lettered command is logged, listed with why, shown in full, and
// redriven to the command queue (where the processor fails it again, so
// it comes back as a new dead-letter message). Redriving it twice finds
// it gone the second time.
func TestDeadLetterQueueListShowRedrive(t *testing.T) {
	t.Parallel()
	orderID, commandID, corr := uuid.NewString(), "dlq-"+uuid.NewString(), "corr-"+uuid.NewString()
	body := actorlessCommand(commandID, orderID, corr)
	sendRaw(t, body, orderID, nil)

	row := waitListed(t, func(r dlqRow) bool { return r.CommandID == commandID })
	if row.OrderID != orderID || row.Command != "cancel" || !strings.Contains(row.Reason, "has no actor") ||
		row.CorrelationID != corr || row.DeadLetteredAt == "" || row.AgeSeconds < 0 || row.AgeSeconds > 60 {
		t.Errorf("listed as %+v", row)
	}

	// One log line for the dead-lettering, with what it takes to follow up.
	var line map[string]any
	waitFor(5*time.Second, func() error {
		for _, l := range strings.Split(sys.output("processor"), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == "command dead-lettered" && rec["command_id"] == commandID {
				line = rec
				return nil
			}
		}
		return errors.New("not logged yet")
	})
	if line == nil {
		t.Errorf("no log line for the dead-lettered command\n%s", tail(sys.output("processor"), 20))
	} else if line["level"] != "WARN" || line["order_id"] != orderID || line["correlation_id"] != corr ||
		!strings.Contains(fmt.Sprint(line["reason"]), "has no actor") {
		t.Errorf("log line %v", line)
	}

	out, errOut, err := dlqCLI(t, nil, "show", "--output", "json", row.MessageID)
	if err != nil {
		t.Fatalf("show: %v\n%s", err, errOut)
	}
	var shown dlqRow
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("show output: %v\n%s", err, out)
	}
	if shown.Body != body || !strings.Contains(shown.Attributes["reason_poisoned"], "has no actor") {
		t.Errorf("shown as %+v", shown)
	}

	// Another test's reader may hold the message for a moment.
	redrive := func() (out, errOut string, err error) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, errOut, err = dlqCLI(t, nil, "redrive", row.MessageID)
			if err == nil || time.Now().After(deadline) {
				return out, errOut, err
			}
		}
	}
	out, errOut, err = redrive()
	if err != nil || !strings.Contains(out, "redriven "+row.MessageID) {
		t.Fatalf("redrive: %v\n%s%s", err, out, errOut)
	}
	again := waitListed(t, func(r dlqRow) bool { return r.CommandID == commandID && r.MessageID != row.MessageID })
	if again.OrderID != orderID {
		t.Errorf("dead-lettered again as %+v", again)
	}
	if rows := dlqListWith(t, row.MessageID); len(rows) != 0 {
		t.Errorf("redriven message still listed: %+v", rows)
	}

	_, errOut, err = dlqCLI(t, nil, "redrive", row.MessageID)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(errOut, row.MessageID) {
		t.Errorf("second redrive: %v\n%s", err, errOut)
	}
	time.Sleep(time.Second) // a second copy would be dead-lettered by now
	n := 0
	for _, r := range dlqList(t) {
		if r.CommandID == commandID {
			n++
		}
	}
	if n > 1 {
		t.Errorf("the command is on the dead-letter queue %d times after one redrive", n)
	}
}

func dlqListWith(t *testing.T, messageID string) []dlqRow {
	t.Helper()
	var out []dlqRow
	for _, r := range dlqList(t) {
		if r.MessageID == messageID {
			out = append(out, r)
		}
	}
	return out
}

// Two different commands that fail with one request id both reach the
// dead-letter queue: its deduplication id is per failed message, not the
// request id the command's own is built from.
func TestFailuresSharingARequestIDAreAllDeadLettered(t *testing.T) {
	t.Parallel()
	requestID := "shared-" + uuid.NewString()
	var bodies []string
	for range 2 {
		o := uuid.NewString()
		b := actorlessCommand(requestID, o, "corr-"+o)
		bodies = append(bodies, b)
		// As ingest publishes: the Watermill UUID is the request id.
		sendRaw(t, b, o, map[string]string{"_watermill_message_uuid": requestID, "command": "cancel"})
	}
	for _, b := range bodies {
		m := deadLettered(t, func(body string) bool { return body == b })
		if reason := aws.ToString(m.MessageAttributes["reason_poisoned"].StringValue); !strings.Contains(reason, "has no actor") {
			t.Errorf("dead-lettered with reason %q", reason)
		}
	}
}

// failingDelete loses its connection between a redrive's send and delete.
type failingDelete struct{ queue.DeadLetterAPI }

func (failingDelete) DeleteMessage(context.Context, *sqs.DeleteMessageInput, ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error) {
	return nil, errors.New("connection reset")
}

// On queues no processor reads: redrive keeps the body and the command's
// attributes (not the dead-lettering ones), keeps each order's messages in
// order, and a redrive interrupted after its send and run again enqueues
// the message once.
func TestRedriveAllIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, urls := ownQueues(t, "dlq")
	env := []string{"SQS_COMMAND_QUEUE=" + q.CommandQueue, "SQS_DEAD_LETTER_QUEUE=" + q.DeadLetterQueue, "SQS_NOTIFICATION_QUEUE=" + q.NotificationQueue}

	orderID := uuid.NewString()
	var bodies []string
	for i := range 3 {
		b := actorlessCommand("c-"+uuid.NewString(), orderID, "corr")
		bodies = append(bodies, b)
		_, err := sys.sqs.SendMessage(ctx, &sqs.SendMessageInput{
			QueueUrl: aws.String(urls.DeadLetter), MessageBody: aws.String(b),
			MessageGroupId: aws.String(orderID), MessageDeduplicationId: aws.String(uuid.NewString()),
			MessageAttributes: map[string]types.MessageAttributeValue{
				"reason_poisoned": {DataType: aws.String("String"), StringValue: aws.String("reason " + string(rune('a'+i)))},
				"poisoned_at":     {DataType: aws.String("String"), StringValue: aws.String(time.Now().Add(-time.Minute).Format(time.RFC3339Nano))},
				"command":         {DataType: aws.String("String"), StringValue: aws.String("cancel")},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if rows := dlqList(t, env...); len(rows) != 3 || rows[0].OrderID != orderID || rows[2].Reason != "reason c" {
		t.Fatalf("listed %+v", rows)
	}

	// The first one's redrive is cut off after its send.
	msgs, err := queue.Peek(ctx, sys.sqs, urls.DeadLetter, 30*time.Second, 10)
	if err != nil || len(msgs) == 0 || aws.ToString(msgs[0].Body) != bodies[0] {
		t.Fatalf("peek: %d messages, %v", len(msgs), err)
	}
	if err := queue.Redrive(ctx, failingDelete{sys.sqs}, urls.DeadLetter, urls.Command, msgs[0], orderID); err == nil {
		t.Fatal("redrive with a failing delete succeeded")
	}
	if err := queue.ReleaseAll(ctx, sys.sqs, urls.DeadLetter, msgs); err != nil {
		t.Fatal(err)
	}

	out, errOut, err := dlqCLI(t, env, "redrive", "--all")
	if err != nil || !strings.Contains(out, "redrove 3 message(s)") {
		t.Fatalf("redrive --all: %v\n%s%s", err, out, errOut)
	}
	var got []types.Message
	for deadline := time.Now().Add(10 * time.Second); len(got) < 4 && time.Now().Before(deadline); {
		r, err := sys.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(urls.Command), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageAttributeNames: []string{"All"}, MessageSystemAttributeNames: []types.MessageSystemAttributeName{types.MessageSystemAttributeNameAll},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Messages) == 0 && len(got) == 3 {
			break
		}
		for _, m := range r.Messages {
			got = append(got, m)
			// Delete, so the order's next message is handed out.
			sys.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(urls.Command), ReceiptHandle: m.ReceiptHandle})
		}
	}
	if len(got) != 3 {
		t.Fatalf("command queue received %d messages, want 3 (the interrupted one once)", len(got))
	}
	for i, m := range got {
		if aws.ToString(m.Body) != bodies[i] {
			t.Errorf("message %d: %s, want %s", i, aws.ToString(m.Body), bodies[i])
		}
		if _, ok := m.MessageAttributes["reason_poisoned"]; ok || aws.ToString(m.MessageAttributes["command"].StringValue) != "cancel" {
			t.Errorf("message %d attributes %v", i, m.MessageAttributes)
		}
		if g := queue.GroupID(m); g != "" && g != orderID { // where the endpoint reports groups
			t.Errorf("message %d in group %s, want %s", i, g, orderID)
		}
	}
	if rows := dlqList(t, env...); len(rows) != 0 {
		t.Errorf("dead-letter queue still lists %+v", rows)
	}
}
