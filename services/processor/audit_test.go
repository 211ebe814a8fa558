package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/omsdev/oms/pkg/dbtest"
	"github.com/omsdev/oms/pkg/logging"
	oms "github.com/omsdev/oms/pkg/order"
	"github.com/omsdev/oms/pkg/orderapp"
	"github.com/omsdev/oms/pkg/orderpb"
	"github.com/omsdev/oms/pkg/orderstore"
	"github.com/omsdev/oms/pkg/queue"
	"github.com/omsdev/oms/pkg/sqslocal"
)

// The SQS endpoint of this package's tests: one emulator per process,
// started by the first test that needs it.
var (
	emulatorOnce sync.Once
	emulator     *sqslocal.Emulator
	emulatorErr  error
)

// testQueues creates a fresh set of queues on the in-process emulator, as
// the processor does at start-up: the command queue redrives to the
// dead-letter queue after 5 receives.
func testQueues(t *testing.T) (*sqs.Client, queue.URLs) {
	t.Helper()
	emulatorOnce.Do(func() { emulator, emulatorErr = sqslocal.Start("127.0.0.1:0", 100*time.Millisecond) })
	if emulatorErr != nil {
		t.Fatal(emulatorErr)
	}
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
	return client, urls
}

// putDeadLetter puts body on the dead-letter queue in group with attrs, as
// SQS's redrive (no poisoned_at) or the processor's poison path (with it)
// would, and returns its message id.
func putDeadLetter(t *testing.T, client *sqs.Client, url, group, body string, attrs map[string]string) string {
	t.Helper()
	in := &sqs.SendMessageInput{
		QueueUrl: aws.String(url), MessageBody: aws.String(body),
		MessageGroupId: aws.String(group), MessageDeduplicationId: aws.String(uuid.NewString()),
		MessageAttributes: map[string]types.MessageAttributeValue{},
	}
	for k, v := range attrs {
		in.MessageAttributes[k] = types.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	out, err := client.SendMessage(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.MessageId)
}

func encode(t *testing.T, c oms.Command, contentType string) string {
	t.Helper()
	b, err := orderpb.EncodeCommandAs(c, contentType)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// One audit round over a dead-letter queue holding each kind of message:
// only the commands SQS moved whose operation is not done get one, done
// ABORTED; nothing leaves the queue; a second round changes nothing; and a
// redrive that applies the command replaces the ABORTED.
func TestDeadLetterAudit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	client, urls := testQueues(t)
	store := orderstore.New(db)
	app := orderapp.New(store, nil)
	actor := oms.Actor{ID: "service:storefront"}
	newCreate := func() oms.Command {
		return oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: actor, CorrelationID: "corr-" + uuid.NewString(),
			Body: oms.CreateOrder{CustomerID: "c-1", Currency: "USD", Lines: []oms.LineItem{{SKU: "S", Name: "n", Quantity: 1, UnitPriceMinor: 100}}}}
	}
	pb := map[string]string{orderpb.ContentTypeKey: orderpb.ContentTypeProtobuf, "command": "create"}

	// Moved by SQS after its attempts kept timing out: pending, with them
	// counted.
	stranded := newCreate()
	if err := app.Failed(ctx, stranded, "transient"); err != nil {
		t.Fatal(err)
	}
	strandedID := putDeadLetter(t, client, urls.DeadLetter, stranded.OrderID, encode(t, stranded, orderpb.ContentTypeProtobuf), pb)
	// Moved by SQS before any attempt recorded anything, in JSON.
	unrecorded := oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: actor,
		Body: oms.PayOrder{Reference: "r", AmountMinor: 100}}
	putDeadLetter(t, client, urls.DeadLetter, unrecorded.OrderID, encode(t, unrecorded, orderpb.ContentTypeJSON), nil)
	// Dead-lettered by the processor, which recorded its outcome; this one
	// pending to show the audit leaves such messages to that path.
	stamped := newCreate()
	if err := app.Failed(ctx, stamped, "transient"); err != nil {
		t.Fatal(err)
	}
	putDeadLetter(t, client, urls.DeadLetter, stamped.OrderID, encode(t, stamped, orderpb.ContentTypeProtobuf), map[string]string{
		orderpb.ContentTypeKey: orderpb.ContentTypeProtobuf, queue.AttrPoisonedAt: time.Now().UTC().Format(time.RFC3339Nano),
		"reason_poisoned": "panic",
	})
	// Applied, and then its message ran out of receives anyway (the
	// processor died before each delete).
	applied := newCreate()
	if res, err := app.Apply(ctx, applied); err != nil || res.Outcome != orderapp.Applied {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	putDeadLetter(t, client, urls.DeadLetter, applied.OrderID, encode(t, applied, orderpb.ContentTypeProtobuf), pb)
	putDeadLetter(t, client, urls.DeadLetter, undecodable, "not a command", nil)

	var logs bytes.Buffer
	audit := &deadLetterAudit{sqs: client, dlq: urls.DeadLetter, commands: urls.Command, app: app, ops: store,
		every: time.Minute, log: logging.New(&logs, "processor", "info")}
	before := testutil.ToFloat64(auditTotal.WithLabelValues("aborted"))
	res, err := audit.round(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res != (auditResult{Aborted: 2, Settled: 1}) {
		t.Errorf("round: %+v, want 2 aborted, 1 settled", res)
	}
	// Other tests run rounds in parallel: at least this one's two.
	if n := testutil.ToFloat64(auditTotal.WithLabelValues("aborted")) - before; n < 2 {
		t.Errorf("oms_dead_letter_audit_total{outcome=aborted} rose by %v, want 2", n)
	}

	for name, c := range map[string]oms.Command{"stranded": stranded, "unrecorded": unrecorded} {
		op, ok := readOp(t, db, c)
		if !ok || !op.Done || codes.Code(op.Code) != codes.Aborted ||
			!strings.Contains(op.Message, "dead-lettered by SQS after 5 receives") || !strings.Contains(op.Message, "redrive") {
			t.Errorf("%s: operation %+v (recorded %v), want done ABORTED saying why", name, op, ok)
		}
	}
	if op, _ := readOp(t, db, stranded); op.Attempts != 1 || op.ErrorClass != "transient" {
		t.Errorf("stranded: attempts %d, class %q; want the failed attempt kept", op.Attempts, op.ErrorClass)
	}
	if op, ok := readOp(t, db, stamped); !ok || op.Done {
		t.Errorf("stamped: operation %+v, want it left pending to the poison path", op)
	}
	if op, ok := readOp(t, db, applied); !ok || !op.Done || codes.Code(op.Code) != codes.OK {
		t.Errorf("applied: operation %+v, want it still done OK", op)
	}

	var warned []map[string]any
	for _, rec := range logLines(t, &logs) {
		if rec["msg"] == "command dead-lettered by SQS; its operation is now done ABORTED" {
			warned = append(warned, rec)
		}
	}
	if len(warned) != 2 {
		t.Errorf("%d log lines for aborted operations, want 2:\n%s", len(warned), logs.String())
	}
	for _, rec := range warned {
		if rec["command_id"] == stranded.ID && (rec["level"] != "WARN" || rec["order_id"] != stranded.OrderID ||
			rec["correlation_id"] != stranded.CorrelationID || rec["message_id"] != strandedID) {
			t.Errorf("log line %v", rec)
		}
	}

	// Every message is still there, and receivable at once.
	msgs, err := queue.Peek(ctx, client, urls.DeadLetter, 5*time.Second, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := queue.ReleaseAll(ctx, client, urls.DeadLetter, msgs); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 5 {
		t.Fatalf("%d messages on the dead-letter queue after the round, want all 5", len(msgs))
	}

	// The next round finds nothing to do.
	if res, err := audit.round(ctx); err != nil || res != (auditResult{}) {
		t.Errorf("second round: %+v, %v; want nothing done", res, err)
	}

	// Redriven and applied after all: the real outcome replaces ABORTED.
	if res, err := app.Apply(ctx, stranded); err != nil || res.Outcome != orderapp.Applied {
		t.Fatalf("apply the redriven command: %+v, %v", res, err)
	}
	if op, _ := readOp(t, db, stranded); !op.Done || codes.Code(op.Code) != codes.OK {
		t.Errorf("after the redrive: operation %+v, want done OK", op)
	}
}

// A round writes at most auditWrites operations; the next one goes on
// with the rest.
func TestDeadLetterAuditIsBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	client, urls := testQueues(t)
	store := orderstore.New(db)
	app := orderapp.New(store, nil)
	var cmds []oms.Command
	for range auditWrites + 5 {
		c := oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: oms.Actor{ID: "service:storefront"},
			Body: oms.CancelOrder{Reason: "r"}}
		cmds = append(cmds, c)
		putDeadLetter(t, client, urls.DeadLetter, c.OrderID, encode(t, c, orderpb.ContentTypeJSON), nil)
	}
	audit := &deadLetterAudit{sqs: client, dlq: urls.DeadLetter, commands: urls.Command, app: app, ops: store,
		every: time.Minute, log: logging.New(&bytes.Buffer{}, "processor", "info")}
	first, err := audit.round(ctx)
	if err != nil || first != (auditResult{Aborted: auditWrites, More: true}) {
		t.Fatalf("first round: %+v, %v; want %d aborted and more", first, err, auditWrites)
	}
	second, err := audit.round(ctx)
	if err != nil || second != (auditResult{Aborted: 5}) {
		t.Fatalf("second round: %+v, %v; want the other 5", second, err)
	}
	for _, c := range cmds {
		if op, ok := readOp(t, db, c); !ok || codes.Code(op.Code) != codes.Aborted {
			t.Fatalf("command %s: operation %+v, want ABORTED", c.ID, op)
		}
	}
}

// A failed write is counted, logged and tried again by a later round; Run
// audits every interval and stops with its context.
func TestDeadLetterAuditRunsAndRetriesFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := dbtest.New(t)
	client, urls := testQueues(t)
	store := orderstore.New(db)
	c := oms.Command{ID: uuid.NewString(), OrderID: uuid.NewString(), IssueTime: time.Now(), Actor: oms.Actor{ID: "service:storefront"},
		Body: oms.DeliverOrder{}}
	putDeadLetter(t, client, urls.DeadLetter, c.OrderID, encode(t, c, orderpb.ContentTypeJSON), nil)
	refuse(t, db, `BEFORE INSERT ON operations FOR EACH ROW`, `'refused'`)

	var logs syncBuffer
	audit := &deadLetterAudit{sqs: client, dlq: urls.DeadLetter, commands: urls.Command, app: orderapp.New(store, nil), ops: store,
		every: 50 * time.Millisecond, log: logging.New(&logs, "processor", "info")}
	if res, err := audit.round(ctx); err != nil || res != (auditResult{Failed: 1}) {
		t.Fatalf("round: %+v, %v; want 1 failed", res, err)
	}
	if !strings.Contains(logs.String(), "could not record the outcome of a command SQS dead-lettered") {
		t.Errorf("no log line for the failure:\n%s", logs.String())
	}
	if _, err := db.ExecContext(ctx, `DROP TRIGGER refuse ON operations`); err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		audit.Run(rctx)
		close(stopped)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if op, ok := readOp(t, db, c); ok && codes.Code(op.Code) == codes.Aborted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ABORTED operation after the failure\n%s", logs.String())
		}
	}
	cancel()
	<-stopped
}

// syncBuffer is a log destination safe for a goroutine to write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
