package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"
)

// One trace runs from the HTTP POST through the SQS message to the
// processor's transaction: the processor logs the client's trace id.
func TestTraceCrossesTheQueue(t *testing.T) {
	t.Parallel()
	traceID := strings.ReplaceAll(uuid.NewString(), "-", "")
	reqID := uuid.NewString()
	r := do(t, "POST", ingest("/v1/orders?request_id="+reqID), orderBody,
		"traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	waitOrder(t, r.body["name"].(string), inState("CREATED"))
	var applied map[string]any
	waitFor(10*time.Second, func() error {
		applied = findLog(sys.output("processor"), "command applied", reqID)
		if applied == nil {
			return context.DeadlineExceeded
		}
		return nil
	})
	if applied == nil || applied["trace_id"] != traceID || applied["correlation_id"] != traceID {
		t.Errorf("processor's log line for the command: %v; want trace and correlation id %s", applied, traceID)
	}
	accepted := findLog(sys.output("ingest"), "command accepted", reqID)
	if accepted == nil || accepted["trace_id"] != traceID {
		t.Errorf("ingest's log line for the command: %v", accepted)
	}
}

// findLog returns the JSON log record with msg whose command_id is id.
func findLog(out, msg, id string) map[string]any {
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, id) || !strings.Contains(line, msg) {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg && rec["command_id"] == id {
			return rec
		}
	}
	return nil
}

// "The order has been processed" reaches the notification queue through
// the outbox, with the order's id as its group and the trace context.
func TestNotificationsReachTheQueue(t *testing.T) {
	t.Parallel()
	name := create(t)
	id := strings.TrimPrefix(name, "orders/")
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := sys.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(sys.urls.Notification), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
			MessageAttributeNames: []string{"All"},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			sys.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(sys.urls.Notification), ReceiptHandle: m.ReceiptHandle})
			var n map[string]any
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &n); err != nil || n["orderId"] != id {
				continue
			}
			ev, _ := n["event"].(map[string]any)
			if n["state"] != "CREATED" || n["version"] != "1" || ev["type"] != "order.created" || n["eventId"] == "" {
				t.Errorf("notification %v", n)
			}
			if aws.ToString(m.MessageAttributes["traceparent"].StringValue) == "" {
				t.Errorf("notification carries no trace context: %v", m.MessageAttributes)
			}
			return
		}
	}
	t.Fatalf("no notification for %s\n%s", name, sys.logs())
}

// ingest and query serve /metrics on their admin ports, the processor on
// its only one.
func TestMetricsEndpoints(t *testing.T) {
	t.Parallel()
	waitOrder(t, create(t), inState("CREATED"))
	for addr, wants := range map[string][]string{
		sys.ingestAdmin: {`oms_enqueue_total{outcome="ok"}`, `oms_http_requests_total{code="202",method="POST",route="/v1/orders"`, `oms_grpc_requests_total{`},
		sys.queryAdmin:  {`oms_grpc_requests_total{code="OK",method="/oms.v1.OrderQueryService/GetOrder"`, `go_sql_open_connections{db_name="oms"}`},
		sys.processorHTTP: {`oms_commands_total{command="create",outcome="applied"}`, `oms_command_apply_duration_seconds_bucket`,
			`oms_outbox_backlog`, `oms_sqs_queue_messages{queue="` + sys.queues.CommandQueue + `",state="visible"}`,
			`go_sql_in_use_connections{db_name="oms"}`, `handler_execution_time_seconds`},
	} {
		r := do(t, "GET", "http://"+addr+"/metrics", "")
		for _, w := range wants {
			if !strings.Contains(r.raw, w) {
				t.Errorf("%s/metrics lacks %s", addr, w)
			}
		}
	}
}

// Not parallel: SIGTERM reaches the processor while a command is being
// retried; the command still completes, and the processor then exits 0.
func TestShutdownFinishesCommandInFlight(t *testing.T) {
	sys.pgProxy.Block()
	reqID := uuid.NewString()
	r := do(t, "POST", ingest("/v1/orders?request_id="+reqID), orderBody)
	if r.status != http.StatusAccepted {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	sys.mu.Lock()
	p := sys.processor
	sys.mu.Unlock()
	// In flight: the processor has tried it and is waiting to retry.
	if err := waitFor(20*time.Second, func() error {
		if findLog(p.out.String(), "transient failure", reqID) == nil {
			return context.DeadlineExceeded
		}
		return nil
	}); err != nil {
		t.Fatalf("the command never reached the processor\n%s", sys.logs())
	}
	stopped := make(chan error, 1)
	go func() { stopped <- p.stop(30 * time.Second) }()
	time.Sleep(300 * time.Millisecond)
	if err := sys.pgProxy.Unblock(); err != nil {
		t.Fatal(err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("processor: %v", err)
	}
	if findLog(p.out.String(), "command applied", reqID) == nil {
		t.Errorf("the processor exited without finishing the command in flight\n%s", tail(p.out.String(), 40))
	}
	// Applied before the exit: visible with no processor running.
	o := do(t, "GET", query("/v1/"+r.body["name"].(string)), "")
	if o.status != http.StatusOK || o.body["state"] != "CREATED" {
		t.Errorf("after shutdown: %d %s", o.status, o.raw)
	}
	if err := sys.startProcessor(); err != nil {
		t.Fatal(err)
	}
}
